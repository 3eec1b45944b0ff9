//! What authorizing one statement costs in the gateway, per phase, measured side by side in
//! one run (these machines are noisy: cases are interleaved in blocks).
//!
//!   cargo bench -p quiver-gateway --bench authz_overhead [-- --iters N] [--only SUBSTRING]
//!
//! The gateway's path for a query under `[authorization]` (`GatewayService::admit` and
//! `GatewayService::enforce`), replayed phase by phase on the real TPC-H table schemas (from an
//! in-process engine at SF 0.01) with the example policies (conf/policies, embedded Rego):
//! - `plan`: clone the pool's planning session, set the defaults, SQL -> LogicalPlan;
//! - `tables_read`: the tables and exact columns the plan reads (projection pruning);
//! - `decisions`: ExecuteQuery and AccessCatalog (admit), then per table AccessCatalog (for a
//!   catalog not checked at admission), SelectFromColumns with the columns read, row filters
//!   and the column masks of the columns read; uncached (interpreter, the default), uncached on
//!   the Rego VM (`engine = "vm"`), behind the decision cache, and uncached with the audit log
//!   on (every decision is an `info` event; written to a sink here);
//! - `rewrite`: plan the filter and mask expressions, rewrite the plan, unparse it to SQL
//!   (only where a filter or mask applies);
//! - `total`: all of it, end to end (with the determinism walk `enforce` does for the result
//!   cache).
//!
//! Prints a markdown table of p50/p99 per query and phase.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::DFSchema;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::DefaultDialect;
use futures::future::LocalBoxFuture;
use hdrhistogram::Histogram;
use quiver_auth::Identity;
use quiver_engine::config::{CatalogConfig, EngineConfig};
use quiver_gateway::authz::planning::{Planning, planning_state};
use quiver_gateway::authz::rewrite::{
    TablePolicy, TableRead, apply, columns_read_info, deterministic, plan_expression, tables_read, to_sql,
};
use quiver_gateway::pool::{PoolCatalog, TableInfo};
use quiver_policies::opa::{OpaAuthorizer, OpaConfig, RegoEngine};
use quiver_policies::{Authorizer, ColumnMask, Operation, PolicyError, Resource, RowFilter, TableRef};

const CATALOG: &str = "tpch";
const SCHEMA: &str = "tiny";

struct Args {
    /// Timed runs per case.
    iters: usize,
    /// Only the cases whose name contains this (for profiling one of them).
    only: Option<String>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args { iters: 2_000, only: None };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--iters" => args.iters = it.next().and_then(|v| v.parse().ok()).unwrap_or(args.iters),
                "--only" => args.only = it.next(),
                _ => {} // cargo bench passes `--bench`
            }
        }
        args
    }
}

/// The pool's tables as the gateway sees them: the real schemas of a Quiver engine's TPC-H
/// catalog.
async fn tpch_catalog() -> PoolCatalog {
    let config = EngineConfig {
        catalogs: vec![CatalogConfig::Tpch { name: CATALOG.into(), scale_factor: 0.01, schema: None }],
        ..Default::default()
    };
    let engine = quiver_engine::Engine::start(&config).await.expect("engine starts");
    let session = engine.session(None, None);
    let mut out = PoolCatalog::default();
    for catalog in engine.catalog_names() {
        let provider = session.catalog_list().catalog(&catalog).expect("catalog");
        out.catalogs.insert(catalog.clone());
        for schema in provider.schema_names() {
            if schema == "information_schema" {
                continue;
            }
            out.schemas.insert((catalog.clone(), schema.clone()));
            let s = provider.schema(&schema).expect("schema");
            let mut names = s.table_names();
            names.sort();
            for table in names {
                let t = s.table(&table).await.expect("table lookup").expect("table");
                out.tables.push(TableInfo {
                    catalog: catalog.clone(),
                    schema: schema.clone(),
                    table,
                    table_type: "TABLE".into(),
                    arrow_schema: t.schema(),
                    definition: None,
                });
            }
        }
    }
    assert_eq!(out.tables.len(), 8, "the eight TPC-H tables");
    out
}

