//! The gateway's errors and their one mapping to gRPC status.

use quiver_auth::AuthError;
use quiver_policies::PolicyError;
use tonic::{Code, Status};

/// Everything that can go wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Authentication failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The policy denied the operation, or could not decide.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Refused by the gateway's own enforcement (e.g. EXPLAIN of a filtered table).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request cannot run in the current state (e.g. a prepared statement whose policy
    /// changed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A ticket or prepared-statement handle that is garbage, tampered with or expired.
    #[error("invalid ticket: {0}")]
    InvalidTicket(String),
    /// A catalog, schema or table that does not exist (or no pool serves it).
    #[error("{0}")]
    NotFound(String),
    /// A worker or pool could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A request over a configured limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The query was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// Not supported by this gateway.
    #[error("{0}")]
    Unimplemented(String),
    /// A worker's own error, passed on with its code.
    #[error("{}", .0.message())]
    Worker(Status),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<GatewayError> for Status {
    fn from(err: GatewayError) -> Self {
        match err {
            GatewayError::Auth(e) => {
                let code = match e {
                    AuthError::Unavailable(_) => Code::Unavailable,
                    AuthError::InvalidCredentials
                    | AuthError::Denied(_)
                    | AuthError::Unsupported(_)
                    | AuthError::InvalidToken(_) => Code::Unauthenticated,
                };
                Status::new(code, e.to_string())
            }
            GatewayError::Policy(e) => {
                let code = match e {
                    PolicyError::Denied { .. } => Code::PermissionDenied,
                    PolicyError::Unavailable(_) => Code::Unavailable,
                };
                Status::new(code, e.to_string())
            }
            e @ GatewayError::InvalidArgument(_) | e @ GatewayError::InvalidTicket(_) => {
                Status::invalid_argument(e.to_string())
            }
            GatewayError::NotFound(m) => Status::not_found(m),
            GatewayError::PermissionDenied(m) => Status::permission_denied(m),
            GatewayError::FailedPrecondition(m) => Status::failed_precondition(m),
            GatewayError::Unavailable(m) => Status::unavailable(m),
            GatewayError::ResourceExhausted(m) => Status::resource_exhausted(m),
            GatewayError::Cancelled(m) => Status::cancelled(m),
            GatewayError::Unimplemented(m) => Status::unimplemented(m),
            GatewayError::Worker(status) => Status::new(status.code(), status.message().to_string()),
            GatewayError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::internal(format!("internal error: {m}"))
            }
        }
    }
}

/// Result alias for gateway code.
pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_gets_its_code() {
        let cases: Vec<(GatewayError, Code)> = vec![
            (AuthError::InvalidCredentials.into(), Code::Unauthenticated),
            (AuthError::Unavailable("ldap down".into()).into(), Code::Unavailable),
            (
                PolicyError::Denied { user: "u".into(), operation: "DropTable", resource: "t".into() }.into(),
                Code::PermissionDenied,
            ),
            (PolicyError::Unavailable("opa".into()).into(), Code::Unavailable),
            (GatewayError::InvalidTicket("bad signature".into()), Code::InvalidArgument),
            (GatewayError::NotFound("catalog `x`".into()), Code::NotFound),
            (GatewayError::ResourceExhausted("too big".into()), Code::ResourceExhausted),
            (GatewayError::Worker(Status::not_found("table t")), Code::NotFound),
            (GatewayError::Cancelled("cancelled".into()), Code::Cancelled),
        ];
        for (err, code) in cases {
            let text = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{text}");
            assert_eq!(status.message(), text);
        }
    }
}
