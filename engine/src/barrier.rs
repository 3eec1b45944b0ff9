//! The row-filter evaluation barrier.
//!
//! The gateway enforces a row filter by rewriting every protected table scan into
//! `(SELECT ... FROM t WHERE quiver_policy_filter(<row filter>)) AS t`. Left to itself,
//! DataFusion would treat that `WHERE` like any other: the logical optimizer merges the
//! user's own predicates into it, the physical optimizer lets one `FilterExec` absorb its
//! parent's predicate, and `AND` evaluates its right side on every row of a batch. A user
//! predicate such as `1/(x - 10) = 1` would then run on rows the row filter hides, and its
//! division-by-zero error would tell the user that such a row exists (an "error oracle").
//!
//! This module makes the row filter a real barrier: user predicates only ever see rows that
//! passed it.
//!
//! - [`policy_filter_udf`] is the marker function `quiver_policy_filter(bool) -> bool` (the
//!   identity). The gateway registers the same function to plan its rewritten SQL.
//! - [`PolicyBarrierRule`], an analyzer rule, turns every `Filter` whose predicate has
//!   `quiver_policy_filter(p)` conjuncts into a [`PolicyFilter`] node (the AND of those `p`)
//!   with the remaining conjuncts in an ordinary `Filter` above it. Analyzer rules run once,
//!   before any optimizer rule and whatever the optimizer settings, so the barrier exists
//!   before `PushDownFilter` could merge anything into it.
//! - [`PolicyFilter`] lets no predicate be pushed below it, prunes columns through itself, and
//!   never prints its predicate (row-filter literals are secret).
//! - [`PolicyFilterExec`] evaluates the row filter itself, refuses parent filters (including
//!   the join and top-k dynamic filters), and never prints its predicate either.
//!
//! [`with_policy_barrier`] installs all of it on a [`SessionStateBuilder`].

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::utils::take_function_args;
use datafusion::common::{DFSchemaRef, Result, internal_err, plan_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::{conjunction, split_conjunction, split_conjunction_owned};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, Extension, Filter, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, UserDefinedLogicalNode, UserDefinedLogicalNodeCore, Volatility, WriteOp,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_plan::coalesce::{LimitedBatchCoalescer, PushBatchStatus};
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PhysicalExpr,
    PlanProperties, ReplaceChildrenOptions, apply_expression_roots,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::{Stream, StreamExt, ready};

/// Name of the marker function that makes its argument a row-filter barrier when it is a
/// top-level conjunct of a `WHERE` clause.
pub const POLICY_FILTER_FUNCTION: &str = "quiver_policy_filter";

/// Name of the logical node (and, with `Exec`, of the physical node) in EXPLAIN output.
pub const POLICY_FILTER_NODE: &str = "PolicyFilter";

/// The `quiver_policy_filter(bool) -> bool` function: the identity (NULL stays NULL).
///
/// As a top-level conjunct of a filter, `quiver_policy_filter(p)` marks `p` as a row filter
/// that [`PolicyBarrierRule`] turns into a [`PolicyFilter`] barrier. Anywhere else it just
/// returns its argument. It needs no engine state, so the gateway registers the same function
/// in its own planning context.
pub fn policy_filter_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(PolicyFilterUdf {
        signature: Signature::exact(vec![DataType::Boolean], Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PolicyFilterUdf {
    signature: Signature,
}

impl ScalarUDFImpl for PolicyFilterUdf {
    fn name(&self) -> &str {
        POLICY_FILTER_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = take_function_args(POLICY_FILTER_FUNCTION, args.args)?;
        Ok(value)
    }
}

/// Installs the barrier on a session being built: registers [`policy_filter_udf`], appends
/// [`PolicyBarrierRule`] to the analyzer rules (DataFusion's defaults stay in front of it) and
/// sets [`PolicyQueryPlanner`] as the query planner (replacing any planner set before).
pub fn with_policy_barrier(mut builder: SessionStateBuilder) -> SessionStateBuilder {
    builder.scalar_functions().get_or_insert_with(Vec::new).push(Arc::new(policy_filter_udf()));
    builder.with_analyzer_rule(Arc::new(PolicyBarrierRule)).with_query_planner(Arc::new(PolicyQueryPlanner))
}

/// The conjunct is `quiver_policy_filter(p)`: returns `p`.
fn barrier_argument(conjunct: &Expr) -> Option<&Expr> {
    match conjunct {
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == POLICY_FILTER_FUNCTION => {
            match args.as_slice() {
                [arg] => Some(arg),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Analyzer rule turning `Filter(quiver_policy_filter(p) AND q)` into
/// `Filter(q, PolicyFilter(p))`, in the plan and in every subquery of it.
///
/// Runs after DataFusion's own analyzer rules, so `p` is already type-coerced. Rows for which
/// `p` is NULL are dropped, as by `WHERE`. A `quiver_policy_filter` call that is not a
/// top-level conjunct of a filter (inside `OR`, `NOT`, a projection...) is no barrier.
///
/// Refused with a plan error: a row filter containing a subquery, and a barrier in the input
/// of DELETE, UPDATE or MERGE.
#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyBarrierRule;

impl AnalyzerRule for PolicyBarrierRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        refuse_barriers_in_dml(&plan)?;
        plan.transform_up_with_subqueries(|node| match node {
            LogicalPlan::Filter(filter) if is_barrier_filter(&filter) => insert_barrier(filter).map(Transformed::yes),
            other => Ok(Transformed::no(other)),
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "quiver_policy_barrier"
    }
}

fn is_barrier_filter(filter: &Filter) -> bool {
    split_conjunction(&filter.predicate).into_iter().any(|c| barrier_argument(c).is_some())
}

/// DELETE, UPDATE and MERGE hand the filters of their input to the table provider, which
/// finds them only in `Filter` nodes: behind a barrier they would be lost and every row
/// changed. A barrier there is refused instead.
fn refuse_barriers_in_dml(plan: &LogicalPlan) -> Result<()> {
    plan.apply_with_subqueries(|node| {
        let LogicalPlan::Dml(dml) = node else { return Ok(TreeNodeRecursion::Continue) };
        if matches!(dml.op, WriteOp::Insert(_) | WriteOp::Ctas) {
            return Ok(TreeNodeRecursion::Continue);
        }
        let mut found = false;
        dml.input.apply_with_subqueries(|node| {
            found = matches!(node, LogicalPlan::Filter(filter) if is_barrier_filter(filter));
            Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
        })?;
        if found {
            return plan_err!("{POLICY_FILTER_FUNCTION} cannot be used in {}", dml.op.name());
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map(|_| ())
}

fn insert_barrier(filter: Filter) -> Result<LogicalPlan> {
    let mut barrier = Vec::new();
    let mut rest = Vec::new();
    for conjunct in split_conjunction_owned(filter.predicate) {
        match conjunct {
            Expr::ScalarFunction(ScalarFunction { func, mut args })
                if func.name() == POLICY_FILTER_FUNCTION && args.len() == 1 =>
            {
                barrier.extend(args.pop());
            }
            other => rest.push(other),
        }
    }
    let Some(predicate) = conjunction(barrier) else {
        return internal_err!("{POLICY_FILTER_FUNCTION}: no row filter found in a filter that has one");
    };
    let barrier = LogicalPlan::Extension(Extension { node: Arc::new(PolicyFilter::try_new(predicate, filter.input)?) });
    match conjunction(rest) {
        Some(rest) => Ok(LogicalPlan::Filter(Filter::try_new(rest, Arc::new(barrier))?)),
        None => Ok(barrier),
    }
}

/// Whether `expr` holds a subquery. A row filter may not: DataFusion rewrites subqueries
/// into joins only in ordinary filters, cannot run IN/EXISTS or correlated ones anywhere else,
/// and EXPLAIN would print a scalar subquery's plan, literals included.
fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(e, Expr::Exists(_) | Expr::InSubquery(_) | Expr::ScalarSubquery(_) | Expr::SetComparison(_)))
    })
    .unwrap_or(true)
}

/// Logical row-filter barrier: the rows of `input` for which the row filter is true, with
/// `input`'s schema.
///
/// No predicate is pushed below it (every output column blocks pushdown), limits are not
/// pushed through it, and projection pruning passes through it (the input keeps the columns
/// the parent needs plus those of the row filter). EXPLAIN prints only `PolicyFilter`.
///
/// `PushDownFilter` does push conjuncts that reference no column at all (`1/0 = 1`,
/// `random() < 0.5`) below an extension node; such a filter, inserted right under this
/// node, is taken back and kept as a predicate evaluated after the row filter.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct PolicyFilter {
    predicate: Expr,
    input: Arc<LogicalPlan>,
    after: Option<Expr>,
}

impl PolicyFilter {
    /// A barrier keeping the rows of `input` for which `predicate` (Boolean) is true.
    pub fn try_new(predicate: Expr, input: Arc<LogicalPlan>) -> Result<Self> {
        Self::checked(predicate, input, None)
    }

    fn checked(predicate: Expr, input: Arc<LogicalPlan>, after: Option<Expr>) -> Result<Self> {
        if has_subquery(&predicate) {
            return plan_err!("a row filter ({POLICY_FILTER_FUNCTION}) cannot contain a subquery");
        }
        let data_type = predicate.get_type(input.schema())?;
        if !matches!(data_type, DataType::Boolean | DataType::Null) {
            return plan_err!("a row filter ({POLICY_FILTER_FUNCTION}) must be Boolean, not {data_type}");
        }
        Ok(PolicyFilter { predicate, input, after })
    }

    /// The row filter.
    pub fn predicate(&self) -> &Expr {
        &self.predicate
    }

    /// The plan whose rows are filtered.
    pub fn input(&self) -> &Arc<LogicalPlan> {
        &self.input
    }

    /// Column-free predicates the optimizer tried to push below the barrier, evaluated on
    /// the rows that passed it.
    pub fn after(&self) -> Option<&Expr> {
        self.after.as_ref()
    }
}

impl fmt::Debug for PolicyFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The row filter's literals are secret: never in logs or error messages.
        f.debug_struct(POLICY_FILTER_NODE).field("input", &self.input).finish_non_exhaustive()
    }
}

impl UserDefinedLogicalNodeCore for PolicyFilter {
    fn name(&self) -> &str {
        POLICY_FILTER_NODE
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![self.input.as_ref()]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        std::iter::once(self.predicate.clone()).chain(self.after.clone()).collect()
    }

    fn prevent_predicate_push_down_columns(&self) -> std::collections::HashSet<String> {
        // Every column, as DataFusion's default: spelled out because the barrier depends on it.
        self.input.schema().fields().iter().map(|f| f.name().clone()).collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{POLICY_FILTER_NODE}")
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let mut exprs = exprs.into_iter();
        let (Some(predicate), after, None) = (exprs.next(), exprs.next(), exprs.next()) else {
            return internal_err!("{POLICY_FILTER_NODE} takes one or two expressions");
        };
        let Ok([input]) = <[LogicalPlan; 1]>::try_from(inputs) else {
            return internal_err!("{POLICY_FILTER_NODE} takes one input");
        };
        match input {
            // PushDownFilter's way of pushing a column-free conjunct below an extension node:
            // a Filter inserted right under it. Keep that predicate on this side of the barrier.
            LogicalPlan::Filter(filter)
                if filter.predicate.column_refs().is_empty() && filter.input.as_ref() == self.input.as_ref() =>
            {
                let after = Some(match after {
                    Some(after) => after.and(filter.predicate),
                    None => filter.predicate,
                });
                Self::checked(predicate, filter.input, after)
            }
            input => Self::checked(predicate, Arc::new(input), after),
        }
    }

    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        // The output is the input, column for column; DataFusion adds the columns the
        // predicates use (OptimizeProjections' `with_plan_exprs`).
        Some(vec![output_columns.to_vec()])
    }
}

/// Query planner: DataFusion's default physical planner plus [`PolicyFilterPlanner`].
#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyQueryPlanner;

#[async_trait]
impl QueryPlanner for PolicyQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(PolicyFilterPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// Plans [`PolicyFilter`] as [`PolicyFilterExec`] (under a `FilterExec` for the predicates
/// kept after the barrier, if any).
#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyFilterPlanner;

#[async_trait]
impl ExtensionPlanner for PolicyFilterPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(node) = node.as_any().downcast_ref::<PolicyFilter>() else { return Ok(None) };
        let ([logical], [physical]) = (logical_inputs, physical_inputs) else {
            return internal_err!("{POLICY_FILTER_NODE} takes one input");
        };
        let schema = logical.schema();
        let predicate = planner.create_physical_expr(&node.predicate, schema, session, planning_ctx)?;
        let mut plan: Arc<dyn ExecutionPlan> = Arc::new(PolicyFilterExec::try_new(predicate, Arc::clone(physical))?);
        if let Some(after) = &node.after {
            let after = planner.create_physical_expr(after, schema, session, planning_ctx)?;
            plan = Arc::new(FilterExec::try_new(after, plan)?);
        }
        Ok(Some(plan))
    }
}

/// Physical row-filter barrier: evaluates the row filter on every input batch and passes on
/// the rows where it is true (NULL counts as false). A failing row filter fails the query.
///
/// Unlike `FilterExec` it takes no filter from its parents (DataFusion's default
/// `gather_filters_for_pushdown` marks them all unsupported, so they stay above), swaps with
/// no projection, takes no limit, and displays without its predicate. It keeps its input's
/// partitioning and ordering, and reports `output_rows` and `elapsed_compute`.
pub struct PolicyFilterExec {
    predicate: Arc<dyn PhysicalExpr>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl PolicyFilterExec {
    /// A barrier keeping the rows of `input` for which `predicate` (Boolean) is true.
    pub fn try_new(predicate: Arc<dyn PhysicalExpr>, input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let data_type = predicate.data_type(&input.schema())?;
        if !matches!(data_type, DataType::Boolean | DataType::Null) {
            return plan_err!("a row filter ({POLICY_FILTER_FUNCTION}) must be Boolean, not {data_type}");
        }
        let properties = PlanProperties::new(
            input.equivalence_properties().clone(),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Ok(PolicyFilterExec {
            predicate,
            input,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The row filter.
    pub fn predicate(&self) -> &Arc<dyn PhysicalExpr> {
        &self.predicate
    }

    /// The plan whose rows are filtered.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl fmt::Debug for PolicyFilterExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyFilterExec").field("input", &self.input).finish_non_exhaustive()
    }
}

impl DisplayAs for PolicyFilterExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(f, "PolicyFilterExec"),
            DisplayFormatType::TreeRender => Ok(()),
        }
    }
}

impl ExecutionPlan for PolicyFilterExec {
    fn name(&self) -> &str {
        "PolicyFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots([&self.predicate], f)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Ok([input]) = <[Arc<dyn ExecutionPlan>; 1]>::try_from(children) else {
            return internal_err!("PolicyFilterExec takes one child");
        };
        match options.children_properties {
            ChildrenPropertiesMode::Keep => Ok(Arc::new(PolicyFilterExec {
                predicate: Arc::clone(&self.predicate),
                input,
                properties: Arc::clone(&self.properties),
                metrics: ExecutionPlanMetricsSet::new(),
            })),
            ChildrenPropertiesMode::Recompute => Ok(Arc::new(Self::try_new(Arc::clone(&self.predicate), input)?)),
        }
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let batch_size = context.session_config().batch_size();
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(PolicyFilterStream {
            schema: self.schema(),
            predicate: Arc::clone(&self.predicate),
            input,
            metrics: BaselineMetrics::new(&self.metrics, partition),
            coalescer: LimitedBatchCoalescer::new(self.schema(), batch_size, None),
            input_done: false,
        }))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::LowerEqual
    }
}

/// The rows of `batch` for which `predicate` is true (NULL counts as false).
fn filter_batch(batch: &RecordBatch, predicate: &Arc<dyn PhysicalExpr>) -> Result<RecordBatch> {
    let mask = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
    if mask.data_type() == &DataType::Null {
        return Ok(batch.slice(0, 0));
    }
    let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
        return internal_err!("a row filter ({POLICY_FILTER_FUNCTION}) evaluated to {}", mask.data_type());
    };
    // `filter_record_batch` drops the rows where the mask is NULL.
    Ok(filter_record_batch(batch, mask)?)
}