fn opa(ttl_ms: u64, engine: RegoEngine) -> Arc<dyn Authorizer> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
    let mut c = OpaConfig::embedded_trino(dir).with_engine(engine);
    c.decision_cache_ttl_ms = Some(ttl_ms);
    // As the gateway builds it: every decision audited and counted.
    let metrics = Arc::new(quiver_gateway::metrics::Metrics::new());
    Arc::new(OpaAuthorizer::from_config(c).expect("example policy loads").with_observer(metrics))
}

/// `enforce` step 1: the pool's session with the statement's defaults, and the plan.
async fn plan(planning: &Planning, sql: &str) -> (SessionState, LogicalPlan) {
    let mut state = planning.state.clone();
    let options = state.config_mut().options_mut();
    options.catalog.default_catalog = CATALOG.to_string();
    options.catalog.default_schema = SCHEMA.to_string();
    let plan = quiver_engine::sql::plan(&state, sql).await.expect("plans");
    (state, plan)
}

type Decided = BTreeMap<TableRef, (Vec<RowFilter>, BTreeMap<String, ColumnMask>)>;

/// Every decision the gateway asks for one query, in its order.
async fn decisions(
    authz: &dyn Authorizer,
    id: &Identity,
    admit_catalogs: &BTreeSet<String>,
    reads: &BTreeMap<TableRef, TableRead>,
) -> Result<Decided, PolicyError> {
    // GatewayService::admit
    authz.check(id, Operation::ExecuteQuery, &Resource::None).await?;
    for c in admit_catalogs {
        authz.check(id, Operation::AccessCatalog, &Resource::Catalog(c.clone())).await?;
    }
    // GatewayService::policies_for and table_policy (AccessCatalog only for catalogs not
    // already checked at admission)
    let mut out = BTreeMap::new();
    let mut catalogs_checked = admit_catalogs.clone();
    for (table, read) in reads {
        if catalogs_checked.insert(table.catalog.clone()) {
            authz.check(id, Operation::AccessCatalog, &Resource::Catalog(table.catalog.clone())).await?;
        }
        let resource = Resource::Table { table: table.clone(), columns: read.columns.clone() };
        authz.check(id, Operation::SelectFromColumns, &resource).await?;
        let filters = authz.row_filters(id, table).await?;
        let columns = columns_read_info(read);
        let masks = if columns.is_empty() { BTreeMap::new() } else { authz.column_masks(id, table, &columns).await? };
        out.insert(table.clone(), (filters, masks));
    }
    Ok(out)
}

/// The filter and mask expressions planned over each table's columns.
fn policies(
    state: &SessionState,
    reads: &BTreeMap<TableRef, TableRead>,
    decided: &Decided,
    id: &Identity,
) -> BTreeMap<TableRef, TablePolicy> {
    let mut policies = BTreeMap::new();
    for (table, (filters, masks)) in decided {
        let mut policy = TablePolicy::default();
        if !filters.is_empty() || !masks.is_empty() {
            let read = &reads[table];
            let df = DFSchema::try_from(read.schema.as_ref().clone()).expect("table schema");
            for f in filters {
                policy.filters.push(plan_expression(state, &f.expression, &df, &id.user, &id.groups).expect("filter"));
            }
            for (column, mask) in masks {
                if read.schema.field_with_name(column).is_ok() {
                    let expr = plan_expression(state, &mask.expression, &df, &id.user, &id.groups).expect("mask");
                    policy.masks.insert(column.clone(), expr);
                }
            }
        }
        policies.insert(table.clone(), policy);
    }
    policies
}

