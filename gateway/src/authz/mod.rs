//! Authorization of statements: every statement is planned in the gateway against the pool's
//! tables, checked with Trino's operations on exactly the tables and columns it touches, and —
//! when row filters or column masks apply — rewritten so the worker runs the effective query.
//!
//! Without an `[authorization]` section nothing is planned here: every statement goes to the
//! worker as written (the authorizer allows everything).

pub mod planning;
pub mod rewrite;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::common::{DFSchema, TableReference};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{DdlStatement, DmlStatement, Expr, LogicalPlan, WriteOp};
use parking_lot::Mutex;
use quiver_auth::Identity;
use quiver_policies::{Operation, PolicyError, Resource, TableRef};
use sha2::{Digest, Sha256};

use crate::auth_layer::CallContext;
use crate::error::{GatewayError, Result};
use crate::flight::GatewayService;
use crate::pool::{Pool, PoolCatalog};
use planning::{Planning, planning_state};
use rewrite::{TablePolicy, TableRead, plan_expression, resolve, tables_read};

/// How statements are authorized.
#[derive(Debug, Default)]
pub struct Enforcement {
    /// Plan and check every statement (false: the authorizer allows everything).
    pub enabled: bool,
    /// Plan every statement even without a policy (the result cache needs the tables read
    /// and whether the statement is deterministic).
    pub plan_always: bool,
    /// Pools whose workers understand `quiver_policy_filter` (the row-filter barrier).
    pub barrier_pools: BTreeSet<String>,
    planning: Mutex<BTreeMap<String, PlanningFor>>,
}

/// A pool's planning context and the catalog view it was built from.
type PlanningFor = (Arc<PoolCatalog>, Arc<Planning>);

impl Enforcement {
    /// Enforcement on (a policy is configured), with the barrier on `barrier_pools`.
    pub fn new(enabled: bool, barrier_pools: BTreeSet<String>) -> Self {
        Enforcement { enabled, plan_always: false, barrier_pools, planning: Mutex::new(BTreeMap::new()) }
    }

    /// The same, planning every statement even without a policy.
    pub fn planning_always(mut self, on: bool) -> Self {
        self.plan_always = on;
        self
    }

    async fn planning(&self, pool: &Pool) -> Result<(Arc<PoolCatalog>, Arc<Planning>)> {
        let view = pool.catalog().await?;
        if let Some((seen, planning)) = self.planning.lock().get(&pool.name)
            && Arc::ptr_eq(seen, &view)
        {
            return Ok((view, planning.clone()));
        }
        let planning = Arc::new(planning_state(&view).await);
        self.planning.lock().insert(pool.name.clone(), (view.clone(), planning.clone()));
        Ok((view, planning))
    }
}

/// A statement after authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// What the worker runs: the statement as written, or its rewritten form.
    pub sql: String,
    /// Whether row filters or column masks changed it.
    pub rewritten: bool,
    /// Tables that had row filters or masks for the caller.
    pub protected: Vec<TableRef>,
    /// For a query (not EXPLAIN, DML or DDL) that was planned: what the cache needs.
    pub facts: Option<QueryFacts>,
}

/// What the result cache needs to know about a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryFacts {
    /// Tables read (views expanded).
    pub tables: BTreeSet<TableRef>,
    /// No function whose result can change between runs (`now()`, `random()`, `uuid()`...).
    pub deterministic: bool,
}

impl QueryFacts {
    fn of(plan: &LogicalPlan, catalog: &str, schema: &str) -> Self {
        QueryFacts {
            tables: tables_read(plan, catalog, schema).into_keys().collect(),
            deterministic: rewrite::deterministic(plan),
        }
    }
}

impl Effective {
    fn unchanged(sql: &str) -> Self {
        Effective { sql: sql.to_string(), rewritten: false, protected: Vec::new(), facts: None }
    }

