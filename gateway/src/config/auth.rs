//! `[auth]` and `[server.tls]`: how callers prove who they are.
//!
//! `auth.methods` is the chain, tried in order as Trino's `http-server.authentication.type`
//! list is: the first method that accepts the presented credentials wins, and a method that
//! refuses them ends the chain. Each method's settings live in its own table
//! (`[auth.ldap]`, `[auth.jwt]`, `[auth.kerberos]`, `[auth.certificate]`), owned by the
//! `quiver-auth` crate.

use std::net::SocketAddr;
use std::path::PathBuf;

use quiver_auth::{CertificateConfig, JwtConfig, KerberosConfig, LdapConfig, UserMappingRule};
use quiver_engine::config::ConfigProblem;
use serde::{Deserialize, Serialize};

use super::ServerConfig;

/// One authentication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Any user name, no password. Only on loopback addresses.
    Open,
    /// Users and argon2/bcrypt hashes from `auth.password_file`.
    PasswordFile,
    /// The verified TLS client certificate (`[auth.certificate]`, needs
    /// `server.tls.client_ca_file`).
    Certificate,
    /// LDAP bind with Basic credentials (`[auth.ldap]`).
    Ldap,
    /// OAuth2 / OIDC bearer JWTs (`[auth.jwt]`).
    Jwt,
    /// Kerberos SPNEGO `Negotiate` tokens (`[auth.kerberos]`; needs the `kerberos` build
    /// feature).
    Kerberos,
}

impl AuthMethod {
    /// The name used in config and metrics.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::Open => "open",
            AuthMethod::PasswordFile => "password-file",
            AuthMethod::Certificate => "certificate",
            AuthMethod::Kerberos => "kerberos",
            AuthMethod::Ldap => "ldap",
            AuthMethod::Jwt => "jwt",
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The methods in the order they are tried, e.g. `["certificate", "ldap", "jwt"]`.
    pub methods: Vec<AuthMethod>,
    /// Password file (`user:hash[:group,...]` per line) for `password-file`; re-read when it
    /// changes.
    pub password_file: Option<PathBuf>,
    /// Lifetime of the session tokens handed out after a login, in seconds. While a token is
    /// valid, LDAP and the KDC are not asked again.
    pub token_ttl_secs: u64,
    /// `[auth.certificate]`
    pub certificate: CertificateConfig,
    /// `[auth.kerberos]`
    pub kerberos: KerberosConfig,
    /// `[auth.ldap]`
    pub ldap: LdapConfig,
    /// `[auth.jwt]`
    pub jwt: JwtConfig,
    /// `[[auth.user_mapping]]`: principal -> user name rules, first match wins; when any are
    /// configured, a principal no rule matches is refused.
    pub user_mapping: Vec<UserMappingRule>,
    /// Failed logins one user name may have per `failed_login_window_secs` before its logins
    /// are refused (UNAVAILABLE) until the window ends; 0 is unlimited.
    pub max_failed_logins_per_user: u32,
    /// The same limit per client address.
    pub max_failed_logins_per_address: u32,
    /// The window the failed-login limits count over, in seconds.
    pub failed_login_window_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            methods: vec![AuthMethod::Open],
            password_file: None,
            token_ttl_secs: 3600,
            certificate: CertificateConfig::default(),
            kerberos: KerberosConfig::default(),
            ldap: LdapConfig::default(),
            jwt: JwtConfig::default(),
            user_mapping: Vec::new(),
            max_failed_logins_per_user: 10,
            max_failed_logins_per_address: 100,
            failed_login_window_secs: 60,
        }
    }
}