/// The planned filters and masks, the rewritten plan and its SQL; None when nothing applies
/// (the gateway then forwards the statement as written).
fn rewrite(
    state: &SessionState,
    plan: LogicalPlan,
    reads: &BTreeMap<TableRef, TableRead>,
    decided: &Decided,
    id: &Identity,
) -> Option<String> {
    if decided.values().all(|(f, m)| f.is_empty() && m.is_empty()) {
        return None;
    }
    let policies = policies(state, reads, decided, id);
    let rewritten = apply(plan, &policies, CATALOG, SCHEMA, true).expect("rewrite");
    Some(to_sql(&rewritten).expect("unparses"))
}

/// Everything `enforce` does for a query, end to end.
async fn total(
    planning: &Planning,
    authz: &dyn Authorizer,
    q: &Query,
    admit_catalogs: &BTreeSet<String>,
) -> (Option<String>, bool) {
    let (state, plan) = plan(planning, q.sql).await;
    let reads = tables_read(&plan, CATALOG, SCHEMA);
    let decided = decisions(authz, &q.user, admit_catalogs, &reads).await.expect("allowed");
    let facts = deterministic(&plan);
    (rewrite(&state, plan, &reads, &decided, &q.user), facts)
}

struct Query {
    name: &'static str,
    user: Identity,
    sql: &'static str,
}

