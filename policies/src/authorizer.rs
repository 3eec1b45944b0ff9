//! The authorizer seam.

use std::collections::BTreeMap;

use async_trait::async_trait;
use quiver_auth::Identity;
use serde::{Deserialize, Serialize};

use crate::{Operation, Resource, TableRef};

/// A row filter: a SQL boolean expression over the table's columns. Every filter of a table
/// applies (they are ANDed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowFilter {
    /// The SQL predicate, e.g. `c_nationkey IN (1, 2)`.
    pub expression: String,
    /// The user the expression is evaluated as (Trino's `identity`), if not the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// A column mask: a SQL expression that replaces the column's values (same name and type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnMask {
    /// The SQL expression, e.g. `'****'` or `substr(c_phone, 1, 3)`.
    pub expression: String,
    /// The user the expression is evaluated as (Trino's `identity`), if not the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// A column of a table, as column masks are asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Column type as the engine names it (`varchar`, `bigint`, ...).
    pub column_type: String,
}

impl ColumnInfo {
    /// A column from its name and type.
    pub fn new(name: impl Into<String>, column_type: impl Into<String>) -> Self {
        ColumnInfo { name: name.into(), column_type: column_type.into() }
    }
}

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

impl PolicyError {
    /// `identity` may not perform `operation` on `resource`.
    pub fn denied(identity: &Identity, operation: Operation, resource: &impl std::fmt::Display) -> Self {
        PolicyError::Denied {
            user: identity.user.clone(),
            operation: operation.as_str(),
            resource: resource.to_string(),
        }
    }
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

    /// Batch `FilterColumns` for one table: the indices of `columns` the caller may see, in
    /// ascending order. The default asks [`Authorizer::filter`] with one table resource per
    /// column.
    async fn filter_columns(
        &self,
        identity: &Identity,
        table: &TableRef,
        columns: &[String],
    ) -> Result<Vec<usize>, PolicyError> {
        let resources: Vec<Resource> =
            columns.iter().map(|c| Resource::Table { table: table.clone(), columns: vec![c.clone()] }).collect();
        self.filter(identity, Operation::FilterColumns, &resources).await
    }

    /// The row filters for `table` (all apply). Default: none.
    async fn row_filters(&self, _identity: &Identity, _table: &TableRef) -> Result<Vec<RowFilter>, PolicyError> {
        Ok(Vec::new())
    }

    /// The masks for those of `columns` that are masked, by column name. Default: none.
    async fn column_masks(
        &self,
        _identity: &Identity,
        _table: &TableRef,
        _columns: &[ColumnInfo],
    ) -> Result<BTreeMap<String, ColumnMask>, PolicyError> {
        Ok(BTreeMap::new())
    }
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
        let t = TableRef::new("c", "s", "t");
        assert_eq!(AllowAll.filter_columns(&id, &t, &["a".into(), "b".into()]).await, Ok(vec![0, 1]));
        assert_eq!(AllowAll.row_filters(&id, &t).await, Ok(vec![]));
        let cols = [ColumnInfo::new("a", "varchar")];
        assert_eq!(AllowAll.column_masks(&id, &t, &cols).await, Ok(BTreeMap::new()));
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
