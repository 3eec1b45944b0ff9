//! What a logical plan reads: every table it scans (through views, CTEs and subqueries) and
//! the columns it reads from each.
//!
//! The gateway authorizes a statement on exactly these tables and columns; a worker that runs
//! a statement the gateway authorized ([`crate::authorized`]) checks the plan it is about to
//! execute against the same sets. Both sides therefore compute them here, the same way.
//!
//! Columns are counted on the fully optimized plan, the one that runs (decorrelation turns the
//! outer references of LATERAL, correlated and scalar subqueries into joins, and only the
//! optimized scans show every column such a plan reads), together with the scans projection
//! pruning narrows (the optimizer may drop a column the caller wrote, e.g. in a contradiction).
//! A scan's pushed-down filters count as reads too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::TableReference;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::{Optimizer, OptimizerContext, OptimizerRule};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A table's fully qualified name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QualifiedName {
    /// Catalog.
    pub catalog: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
}

impl QualifiedName {
    /// `catalog.schema.table`.
    pub fn new(catalog: &str, schema: &str, table: &str) -> Self {
        QualifiedName { catalog: catalog.into(), schema: schema.into(), table: table.into() }
    }

    /// The fully qualified name of `name` under the session defaults.
    pub fn resolve(name: &TableReference, catalog: &str, schema: &str) -> Self {
        let r = name.clone().resolve(catalog, schema);
        QualifiedName::new(r.catalog.as_ref(), r.schema.as_ref(), r.table.as_ref())
    }
}

impl std::fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.catalog, self.schema, self.table)
    }
}

/// A table a plan reads, with the columns it reads from it (over all its scans).
#[derive(Debug, Clone)]
pub struct TableRead {
    /// The table's columns, all of them, as the plan knows them.
    pub schema: SchemaRef,
    /// The columns the statement reads, in table order (empty for `count(*)`).
    pub columns: Vec<String>,
}