/// One timed case: runs once, returns the time of the part it measures.
type Case<'a> = (String, Box<dyn FnMut() -> LocalBoxFuture<'a, Duration> + 'a>);

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let catalog = rt.block_on(tpch_catalog());
    let planning = rt.block_on(planning_state(&catalog));
    let uncached = opa(0, RegoEngine::Interpreter);
    let cached = opa(60_000, RegoEngine::Interpreter);
    let uncached_vm = opa(0, RegoEngine::Vm);
    // The audit log as the `quiver` binary writes it (fmt, `info`), into a sink.
    let audit_log = Arc::new(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .finish(),
    );

    let alice = Identity::new("alice", "password-file").with_groups(vec!["analysts".into()]);
    let erin = Identity::new("erin", "password-file").with_groups(vec!["engineers".into()]);
    let queries = [
        Query {
            name: "1 table, alice (filter + mask)",
            user: alice.clone(),
            sql: "SELECT c_custkey, c_phone FROM customer WHERE c_mktsegment = 'BUILDING'",
        },
        Query {
            name: "Q3 join, erin (no filters)",
            user: erin,
            sql: "SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority \
                  FROM customer, orders, lineitem \
                  WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey \
                  AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15' \
                  GROUP BY l_orderkey, o_orderdate, o_shippriority \
                  ORDER BY revenue DESC, o_orderdate LIMIT 10",
        },
        Query {
            name: "3-table join, alice (3 filters + mask)",
            user: alice,
            sql: "SELECT c_custkey, c_phone, n_name, count(*) AS n \
                  FROM customer, nation, region \
                  WHERE c_mktsegment = 'BUILDING' AND c_nationkey = n_nationkey AND n_regionkey = r_regionkey \
                  AND r_name = 'EUROPE' \
                  GROUP BY c_custkey, c_phone, n_name \
                  ORDER BY n DESC, c_custkey LIMIT 10",
        },
    ];

    // What each query reads and decides, checked once (and reused by the per-phase cases).
    struct Prepared {
        admit_catalogs: BTreeSet<String>,
        state: SessionState,
        reads: BTreeMap<TableRef, TableRead>,
        decided: Decided,
        rewrites: bool,
    }
    let mut prepared = Vec::new();
    for q in &queries {
        let admit_catalogs = quiver_gateway::router::analyze(q.sql, CATALOG, SCHEMA).expect("analyzes").catalogs;
        let (state, p) = rt.block_on(plan(&planning, q.sql));
        let reads = tables_read(&p, CATALOG, SCHEMA);
        let decided = rt.block_on(decisions(uncached.as_ref(), &q.user, &admit_catalogs, &reads)).expect("allowed");
        let sql = rewrite(&state, p, &reads, &decided, &q.user);
        let reads_desc: Vec<String> =
            reads.iter().map(|(t, r)| format!("{}({})", t.table, r.columns.join(","))).collect();
        let catalogs: BTreeSet<&str> = reads.keys().map(|t| t.catalog.as_str()).collect();
        let admit: BTreeSet<&str> = admit_catalogs.iter().map(String::as_str).collect();
        let masked = reads.values().filter(|r| !r.columns.is_empty()).count();
        let asked = 1 + admit_catalogs.len() + catalogs.difference(&admit).count() + 2 * reads.len() + masked;
        eprintln!("{}: {asked} decisions; reads {}", q.name, reads_desc.join(" "));
        eprintln!("  effective: {}", sql.as_deref().unwrap_or("(unchanged)"));
        if q.user.user == "alice" {
            let sql = sql.as_deref().unwrap_or_default();
            // DataFusion's default dialect (regex per identifier) writes the same SQL as the
            // gateway's `to_sql`.
            let (_, lp) = rt.block_on(plan(&planning, q.sql));
            let rewritten =
                apply(lp, &policies(&state, &reads, &decided, &q.user), CATALOG, SCHEMA, true).expect("rewrite");
            let default = Unparser::new(&DefaultDialect {}).plan_to_sql(&rewritten).expect("unparses").to_string();
            assert_eq!(default, sql, "the default dialect must write the same SQL");
            assert!(sql.contains("quiver_policy_filter") && sql.contains("XX-XXX-XXX-"), "{sql}");
        }
        prepared.push(Prepared { admit_catalogs, state, reads, rewrites: sql.is_some(), decided });
    }

    let mut cases: Vec<Case> = Vec::new();
    for (q, p) in queries.iter().zip(&prepared) {
        let planning = &planning;
        let (uncached, cached, uncached_vm, audit_log) =
            (uncached.as_ref(), cached.as_ref(), uncached_vm.as_ref(), &audit_log);
        cases.push((
            format!("{} | plan", q.name),
            Box::new(move || {
                Box::pin(async move {
                    let start = Instant::now();
                    std::hint::black_box(plan(planning, std::hint::black_box(q.sql)).await);
                    start.elapsed()
                })
            }),
        ));
        cases.push((
            format!("{} | tables_read", q.name),
            Box::new(move || {
                Box::pin(async move {
                    let (_, lp) = plan(planning, q.sql).await;
                    let start = Instant::now();
                    std::hint::black_box(tables_read(std::hint::black_box(&lp), CATALOG, SCHEMA));
                    start.elapsed()
                })
            }),
        ));
        for (label, authz, log) in [
            ("decisions uncached", uncached, false),
            ("decisions uncached, Rego VM (engine = \"vm\")", uncached_vm, false),
            ("decisions cached", cached, false),
            ("decisions uncached, audit log on", uncached, true),
        ] {
            cases.push((
                format!("{} | {label}", q.name),
                Box::new(move || {
                    Box::pin(async move {
                        let _log = log.then(|| tracing::subscriber::set_default(audit_log.clone()));
                        let start = Instant::now();
                        let d = decisions(authz, std::hint::black_box(&q.user), &p.admit_catalogs, &p.reads).await;
                        let elapsed = start.elapsed();
                        std::hint::black_box(d.expect("allowed"));
                        elapsed
                    })
                }),
            ));
        }
        if p.rewrites {
            cases.push((
                format!("{} | rewrite: plan filter/mask expressions", q.name),
                Box::new(move || {
                    Box::pin(async move {
                        let start = Instant::now();
                        let out = policies(&p.state, &p.reads, std::hint::black_box(&p.decided), &q.user);
                        let elapsed = start.elapsed();
                        std::hint::black_box(out);
                        elapsed
                    })
                }),
            ));
            cases.push((
                format!("{} | rewrite: apply to the plan", q.name),
                Box::new(move || {
                    Box::pin(async move {
                        let (_, lp) = plan(planning, q.sql).await;
                        let policies = policies(&p.state, &p.reads, &p.decided, &q.user);
                        let start = Instant::now();
                        let out = apply(std::hint::black_box(lp), &policies, CATALOG, SCHEMA, true).expect("rewrite");
                        let elapsed = start.elapsed();
                        std::hint::black_box(out);
                        elapsed
                    })
                }),
            ));
            cases.push((
                format!("{} | rewrite: unparse to SQL", q.name),
                Box::new(move || {
                    Box::pin(async move {
                        let (_, lp) = plan(planning, q.sql).await;
                        let policies = policies(&p.state, &p.reads, &p.decided, &q.user);
                        let rewritten = apply(lp, &policies, CATALOG, SCHEMA, true).expect("rewrite");
                        let start = Instant::now();
                        let out = to_sql(std::hint::black_box(&rewritten)).expect("unparses");
                        let elapsed = start.elapsed();
                        std::hint::black_box(out);
                        elapsed
                    })
                }),
            ));
            cases.push((
                format!("{} | (for comparison) unparse with DataFusion's DefaultDialect", q.name),
                Box::new(move || {
                    Box::pin(async move {
                        let (_, lp) = plan(planning, q.sql).await;
                        let policies = policies(&p.state, &p.reads, &p.decided, &q.user);
                        let rewritten = apply(lp, &policies, CATALOG, SCHEMA, true).expect("rewrite");
                        let start = Instant::now();
                        let out = Unparser::new(&DefaultDialect {})
                            .plan_to_sql(std::hint::black_box(&rewritten))
                            .expect("unparses")
                            .to_string();
                        let elapsed = start.elapsed();
                        std::hint::black_box(out);
                        elapsed
                    })
                }),
            ));
            cases.push((
                format!("{} | rewrite (all three)", q.name),
                Box::new(move || {
                    Box::pin(async move {
                        let (_, lp) = plan(planning, q.sql).await;
                        let start = Instant::now();
                        let sql = rewrite(&p.state, std::hint::black_box(lp), &p.reads, &p.decided, &q.user);
                        let elapsed = start.elapsed();
                        std::hint::black_box(sql.expect("rewritten"));
                        elapsed
                    })
                }),
            ));
        }
        for (label, authz) in
            [("total uncached", uncached), ("total uncached, Rego VM", uncached_vm), ("total cached", cached)]
        {
            cases.push((
                format!("{} | {label}", q.name),
                Box::new(move || {
                    Box::pin(async move {
                        let start = Instant::now();
                        let sql = total(planning, authz, std::hint::black_box(q), &p.admit_catalogs).await;
                        let elapsed = start.elapsed();
                        std::hint::black_box(sql);
                        elapsed
                    })
                }),
            ));
        }
    }

    if let Some(only) = &args.only {
        cases.retain(|(name, _)| name.contains(only.as_str()));
    }
    // Warm-up, then interleave the cases in blocks so drift affects them alike.
    for (_, f) in cases.iter_mut() {
        for _ in 0..(args.iters / 10).max(1) {
            rt.block_on(f());
        }
    }
    let mut hists: Vec<Histogram<u64>> = cases.iter().map(|_| Histogram::<u64>::new(3).expect("histogram")).collect();
    let block = 100.min(args.iters.max(1));
    let mut done = 0;
    while done < args.iters {
        for ((_, f), h) in cases.iter_mut().zip(hists.iter_mut()) {
            for _ in 0..block {
                let elapsed = rt.block_on(f());
                h.record(elapsed.as_nanos() as u64).ok();
            }
        }
        done += block;
    }

    println!("## Authorization overhead per query ({done} runs per case, example policies, embedded Rego)\n");
    println!("| query | phase | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    for ((name, _), h) in cases.iter().zip(&hists) {
        println!("| {name} | {} | {} |", us(h.value_at_quantile(0.5)), us(h.value_at_quantile(0.99)));
    }
}
