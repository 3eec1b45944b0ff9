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

    /// The query type Trino names `name` (case-insensitive, as Trino's selectors compare it).
    pub fn from_trino_name(name: &str) -> Option<QueryType> {
        const ALL: [QueryType; 9] = [
            QueryType::Select,
            QueryType::Explain,
            QueryType::Describe,
            QueryType::Insert,
            QueryType::Update,
            QueryType::Merge,
            QueryType::Delete,
            QueryType::Analyze,
            QueryType::DataDefinition,
        ];
        ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// True if the statement changes data or the catalog.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            QueryType::Insert | QueryType::Update | QueryType::Merge | QueryType::Delete | QueryType::DataDefinition
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trino_names_round_trip() {
        for name in
            ["SELECT", "EXPLAIN", "DESCRIBE", "INSERT", "UPDATE", "MERGE", "DELETE", "ANALYZE", "DATA_DEFINITION"]
        {
            assert_eq!(QueryType::from_trino_name(name).map(|t| t.as_str()), Some(name));
        }
        assert_eq!(QueryType::from_trino_name("data_definition"), Some(QueryType::DataDefinition));
        assert_eq!(QueryType::from_trino_name("SELEKT"), None);
    }
}
