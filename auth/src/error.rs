//! Authentication errors. Messages are safe to show to the caller: they never reveal
//! whether a user exists.

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credentials were checked and are wrong (unknown user or wrong password alike).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// No configured method accepts the kind of credentials presented.
    #[error("{0}")]
    Unsupported(String),
    /// A bearer token that is malformed, forged or expired.
    #[error("invalid or expired session token: {0}")]
    InvalidToken(&'static str),
    /// The method's back end (file, directory server, KDC) could not be consulted.
    #[error("authentication service unavailable: {0}")]
    Unavailable(String),
}
