//! The authenticator trait and the chain that runs them in config order.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{AuthError, Credentials, Identity};

/// One authentication method.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The method's name, for logs, metrics and `Identity::method`.
    fn name(&self) -> &'static str;

    /// Checks `credentials`. `Ok(None)` means "not mine" (this method does not handle this
    /// kind of credentials) and lets the chain try the next method; an error ends the chain.
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, AuthError>;
}

/// Authenticators in config order; the first that accepts the credentials wins.
#[derive(Clone, Default)]
pub struct AuthenticatorChain {
    methods: Vec<Arc<dyn Authenticator>>,
}

impl AuthenticatorChain {
    /// A chain of `methods`, tried in order.
    pub fn new(methods: Vec<Arc<dyn Authenticator>>) -> Self {
        AuthenticatorChain { methods }
    }

    /// The method names in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.methods.iter().map(|m| m.name()).collect()
    }

    /// Runs the chain.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Identity, AuthError> {
        for method in &self.methods {
            if let Some(identity) = method.authenticate(credentials).await? {
                return Ok(identity);
            }
        }
        Err(AuthError::Unsupported(format!(
            "no configured authentication method ({}) accepts {} credentials",
            self.names().join(", "),
            credentials.kind()
        )))
    }
}
