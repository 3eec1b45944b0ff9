//! Statements the gateway authorized run only against the objects they were authorized on.
//!
//! The gateway plans every statement against the catalogs it learned from the pool, checks it
//! with the access policy, and sends the worker a handle carrying [`Authorized`]: every table
//! the statement may read, the columns it may read from each, and a fingerprint of each
//! table's columns as the gateway saw them. The worker plans the statement again (it is the one
//! with the data) and refuses to run it unless that plan reads exactly such objects:
//!
//! 1. before planning, every table the statement names that the manifest lists must still be a
//!    table (not a view: the gateway expands views itself and sends their expansion) with the
//!    same columns; a view it names that the manifest does not list is refused too;
//! 2. after planning, every table the plan scans must be in the manifest, and every column it
//!    reads (projections, pushed-down filters, after optimization) must be one of its columns.
//!
//! Anything else means the objects changed between the gateway's check and this execution (a
//! table replaced by a view, columns added, a view swapped under another) or the two planners
//! disagree; the statement is refused with FAILED_PRECONDITION and the caller plans it again,
//! which authorizes it again.

use std::collections::BTreeMap;

use datafusion::common::TableReference;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::parser::Statement;
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::Statement as Sql;

use crate::error::EngineError;
use crate::handle::{Authorized, AuthorizedTable};
use crate::reads::{QualifiedName, scanned_columns, schema_fingerprint, tables_read};

/// The advice every refusal ends with.
const PLAN_AGAIN: &str = "plan the statement again (call GetFlightInfo or prepare it again)";

fn changed(what: String) -> EngineError {
    EngineError::Stale(format!("{what} since the statement was authorized; {PLAN_AGAIN}"))
}

fn by_name(authorized: &Authorized) -> BTreeMap<&QualifiedName, &AuthorizedTable> {
    authorized.tables.iter().map(|t| (&t.name, t)).collect()
}

/// Whether the statement reads no table when it runs: it only stores a view definition, drops
/// or creates an object without a query, or creates a schema.
fn reads_nothing(statement: &Statement) -> bool {
    let Statement::Statement(s) = statement else { return false };
    match s.as_ref() {
        Sql::CreateView(_) | Sql::Drop { .. } | Sql::CreateSchema { .. } | Sql::CreateDatabase { .. } => true,
        Sql::CreateTable(c) => c.query.is_none(),
        _ => false,
    }
}

/// Check 1: the objects the statement names, before it is planned.
pub async fn check_names(
    state: &SessionState,
    statement: &Statement,
    authorized: &Authorized,
    catalog: &str,
    schema: &str,
) -> Result<(), EngineError> {
    if reads_nothing(statement) {
        // Storing a view's definition reads nothing (the gateway expands views itself when
        // they are queried, so the plan the worker keeps for one never runs through the
        // gateway); nor do DROP and CREATE without a query.
        return Ok(());
    }
    let normalize = state.config_options().sql_parser.enable_ident_normalization;
    let (relations, _ctes) = resolve_table_references(statement, normalize)?;
    let listed = by_name(authorized);
    for relation in relations {
        let name = QualifiedName::resolve(&relation, catalog, schema);
        let resolved = TableReference::full(name.catalog.as_str(), name.schema.as_str(), name.table.as_str());
        let provider = match state.schema_for_ref(resolved) {
            Ok(s) => s.table(&name.table).await?,
            Err(_) => None,
        };
        match (listed.get(&name), provider) {
            (Some(_), None) => return Err(changed(format!("{name} no longer exists"))),
            (Some(table), Some(provider)) => {
                // A view is what the worker would expand by itself (a stored plan); streaming
                // tables such as information_schema's report VIEW but have none.
                if provider.get_logical_plan().is_some() {
                    return Err(changed(format!("{name} became a view")));
                }
                if schema_fingerprint(&provider.schema()) != table.fingerprint {
                    return Err(changed(format!("the columns of {name} changed")));
                }
            }
            (None, Some(provider)) if provider.get_logical_plan().is_some() => {
                return Err(changed(format!("{name} is a view the gateway did not expand")));
            }
            // Not read (a write target, a table to create, SHOW's catalog tables): check 2
            // refuses it if the plan reads it after all.
            (None, _) => {}
        }
    }
    Ok(())
}

/// Check 2: what `plan` reads. `optimized` says whether `plan` is already the optimized plan
/// that will run (queries); otherwise the reads are computed conservatively (projection pruning
/// and full optimization together).
pub fn check_reads(
    state: &SessionState,
    plan: &LogicalPlan,
    optimized: bool,
    authorized: &Authorized,
    catalog: &str,
    schema: &str,
) -> Result<(), EngineError> {
    if matches!(plan, LogicalPlan::Ddl(DdlStatement::CreateView(_))) {
        return Ok(());
    }
    let reads: BTreeMap<QualifiedName, Vec<String>> = if optimized {
        scanned_columns(plan, catalog, schema)
            .into_iter()
            .map(|(t, cols)| {
                let names = plan_table_columns(plan, &t, catalog, schema, &cols);
                (t, names)
            })
            .collect()
    } else {
        tables_read(plan, catalog, schema, Some(state)).into_iter().map(|(t, r)| (t, r.columns)).collect()
    };
    let listed = by_name(authorized);
    for (table, columns) in reads {
        let Some(allowed) = listed.get(&table) else {
            tracing::warn!(%table, "refused: the plan reads a table the gateway did not authorize");
            return Err(changed(format!("the statement now reads {table}, which it was not authorized to read")));
        };
        if let Some(extra) = columns.iter().find(|c| !allowed.columns.contains(c)) {
            tracing::warn!(%table, column = %extra, "refused: the plan reads a column the gateway did not authorize");
            return Err(EngineError::NotAllowed(format!(
                "the worker refused the statement: it reads more of {table} than the gateway authorized"
            )));
        }
    }
    Ok(())
}

/// Column names of `table` at `indices`, from any scan of it in `plan`.
fn plan_table_columns(
    plan: &LogicalPlan,
    table: &QualifiedName,
    catalog: &str,
    schema: &str,
    indices: &std::collections::BTreeSet<usize>,
) -> Vec<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut names = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && QualifiedName::resolve(&scan.table_name, catalog, schema) == *table
        {
            let source = scan.source.schema();
            names = indices.iter().filter_map(|i| source.fields().get(*i).map(|f| f.name().clone())).collect();
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    names
}
