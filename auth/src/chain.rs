//! The authenticator trait and the chain that runs them in config order.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{AuthError, Credentials, Identity, UserMapping};

/// One authentication method.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The method's name, for logs, metrics and `Identity::method`.
    fn name(&self) -> &'static str;

    /// Checks `credentials`. `Ok(None)` means "not mine" (this method does not handle this
    /// kind of credentials) and lets the chain try the next method; an error ends the chain.
    /// The returned `Identity::user` is the principal before user mapping.
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, AuthError>;
}

/// A failed authentication: which method refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// The method that refused (`chain` when no method took the credentials).
    pub method: &'static str,
    /// Why.
    pub error: AuthError,
}

/// Authenticators in config order; the first that accepts the credentials wins, and its
/// principal goes through the user mapping rules.
#[derive(Clone, Default)]
pub struct AuthenticatorChain {
    methods: Vec<Arc<dyn Authenticator>>,
    mapping: UserMapping,
}

impl AuthenticatorChain {
    /// A chain of `methods`, tried in order, with no user mapping.
    pub fn new(methods: Vec<Arc<dyn Authenticator>>) -> Self {
        AuthenticatorChain { methods, mapping: UserMapping::default() }
    }

    /// The same chain mapping principals through `mapping`.
    pub fn with_mapping(mut self, mapping: UserMapping) -> Self {
        self.mapping = mapping;
        self
    }

    /// The method names in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.methods.iter().map(|m| m.name()).collect()
    }

    /// Runs the chain.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Identity, AuthFailure> {
        for method in &self.methods {
            let failure = |error| AuthFailure { method: method.name(), error };
            if let Some(mut identity) = method.authenticate(credentials).await.map_err(failure)? {
                let principal = std::mem::take(&mut identity.user);
                identity.user = self.mapping.map(&principal).map_err(failure)?;
                if identity.user != principal {
                    identity.attributes.insert("principal".into(), principal);
                }
                return Ok(identity);
            }
        }
        Err(AuthFailure {
            method: "chain",
            error: AuthError::Unsupported(format!(
                "no configured authentication method ({}) accepts {} credentials",
                self.names().join(", "),
                credentials.kind()
            )),
        })
    }
}
