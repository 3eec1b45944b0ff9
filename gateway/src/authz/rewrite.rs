//! What a plan reads, and the rewrite that puts row filters under everything the user wrote
//! and masks in place of masked columns.
//!
//! Each scan of a protected table becomes
//! `SubqueryAlias(<same name>, Projection(masks, Filter(quiver_policy_filter(filters), scan)))`.
//! The alias keeps the table's name, so nothing above the scan changes; the filter sits
//! directly on the scan, so every use of the table (views, CTEs, subqueries, both sides of a
//! self-join, UNION branches) is filtered; `quiver_policy_filter` makes the filter a barrier on
//! Quiver workers, so no predicate of the user is evaluated on a hidden row.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, TableReference};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Cast, Expr, ExprSchemable, Filter, LogicalPlan, Projection, SubqueryAlias, TableScan, TableScanBuilder,
};
use datafusion::sql::sqlparser::ast::{self, ExprWithAlias, Value, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use quiver_policies::{ColumnInfo, TableRef};

pub use quiver_engine::reads::TableRead;

/// The column names a table's policies may read when a statement runs: the columns of its row
/// filters and masks.
pub fn policy_columns(policy: &TablePolicy) -> BTreeSet<String> {
    policy.filters.iter().chain(policy.masks.values()).flat_map(|e| e.column_refs()).map(|c| c.name.clone()).collect()
}

/// The columns read, with their Trino type names: what column masks are asked for (a column
/// used anywhere, in a predicate, a join or an ORDER BY, is read).
pub fn columns_read_info(read: &TableRead) -> Vec<ColumnInfo> {
    read.schema
        .fields()
        .iter()
        .filter(|f| read.columns.contains(f.name()))
        .map(|f| ColumnInfo::new(f.name(), trino_type(f.data_type())))
        .collect()
}

/// The fully qualified name of `name` under the session defaults.
pub fn resolve(name: &TableReference, catalog: &str, schema: &str) -> TableRef {
    let r = name.clone().resolve(catalog, schema);
    TableRef::new(r.catalog.as_ref(), r.schema.as_ref(), r.table.as_ref())
}

/// Every table `plan` reads (views, CTEs and subqueries expanded by planning) with exactly the
/// columns it reads: projection pruning, plus — with `optimizer` — the columns the fully
/// optimized plan scans (decorrelated LATERAL and correlated subqueries read columns that
/// pruning alone loses). See [`quiver_engine::reads`], which workers use to check the same.
pub fn tables_read_with(
    plan: &LogicalPlan,
    catalog: &str,
    schema: &str,
    optimizer: Option<&SessionState>,
) -> BTreeMap<TableRef, TableRead> {
    quiver_engine::reads::tables_read(plan, catalog, schema, optimizer)
        .into_iter()
        .map(|(t, r)| (TableRef::new(&t.catalog, &t.schema, &t.table), r))
        .collect()
}

/// [`tables_read_with`] by projection pruning alone.
pub fn tables_read(plan: &LogicalPlan, catalog: &str, schema: &str) -> BTreeMap<TableRef, TableRead> {
    tables_read_with(plan, catalog, schema, None)
}

/// The planned row filters and masks of one table.
#[derive(Debug, Clone, Default)]
pub struct TablePolicy {
    /// Row filters; all apply.
    pub filters: Vec<Expr>,
    /// Masks by column name.
    pub masks: BTreeMap<String, Expr>,
}

impl TablePolicy {
    /// Nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.masks.is_empty()
    }
}

