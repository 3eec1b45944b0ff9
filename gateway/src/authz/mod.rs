//! Authorization of statements: every statement is planned in the gateway against the pool's
//! tables, checked with Trino's operations on exactly the tables and columns it touches, and —
//! when row filters or column masks apply — rewritten so the worker runs the effective query.
//! What the worker runs is bound to what was checked: views are expanded here (never by the
//! worker), the session defaults travel with the statement, and the objects and columns it was
//! authorized against go with it as an [`Authorized`] manifest that Quiver workers verify
//! before every execution (see `quiver_engine::authorized` and docs/authorization.md).
//!
//! Without an `[authorization]` section nothing is planned here: every statement goes to the
//! worker as written (the authorizer allows everything).

pub mod planning;
pub mod rewrite;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DFSchema, TableReference};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{DdlStatement, DmlStatement, Expr, LogicalPlan, WriteOp};
use parking_lot::Mutex;
use quiver_auth::Identity;
use quiver_engine::handle::{Authorized, AuthorizedTable};
use quiver_engine::reads::{QualifiedName, schema_fingerprint};
use quiver_policies::{Operation, PolicyError, Resource, TableRef};
use sha2::{Digest, Sha256};

use crate::auth_layer::CallContext;
use crate::error::{GatewayError, Result};
use crate::flight::GatewayService;
use crate::pool::{Pool, PoolCatalog};
use planning::{Planning, planning_state};
use rewrite::{TablePolicy, TableRead, columns_read_info, plan_expression, resolve, tables_read, tables_read_with};

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
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// What the worker runs: the statement as written, or — when row filters or masks apply,
    /// or it reads views — the authorized plan written back as SQL (views expanded as the
    /// gateway expanded them, every table fully qualified).
    pub sql: String,
    /// Whether `sql` differs from the statement as written.
    pub rewritten: bool,
    /// Tables that had row filters or masks for the caller.
    pub protected: Vec<TableRef>,
    /// For a query (not EXPLAIN, DML or DDL) that was planned: what the cache needs.
    pub facts: Option<QueryFacts>,
    /// Under an access policy: the objects the statement was authorized against, which a
    /// Quiver worker checks before it runs the statement ([`quiver_engine::authorized`]).
    pub authorized: Option<Authorized>,
    /// The statement's result columns as planned (None for statements without rows).
    pub output: Option<SchemaRef>,
    /// Its parameters (`$1`, `$2`, ...) with their types, in order.
    pub parameters: Vec<(String, DataType)>,
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
        Effective {
            sql: sql.to_string(),
            rewritten: false,
            protected: Vec::new(),
            facts: None,
            authorized: None,
            output: None,
            parameters: Vec::new(),
        }
    }

    /// A digest of what the worker runs: the effective SQL and the objects it was authorized
    /// against (prepared statements compare it at execution: a changed policy or a changed
    /// object gives another digest).
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.sql.as_bytes());
        if let Some(a) = &self.authorized {
            h.update(b"\n");
            h.update(serde_json::to_vec(a).unwrap_or_default());
        }
        h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
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
    /// DropSchema on the target plus the reads; EXPLAIN and EXPLAIN ANALYZE — as the statement
    /// they wrap, refused when the plan would show a filter or mask.
    ///
    /// Under a policy, an error never names what the caller may not see: a statement that does
    /// not plan, or that is denied, is planned again against only what the caller may see, and
    /// that error is the one returned (so a hidden table is "not found", like a missing one).
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
        let planned = quiver_engine::sql::plan(&state, sql).await;
        if !self.enforcement.enabled {
            let plan = planned.map_err(engine_error)?;
            let mut effective = Effective::unchanged(sql);
            if is_query(&plan) {
                effective.facts = Some(QueryFacts::of(&plan, catalog, schema));
            }
            return Ok(effective);
        }
        let plan = match planned {
            Ok(plan) => plan,
            Err(e) => return Err(self.as_the_caller_sees_it(ctx, &view, sql, catalog, schema, engine_error(e)).await),
        };
        let scope = Scope {
            ctx,
            state: &state,
            catalog,
            schema,
            view: &view,
            planning: &planning,
            pool: &pool.name,
            catalogs_checked,
            views_named: views_named(&state, &planning, sql, catalog, schema),
        };
        match self.authorize(&scope, plan, sql).await {
            Err(e @ GatewayError::Policy(PolicyError::Denied { .. })) => {
                Err(self.as_the_caller_sees_it(ctx, &view, sql, catalog, schema, e).await)
            }
            other => other,
        }
    }

    /// `error` as the caller may see it: the statement is planned again against only the
    /// tables and columns the caller may see; if that fails, its error (which can name nothing
    /// hidden, and says "not found" for hidden objects exactly as for missing ones) replaces
    /// `error`.
    async fn as_the_caller_sees_it(
        &self,
        ctx: &CallContext,
        view: &PoolCatalog,
        sql: &str,
        catalog: &str,
        schema: &str,
        error: GatewayError,
    ) -> GatewayError {
        let visible = match self.visible_in(ctx, view).await {
            Ok(v) => v,
            Err(e) => return e,
        };
        let mut state = planning_state(&visible).await.state;
        let options = state.config_mut().options_mut();
        options.catalog.default_catalog = catalog.to_string();
        options.catalog.default_schema = schema.to_string();
        match quiver_engine::sql::plan(&state, sql).await {
            Err(e) => engine_error(e),
            // A denial of visible objects stands, naming only the visible columns among those
            // refused (the audit log has them all).
            Ok(_) if matches!(error, GatewayError::Policy(PolicyError::Denied { .. })) => match error {
                GatewayError::Policy(PolicyError::Denied { user, operation, resource }) => {
                    GatewayError::Policy(PolicyError::Denied {
                        user,
                        operation,
                        resource: visible_only(&resource, &visible),
                    })
                }
                other => other,
            },
            Ok(_) if matches!(error, GatewayError::Policy(_) | GatewayError::PermissionDenied(_)) => error,
            Ok(_) => {
                tracing::debug!(%error, "planning error hidden from the caller");
                GatewayError::InvalidArgument("the statement cannot be planned".into())
            }
        }
    }

    async fn authorize(&self, scope: &Scope<'_>, plan: LogicalPlan, sql: &str) -> Result<Effective> {
        match &plan {
            // EXPLAIN runs nothing, EXPLAIN ANALYZE runs the statement: either way the
            // statement is checked as itself, so a write needs the write's permissions.
            LogicalPlan::Explain(e) => {
                self.authorize_wrapped(scope, &e.plan).await?;
                self.refuse_if_protected(scope, &e.plan, "EXPLAIN").await?;
                self.effective_as_written(scope, &plan, sql, &e.plan)
            }
            LogicalPlan::Analyze(a) => {
                self.authorize_wrapped(scope, &a.input).await?;
                self.refuse_if_protected(scope, &a.input, "EXPLAIN ANALYZE").await?;
                self.effective_as_written(scope, &plan, sql, &a.input)
            }
            LogicalPlan::Dml(dml) => {
                self.authorize_dml(scope, dml).await?;
                // Its input scans the target of DELETE / UPDATE too.
                self.effective_as_written(scope, &plan, sql, &dml.input)
            }
            LogicalPlan::Ddl(ddl) => {
                self.authorize_ddl(scope, ddl).await?;
                let input = match ddl {
                    DdlStatement::CreateMemoryTable(c) => Some(c.input.as_ref()),
                    DdlStatement::CreateView(c) => Some(c.input.as_ref()),
                    _ => None,
                };
                match input {
                    Some(input) => self.effective_as_written(scope, &plan, sql, input),
                    None => Ok(self.effective_reading(scope, sql, BTreeMap::new())),
                }
            }
            LogicalPlan::DescribeTable(_) => Err(denied(
                "DESCRIBE is not available under an access policy; use SHOW COLUMNS or information_schema.columns, \
                 which list only the columns you may see"
                    .into(),
            )),
            LogicalPlan::Statement(_) | LogicalPlan::Copy(_) => {
                Err(denied(format!("this statement is not allowed under an access policy: {}", first_words(sql))))
            }
            _ => self.authorize_query(scope, plan, sql).await,
        }
    }

    /// The checks of a statement inside EXPLAIN / EXPLAIN ANALYZE.
    async fn authorize_wrapped(&self, scope: &Scope<'_>, inner: &LogicalPlan) -> Result<()> {
        match inner {
            LogicalPlan::Dml(dml) => self.authorize_dml(scope, dml).await,
            LogicalPlan::Ddl(ddl) => self.authorize_ddl(scope, ddl).await,
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => Err(denied("nested EXPLAIN is not allowed".into())),
            LogicalPlan::DescribeTable(_) | LogicalPlan::Statement(_) | LogicalPlan::Copy(_) => {
                Err(denied("this statement is not allowed under an access policy".into()))
            }
            // Queries: SelectFromColumns is asked by `refuse_if_protected`.
            _ => Ok(()),
        }
    }

    /// A statement the worker runs as written (no filter or mask to apply), reading what
    /// `reads_of` reads. If it names a view, the worker must not expand it itself: a query is
    /// sent as the gateway's expansion; other statements naming a view are refused.
    fn effective_as_written(
        &self,
        scope: &Scope<'_>,
        plan: &LogicalPlan,
        sql: &str,
        reads_of: &LogicalPlan,
    ) -> Result<Effective> {
        let reads = tables_read_with(reads_of, scope.catalog, scope.schema, Some(scope.state));
        let mut effective = self.effective_reading(scope, sql, reads);
        if scope.views_named && !matches!(plan, LogicalPlan::Ddl(DdlStatement::CreateView(_))) {
            effective.sql = match plan {
                LogicalPlan::Explain(e) if is_query(&e.plan) => {
                    let verbose = if e.verbose { "VERBOSE " } else { "" };
                    format!("EXPLAIN {verbose}{}", unparse(&e.plan)?)
                }
                LogicalPlan::Analyze(a) if is_query(&a.input) => {
                    let verbose = if a.verbose { "VERBOSE " } else { "" };
                    format!("EXPLAIN ANALYZE {verbose}{}", unparse(&a.input)?)
                }
                LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => {
                    let target = resolve(&dml.table_name, scope.catalog, scope.schema);
                    format!("INSERT INTO {} {}", quoted(&target), unparse(&dml.input)?)
                }
                LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) if c.constraints.is_empty() => {
                    let target = resolve(&c.name, scope.catalog, scope.schema);
                    let or_replace = if c.or_replace { "OR REPLACE " } else { "" };
                    let if_not_exists = if c.if_not_exists { "IF NOT EXISTS " } else { "" };
                    format!("CREATE {or_replace}TABLE {if_not_exists}{} AS {}", quoted(&target), unparse(&c.input)?)
                }
                _ if is_query(plan) => unparse(plan)?,
                _ => {
                    return Err(GatewayError::InvalidArgument(
                        "under an access policy this statement cannot read a view; read the tables it is built on"
                            .into(),
                    ));
                }
            };
            effective.rewritten = true;
        }
        Ok(effective)
    }

    /// The statement as written, authorized against `reads`.
    fn effective_reading(&self, _scope: &Scope<'_>, sql: &str, reads: BTreeMap<TableRef, TableRead>) -> Effective {
        let mut effective = Effective::unchanged(sql);
        effective.authorized = Some(manifest(&reads, &BTreeMap::new()));
        effective
    }

    async fn authorize_query(&self, scope: &Scope<'_>, plan: LogicalPlan, sql: &str) -> Result<Effective> {
        let reads = tables_read_with(&plan, scope.catalog, scope.schema, Some(scope.state));
        let policies = self.policies_for(scope, &reads).await?;
        let tables: BTreeSet<TableRef> = policies.keys().cloned().collect();
        let authorized = manifest(&reads, &policies);
        let (output, parameters) = signature(&plan)?;
        if policies.values().all(TablePolicy::is_empty) {
            let mut effective = Effective::unchanged(sql);
            effective.facts = Some(QueryFacts { tables, deterministic: rewrite::deterministic(&plan) });
            if scope.views_named {
                effective.sql = unparse(&plan)?;
                effective.rewritten = true;
            }
            effective.authorized = Some(authorized);
            effective.output = output;
            effective.parameters = parameters;
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
        Ok(Effective {
            sql: effective,
            rewritten: true,
            protected,
            facts: Some(facts),
            authorized: Some(authorized),
            output,
            parameters,
        })
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
        let reads = tables_read_with(plan, scope.catalog, scope.schema, Some(scope.state));
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
        let columns = columns_read_info(read);
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

    /// Checks a DML statement: the operation on its target, and what it reads.
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
        let mut reads = tables_read_with(&dml.input, scope.catalog, scope.schema, Some(scope.state));
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
            let reads = tables_read_with(input, scope.catalog, scope.schema, Some(scope.state));
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
    /// The statement names a view (which the gateway expands; the worker must not).
    views_named: bool,
}

/// A denied resource as the caller may see it: `columns a, b of table t` names no column
/// missing from `t` in `visible`.
fn visible_only(resource: &str, visible: &PoolCatalog) -> String {
    let Some((columns, table)) = resource.strip_prefix("columns ").and_then(|r| r.split_once(" of table ")) else {
        return resource.to_string();
    };
    let shown = visible.tables.iter().find(|t| format!("{}.{}.{}", t.catalog, t.schema, t.table) == table);
    let visible = |c: &&str| shown.is_some_and(|t| t.arrow_schema.field_with_name(c).is_ok());
    if columns.split(", ").all(|c| visible(&c)) {
        return resource.to_string();
    }
    format!("table {table} (it reads columns you may not read)")
}

/// Whether `sql` names a view of the pool (CTE names aside).
fn views_named(state: &SessionState, planning: &Planning, sql: &str, catalog: &str, schema: &str) -> bool {
    if planning.views.is_empty() {
        return false;
    }
    let Ok(statement) = quiver_engine::sql::parse(state, sql) else { return true };
    let normalize = state.config_options().sql_parser.enable_ident_normalization;
    match datafusion::sql::resolve::resolve_table_references(&statement, normalize) {
        Ok((relations, _)) => relations.iter().any(|r| planning.views.contains(&resolve(r, catalog, schema))),
        Err(_) => true,
    }
}

/// The authorized plan written back as SQL for the worker.
fn unparse(plan: &LogicalPlan) -> Result<String> {
    rewrite::to_sql(plan).map_err(|e| {
        GatewayError::InvalidArgument(format!(
            "under an access policy this statement is sent to the worker as the gateway planned it, and it \
             cannot be written back as SQL: {e}"
        ))
    })
}

/// `"catalog"."schema"."table"`.
fn quoted(t: &TableRef) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!("{}.{}.{}", q(&t.catalog), q(&t.schema), q(&t.table))
}

