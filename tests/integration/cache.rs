//! The result cache: sharing only between identical effective queries, single flight,
//! expiry and eviction, invalidation by writes, client controls, the admin API. Executions
//! are counted on the worker (`quiver.stats`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use arrow_flight::Action;
use quiver_gateway::RunningGateway;
use quiver_gateway::config::{CacheConfig, QuiverConfig};
use tonic::Code;

use crate::authorization::{CustomPolicy, Direct, User, policy_config, single_i64, strings};
use crate::common::*;

/// Statements the worker has executed so far.
async fn executions(worker: SocketAddr) -> u64 {
    let mut raw = raw(worker).await;
    let action = Action { r#type: quiver_engine::STATS_ACTION.into(), body: Default::default() };
    let mut results = raw.do_action(action).await.expect("stats").into_inner();
    let body = results.message().await.expect("stats result").expect("one result").body;
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    json["statements_executed"].as_u64().expect("counter")
}

fn cached(dir: &Path, cache: CacheConfig, data: serde_json::Value) -> (QuiverConfig, CustomPolicy) {
    let policy = CustomPolicy::new(dir, data);
    let mut cfg = policy_config(dir, policy.config());
    cfg.cache = Some(cache);
    (cfg, policy)
}

async fn start(
    dir: &Path,
    cache: CacheConfig,
    data: serde_json::Value,
) -> (RunningGateway, Direct, SocketAddr, CustomPolicy) {
    let (cfg, policy) = cached(dir, cache, data);
    let gw = gateway(cfg).await;
    let engine = gw.engine_addr.expect("embedded engine");
    (gw, Direct::new(engine).await, engine, policy)
}

const Q: &str = "SELECT n_regionkey, count(*) AS n, min(n_name) AS first FROM nation GROUP BY n_regionkey ORDER BY 1";

#[tokio::test]
async fn a_hit_serves_the_same_rows_without_the_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct, engine, _p) = start(dir.path(), CacheConfig::default(), serde_json::json!({})).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let truth = pretty(&direct.query(Q).await);
    let before = executions(engine).await;
    let (rows, planned, served) = erin.run_with(Q, &[]).await.expect("miss");
    assert_eq!((planned.as_str(), served.as_str()), ("MISS", "MISS"));
    assert_eq!(pretty(&rows), truth);
    assert_eq!(executions(engine).await, before + 1);
    for _ in 0..3 {
        let (rows, planned, served) = erin.run_with(Q, &[]).await.expect("hit");
        assert_eq!((planned.as_str(), served.as_str()), ("HIT", "HIT"));
        assert_eq!(pretty(&rows), truth);
    }
    assert_eq!(executions(engine).await, before + 1, "hits never reach the worker");
    // The query history shows it served by the cache.
    let history = http_get(gw.http_addr, "/v1/query", &[("authorization", &basic_auth("erin", "erin-secret"))]).await;
    assert!(history.contains("\"cache\""), "{history}");
    gw.shutdown().await;
}

#[tokio::test]
async fn identical_effective_queries_share_and_different_policies_never_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = serde_json::json!({"filters": {
        "alice": {"nation": ["n_regionkey IN (1, 3)"]},
        "carol": {"nation": ["n_regionkey IN (1, 3)"]},
        "priya": {"nation": ["n_regionkey = 2"]},
    }});
    let (gw, mut direct, engine, _p) = start(dir.path(), CacheConfig::default(), data).await;
    let sql = "SELECT n_name FROM nation ORDER BY n_name";
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let mut carol = User::login(gw.flight_addr, "carol").await;
    let mut priya = User::login(gw.flight_addr, "priya").await;
    let mut erin = User::login(gw.flight_addr, "erin").await;

    let before = executions(engine).await;
    let (a, s, _) = alice.run_with(sql, &[]).await.expect("alice");
    assert_eq!(s, "MISS");
    let (c, s, _) = carol.run_with(sql, &[]).await.expect("carol");
    assert_eq!(s, "HIT", "carol's effective query is alice's");
    assert_eq!(pretty(&a), pretty(&c));
    assert_eq!(executions(engine).await, before + 1);
    let (p, s, _) = priya.run_with(sql, &[]).await.expect("priya");
    assert_eq!(s, "MISS");
    let (e, s, _) = erin.run_with(sql, &[]).await.expect("erin");
    assert_eq!(s, "MISS");
    assert_eq!(executions(engine).await, before + 3);
    assert_eq!(
        pretty(&a),
        pretty(&direct.query("SELECT n_name FROM nation WHERE n_regionkey IN (1, 3) ORDER BY n_name").await)
    );
    assert_eq!(
        pretty(&p),
        pretty(&direct.query("SELECT n_name FROM nation WHERE n_regionkey = 2 ORDER BY n_name").await)
    );
    assert_eq!(pretty(&e), pretty(&direct.query(sql).await));
    gw.shutdown().await;
}