/// A digest of a table's columns (names and types): what the gateway saw when it authorized a
/// statement, compared by the worker before it runs it.
pub fn schema_fingerprint(schema: &Schema) -> String {
    let mut h = Sha256::new();
    for f in schema.fields() {
        h.update((f.name().len() as u64).to_le_bytes());
        h.update(f.name().as_bytes());
        let t = f.data_type().to_string();
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn scans(plan: &LogicalPlan) -> Vec<TableScan> {
    let mut out = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            out.push(scan.clone());
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

/// The column indices a scan reads: its projection plus the columns of filters pushed into it.
pub fn scan_columns(scan: &TableScan) -> BTreeSet<usize> {
    let schema = scan.source.schema();
    let mut used: BTreeSet<usize> = match &scan.projection {
        Some(p) => p.iter().copied().collect(),
        None => (0..schema.fields().len()).collect(),
    };
    for filter in &scan.filters {
        for column in filter.column_refs() {
            if let Ok(i) = schema.index_of(&column.name) {
                used.insert(i);
            }
        }
    }
    used
}

/// The columns every scan of `plan` reads, by table.
pub fn scanned_columns(plan: &LogicalPlan, catalog: &str, schema: &str) -> BTreeMap<QualifiedName, BTreeSet<usize>> {
    let mut used: BTreeMap<QualifiedName, BTreeSet<usize>> = BTreeMap::new();
    for scan in scans(plan) {
        used.entry(QualifiedName::resolve(&scan.table_name, catalog, schema)).or_default().extend(scan_columns(&scan));
    }
    used
}

/// The columns of the scans that have a projection (pruned ones), by table.
fn projected_columns(plan: &LogicalPlan, catalog: &str, schema: &str) -> BTreeMap<QualifiedName, BTreeSet<usize>> {
    let mut used: BTreeMap<QualifiedName, BTreeSet<usize>> = BTreeMap::new();
    for scan in scans(plan).iter().filter(|s| s.projection.is_some()) {
        used.entry(QualifiedName::resolve(&scan.table_name, catalog, schema)).or_default().extend(scan_columns(scan));
    }
    used
}

/// Every table `plan` reads (views, CTEs and subqueries are already expanded by planning), with
/// exactly the columns it reads: with `optimizer`, those of the fully optimized plan and of the
/// scans projection pruning narrows (see the module docs), else of projection pruning; a plan
/// that does not optimize counts every column of every table it reads.
pub fn tables_read(
    plan: &LogicalPlan,
    catalog: &str,
    schema: &str,
    optimizer: Option<&SessionState>,
) -> BTreeMap<QualifiedName, TableRead> {
    let mut out: BTreeMap<QualifiedName, TableRead> = BTreeMap::new();
    for scan in scans(plan) {
        out.entry(QualifiedName::resolve(&scan.table_name, catalog, schema))
            .or_insert_with(|| TableRead { schema: scan.source.schema(), columns: Vec::new() });
    }
    let all = |out: &BTreeMap<QualifiedName, TableRead>| {
        out.iter().map(|(t, r)| (t.clone(), (0..r.schema.fields().len()).collect())).collect()
    };
    // Projection pruning alone gives exact columns for the scans it prunes; it leaves the
    // scans of subqueries unpruned (they would count every column) and loses columns only
    // decorrelation reveals (LATERAL). The fully optimized plan, the one that runs, has those;
    // but it may drop what the caller wrote (`WHERE a = 1 AND a = 2` empties a scan). The
    // union of the pruned scans and the optimized ones counts both. Every column of every
    // table counts as read when neither tells.
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![Arc::new(OptimizeProjections::new())];
    let pruned = Optimizer::with_rules(rules).optimize(plan.clone(), &OptimizerContext::new(), |_, _| {});
    let optimized = optimizer.map(|state| state.optimize(plan).map(|p| scanned_columns(&p, catalog, schema)));
    let mut used: BTreeMap<QualifiedName, BTreeSet<usize>> = match (pruned, optimized) {
        (pruned, Some(Ok(mut columns))) => {
            if let Ok(pruned) = pruned {
                for (t, cols) in projected_columns(&pruned, catalog, schema) {
                    columns.entry(t).or_default().extend(cols);
                }
            }
            columns
        }
        (Ok(pruned), None) => scanned_columns(&pruned, catalog, schema),
        (pruned, optimized) => {
            tracing::debug!(pruned = ?pruned.err(), optimized = ?optimized.and_then(|o| o.err()), "counting all columns");
            all(&out)
        }
    };
    for (t, read) in out.iter_mut() {
        let indices = used.remove(t).unwrap_or_default();
        read.columns =
            indices.into_iter().filter_map(|i| read.schema.fields().get(i).map(|f| f.name().clone())).collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::datasource::empty::EmptyTable;
    use datafusion::prelude::SessionContext;

    fn ctx() -> SessionContext {
        let ctx = SessionContext::new();
        let customer = Schema::new(vec![
            Field::new("c_custkey", DataType::Int64, false),
            Field::new("c_name", DataType::Utf8, false),
            Field::new("c_acctbal", DataType::Float64, false),
        ]);
        ctx.register_table("customer", Arc::new(EmptyTable::new(Arc::new(customer)))).expect("register");
        let r = Schema::new(vec![Field::new("value", DataType::Int64, false)]);
        ctx.register_table("r", Arc::new(EmptyTable::new(Arc::new(r)))).expect("register");
        ctx
    }

    async fn columns(sql: &str) -> Vec<String> {
        let ctx = ctx();
        let state = ctx.state();
        let plan = state.create_logical_plan(sql).await.expect("plan");
        let reads = tables_read(&plan, "datafusion", "public", Some(&state));
        reads[&QualifiedName::new("datafusion", "public", "customer")].columns.clone()
    }

    #[tokio::test]
    async fn columns_used_only_inside_lateral_and_correlated_subqueries_are_read() {
        let lateral = "SELECT c.c_custkey, x.value FROM customer c, \
                       LATERAL (SELECT r.value FROM r WHERE r.value = CAST(c.c_acctbal * 100 AS BIGINT)) x";
        assert!(columns(lateral).await.contains(&"c_acctbal".to_string()), "LATERAL");
        let correlated = "SELECT c_custkey FROM customer c WHERE EXISTS \
                          (SELECT 1 FROM r WHERE r.value = CAST(c.c_acctbal AS BIGINT))";
        assert!(columns(correlated).await.contains(&"c_acctbal".to_string()), "EXISTS");
        let scalar = "SELECT c_custkey, (SELECT max(value) FROM r WHERE r.value > c.c_acctbal) FROM customer c";
        assert!(columns(scalar).await.contains(&"c_acctbal".to_string()), "scalar subquery");
        let window = "SELECT c_custkey, row_number() OVER (PARTITION BY c_acctbal ORDER BY c_name) FROM customer";
        let cols = columns(window).await;
        assert!(cols.contains(&"c_acctbal".to_string()) && cols.contains(&"c_name".to_string()), "{cols:?}");
        let sets = "SELECT c_name, count(*) FROM customer GROUP BY GROUPING SETS ((c_name), (c_acctbal))";
        assert!(columns(sets).await.contains(&"c_acctbal".to_string()), "GROUPING SETS");
        assert_eq!(columns("SELECT count(*) FROM customer").await, Vec::<String>::new());
        assert_eq!(columns("SELECT c_name FROM customer").await, vec!["c_name".to_string()]);
        // A contradiction the optimizer folds away still reads what the caller wrote.
        let folded = columns("SELECT c_name FROM customer WHERE c_acctbal = 1 AND c_acctbal = 2").await;
        assert_eq!(folded, vec!["c_name".to_string(), "c_acctbal".to_string()]);
    }

    #[test]
    fn fingerprints_change_with_names_and_types() {
        let a = Schema::new(vec![Field::new("a", DataType::Int64, false)]);
        let b = Schema::new(vec![Field::new("a", DataType::Int32, false)]);
        let c = Schema::new(vec![Field::new("b", DataType::Int64, false)]);
        let a_nullable = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        assert_ne!(schema_fingerprint(&a), schema_fingerprint(&b));
        assert_ne!(schema_fingerprint(&a), schema_fingerprint(&c));
        assert_eq!(schema_fingerprint(&a), schema_fingerprint(&a_nullable));
    }
}
