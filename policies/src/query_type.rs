//! Query types as Trino's resource-group selectors name them.

use serde::Serialize;

/// The kind of a statement, for selectors, routing and policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueryType {
    /// SELECT, VALUES, SHOW, WITH ... SELECT.
    Select,
    /// EXPLAIN (and EXPLAIN ANALYZE).
    Explain,
    /// DESCRIBE.
    Describe,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// MERGE.
    Merge,
    /// DELETE, TRUNCATE.
    Delete,
    /// ANALYZE.
    Analyze,
    /// CREATE, DROP, ALTER, ...
    DataDefinition,
}

impl QueryType {
    /// The name Trino uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueryType::Select => "SELECT",
            QueryType::Explain => "EXPLAIN",
            QueryType::Describe => "DESCRIBE",
            QueryType::Insert => "INSERT",
            QueryType::Update => "UPDATE",
            QueryType::Merge => "MERGE",
            QueryType::Delete => "DELETE",
            QueryType::Analyze => "ANALYZE",
            QueryType::DataDefinition => "DATA_DEFINITION",
        }
    }

    /// True if the statement changes data or the catalog.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            QueryType::Insert | QueryType::Update | QueryType::Merge | QueryType::Delete | QueryType::DataDefinition
        )
    }
}