/// Many users, random filters and masks (some equal, some not), the same dashboard queries
/// in random order, repeatedly: every answer equals the worker's answer under that user's
/// own policy. Set `QUIVER_PROPTEST_SEED` to replay.
#[tokio::test]
async fn randomized_users_and_policies_never_see_each_others_rows() {
    use rand::{Rng, SeedableRng};
    let seed: u64 =
        std::env::var("QUIVER_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("QUIVER_PROPTEST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct, _engine, mut policy) = start(dir.path(), CacheConfig::default(), serde_json::json!({})).await;
    let users = ["alice", "carol", "priya", "erin", "mallory"];
    let mut clients = Vec::new();
    for u in users {
        clients.push(User::login(gw.flight_addr, u).await);
    }
    let filters = ["c_nationkey < 10", "c_nationkey >= 10", "c_mktsegment = 'BUILDING'", "c_acctbal > 5000"];
    let masks = ["'hidden'", "substr(c_phone, 1, 3)", "upper(c_name)"];
    let queries = [
        "SELECT c_nationkey, count(*) AS n, sum(c_acctbal) AS total FROM customer GROUP BY 1 ORDER BY 1",
        "SELECT c_custkey, c_name, c_phone FROM customer ORDER BY c_custkey LIMIT 20",
        "SELECT c_mktsegment, max(c_phone) AS p FROM customer GROUP BY 1 ORDER BY 1",
    ];
    let mut hits = 0;
    for round in 0..3 {
        // Each user gets a filter (or none) and a mask on c_phone (or none); with four
        // filters and five users some policies coincide.
        let mut data = serde_json::json!({"filters": {}, "masks": {}});
        let mut truth_of = std::collections::BTreeMap::new();
        for u in users {
            let f = rng.random_range(0..=filters.len());
            let m = rng.random_range(0..=masks.len());
            if f < filters.len() {
                data["filters"][u] = serde_json::json!({"customer": [filters[f]]});
            }
            if m < masks.len() {
                data["masks"][u] = serde_json::json!({"customer": {"c_phone": masks[m]}});
            }
            truth_of.insert(u, (filters.get(f).copied(), masks.get(m).copied()));
        }
        policy.set(data);
        for _ in 0..12 {
            let i = rng.random_range(0..users.len());
            let q = queries[rng.random_range(0..queries.len())];
            let (rows, status, _) = clients[i].run_with(q, &[]).await.expect("query");
            hits += usize::from(status == "HIT");
            let (f, m) = truth_of[users[i]];
            let phone = m.map(|m| format!("{m} AS c_phone")).unwrap_or_else(|| "c_phone".into());
            let source = format!(
                "(SELECT c_custkey, c_name, c_nationkey, c_mktsegment, c_acctbal, {phone} FROM customer WHERE {}) customer",
                f.unwrap_or("true")
            );
            let truth = direct.query(&q.replace("FROM customer", &format!("FROM {source}"))).await;
            assert_eq!(pretty(&rows), pretty(&truth), "seed {seed}, round {round}, user {}: {q}", users[i]);
        }
    }
    assert!(hits > 0, "the cache was exercised (seed {seed})");
    gw.shutdown().await;
}