/// Replaces every scan of a table in `policies` by its filtered and masked form. With
/// `barrier`, the filter is wrapped in `quiver_policy_filter` (Quiver workers evaluate nothing
/// of the user's on rows it removes).
pub fn apply(
    plan: LogicalPlan,
    policies: &BTreeMap<TableRef, TablePolicy>,
    catalog: &str,
    schema: &str,
    barrier: bool,
) -> datafusion::common::Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::TableScan(scan) => {
            let table = resolve(&scan.table_name, catalog, schema);
            match policies.get(&table) {
                Some(policy) if !policy.is_empty() => Ok(Transformed::yes(wrap(scan, &table, policy, barrier)?)),
                _ => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
            }
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

fn wrap(
    scan: TableScan,
    table: &TableRef,
    policy: &TablePolicy,
    barrier: bool,
) -> datafusion::common::Result<LogicalPlan> {
    if scan.fetch.is_some() || !scan.filters.is_empty() {
        return datafusion::common::internal_err!("policy rewrite expects an unoptimized scan of {}", scan.table_name);
    }
    let name = scan.table_name.clone();
    let projection = scan.projection.clone();
    // The scan under the filter names the table in full: in the effective SQL a three-part
    // name can never resolve to a CTE or alias the statement defines.
    let qualified = TableReference::full(table.catalog.as_str(), table.schema.as_str(), table.table.as_str());
    let full = TableScanBuilder::new(qualified, scan.source.clone()).build()?;
    let mut input = LogicalPlan::TableScan(full);
    if let Some(predicate) = conjunction(policy.filters.iter().cloned()) {
        let predicate = if barrier {
            Expr::ScalarFunction(ScalarFunction::new_udf(
                Arc::new(quiver_engine::barrier::policy_filter_udf()),
                vec![predicate],
            ))
        } else {
            predicate
        };
        input = LogicalPlan::Filter(Filter::try_new(predicate, Arc::new(input))?);
    }
    // Always an explicit projection: it is what makes the unparser write a derived table
    // (`(SELECT ... WHERE filter) AS name`) instead of folding the filter into the
    // enclosing query's WHERE, where an alias would lose it.
    {
        let schema = input.schema().clone();
        let keep: Vec<usize> = projection.unwrap_or_else(|| (0..schema.fields().len()).collect());
        let mut exprs = Vec::with_capacity(keep.len());
        for i in keep {
            let (qualifier, field) = schema.qualified_field(i);
            let expr = match policy.masks.get(field.name()) {
                Some(mask) => {
                    let mask = if mask.get_type(schema.as_ref())? == *field.data_type() {
                        mask.clone()
                    } else {
                        Expr::Cast(Cast::new(Box::new(mask.clone()), field.data_type().clone()))
                    };
                    mask.alias(field.name())
                }
                None => Expr::Column(Column::from((qualifier, field))),
            };
            exprs.push(expr);
        }
        input = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(input))?);
    }
    Ok(LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(Arc::new(input), name)?))
}

/// Plans a policy's SQL expression (a row filter or a mask) over a table's columns, with
/// `current_user` replaced by `user` and `current_groups()` by the caller's groups.
pub fn plan_expression(
    state: &SessionState,
    text: &str,
    table: &DFSchema,
    user: &str,
    groups: &[String],
) -> Result<Expr, String> {
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| e.to_string())?;
    let mut expr = parser.parse_expr().map_err(|e| e.to_string())?;
    if parser.peek_token().token != Token::EOF {
        return Err(format!("unexpected text after the expression `{text}`"));
    }
    substitute_identity(&mut expr, user, groups);
    state
        .create_logical_expr_from_sql_expr(ExprWithAlias { expr, alias: None }, table)
        .map_err(|e| e.strip_backtrace().to_string())
}

fn string_literal(s: &str) -> ast::Expr {
    ast::Expr::Value(Value::SingleQuotedString(s.to_string()).into())
}

