//! Open mode: any user name, no password. For the embedded default on loopback only; the
//! gateway refuses to start it on any other address.

use async_trait::async_trait;

use crate::{AuthError, Authenticator, Credentials, Identity};

/// Accepts any caller. A Basic user name is taken as is (the password is ignored); a caller
/// with no credentials becomes `anonymous`. Bearer tokens are left to other methods.
#[derive(Debug, Default, Clone)]
pub struct OpenAuthenticator;

/// The user name of a caller that presented nothing in open mode.
pub const ANONYMOUS: &str = "anonymous";

#[async_trait]
impl Authenticator for OpenAuthenticator {
    fn name(&self) -> &'static str {
        "open"
    }

    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, AuthError> {
        Ok(match credentials {
            Credentials::None => Some(Identity::new(ANONYMOUS, "open")),
            Credentials::Basic { user, .. } if user.is_empty() => Some(Identity::new(ANONYMOUS, "open")),
            Credentials::Basic { user, .. } => Some(Identity::new(user.clone(), "open")),
            Credentials::Bearer(_) | Credentials::Negotiate(_) | Credentials::Certificate(_) => None,
        })
    }
}