    /// A digest of the effective SQL (prepared statements compare it at execution).
    pub fn digest(&self) -> String {
        Sha256::digest(self.sql.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

fn denied(message: String) -> GatewayError {
    GatewayError::PermissionDenied(message)
}

fn engine_error(e: quiver_engine::error::EngineError) -> GatewayError {
    GatewayError::Worker(tonic::Status::from(e))
}

/// A policy expression that does not plan: fail closed, naming the table.
fn broken_policy(kind: &str, table: &TableRef, text: &str, error: String) -> GatewayError {
    tracing::error!(%table, expression = text, %error, "{kind} from the access policy does not plan");
    GatewayError::Policy(PolicyError::Unavailable(format!(
        "the {kind} on {table} from the access policy is not a valid expression ({error})"
    )))
}

impl GatewayService {
    /// Authorizes `sql` for the caller and returns what the worker runs. Checks, by statement:
    /// queries — AccessCatalog and SelectFromColumns for every table read (views expanded),
    /// then row filters and masks; writes — InsertIntoTable, DeleteFromTable,
    /// UpdateTableColumns, CreateTable, CreateView, DropTable, DropView, CreateSchema,
    /// DropSchema on the target plus the reads; EXPLAIN — as its statement, refused when the
    /// plan would show a filter or mask.
    pub(crate) async fn enforce(
        &self,
        ctx: &CallContext,
        pool: &Arc<Pool>,
        sql: &str,
        catalog: &str,
        schema: &str,
        catalogs_checked: &BTreeSet<String>,
    ) -> Result<Effective> {
        if !self.enforcement.enabled && !self.enforcement.plan_always {
            return Ok(Effective::unchanged(sql));
        }
        let (view, planning) = self.enforcement.planning(pool).await?;
        let mut state = planning.state.clone();
        let options = state.config_mut().options_mut();
        options.catalog.default_catalog = catalog.to_string();
        options.catalog.default_schema = schema.to_string();
        let plan = quiver_engine::sql::plan(&state, sql).await.map_err(engine_error)?;
        if !self.enforcement.enabled {
            let mut effective = Effective::unchanged(sql);
            if is_query(&plan) {
                effective.facts = Some(QueryFacts::of(&plan, catalog, schema));
            }
            return Ok(effective);
        }
        let scope = Scope {
            ctx,
            state: &state,
            catalog,
            schema,
            view: &view,
            planning: &planning,
            pool: &pool.name,
            catalogs_checked,
        };
        match &plan {
            LogicalPlan::Explain(e) => {
                self.refuse_if_protected(&scope, &e.plan, "EXPLAIN").await?;
                Ok(Effective::unchanged(sql))
            }
            LogicalPlan::Analyze(a) => {
                self.refuse_if_protected(&scope, &a.input, "EXPLAIN ANALYZE").await?;
                Ok(Effective::unchanged(sql))
            }
            LogicalPlan::Dml(dml) => {
                self.authorize_dml(&scope, dml).await?;
                Ok(Effective::unchanged(sql))
            }
            LogicalPlan::Ddl(ddl) => {
                self.authorize_ddl(&scope, ddl).await?;
                Ok(Effective::unchanged(sql))
            }
            LogicalPlan::DescribeTable(_) => Err(denied(
                "DESCRIBE is not available under an access policy; use SHOW COLUMNS or information_schema.columns, \
                 which list only the columns you may see"
                    .into(),
            )),
            LogicalPlan::Statement(_) | LogicalPlan::Copy(_) => {
                Err(denied(format!("this statement is not allowed under an access policy: {}", first_words(sql))))
            }
            _ => self.authorize_query(&scope, plan, sql).await,
        }
    }

    async fn authorize_query(&self, scope: &Scope<'_>, plan: LogicalPlan, sql: &str) -> Result<Effective> {
        let policies = self.read_policies(scope, &plan).await?;
        let tables: BTreeSet<TableRef> = policies.keys().cloned().collect();
        if policies.values().all(TablePolicy::is_empty) {
            let mut effective = Effective::unchanged(sql);
            effective.facts = Some(QueryFacts { tables, deterministic: rewrite::deterministic(&plan) });
            return Ok(effective);
        }
        let protected: Vec<TableRef> = policies.iter().filter(|(_, p)| !p.is_empty()).map(|(t, _)| t.clone()).collect();
        let barrier = self.enforcement.barrier_pools.contains(scope.pool);
        let rewritten = rewrite::apply(plan, &policies, scope.catalog, scope.schema, barrier)
            .map_err(|e| GatewayError::Internal(format!("applying row filters and masks: {e}")))?;
        let effective = rewrite::to_sql(&rewritten).map_err(|e| {
            GatewayError::InvalidArgument(format!(
                "this statement cannot be rewritten with the row filters and masks that apply to it: {e}"
            ))
        })?;
        tracing::debug!(user = %scope.ctx.identity.user, tables = ?protected.iter().map(|t| t.to_string()).collect::<Vec<_>>(), "row filters and masks applied");
        let facts = QueryFacts { tables, deterministic: rewrite::deterministic(&rewritten) };
        Ok(Effective { sql: effective, rewritten: true, protected, facts: Some(facts) })
    }

    async fn refuse_if_protected(&self, scope: &Scope<'_>, plan: &LogicalPlan, what: &str) -> Result<()> {
        let policies = self.read_policies(scope, plan).await?;
        if let Some((table, _)) = policies.iter().find(|(_, p)| !p.is_empty()) {
            return Err(denied(format!(
                "{what} is refused: {table} has a row filter or column mask for {}, and the plan would show it",
                scope.ctx.identity.user
            )));
        }
        Ok(())
    }

    /// Checks every table `plan` reads and returns the planned filters and masks per table.
    async fn read_policies(&self, scope: &Scope<'_>, plan: &LogicalPlan) -> Result<BTreeMap<TableRef, TablePolicy>> {
        let reads = tables_read(plan, scope.catalog, scope.schema);
        self.policies_for(scope, &reads).await
    }

    async fn policies_for(
        &self,
        scope: &Scope<'_>,
        reads: &BTreeMap<TableRef, TableRead>,
    ) -> Result<BTreeMap<TableRef, TablePolicy>> {
        let id = &scope.ctx.identity;
        let mut out = BTreeMap::new();
        // AccessCatalog for the catalogs the statement names was asked when it was admitted;
        // catalogs reached only through views are asked here.
        let mut catalogs_checked = scope.catalogs_checked.clone();
        let mut visible: Option<PoolCatalog> = None;
        for (table, read) in reads {
            if table.schema == "information_schema" {
                if visible.is_none() {
                    visible = Some(self.visible_in(scope.ctx, scope.view).await?);
                }
                let text = info_schema_filter(table, visible.as_ref().unwrap_or(&PoolCatalog::default()))?;
                let df = unqualified(read)?;
                let expr = plan_expression(scope.state, &text, &df, &id.user, &id.groups)
                    .map_err(|e| GatewayError::Internal(format!("information_schema filter: {e}")))?;
                out.insert(table.clone(), TablePolicy { filters: vec![expr], masks: BTreeMap::new() });
                continue;
            }
            if scope.planning.opaque_views.contains(table) {
                return Err(denied(format!(
                    "view {table} cannot be expanded by the gateway (its definition is unknown here), so the \
                     policies of the tables it reads cannot be applied"
                )));
            }
            if catalogs_checked.insert(table.catalog.clone()) {
                self.authorizer.check(id, Operation::AccessCatalog, &Resource::Catalog(table.catalog.clone())).await?;
            }
            let resource = Resource::Table { table: table.clone(), columns: read.columns.clone() };
            self.authorizer.check(id, Operation::SelectFromColumns, &resource).await?;
            out.insert(table.clone(), self.table_policy(scope, table, read).await?);
        }
        Ok(out)
    }

    /// The row filters and masks of one table for the caller, planned over its columns.
    async fn table_policy(&self, scope: &Scope<'_>, table: &TableRef, read: &TableRead) -> Result<TablePolicy> {
        let id = &scope.ctx.identity;
        let filters = self.authorizer.row_filters(id, table).await?;
        // Masks only matter for the columns the statement reads.
        let columns = read.columns_read_info();
        let masks = if columns.is_empty() {
            BTreeMap::new()
        } else {
            self.authorizer.column_masks(id, table, &columns).await?
        };
        if filters.is_empty() && masks.is_empty() {
            return Ok(TablePolicy::default());
        }
        let df = unqualified(read)?;
        let mut policy = TablePolicy::default();
        for f in filters {
            let (user, groups) = as_identity(id, f.identity.as_deref());
            let expr = plan_expression(scope.state, &f.expression, &df, user, groups)
                .map_err(|e| broken_policy("row filter", table, &f.expression, e))?;
            policy.filters.push(expr);
        }
        for (column, mask) in masks {
            if read.schema.field_with_name(&column).is_err() {
                continue;
            }
            let (user, groups) = as_identity(id, mask.identity.as_deref());
            let expr = plan_expression(scope.state, &mask.expression, &df, user, groups)
                .map_err(|e| broken_policy("column mask", table, &mask.expression, e))?;
            policy.masks.insert(column, expr);
        }
        Ok(policy)
    }

    async fn authorize_dml(&self, scope: &Scope<'_>, dml: &DmlStatement) -> Result<()> {
        let id = &scope.ctx.identity;
        let target = resolve(&dml.table_name, scope.catalog, scope.schema);
        let (operation, columns) = match &dml.op {
            WriteOp::Insert(_) => (Operation::InsertIntoTable, vec![]),
            WriteOp::Delete | WriteOp::Truncate => (Operation::DeleteFromTable, vec![]),
            WriteOp::Update => (Operation::UpdateTableColumns, updated_columns(&dml.input)),
            WriteOp::Ctas => (Operation::CreateTable, vec![]),
            _ => return Err(denied(format!("{} is not allowed under an access policy", dml.op.name()))),
        };
        self.authorizer.check(id, Operation::AccessCatalog, &Resource::Catalog(target.catalog.clone())).await?;
        self.authorizer.check(id, operation, &Resource::Table { table: target.clone(), columns }).await?;
        let mut reads = tables_read(&dml.input, scope.catalog, scope.schema);
        if matches!(dml.op, WriteOp::Delete | WriteOp::Update | WriteOp::Truncate)
            && let Some(read) = reads.remove(&target)
        {
            // Rows of the target are changed, not returned; but a filter or mask on it
            // cannot be honoured by a write.
            let policy = self.table_policy(scope, &target, &read).await?;
            if !policy.is_empty() {
                return Err(denied(format!(
                    "{target} has a row filter or column mask for {}; it cannot be changed through Quiver",
                    id.user
                )));
            }
        }
        self.refuse_protected_reads(scope, &reads, "a statement that writes").await
    }

    async fn refuse_protected_reads(
        &self,
        scope: &Scope<'_>,
        reads: &BTreeMap<TableRef, TableRead>,
        what: &str,
    ) -> Result<()> {
        let policies = self.policies_for(scope, reads).await?;
        if let Some((table, _)) = policies.iter().find(|(_, p)| !p.is_empty()) {
            return Err(denied(format!(
                "{what} may not read {table}: it has a row filter or column mask for {}",
                scope.ctx.identity.user
            )));
        }
        Ok(())
    }

    async fn authorize_ddl(&self, scope: &Scope<'_>, ddl: &DdlStatement) -> Result<()> {
        let id = &scope.ctx.identity;
        let table_op = |op: Operation, name: &TableReference| {
            let table = resolve(name, scope.catalog, scope.schema);
            (op, Resource::Table { table, columns: vec![] })
        };
        let schema_resource = |name: &str| {
            let (catalog, schema) = match name.split_once('.') {
                Some((c, s)) => (c.to_string(), s.to_string()),
                None => (scope.catalog.to_string(), name.to_string()),
            };
            Resource::Schema { catalog, schema }
        };
        let (operation, resource, input) = match ddl {
            DdlStatement::CreateMemoryTable(c) => {
                let (op, r) = table_op(Operation::CreateTable, &c.name);
                (op, r, Some(c.input.as_ref()))
            }
            DdlStatement::CreateView(c) => {
                let (op, r) = table_op(Operation::CreateView, &c.name);
                (op, r, Some(c.input.as_ref()))
            }
            DdlStatement::DropTable(d) => {
                let (op, r) = table_op(Operation::DropTable, &d.name);
                (op, r, None)
            }
            DdlStatement::DropView(d) => {
                let (op, r) = table_op(Operation::DropView, &d.name);
                (op, r, None)
            }
            DdlStatement::CreateCatalogSchema(c) => (Operation::CreateSchema, schema_resource(&c.schema_name), None),
            DdlStatement::DropCatalogSchema(d) => {
                let name = match &d.name {
                    datafusion::common::SchemaReference::Bare { schema } => schema.to_string(),
                    datafusion::common::SchemaReference::Full { catalog, schema } => format!("{catalog}.{schema}"),
                };
                (Operation::DropSchema, schema_resource(&name), None)
            }
            other => {
                return Err(denied(format!("{} is not allowed under an access policy", other.name())));
            }
        };
        let catalog = match &resource {
            Resource::Table { table, .. } => table.catalog.clone(),
            Resource::Schema { catalog, .. } => catalog.clone(),
            _ => scope.catalog.to_string(),
        };
        self.authorizer.check(id, Operation::AccessCatalog, &Resource::Catalog(catalog)).await?;
        self.authorizer.check(id, operation, &resource).await?;
        if let Some(input) = input {
            let reads = tables_read(input, scope.catalog, scope.schema);
            if matches!(ddl, DdlStatement::CreateView(_)) {
                // A view runs with the rights of whoever queries it (the gateway expands it
                // and applies their filters), so its creator only needs to read what it reads.
                self.policies_for(scope, &reads).await?;
            } else {
                self.refuse_protected_reads(scope, &reads, "CREATE TABLE AS").await?;
            }
        }
        Ok(())
    }
}

/// What `enforce` works with for one statement.
struct Scope<'a> {
    ctx: &'a CallContext,
    state: &'a SessionState,
    catalog: &'a str,
    schema: &'a str,
    view: &'a PoolCatalog,
    planning: &'a Planning,
    pool: &'a str,
    /// Catalogs whose AccessCatalog was already allowed for this call.
    catalogs_checked: &'a BTreeSet<String>,
}

fn as_identity<'a>(id: &'a Identity, other: Option<&'a str>) -> (&'a str, &'a [String]) {
    match other {
        Some(user) if user != id.user => (user, &[]),
        _ => (&id.user, &id.groups),
    }
}

fn unqualified(read: &TableRead) -> Result<DFSchema> {
    DFSchema::try_from(read.schema.as_ref().clone())
        .map_err(|e| GatewayError::Internal(format!("table schema for policy expressions: {e}")))
}

/// Columns an UPDATE assigns: the input projection's expressions that are not the column
/// itself.
fn updated_columns(input: &LogicalPlan) -> Vec<String> {
    let LogicalPlan::Projection(p) = input else { return vec![] };
    p.expr
        .iter()
        .filter_map(|e| match e {
            Expr::Alias(a) => match a.expr.as_ref() {
                Expr::Column(c) if c.name == a.name => None,
                _ => Some(a.name.clone()),
            },
            _ => None,
        })
        .collect()
}

/// A statement that returns rows and changes nothing (not EXPLAIN, DML, DDL or a session
/// statement).
fn is_query(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::DescribeTable(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Copy(_)
    )
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn in_list(column: &str, values: &BTreeSet<&str>) -> String {
    if values.is_empty() {
        return "false".into();
    }
    format!("{column} IN ({})", values.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", "))
}

/// The row filter that narrows an `information_schema` table to what the caller may see.
fn info_schema_filter(table: &TableRef, visible: &PoolCatalog) -> Result<String> {
    let catalogs: BTreeSet<&str> = visible.catalogs.iter().map(String::as_str).collect();
    // information_schema's own tables are listed in every catalog the caller sees.
    let own = |cat_col: &str, schema_col: &str| {
        format!("({} AND {schema_col} = 'information_schema')", in_list(cat_col, &catalogs))
    };
    let mut by_schema: BTreeMap<(&str, &str), Vec<&crate::pool::TableInfo>> = BTreeMap::new();
    for t in &visible.tables {
        by_schema.entry((t.catalog.as_str(), t.schema.as_str())).or_default().push(t);
    }
    let tables = |with_columns: bool| {
        let mut parts = vec![own("table_catalog", "table_schema")];
        for ((c, s), ts) in &by_schema {
            let inner = if with_columns {
                ts.iter()
                    .map(|t| {
                        let cols: BTreeSet<&str> = t.arrow_schema.fields().iter().map(|f| f.name().as_str()).collect();
                        format!("(table_name = {} AND {})", quote(&t.table), in_list("column_name", &cols))
                    })
                    .collect::<Vec<_>>()
                    .join(" OR ")
            } else {
                in_list("table_name", &ts.iter().map(|t| t.table.as_str()).collect())
            };
            parts.push(format!("(table_catalog = {} AND table_schema = {} AND ({inner}))", quote(c), quote(s)));
        }
        parts.join(" OR ")
    };
    match table.table.as_str() {
        "tables" | "views" => Ok(tables(false)),
        "columns" => Ok(tables(true)),
        "schemata" => {
            let mut parts = vec![own("catalog_name", "schema_name")];
            for (c, s) in &visible.schemas {
                parts.push(format!("(catalog_name = {} AND schema_name = {})", quote(c), quote(s)));
            }
            Ok(parts.join(" OR "))
        }
        // Settings and functions name no data object.
        "df_settings" | "routines" | "parameters" => Ok("true".into()),
        other => Err(denied(format!("information_schema.{other} is not available under an access policy"))),
    }
}