impl AuthConfig {
    /// Every problem in `[auth]` (the server table is needed for addresses and TLS).
    pub fn validate(&self, server: &ServerConfig) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut push = |key: &str, reason: String| problems.push(ConfigProblem { key: key.into(), reason });
        if self.methods.is_empty() {
            push("auth.methods", "at least one method is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for method in &self.methods {
            if !seen.insert(*method) {
                push("auth.methods", format!("`{}` is listed twice", method.name()));
            }
            match method {
                AuthMethod::Open => {
                    let loopback =
                        |addr: &str| addr.parse::<SocketAddr>().map(|a| a.ip().is_loopback()).unwrap_or(true);
                    for (key, addr) in
                        [("server.flight_addr", &server.flight_addr), ("server.http_addr", &server.http_addr)]
                    {
                        if !loopback(addr) {
                            push(
                                "auth.methods",
                                format!(
                                    "open mode accepts anyone without a password and may only listen on loopback, but {key} is {addr}"
                                ),
                            );
                        }
                    }
                }
                AuthMethod::PasswordFile => match &self.password_file {
                    None => push("auth.password_file", "required by the `password-file` method".into()),
                    Some(path) => {
                        if let Err(e) = quiver_auth::PasswordFileAuthenticator::load(path) {
                            push("auth.password_file", e);
                        }
                    }
                },
                AuthMethod::Ldap => {
                    for (key, reason) in self.ldap.validate() {
                        push(&format!("auth.ldap.{key}"), reason);
                    }
                }
                AuthMethod::Jwt => {
                    for (key, reason) in self.jwt.validate() {
                        push(&format!("auth.jwt.{key}"), reason);
                    }
                }
                AuthMethod::Kerberos => {
                    if !cfg!(feature = "kerberos") {
                        push(
                            "auth.methods",
                            "this quiver was built without Kerberos: build with `--features kerberos` \
                             (needs libkrb5-dev, libclang-dev)"
                                .into(),
                        );
                    }
                    for (key, reason) in self.kerberos.validate() {
                        push(&format!("auth.kerberos.{key}"), reason);
                    }
                }
                AuthMethod::Certificate => {
                    if server.tls.as_ref().and_then(|t| t.client_ca_file.as_ref()).is_none() {
                        push(
                            "auth.methods",
                            "`certificate` needs server.tls.client_ca_file to verify client certificates".into(),
                        );
                    }
                }
            }
        }
        if self.token_ttl_secs == 0 {
            push("auth.token_ttl_secs", "must be at least 1".into());
        }
        if self.failed_login_window_secs == 0 {
            push("auth.failed_login_window_secs", "must be at least 1".into());
        }
        if let Err(e) = quiver_auth::UserMapping::new(&self.user_mapping) {
            push("auth.user_mapping", e);
        }
        problems
    }
}

/// Whether the Flight SQL port asks for client certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A certificate is verified when the client offers one; clients without one use other
    /// methods (password, token, ...).
    #[default]
    Optional,
    /// Every connection must present a certificate the CA signed.
    Required,
}

/// `[server.tls]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the gateway.
    pub cert_file: PathBuf,
    /// PEM private key of the gateway.
    pub key_file: PathBuf,
    /// PEM CA bundle that client certificates must chain to. Unset: no client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `optional` (default) or `required`.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

impl TlsConfig {
    /// Problems with the files, under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let files = [("cert_file", Some(&self.cert_file)), ("key_file", Some(&self.key_file))];
        for (key, path) in files.into_iter().chain([("client_ca_file", self.client_ca_file.as_ref())]) {
            let Some(path) = path else { continue };
            match std::fs::read_to_string(path) {
                Ok(text) if !text.contains("-----BEGIN ") => problems.push(ConfigProblem {
                    key: format!("{prefix}.{key}"),
                    reason: format!("{} is not PEM", path.display()),
                }),
                Ok(_) => {}
                Err(e) => problems
                    .push(ConfigProblem { key: format!("{prefix}.{key}"), reason: format!("{}: {e}", path.display()) }),
            }
        }
        if self.client_auth == ClientAuth::Required && self.client_ca_file.is_none() {
            problems.push(ConfigProblem {
                key: format!("{prefix}.client_auth"),
                reason: "`required` needs client_ca_file".into(),
            });
        }
        problems
    }
}
