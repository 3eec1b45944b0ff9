//! The authorizer seam.

use async_trait::async_trait;
use quiver_auth::Identity;

use crate::{Operation, Resource};

/// Why an operation was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy says no.
    #[error("access denied: {user} may not {operation} on {resource}")]
    Denied {
        /// Who asked.
        user: String,
        /// Trino operation name.
        operation: &'static str,
        /// What it was asked on.
        resource: String,
    },
    /// No decision could be made (policy broken or unreachable): fail closed.
    #[error("authorization unavailable: {0}")]
    Unavailable(String),
}

/// Decides what a caller may do. Called by the gateway on every statement and metadata call.
#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// Allows or denies one operation on one resource.
    async fn check(&self, identity: &Identity, operation: Operation, resource: &Resource) -> Result<(), PolicyError>;

    /// Batch filter (`FilterCatalogs`, `FilterSchemas`, `FilterTables`, `FilterColumns`):
    /// returns the indices of `resources` the caller may see, in ascending order.
    async fn filter(
        &self,
        identity: &Identity,
        operation: Operation,
        resources: &[Resource],
    ) -> Result<Vec<usize>, PolicyError>;
}

/// Allows everything. The default until a policy is configured.
#[derive(Debug, Default, Clone)]
pub struct AllowAll;

#[async_trait]
impl Authorizer for AllowAll {
    async fn check(&self, _: &Identity, _: Operation, _: &Resource) -> Result<(), PolicyError> {
        Ok(())
    }

    async fn filter(&self, _: &Identity, _: Operation, resources: &[Resource]) -> Result<Vec<usize>, PolicyError> {
        Ok((0..resources.len()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allow_all_allows_and_keeps_every_index() {
        let id = Identity::new("alice", "open");
        assert_eq!(AllowAll.check(&id, Operation::ExecuteQuery, &Resource::None).await, Ok(()));
        let rs = vec![Resource::Catalog("a".into()), Resource::Catalog("b".into())];
        assert_eq!(AllowAll.filter(&id, Operation::FilterCatalogs, &rs).await, Ok(vec![0, 1]));
    }

    #[test]
    fn denial_names_user_operation_and_resource() {
        let e = PolicyError::Denied {
            user: "bob".into(),
            operation: Operation::DropTable.as_str(),
            resource: "table a.b.c".into(),
        };
        assert_eq!(e.to_string(), "access denied: bob may not DropTable on table a.b.c");
    }
}