#[tokio::test]
async fn entries_expire_are_evicted_under_pressure_and_big_results_are_not_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheConfig { ttl_secs: 1, ..CacheConfig::default() };
    let (gw, _direct, _engine, _p) = start(dir.path(), cache, serde_json::json!({})).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    assert_eq!(erin.run_with(Q, &[]).await.expect("q").1, "MISS");
    assert_eq!(erin.run_with(Q, &[]).await.expect("q").1, "HIT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(erin.run_with(Q, &[]).await.expect("q").1, "MISS", "expired after ttl_secs");
    gw.shutdown().await;

    // Results of ~45 KB each in 64 KiB: the first of four is evicted.
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheConfig { max_size: "64KiB".into(), ..CacheConfig::default() };
    let (gw, _direct, _engine, _p) = start(dir.path(), cache, serde_json::json!({})).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let q =
        |i: usize| format!("SELECT c_custkey, c_name, c_address FROM customer WHERE c_custkey % 4 = {i} ORDER BY 1");
    for i in 0..4 {
        assert_eq!(erin.run_with(&q(i), &[]).await.expect("q").1, "MISS");
    }
    assert_eq!(erin.run_with(&q(0), &[]).await.expect("q").1, "MISS", "evicted for size");
    let metrics = http_get(gw.http_addr, "/metrics", &[("authorization", &basic_auth("erin", "erin-secret"))]).await;
    assert!(metrics.contains("quiver_cache_evictions_total{reason=\"size\"}"), "{metrics}");
    gw.shutdown().await;

    // Over max_entry_size: streamed in full, never kept.
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheConfig { max_entry_size: "8KiB".into(), ..CacheConfig::default() };
    let (gw, mut direct, _engine, _p) = start(dir.path(), cache, serde_json::json!({})).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let big = "SELECT c_custkey, c_name, c_address, c_comment FROM customer ORDER BY 1";
    let (rows, status, _) = erin.run_with(big, &[]).await.expect("big");
    assert_eq!(status, "MISS");
    assert_eq!(pretty(&rows), pretty(&direct.query(big).await));
    assert_eq!(erin.run_with(big, &[]).await.expect("big").1, "MISS", "too big to keep");
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_identical_misses_execute_once_on_the_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct, engine, _p) = start(dir.path(), CacheConfig::default(), serde_json::json!({})).await;
    let sql = "SELECT l_returnflag, l_linestatus, count(*) AS n, sum(l_extendedprice * (1 - l_discount)) AS revenue \
               FROM lineitem a JOIN orders o ON a.l_orderkey = o.o_orderkey GROUP BY 1, 2 ORDER BY 1, 2";
    let truth = pretty(&direct.query(sql).await);
    let before = executions(engine).await;
    // Eight callers plan (all misses), then fetch at the same time.
    let mut tickets = Vec::new();
    for _ in 0..8 {
        let mut u = User::login(gw.flight_addr, "erin").await;
        let cmd = arrow_flight::sql::CommandStatementQuery { query: sql.into(), transaction_id: None };
        use arrow_flight::sql::ProstMessageExt;
        use prost::Message;
        let (info, status) = u
            .info_with_status(arrow_flight::FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()), &[])
            .await
            .expect("info");
        assert_eq!(status, "MISS");
        tickets.push((u, info));
    }
    let fetches = tickets.into_iter().map(|(mut u, info)| async move { u.fetch_info(info).await });
    let results = futures::future::join_all(fetches).await;
    for r in results {
        assert_eq!(pretty(&r.expect("rows")), truth);
    }
    assert_eq!(executions(engine).await, before + 1, "one execution for eight callers");
    gw.shutdown().await;
}

