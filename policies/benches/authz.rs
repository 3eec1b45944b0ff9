//! Per-decision cost of the example policies (conf/policies) with embedded Rego: the
//! interpreter uncached, the Rego VM (`engine = "vm"`) uncached, and behind the decision cache. Run: `cargo bench -p quiver-policies --bench authz`.
//! Prints a markdown table of p50/p99 per decision.

use std::future::Future;
use std::path::Path;
use std::time::Instant;

use hdrhistogram::Histogram;
use quiver_auth::Identity;
use quiver_policies::opa::{OpaAuthorizer, OpaConfig, RegoEngine};
use quiver_policies::{Authorizer, ColumnInfo, Operation, Resource, TableRef};

const WARMUP: usize = 200;
const ITERATIONS: usize = 5_000;

fn config(ttl_ms: u64, engine: RegoEngine) -> OpaConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
    let mut c = OpaConfig::embedded_trino(dir).with_engine(engine);
    c.decision_cache_ttl_ms = Some(ttl_ms);
    c
}

fn measure<F, Fut>(rt: &tokio::runtime::Runtime, mut f: F) -> Histogram<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..WARMUP {
        assert!(rt.block_on(f()), "decision failed");
    }
    for _ in 0..ITERATIONS {
        let start = Instant::now();
        let ok = rt.block_on(f());
        h.record(start.elapsed().as_nanos() as u64).ok();
        assert!(ok, "decision failed");
    }
    h
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let alice = Identity::new("alice", "bench").with_groups(vec!["analysts".into()]);
    let customer = TableRef::new("tpch", "sf1", "customer");
    let select = Resource::Table { table: customer.clone(), columns: vec!["c_name".into(), "c_phone".into()] };
    let tables: Vec<Resource> = ["customer", "orders", "nation", "region", "lineitem"]
        .iter()
        .map(|t| Resource::Table { table: TableRef::new("tpch", "sf1", *t), columns: vec![] })
        .collect();
    let cols = vec![
        ColumnInfo::new("c_custkey", "bigint"),
        ColumnInfo::new("c_name", "varchar"),
        ColumnInfo::new("c_address", "varchar"),
        ColumnInfo::new("c_phone", "varchar"),
    ];

    println!("| decision (example policies, embedded Rego) | engine, cache | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    for (label, ttl, engine) in [
        ("interpreter, uncached", 0, RegoEngine::Interpreter),
        ("VM, uncached", 0, RegoEngine::Vm),
        ("interpreter, cached", 60_000, RegoEngine::Interpreter),
    ] {
        let opa = OpaAuthorizer::from_config(config(ttl, engine)).expect("example policy loads");
        let rows: Vec<(&str, Histogram<u64>)> = vec![
            (
                "ExecuteQuery",
                measure(&rt, || async { opa.check(&alice, Operation::ExecuteQuery, &Resource::None).await.is_ok() }),
            ),
            (
                "SelectFromColumns (2 columns)",
                measure(&rt, || async { opa.check(&alice, Operation::SelectFromColumns, &select).await.is_ok() }),
            ),
            (
                "FilterTables batch (5 tables)",
                measure(&rt, || async {
                    opa.filter(&alice, Operation::FilterTables, &tables).await.is_ok_and(|v| v == [0, 2, 3])
                }),
            ),
            (
                "GetRowFilters",
                measure(&rt, || async { opa.row_filters(&alice, &customer).await.is_ok_and(|f| f.len() == 1) }),
            ),
            (
                "GetColumnMask batch (4 columns)",
                measure(&rt, || async { opa.column_masks(&alice, &customer, &cols).await.is_ok_and(|m| m.len() == 2) }),
            ),
        ];
        for (name, h) in rows {
            println!("| {name} | {label} | {} | {} |", us(h.value_at_quantile(0.5)), us(h.value_at_quantile(0.99)));
        }
    }

    // What a fresh engine per evaluation would cost instead of the pool.
    let mut engine = regorus::Engine::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
    let rego = std::fs::read_to_string(dir.join("trino.rego")).expect("policy");
    engine.add_policy("trino.rego".into(), rego).expect("parses");
    let data = std::fs::read_to_string(dir.join("data.json")).expect("data");
    engine.add_data(regorus::Value::from_json_str(&data).expect("json")).expect("data");
    engine.eval_rule("data.trino.allow".into()).ok();
    let h = measure(&rt, || {
        let e = engine.clone();
        async move {
            drop(e);
            true
        }
    });
    println!(
        "| (regorus Engine clone, avoided by the pool) | - | {} | {} |",
        us(h.value_at_quantile(0.5)),
        us(h.value_at_quantile(0.99))
    );
}