struct PolicyFilterStream {
    schema: SchemaRef,
    predicate: Arc<dyn PhysicalExpr>,
    input: SendableRecordBatchStream,
    metrics: BaselineMetrics,
    coalescer: LimitedBatchCoalescer,
    input_done: bool,
}

impl PolicyFilterStream {
    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let _timer = self.metrics.elapsed_compute().timer();
        let rows = filter_batch(batch, &self.predicate)?;
        if rows.num_rows() > 0 {
            // No fetch limit, so the coalescer never reports `LimitReached`.
            let PushBatchStatus::Continue = self.coalescer.push_batch(rows)? else {
                return internal_err!("PolicyFilterExec has no row limit");
            };
        }
        Ok(())
    }
}

impl Stream for PolicyFilterStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(batch) = this.coalescer.next_completed_batch() {
                return this.metrics.record_poll(Poll::Ready(Some(Ok(batch))));
            }
            if this.input_done {
                return Poll::Ready(None);
            }
            match ready!(this.input.poll_next_unpin(cx)) {
                Some(Ok(batch)) => {
                    if let Err(e) = this.push(&batch) {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.input_done = true;
                    if let Err(e) = this.coalescer.finish() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
        }
    }
}

impl RecordBatchStream for PolicyFilterStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::error::Result;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::with_policy_barrier;

    /// `t(x)` holds 0..=99 shuffled over 4 partitions of 5-row batches, so that the hidden
    /// row `x = 10` shares its batch with visible rows; `u(x)` holds 50..150 in order (no
    /// row for which the user predicates fail: PushDownFilter copies `t.x` predicates to `u.x`
    /// through join equalities, where they run on all of `u`);
    /// `n(x)` holds 1, NULL, 3; `wide(a, b, c, d)` one row.
    fn context() -> Result<SessionContext> {
        let config = SessionConfig::new().with_target_partitions(4).with_batch_size(8);
        let state = with_policy_barrier(SessionStateBuilder::new().with_config(config).with_default_features()).build();
        let ctx = SessionContext::new_with_state(state);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batch = |values: Vec<Option<i64>>| {
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(values))])
        };
        let shuffled: Vec<i64> = (0..100).map(|i| (i * 37) % 100).collect();
        let mut partitions = vec![Vec::new(); 4];
        for (i, chunk) in shuffled.chunks(5).enumerate() {
            partitions[i % 4].push(batch(chunk.iter().copied().map(Some).collect())?);
        }
        ctx.register_table("t", Arc::new(MemTable::try_new(Arc::clone(&schema), partitions)?))?;
        let ordered = batch((50..150).map(Some).collect())?;
        ctx.register_table("u", Arc::new(MemTable::try_new(Arc::clone(&schema), vec![vec![ordered]])?))?;
        let nulls = batch(vec![Some(1), None, Some(3)])?;
        ctx.register_table("n", Arc::new(MemTable::try_new(Arc::clone(&schema), vec![vec![nulls]])?))?;
        let wide =
            Arc::new(Schema::new(["a", "b", "c", "d"].map(|name| Field::new(name, DataType::Int64, false)).to_vec()));
        let row = RecordBatch::try_new(
            Arc::clone(&wide),
            (1..=4).map(|v| Arc::new(Int64Array::from(vec![v])) as _).collect(),
        )?;
        ctx.register_table("wide", Arc::new(MemTable::try_new(wide, vec![vec![row]])?))?;
        Ok(ctx)
    }

    /// The first column of the result, as sorted integers (NULLs dropped).
    async fn ints(ctx: &SessionContext, sql: &str) -> Result<Vec<i64>> {
        let batches = ctx.sql(sql).await?.collect().await?;
        let mut values: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().expect("BIGINT column").iter().flatten())
            .collect();
        values.sort_unstable();
        Ok(values)
    }

    async fn text(ctx: &SessionContext, sql: &str) -> Result<String> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    fn visible() -> Vec<i64> {
        (50..100).collect()
    }

    /// Asserts that `sql` fails the way the hidden row `x = 10` makes it fail.
    async fn assert_oracle(ctx: &SessionContext, sql: &str, expected: &str) {
        let err = ints(ctx, sql).await.expect_err("a plain filter leaks the hidden row through an error");
        assert!(err.to_string().contains(expected), "{err}");
    }

    #[tokio::test]
    async fn barrier_stops_division_by_zero_oracle() -> Result<()> {
        let ctx = context()?;
        assert_oracle(&ctx, "SELECT x FROM (SELECT * FROM t WHERE x >= 50) s WHERE 1/(x-10) > -5", "Divide by zero")
            .await;
        let sql = "SELECT x FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 50)) s WHERE 1/(x-10) > -5";
        assert_eq!(ints(&ctx, sql).await?, visible());
        // The same with the user's predicate written in the barrier's own WHERE clause.
        let sql = "SELECT x FROM t WHERE 1/(x-10) > -5 AND quiver_policy_filter(x >= 50)";
        assert_eq!(ints(&ctx, sql).await?, visible());
        Ok(())
    }

    #[tokio::test]
    async fn barrier_stops_oracle_through_join_condition() -> Result<()> {
        let ctx = context()?;
        assert_oracle(
            &ctx,
            "SELECT s.x FROM (SELECT * FROM t WHERE x >= 50) s JOIN u ON s.x = u.x AND 1/(s.x-10) > -5",
            "Divide by zero",
        )
        .await;
        let sql = "SELECT s.x FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 50)) s \
                   JOIN u ON s.x = u.x AND 1/(s.x-10) > -5";
        assert_eq!(ints(&ctx, sql).await?, visible());
        Ok(())
    }

    #[tokio::test]
    async fn barrier_stops_failing_cast_oracle() -> Result<()> {
        let ctx = context()?;
        let user = "CAST(CASE WHEN x = 10 THEN 'boom' ELSE '1' END AS INT) = 1";
        assert_oracle(&ctx, &format!("SELECT x FROM (SELECT * FROM t WHERE x >= 50) s WHERE {user}"), "boom").await;
        let sql = format!("SELECT x FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 50)) s WHERE {user}");
        assert_eq!(ints(&ctx, &sql).await?, visible());
        Ok(())
    }

    #[tokio::test]
    async fn barrier_holds_under_a_masked_projection() -> Result<()> {
        let ctx = context()?;
        let sql = "SELECT * FROM (SELECT x, 'secret' AS y FROM t WHERE quiver_policy_filter(x >= 50)) s \
                   WHERE 1/(x-10) > -5 AND y = 'secret'";
        assert_eq!(ints(&ctx, sql).await?, visible());
        Ok(())
    }

    #[tokio::test]
    async fn barrier_holds_inside_subqueries() -> Result<()> {
        let ctx = context()?;
        let sql = "SELECT x FROM u WHERE x IN \
                   (SELECT x FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 50)) s WHERE 1/(x-10) > -5)";
        assert_eq!(ints(&ctx, sql).await?, visible());
        Ok(())
    }

    #[tokio::test]
    async fn barriers_on_both_sides_of_a_self_join_keep_their_aliases() -> Result<()> {
        let ctx = context()?;
        let side = "(SELECT t.x FROM t WHERE quiver_policy_filter(x >= 50))";
        let sql = format!("SELECT a.x FROM {side} AS a INNER JOIN {side} AS b ON (a.x = b.x) WHERE 1/(a.x-10) > -5");
        assert_eq!(ints(&ctx, &sql).await?, visible());
        let sql = format!("SELECT c.x FROM {side} AS c INNER JOIN u AS n ON (c.x = n.x AND 1/(c.x-10) > -5)");
        assert_eq!(ints(&ctx, &sql).await?, visible());
        Ok(())
    }

    #[tokio::test]
    async fn barrier_keeps_column_free_predicates_above_it() -> Result<()> {
        let ctx = context()?;
        // PushDownFilter pushes conjuncts without columns below extension nodes; on rows
        // that are all hidden, `1/0` must not run.
        let sql = "SELECT x FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 1000)) s WHERE 1/0 > 0";
        assert_eq!(ints(&ctx, sql).await?, Vec::<i64>::new());
        Ok(())
    }

    #[tokio::test]
    async fn failing_row_filter_fails_the_query() -> Result<()> {
        let ctx = context()?;
        let err = ints(&ctx, "SELECT x FROM t WHERE quiver_policy_filter(1/(x-10) > -5)")
            .await
            .expect_err("a failing row filter is an error, not an empty result");
        assert!(err.to_string().contains("Divide by zero"), "{err}");
        Ok(())
    }

    #[tokio::test]
    async fn explain_hides_the_row_filter() -> Result<()> {
        let ctx = context()?;
        let query = "SELECT x FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 4242)) s WHERE x > 1";
        for explain in ["EXPLAIN", "EXPLAIN ANALYZE"] {
            let plan = text(&ctx, &format!("{explain} {query}")).await?;
            assert!(plan.contains("PolicyFilter"), "{explain}:\n{plan}");
            assert!(!plan.contains("4242"), "{explain} shows the row filter:\n{plan}");
        }
        let plan = text(&ctx, &format!("EXPLAIN {query}")).await?;
        assert!(plan.contains("PolicyFilterExec"), "{plan}");
        Ok(())
    }

    #[tokio::test]
    async fn barrier_prunes_columns() -> Result<()> {
        let ctx = context()?;
        let sql = "EXPLAIN SELECT a FROM (SELECT * FROM wide WHERE quiver_policy_filter(b > 1)) s";
        let plan = text(&ctx, sql).await?;
        assert!(plan.contains("PolicyFilter") && plan.contains("TableScan: wide projection=[a, b]"), "{plan}");
        assert_eq!(ints(&ctx, "SELECT a FROM (SELECT * FROM wide WHERE quiver_policy_filter(b > 1)) s").await?, [1]);
        Ok(())
    }

    #[tokio::test]
    async fn barrier_drops_null_rows_and_applies_every_conjunct() -> Result<()> {
        let ctx = context()?;
        assert_eq!(ints(&ctx, "SELECT x FROM n WHERE quiver_policy_filter(x > 0)").await?, [1, 3]);
        assert_eq!(ints(&ctx, "SELECT count(*) FROM n WHERE quiver_policy_filter(x > 0)").await?, [2]);
        assert_eq!(ints(&ctx, "SELECT count(*) FROM n WHERE quiver_policy_filter(NULL)").await?, [0]);
        let sql = "SELECT x FROM t WHERE quiver_policy_filter(x >= 50) AND quiver_policy_filter(x < 60)";
        assert_eq!(ints(&ctx, sql).await?, (50..60).collect::<Vec<_>>());
        // Stacked barriers (one per policy layer) both apply too.
        let sql = "SELECT x FROM (SELECT * FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 50)) a \
                   WHERE quiver_policy_filter(x < 60)) b WHERE 1/(x-10) > -5";
        assert_eq!(ints(&ctx, sql).await?, (50..60).collect::<Vec<_>>());
        Ok(())
    }

    #[tokio::test]
    async fn policy_filter_outside_a_where_is_the_identity() -> Result<()> {
        let ctx = context()?;
        let sql = "SELECT count(*) FROM n WHERE quiver_policy_filter(x > 1) IS NULL OR x = 1";
        assert_eq!(ints(&ctx, sql).await?, [2]);
        Ok(())
    }

    /// Runs `sql` the way the worker's service does: planned by `crate::sql::plan` in a
    /// per-statement session rebuilt with `new_from_existing` (as for a memory limit).
    async fn run_in(engine: &crate::Engine, sql: &str) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
        let state = SessionStateBuilder::new_from_existing(engine.session(None, None)).build();
        let plan = crate::sql::plan(&state, sql).await?;
        Ok(SessionContext::new_with_state(state).execute_logical_plan(plan).await?.collect().await?)
    }

    #[tokio::test]
    async fn engine_sessions_keep_the_barrier() -> Result<(), Box<dyn std::error::Error>> {
        let config = crate::config::EngineConfig {
            catalogs: vec![crate::config::CatalogConfig::Memory {
                name: "mem".into(),
                schemas: vec!["default".into()],
            }],
            target_partitions: Some(4),
            batch_size: Some(8),
            ..Default::default()
        };
        let engine = crate::Engine::start(&config).await?;
        run_in(&engine, "CREATE TABLE t (x BIGINT)").await?;
        run_in(&engine, "INSERT INTO t SELECT (value * 37) % 100 FROM generate_series(0, 99)").await?;
        let query = "SELECT x FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 4250)) s WHERE 1/(x-10) > -5";
        let plan = pretty_format_batches(&run_in(&engine, &format!("EXPLAIN {query}")).await?)?.to_string();
        assert!(plan.contains("PolicyFilterExec") && !plan.contains("4250"), "{plan}");
        let sql = "SELECT count(*) FROM (SELECT * FROM t WHERE quiver_policy_filter(x >= 50)) s WHERE 1/(x-10) > -5";
        let batches = run_in(&engine, sql).await?;
        let count = batches[0].column(0).as_any().downcast_ref::<Int64Array>().map(|a| a.value(0));
        assert_eq!(count, Some(50));
        Ok(())
    }

    #[tokio::test]
    async fn time_functions_still_plan_and_run() -> Result<(), Box<dyn std::error::Error>> {
        let engine = crate::Engine::start(&crate::config::EngineConfig::default()).await?;
        for sql in ["SELECT now() AS t", "SELECT current_date AS d", "SELECT random() AS r"] {
            let batches = run_in(&engine, sql).await.map_err(|e| format!("{sql}: {e}"))?;
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1, "{sql}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn barrier_is_refused_where_dml_would_lose_it() -> Result<()> {
        let ctx = context()?;
        ctx.sql("CREATE TABLE m (x BIGINT)").await?.collect().await?;
        ctx.sql("INSERT INTO m SELECT x FROM t WHERE quiver_policy_filter(x >= 90)").await?.collect().await?;
        assert_eq!(ints(&ctx, "SELECT x FROM m").await?, (90..100).collect::<Vec<_>>());
        for sql in [
            "DELETE FROM m WHERE quiver_policy_filter(x >= 95)",
            "UPDATE m SET x = 0 WHERE quiver_policy_filter(x >= 95)",
        ] {
            let refused = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.map(|_| ()),
                Err(e) => Err(e),
            };
            let err = refused.expect_err("a barrier in DELETE/UPDATE is refused");
            assert!(err.to_string().contains("quiver_policy_filter cannot be used in"), "{err}");
        }
        assert_eq!(ints(&ctx, "SELECT x FROM m").await?, (90..100).collect::<Vec<_>>());
        Ok(())
    }
}