#[tokio::test]
async fn writes_through_the_gateway_invalidate_and_volatile_catalogs_are_never_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct, _engine, _p) = start(dir.path(), CacheConfig::default(), serde_json::json!({})).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    erin.query("CREATE TABLE memory.default.events (id BIGINT)").await;
    erin.query("INSERT INTO memory.default.events VALUES (1)").await;
    let count = "SELECT count(*) FROM memory.default.events";
    let (rows, s, _) = erin.run_with(count, &[]).await.expect("count");
    assert_eq!((single_i64(&rows), s.as_str()), (1, "MISS"));
    assert_eq!(erin.run_with(count, &[]).await.expect("count").1, "HIT");
    // INSERT through the query path.
    erin.query("INSERT INTO memory.default.events VALUES (2)").await;
    let (rows, s, _) = erin.run_with(count, &[]).await.expect("count");
    assert_eq!((single_i64(&rows), s.as_str()), (2, "MISS"));
    // INSERT through DoPut (execute_update).
    let mut c = client_as(gw.flight_addr, "erin", "erin-secret").await;
    c.execute_update("INSERT INTO memory.default.events VALUES (3)".into(), None).await.expect("update");
    let (rows, s, _) = erin.run_with(count, &[]).await.expect("count");
    assert_eq!((single_i64(&rows), s.as_str()), (3, "MISS"));
    gw.shutdown().await;

    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheConfig { volatile_catalogs: vec!["memory".into()], ..CacheConfig::default() };
    let (gw, _direct, _engine, _p) = start(dir.path(), cache, serde_json::json!({})).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    erin.query("CREATE TABLE memory.default.t AS VALUES (1)").await;
    for _ in 0..2 {
        assert_eq!(erin.run_with("SELECT * FROM memory.default.t", &[]).await.expect("q").1, "BYPASS");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn non_deterministic_statements_explain_and_information_schema_bypass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct, _engine, _p) = start(dir.path(), CacheConfig::default(), serde_json::json!({})).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let (rows, planned, served) = erin.run_with("SELECT random() AS r FROM nation LIMIT 1", &[]).await.expect("r");
        assert_eq!((planned.as_str(), served.as_str()), ("BYPASS", "BYPASS"));
        seen.insert(strings(&rows, 0)[0].clone());
    }
    assert_eq!(seen.len(), 2, "two runs, two random values");
    for sql in [
        "SELECT now() AS t",
        "SELECT n_name, uuid() AS u FROM nation",
        "SELECT current_date AS d",
        "EXPLAIN SELECT * FROM nation",
        "SELECT table_name FROM information_schema.tables",
    ] {
        for _ in 0..2 {
            assert_eq!(erin.run_with(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).1, "BYPASS", "{sql}");
        }
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn no_cache_only_if_cached_and_max_age_are_honoured() {
    const H: &str = "x-quiver-cache-control";
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct, engine, _p) = start(dir.path(), CacheConfig::default(), serde_json::json!({})).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    // only-if-cached on a result not stored: refused, nothing runs.
    let before = executions(engine).await;
    let err = erin.run_with(Q, &[(H, "only-if-cached")]).await.expect_err("not cached");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert_eq!(executions(engine).await, before);
    assert_eq!(erin.run_with(Q, &[]).await.expect("q").1, "MISS");
    assert_eq!(erin.run_with(Q, &[(H, "only-if-cached")]).await.expect("q").1, "HIT");
    // no-cache: runs again (and refreshes the entry).
    let (_, planned, served) = erin.run_with(Q, &[(H, "no-cache")]).await.expect("q");
    assert_eq!((planned.as_str(), served.as_str()), ("MISS", "MISS"));
    assert_eq!(executions(engine).await, before + 2);
    // max-age: an entry older than that is not served.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(erin.run_with(Q, &[(H, "max-age=60")]).await.expect("q").1, "HIT");
    assert_eq!(erin.run_with(Q, &[(H, "max-age=0")]).await.expect("q").1, "MISS");
    let err = erin.run_with(Q, &[(H, "max-age=later")]).await.expect_err("bad control");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("max-age=later"), "{err}");
    // only-if-cached on a statement that is never cached.
    let err = erin.run_with("SELECT random()", &[(H, "only-if-cached")]).await.expect_err("never cached");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_api_evicts_by_table_catalog_or_all_and_metrics_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut cfg, _p) = cached(dir.path(), CacheConfig::default(), serde_json::json!({}));
    cfg.admin.users = vec!["erin".into()];
    let gw = gateway(cfg).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let auth = basic_auth("erin", "erin-secret");
    let region = "SELECT * FROM region ORDER BY 1";
    for sql in [Q, region] {
        erin.run_with(sql, &[]).await.expect("miss");
        assert_eq!(erin.run_with(sql, &[]).await.expect("hit").1, "HIT");
    }
    let state = json_body(&http_get(gw.http_addr, "/v1/cache", &[("authorization", &auth)]).await);
    assert_eq!(state["entries"], 2, "{state}");
    let r = json_body(
        &http_request(gw.http_addr, "DELETE", "/v1/cache?table=tpch.tiny.nation", &[("authorization", &auth)]).await,
    );
    assert_eq!(r["evicted"], 1, "{r}");
    assert_eq!(erin.run_with(Q, &[]).await.expect("q").1, "MISS");
    assert_eq!(erin.run_with(region, &[]).await.expect("q").1, "HIT");
    let r =
        json_body(&http_request(gw.http_addr, "DELETE", "/v1/cache?catalog=tpch", &[("authorization", &auth)]).await);
    assert_eq!(r["evicted"], 2, "{r}");
    erin.run_with(region, &[]).await.expect("q");
    let r = json_body(&http_request(gw.http_addr, "DELETE", "/v1/cache", &[("authorization", &auth)]).await);
    assert_eq!(r["evicted"], 1, "{r}");
    // Only admins.
    let other =
        http_request(gw.http_addr, "DELETE", "/v1/cache", &[("authorization", &basic_auth("alice", "alice-secret"))])
            .await;
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");
    let metrics = http_get(gw.http_addr, "/metrics", &[("authorization", &auth)]).await;
    assert!(!metrics.contains("erin"), "no user names in the metrics: {metrics}");
    for needle in [
        "quiver_cache_requests_total{result=\"HIT\"}",
        "quiver_cache_requests_total{result=\"MISS\"}",
        "quiver_cache_hit_ratio",
        "quiver_cache_bytes",
        "quiver_cache_evictions_total{reason=\"invalidated\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn prepared_statements_are_cached_per_bound_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct, engine, _p) = start(dir.path(), CacheConfig::default(), serde_json::json!({})).await;
    let mut erin = client_as(gw.flight_addr, "erin", "erin-secret").await;
    let mut stmt = erin
        .prepare("SELECT n_name FROM nation WHERE n_regionkey = ? ORDER BY n_name".into(), None)
        .await
        .expect("prepare");
    let bind = |v: i64| {
        datafusion::arrow::array::RecordBatch::try_from_iter(vec![(
            "p",
            std::sync::Arc::new(datafusion::arrow::array::Int64Array::from(vec![v])) as _,
        )])
        .expect("params")
    };
    let mut truth = std::collections::BTreeMap::new();
    for region in [1, 2] {
        let sql = format!("SELECT n_name FROM nation WHERE n_regionkey = {region} ORDER BY n_name");
        truth.insert(region, pretty(&direct.query(&sql).await));
    }
    let before = executions(engine).await;
    let mut answers = Vec::new();
    for (region, executed) in [(1, 1), (1, 1), (2, 2), (2, 2), (1, 2)] {
        stmt.set_parameters(bind(region)).expect("bind");
        let info = stmt.execute().await.expect("execute");
        let rows = fetch(&mut erin, info).await;
        assert_eq!(pretty(&rows), truth[&region], "region {region}");
        assert_eq!(executions(engine).await, before + executed, "region {region}");
        answers.push(pretty(&rows));
    }
    assert_ne!(answers[0], answers[2]);
    gw.shutdown().await;
}

