//! Authentication for Quiver: who is calling.
//!
//! Authenticators turn the credentials a caller presents (Basic user/password, a bearer
//! token — the gateway's own or an IdP's JWT —, nothing at all) into an [`Identity`]. The gateway runs them as a chain in config
//! order, inside a tower layer, so every handler sees the caller's identity in the request
//! extensions. After any successful login the gateway hands out a [`SessionTokens`]-signed
//! bearer token, so later calls (on any replica sharing the key) skip the slow path.
//!
//! This crate is separate from the gateway so the methods can be tested without a server and
//! so policies, resource groups and logs all share one `Identity` type.
#![forbid(unsafe_code)]

mod certificate;
mod chain;
mod error;
mod identity;
mod jwt;
mod kerberos;
pub mod ldap;
mod mapping;
mod open;
mod password_file;
pub mod tls;
mod token;

pub use certificate::{CertificateAuthenticator, CertificateConfig, CertificateUserField};
pub use chain::{AuthFailure, Authenticator, AuthenticatorChain};
pub use error::AuthError;
pub use identity::{Credentials, Identity};
pub use jwt::{DEFAULT_ALGORITHMS, JwtAuthenticator, JwtConfig, KeyType, MAX_LEEWAY_SECS};
#[cfg(feature = "kerberos")]
pub use kerberos::KerberosAuthenticator;
pub use kerberos::KerberosConfig;
pub use ldap::{LdapAuthenticator, LdapConfig};
pub use mapping::{CaseFold, UserMapping, UserMappingRule};
pub use open::OpenAuthenticator;
pub use password_file::{PasswordChecks, PasswordFileAuthenticator, hash_password};
pub use token::{SessionTokens, TokenClaims};
