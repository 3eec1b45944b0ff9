//! The engine's errors and their one mapping to gRPC status.

use datafusion::error::DataFusionError;
use tonic::Status;

/// Everything that can go wrong inside the engine worker.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The SQL does not parse or plan: the client's mistake.
    #[error("{0}")]
    InvalidSql(String),
    /// A catalog, schema or table that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is malformed (bad ticket, bad parameters).
    #[error("{0}")]
    InvalidRequest(String),
    /// The query needs more memory than the worker may give it.
    #[error("{0}")]
    ResourcesExhausted(String),
    /// The feature is not supported by this engine.
    #[error("{0}")]
    Unsupported(String),
    /// The statement is refused on purpose (it would reach the worker's file system or settings).
    #[error("{0}")]
    NotAllowed(String),
    /// Loading a configured catalog failed.
    #[error("catalog `{catalog}`: {reason}")]
    Catalog {
        /// The catalog being loaded.
        catalog: String,
        /// Why it failed.
        reason: String,
    },
    /// The objects a statement was authorized against changed since (see
    /// [`crate::authorized`]): plan it again.
    #[error("{0}")]
    Stale(String),
    /// A bug or an I/O failure inside the worker.
    #[error("{0}")]
    Internal(String),
}

impl From<DataFusionError> for EngineError {
    fn from(err: DataFusionError) -> Self {
        classify(err)
    }
}

fn classify(err: DataFusionError) -> EngineError {
    let message = err.to_string();
    match err.find_root() {
        DataFusionError::SQL(..) | DataFusionError::SchemaError(..) => EngineError::InvalidSql(message),
        DataFusionError::Plan(m) if is_not_found(m) => EngineError::NotFound(message),
        DataFusionError::Plan(..) => EngineError::InvalidSql(message),
        DataFusionError::NotImplemented(..) => EngineError::Unsupported(message),
        DataFusionError::ResourcesExhausted(..) => EngineError::ResourcesExhausted(message),
        DataFusionError::ArrowError(..) | DataFusionError::Execution(..) => {
            // Division by zero, failed casts, overflow: caused by the query's data.
            EngineError::InvalidSql(message)
        }
        DataFusionError::Configuration(..) => EngineError::InvalidRequest(message),
        _ => EngineError::Internal(message),
    }
}

fn is_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not found") || m.contains("does not exist")
}

impl From<EngineError> for Status {
    fn from(err: EngineError) -> Self {
        let message = err.to_string();
        match err {
            EngineError::InvalidSql(_) | EngineError::InvalidRequest(_) => Status::invalid_argument(message),
            EngineError::NotFound(_) => Status::not_found(message),
            EngineError::ResourcesExhausted(_) => Status::resource_exhausted(message),
            EngineError::Unsupported(_) => Status::unimplemented(message),
            EngineError::NotAllowed(_) => Status::permission_denied(message),
            EngineError::Stale(_) => Status::failed_precondition(message),
            EngineError::Catalog { .. } | EngineError::Internal(_) => {
                tracing::error!(error = %message, "engine internal error");
                Status::internal(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datafusion_errors_get_the_right_code() {
        let not_found = EngineError::from(DataFusionError::Plan("table 'x.y.z' not found".into()));
        assert_eq!(Status::from(not_found).code(), tonic::Code::NotFound);
        let plan = EngineError::from(DataFusionError::Plan("Invalid function 'nope'".into()));
        assert_eq!(Status::from(plan).code(), tonic::Code::InvalidArgument);
        let oom = EngineError::from(DataFusionError::ResourcesExhausted("no memory".into()));
        assert_eq!(Status::from(oom).code(), tonic::Code::ResourceExhausted);
        let wrapped = EngineError::from(DataFusionError::Context(
            "while planning".into(),
            Box::new(DataFusionError::Plan("table 't' not found".into())),
        ));
        assert_eq!(Status::from(wrapped).code(), tonic::Code::NotFound);
    }
}