#[tokio::test]
async fn zstd_compressed_entries_replay_exactly_and_take_less_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = CacheConfig { compression: quiver_gateway::config::CacheCompression::Zstd, ..CacheConfig::default() };
    let (mut cfg, _p) = cached(dir.path(), cache, serde_json::json!({}));
    cfg.admin.users = vec!["erin".into()];
    let gw = gateway(cfg).await;
    let mut direct = Direct::new(gw.engine_addr.expect("engine")).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let sql = "SELECT c_custkey, c_name, c_address, c_comment FROM customer ORDER BY 1";
    let truth = pretty(&direct.query(sql).await);
    let (rows, status, _) = erin.run_with(sql, &[]).await.expect("miss");
    assert_eq!((pretty(&rows), status.as_str()), (truth.clone(), "MISS"));
    // Compressed entries are stored after the callers are released: wait for it.
    let auth = basic_auth("erin", "erin-secret");
    let mut state = serde_json::Value::Null;
    for _ in 0..50 {
        state = json_body(&http_get(gw.http_addr, "/v1/cache", &[("authorization", &auth)]).await);
        if state["entries"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["entries"], 1, "{state}");
    let streamed: usize =
        rows.iter().flat_map(|b| b.columns().iter().map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))).sum();
    let stored = state["bytes"].as_u64().expect("bytes") as usize;
    assert!(stored < streamed, "zstd stored {stored} bytes for {streamed} bytes of Arrow data");
    let (rows, status, _) = erin.run_with(sql, &[]).await.expect("hit");
    assert_eq!((pretty(&rows), status.as_str()), (truth, "HIT"));
    gw.shutdown().await;
}