/// `current_user` (with or without parentheses) becomes the user as a literal and
/// `current_groups()` an array of the groups, so the effective query is self-contained (the
/// worker needs no identity) and two users with equal effective queries share cache entries.
fn substitute_identity(expr: &mut ast::Expr, user: &str, groups: &[String]) {
    let _ = visit_expressions_mut(expr, |e| {
        let name = match e {
            ast::Expr::Function(f) => f.name.to_string().to_ascii_lowercase(),
            ast::Expr::Identifier(id) if id.quote_style.is_none() => id.value.to_ascii_lowercase(),
            _ => String::new(),
        };
        match name.as_str() {
            "current_user" => *e = string_literal(user),
            "current_groups" => {
                let items: Vec<String> =
                    groups.iter().map(|g| format!("'{}'", g.replace('\'', "''"))).collect::<Vec<_>>();
                let text = if items.is_empty() {
                    "arrow_cast(make_array(), 'List(Utf8)')".to_string()
                } else {
                    format!("make_array({})", items.join(", "))
                };
                if let Ok(parsed) = Parser::new(&GenericDialect {}).try_with_sql(&text).and_then(|mut p| p.parse_expr())
                {
                    *e = parsed;
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Trino's name for an Arrow type, as column masks are asked about (`varchar`, `bigint`, ...).
pub fn trino_type(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => format!("decimal({p},{s})"),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("decimal({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "varchar".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            "varbinary".into()
        }
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Timestamp(unit, tz) => {
            let p = match unit {
                datafusion::arrow::datatypes::TimeUnit::Second => 0,
                datafusion::arrow::datatypes::TimeUnit::Millisecond => 3,
                datafusion::arrow::datatypes::TimeUnit::Microsecond => 6,
                datafusion::arrow::datatypes::TimeUnit::Nanosecond => 9,
            };
            if tz.is_some() { format!("timestamp({p}) with time zone") } else { format!("timestamp({p})") }
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("array({})", trino_type(f.data_type()))
        }
        DataType::Dictionary(_, v) => trino_type(v),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// True when no function in `plan` (subqueries included) can give another result on another
/// run: anything not `Immutable` (`now()`, `current_date`, `random()`, `uuid()`, ...) makes
/// a plan non-deterministic.
pub fn deterministic(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNode;
    let mut deterministic = true;
    let _ = plan.apply_with_subqueries(|node| {
        let _ = node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != datafusion::logical_expr::Volatility::Immutable
                {
                    deterministic = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        Ok(if deterministic { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    deterministic
}

/// DataFusion's default unparser dialect, with its identifier rule written without a regex:
/// the default compiles one per identifier, which was most of the cost of a rewrite.
struct EffectiveDialect;

impl datafusion::sql::unparser::dialect::Dialect for EffectiveDialect {
    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        use datafusion::sql::sqlparser::keywords::ALL_KEYWORDS;
        let mut chars = identifier.chars();
        let plain = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let upper = identifier.to_ascii_uppercase();
        // As the default dialect: `ID` is not quoted, other keywords are.
        let keyword = upper != "ID" && ALL_KEYWORDS.binary_search(&upper.as_str()).is_ok();
        (keyword || !plain).then_some('"')
    }
}

/// The SQL a worker runs for `plan`.
pub fn to_sql(plan: &LogicalPlan) -> datafusion::common::Result<String> {
    Ok(datafusion::sql::unparser::Unparser::new(&EffectiveDialect).with_pretty(true).plan_to_sql(plan)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::planning::planning_state;
    use crate::pool::{PoolCatalog, TableInfo};
    use datafusion::arrow::datatypes::{Field, Schema};

    async fn state() -> SessionState {
        let table = |name: &str, cols: &[(&str, DataType)]| TableInfo {
            catalog: "tpch".into(),
            schema: "tiny".into(),
            table: name.into(),
            table_type: "TABLE".into(),
            arrow_schema: Arc::new(Schema::new(
                cols.iter().map(|(n, t)| Field::new(*n, t.clone(), false)).collect::<Vec<_>>(),
            )),
            definition: None,
        };
        let mut catalog = PoolCatalog::default();
        catalog.catalogs.insert("tpch".into());
        catalog.schemas.insert(("tpch".into(), "tiny".into()));
        catalog.tables.push(table(
            "customer",
            &[("c_custkey", DataType::Int64), ("c_nationkey", DataType::Int32), ("c_phone", DataType::Utf8)],
        ));
        catalog.tables.push(table("nation", &[("n_nationkey", DataType::Int32), ("n_name", DataType::Utf8)]));
        let mut state = planning_state(&catalog).await.state;
        state.config_mut().options_mut().catalog.default_catalog = "tpch".into();
        state.config_mut().options_mut().catalog.default_schema = "tiny".into();
        state
    }

    async fn rewrite(sql: &str) -> String {
        rewrite_with(sql, true).await
    }

    async fn rewrite_with(sql: &str, mask: bool) -> String {
        let state = state().await;
        let plan = state.create_logical_plan(sql).await.expect("plan");
        let customer = TableRef::new("tpch", "tiny", "customer");
        let read = tables_read(&plan, "tpch", "tiny");
        let schema = DFSchema::try_from(read[&customer].schema.as_ref().clone()).expect("schema");
        let mut policy = TablePolicy::default();
        policy.filters.push(plan_expression(&state, "c_nationkey IN (6, 7)", &schema, "alice", &[]).expect("filter"));
        if mask {
            policy
                .masks
                .insert("c_phone".into(), plan_expression(&state, "'****'", &schema, "alice", &[]).expect("mask"));
        }
        let policies = BTreeMap::from([(customer, policy)]);
        let out = to_sql(&apply(plan, &policies, "tpch", "tiny", true).expect("apply")).expect("sql");
        // The effective SQL plans again.
        state.create_logical_plan(&out).await.unwrap_or_else(|e| panic!("{out}: {e}"));
        out
    }

    #[tokio::test]
    async fn columns_read_through_views_self_joins_and_ctes_are_exactly_the_ones_used() {
        let table =
            |catalog: &str, schema: &str, name: &str, cols: &[(&str, DataType)], definition: Option<&str>| TableInfo {
                catalog: catalog.into(),
                schema: schema.into(),
                table: name.into(),
                table_type: if definition.is_some() { "VIEW".into() } else { "TABLE".into() },
                arrow_schema: Arc::new(Schema::new(
                    cols.iter().map(|(n, t)| Field::new(*n, t.clone(), false)).collect::<Vec<_>>(),
                )),
                definition: definition.map(String::from),
            };
        let customer = [
            ("c_custkey", DataType::Int64),
            ("c_nationkey", DataType::Int32),
            ("c_phone", DataType::Utf8),
            ("c_acctbal", DataType::Float64),
        ];
        let mut catalog = PoolCatalog::default();
        catalog.catalogs.extend(["tpch".to_string(), "memory".to_string()]);
        catalog.schemas.insert(("tpch".into(), "tiny".into()));
        catalog.schemas.insert(("memory".into(), "default".into()));
        catalog.tables.push(table("tpch", "tiny", "customer", &customer, None));
        catalog.tables.push(table(
            "memory",
            "default",
            "obj",
            &[("c_nationkey", DataType::Int32), ("c_phone", DataType::Utf8)],
            Some("CREATE VIEW memory.default.obj AS SELECT c_nationkey, c_phone FROM tpch.tiny.customer"),
        ));
        let state = planning_state(&catalog).await.state;
        for sql in [
            "SELECT c_nationkey, c_phone FROM memory.default.obj",
            "SELECT c_nationkey, max(c_phone) FROM memory.default.obj GROUP BY c_nationkey",
            "WITH x AS (SELECT * FROM memory.default.obj) SELECT c_nationkey, c_phone FROM x WHERE c_nationkey >= 0",
            "SELECT o.c_nationkey, o.c_phone FROM memory.default.obj o WHERE EXISTS (SELECT 1 FROM memory.default.obj p \
             WHERE p.c_nationkey = o.c_nationkey)",
        ] {
            let plan = state.create_logical_plan(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            if let Err(e) = state.optimize(&plan) {
                panic!("{sql}: does not optimize: {e}");
            }
            let reads = tables_read_with(&plan, "memory", "default", Some(&state));
            let read = &reads[&TableRef::new("tpch", "tiny", "customer")];
            assert_eq!(read.columns, vec!["c_nationkey".to_string(), "c_phone".to_string()], "{sql}");
        }
    }

    #[test]
    fn identifiers_are_quoted_exactly_as_the_default_dialect_does() {
        use datafusion::sql::unparser::dialect::{DefaultDialect, Dialect};
        for id in ["c_name", "select", "Order", "id", "ID", "x y", "_a1", "1abc", "user", "é", "", "group"] {
            assert_eq!(
                EffectiveDialect.identifier_quote_style(id),
                DefaultDialect {}.identifier_quote_style(id),
                "{id}"
            );
        }
    }

    #[tokio::test]
    async fn effective_sql_for_aliases_and_self_joins_plans_again() {
        for sql in [
            "SELECT count(*) FROM customer",
            "SELECT count(*) FROM customer a JOIN customer b ON a.c_custkey = b.c_custkey",
            "SELECT c.c_phone FROM customer c JOIN nation n ON c.c_nationkey = n.n_nationkey",
            "SELECT tpch.tiny.customer.c_phone FROM tpch.tiny.customer",
            "WITH x AS (SELECT * FROM customer) SELECT * FROM x JOIN customer ON x.c_custkey = customer.c_custkey",
        ] {
            let out = rewrite(sql).await;
            assert!(out.contains("quiver_policy_filter"), "{sql} -> {out}");
            let out = rewrite_with(sql, false).await;
            assert!(out.contains("quiver_policy_filter"), "{sql} -> {out}");
        }
    }
}
