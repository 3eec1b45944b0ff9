//! The caller's identity and the credentials it was derived from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Who is calling, as established by an authenticator. Travels in request extensions to
/// policies, resource-group selectors, query history and logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user name policies see (after any mapping rules).
    pub user: String,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
    /// The method that authenticated the caller: `open`, `password-file`, `token`, ...
    pub method: String,
    /// Extra attributes the method provides (claims, certificate fields, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// A token the method wants returned to the caller (the Kerberos/SPNEGO mutual
    /// authentication reply). The gateway sends it back in `www-authenticate: Negotiate ...`
    /// and never stores it.
    #[serde(skip)]
    pub reply_token: Option<Vec<u8>>,
}

impl Identity {
    /// An identity with no groups or attributes.
    pub fn new(user: impl Into<String>, method: impl Into<String>) -> Self {
        Identity {
            user: user.into(),
            groups: Vec::new(),
            method: method.into(),
            attributes: BTreeMap::new(),
            reply_token: None,
        }
    }

    /// The same identity with `groups`.
    pub fn with_groups(mut self, groups: Vec<String>) -> Self {
        self.groups = groups;
        self
    }
}

/// What a caller presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: no `authorization` header.
    None,
    /// `authorization: Basic base64(user:password)`.
    Basic {
        /// The user name as sent.
        user: String,
        /// The password as sent.
        password: String,
    },
    /// `authorization: Bearer <token>`.
    Bearer(String),
    /// `authorization: Negotiate <base64>`: a SPNEGO/Kerberos token, already base64-decoded.
    Negotiate(Vec<u8>),
    /// No `authorization` header, but the TLS layer verified a client certificate against the
    /// configured CA: the leaf certificate, DER-encoded.
    Certificate(Vec<u8>),
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, not even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => write!(f, "None"),
            Credentials::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, password: <redacted> }}"),
            Credentials::Bearer(_) => write!(f, "Bearer(<redacted>)"),
            Credentials::Negotiate(t) => write!(f, "Negotiate(<{} bytes>)", t.len()),
            Credentials::Certificate(c) => write!(f, "Certificate(<{} bytes>)", c.len()),
        }
    }
}

impl Credentials {
    /// The kind, for logs and metrics: `none`, `basic`, `bearer`, `negotiate`, `certificate`.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::None => "none",
            Credentials::Basic { .. } => "basic",
            Credentials::Bearer(_) => "bearer",
            Credentials::Negotiate(_) => "negotiate",
            Credentials::Certificate(_) => "certificate",
        }
    }
}