/// What a Quiver worker checks before it runs the statement: each table read with the columns
/// of its own reads and of the policies applied to it, and the fingerprint of its columns.
fn manifest(reads: &BTreeMap<TableRef, TableRead>, policies: &BTreeMap<TableRef, TablePolicy>) -> Authorized {
    let tables = reads
        .iter()
        .map(|(t, read)| {
            let mut columns: BTreeSet<String> = read.columns.iter().cloned().collect();
            if let Some(policy) = policies.get(t) {
                columns.extend(rewrite::policy_columns(policy));
            }
            AuthorizedTable {
                name: QualifiedName::new(&t.catalog, &t.schema, &t.table),
                fingerprint: schema_fingerprint(&read.schema),
                columns: columns.into_iter().collect(),
            }
        })
        .collect();
    Authorized { tables }
}

/// A query's result columns (as the worker sends them) and its parameters in order.
fn signature(plan: &LogicalPlan) -> Result<(Option<SchemaRef>, Vec<(String, DataType)>)> {
    let output = is_query(plan).then(|| quiver_engine::flight_schema(plan.schema().as_arrow()));
    let parameters = quiver_engine::sql::parameters(plan).map_err(|e| GatewayError::InvalidArgument(e.to_string()))?;
    Ok((output, parameters))
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
