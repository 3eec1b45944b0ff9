//! From SQL text to a pool: what the statement is and which catalogs it reads, then the pool
//! that serves all of them.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::TableReference;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::Statement as Sql;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use quiver_policies::{QueryType, TableRef};

use crate::error::{GatewayError, Result};
use crate::pool::Pool;
use crate::routing::{RouteRequest, RoutingRules};

/// What the gateway learns from a statement before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The statement's kind.
    pub query_type: QueryType,
    /// Tables it names (CTE names excluded), fully qualified with the session defaults.
    pub tables: BTreeSet<TableRef>,
    /// Catalogs of those tables.
    pub catalogs: BTreeSet<String>,
}

/// Parses `sql` (one statement) and resolves the tables it names against the defaults.
pub fn analyze(sql: &str, default_catalog: &str, default_schema: &str) -> Result<Analysis> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(|e| GatewayError::InvalidArgument(format!("SQL error: {e}")))?;
    let statement = match (statements.pop_front(), statements.is_empty()) {
        (Some(s), true) => s,
        (None, _) => return Err(GatewayError::InvalidArgument("empty SQL statement".into())),
        (Some(_), false) => {
            return Err(GatewayError::InvalidArgument("send one statement per request (found several)".into()));
        }
    };
    let (references, _ctes) = resolve_table_references(&statement, true)
        .map_err(|e| GatewayError::InvalidArgument(format!("SQL error: {e}")))?;
    let tables: BTreeSet<TableRef> = references
        .into_iter()
        .map(|r| match r {
            TableReference::Bare { table } => TableRef {
                catalog: default_catalog.to_string(),
                schema: default_schema.to_string(),
                table: table.to_string(),
            },
            TableReference::Partial { schema, table } => {
                TableRef { catalog: default_catalog.to_string(), schema: schema.to_string(), table: table.to_string() }
            }
            TableReference::Full { catalog, schema, table } => {
                TableRef { catalog: catalog.to_string(), schema: schema.to_string(), table: table.to_string() }
            }
        })
        .collect();
    let catalogs = tables.iter().map(|t| t.catalog.clone()).collect();
    Ok(Analysis { query_type: query_type(&statement), tables, catalogs })
}

/// The statement's Trino query type. EXPLAIN ANALYZE runs the statement it wraps, so it is of
/// that statement's type: `EXPLAIN ANALYZE INSERT ...` is an INSERT (checked, admitted and
/// invalidating the cache as one); plain EXPLAIN runs nothing and is EXPLAIN.
fn query_type(statement: &Statement) -> QueryType {
    match statement {
        Statement::Explain(e) if e.options.analyze => query_type(&e.statement),
        Statement::Explain(_) => QueryType::Explain,
        Statement::CreateExternalTable(_) => QueryType::DataDefinition,
        Statement::CopyTo(_) => QueryType::Insert,
        Statement::Reset(_) => QueryType::DataDefinition,
        Statement::Statement(s) => sql_query_type(s),
    }
}

fn sql_query_type(statement: &Sql) -> QueryType {
    match statement {
        Sql::Query(_) | Sql::ShowTables { .. } | Sql::ShowColumns { .. } | Sql::ShowVariable { .. } => {
            QueryType::Select
        }
        Sql::Explain { analyze: true, statement, .. } => sql_query_type(statement),
        Sql::Explain { .. } => QueryType::Explain,
        Sql::ExplainTable { .. } => QueryType::Describe,
        Sql::Insert(_) => QueryType::Insert,
        Sql::Update { .. } => QueryType::Update,
        Sql::Merge { .. } => QueryType::Merge,
        Sql::Delete(_) | Sql::Truncate { .. } => QueryType::Delete,
        Sql::Analyze { .. } => QueryType::Analyze,
        _ => QueryType::DataDefinition,
    }
}

/// Chooses pools for statements.
#[derive(Debug, Clone)]
pub struct Router {
    pools: Vec<Arc<Pool>>,
    rules: Arc<RoutingRules>,
}

impl Router {
    /// Routes among `pools` by catalog only; the first is the default.
    pub fn new(pools: Vec<Arc<Pool>>) -> Self {
        Router { pools, rules: Arc::new(RoutingRules::default()) }
    }

    /// The same router applying routing rules first.
    pub fn with_rules(mut self, rules: RoutingRules) -> Self {
        self.rules = Arc::new(rules);
        self
    }

