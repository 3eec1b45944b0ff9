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
    /// The credentials were checked and refused. The caller sees only "invalid credentials";
    /// the detail (which check failed) is for the server's log.
    #[error("invalid credentials")]
    Denied(String),
    /// The method's back end (file, directory server, KDC) could not be consulted.
    #[error("authentication service unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// A short label for metrics: `invalid_credentials`, `unsupported`, `invalid_token`,
    /// `denied`, `unavailable`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::Unsupported(_) => "unsupported",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::Denied(_) => "denied",
            AuthError::Unavailable(_) => "unavailable",
        }
    }

    /// The full reason for the server's log (may name the check that failed; never shown to
    /// the caller).
    pub fn log_detail(&self) -> String {
        match self {
            AuthError::Denied(detail) => format!("invalid credentials: {detail}"),
            other => other.to_string(),
        }
    }
}