    /// Routes a statement: the first matching rule (or the default pool), else the first pool
    /// serving every catalog it names; a chosen pool with no usable worker hands over to the
    /// fallback pool unless the rule is strict. Returns the pool and the rule that chose it.
    pub async fn route_request(&self, request: &RouteRequest<'_>) -> Result<(Arc<Pool>, String)> {
        let mut serving = BTreeSet::new();
        for pool in &self.pools {
            let serves = request.catalogs.is_empty()
                || pool.catalog().await.is_ok_and(|view| request.catalogs.iter().all(|c| view.catalogs.contains(c)));
            if serves {
                serving.insert(pool.name.clone());
            }
        }
        let (pool, rule, strict) = match self.rules.choose(request, |p| serving.contains(p)) {
            Some(choice) => (self.pool(&choice.pool)?, choice.rule, choice.strict),
            None => (self.route(request.catalogs).await?, "catalogs".to_string(), false),
        };
        if !strict
            && !pool.workers().iter().any(|w| w.usable())
            && let Some(fallback) = self.rules.fallback_pool()
            && fallback != pool.name
            && serving.contains(fallback)
        {
            tracing::info!(from = %pool.name, to = %fallback, "pool has no usable worker: falling back");
            return Ok((self.pool(fallback)?, format!("{rule} (fallback)")));
        }
        Ok((pool, rule))
    }

    /// All pools.
    pub fn pools(&self) -> &[Arc<Pool>] {
        &self.pools
    }

    /// The pool named `name`.
    pub fn pool(&self, name: &str) -> Result<Arc<Pool>> {
        self.pools
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| GatewayError::Unavailable(format!("pool `{name}` is not configured on this gateway")))
    }

    /// The first pool that serves every catalog in `catalogs`.
    pub async fn route(&self, catalogs: &BTreeSet<String>) -> Result<Arc<Pool>> {
        let mut served = BTreeSet::new();
        let mut last_error = None;
        for pool in &self.pools {
            if catalogs.is_empty() {
                return Ok(pool.clone());
            }
            match pool.catalog().await {
                Ok(view) => {
                    if catalogs.iter().all(|c| view.catalogs.contains(c)) {
                        return Ok(pool.clone());
                    }
                    served.extend(view.catalogs.iter().cloned());
                }
                Err(e) => last_error = Some(e),
            }
        }
        let missing: Vec<&str> = catalogs.iter().filter(|c| !served.contains(*c)).map(String::as_str).collect();
        match (missing.is_empty(), last_error) {
            (false, None) => Err(GatewayError::NotFound(format!(
                "catalog{} {} not found",
                if missing.len() > 1 { "s" } else { "" },
                missing.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            ))),
            (false, Some(e)) => Err(e),
            (true, _) => Err(GatewayError::NotFound(format!(
                "no single pool serves all of the catalogs {}",
                catalogs.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(a: &Analysis) -> Vec<String> {
        a.tables.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn tables_are_qualified_with_session_defaults() {
        let a = analyze(
            "WITH x AS (SELECT * FROM lineitem) SELECT * FROM x JOIN tiny.orders o ON true JOIN other.s.t ON true",
            "tpch",
            "tiny",
        )
        .expect("analyze");
        assert_eq!(names(&a), vec!["other.s.t", "tpch.tiny.lineitem", "tpch.tiny.orders"]);
        assert_eq!(a.catalogs.into_iter().collect::<Vec<_>>(), vec!["other", "tpch"]);
        assert_eq!(a.query_type, QueryType::Select);
    }

    #[test]
    fn statement_kinds_follow_trino_names() {
        let kind = |sql: &str| analyze(sql, "c", "s").expect(sql).query_type;
        assert_eq!(kind("EXPLAIN SELECT 1"), QueryType::Explain);
        // EXPLAIN ANALYZE runs what it wraps: it is of that statement's type.
        assert_eq!(kind("EXPLAIN ANALYZE INSERT INTO t VALUES (1)"), QueryType::Insert);
        assert_eq!(kind("EXPLAIN ANALYZE DELETE FROM t"), QueryType::Delete);
        assert_eq!(kind("EXPLAIN INSERT INTO t VALUES (1)"), QueryType::Explain);
        assert_eq!(kind("EXPLAIN ANALYZE SELECT 1"), QueryType::Select);
        assert_eq!(kind("INSERT INTO t VALUES (1)"), QueryType::Insert);
        assert_eq!(kind("DELETE FROM t"), QueryType::Delete);
        assert_eq!(kind("CREATE TABLE t (a int)"), QueryType::DataDefinition);
        assert_eq!(kind("DROP TABLE t"), QueryType::DataDefinition);
        assert_eq!(kind("SELECT 1"), QueryType::Select);
    }

    #[test]
    fn bad_sql_is_an_invalid_argument() {
        for sql in ["SELEC 1", "", "SELECT 1; SELECT 2"] {
            assert!(matches!(analyze(sql, "c", "s"), Err(GatewayError::InvalidArgument(_))), "{sql}");
        }
    }
}
