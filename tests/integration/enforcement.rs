//! The worker runs exactly what the gateway authorized: one regression test per finding of the
//! red-team review (issue 11), named after it, plus variants and a randomized property test
//! that changes objects between planning and execution.
//!
//! Every test runs the example policies (conf/policies): alice is an analyst who sees only
//! EUROPE's customers, with phones and addresses masked and `c_acctbal` hidden; `memory` is
//! everyone's scratch space; erin (engineers) reads all of tpch.

use std::time::Duration;

use arrow_flight::sql::ProstMessageExt;
use datafusion::arrow::array::RecordBatch;
use prost::Message;
use quiver_gateway::flight::session_proto::{
    SessionOptionValue, SetSessionOptionsRequest, SetSessionOptionsResult, session_option_value,
};
use tonic::Code;

use crate::authorization::{User, example_gateway, single_i64, strings};
use crate::common::*;

/// EUROPE's nation keys (alice's region).
const EUROPE: [i64; 5] = [6, 7, 19, 22, 23];

/// The example policies with the result cache on (nothing volatile).
fn cached_policy_config(dir: &std::path::Path) -> quiver_gateway::config::QuiverConfig {
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
    let mut cfg = crate::authorization::policy_config(dir, crate::authorization::opa_config(&policies, 1000));
    cfg.cache = Some(quiver_gateway::config::CacheConfig::default());
    cfg
}

/// Runs each statement as `user`, panicking on the first failure.
async fn setup(user: &mut User, statements: &[&str]) {
    for sql in statements {
        user.run(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn i64s(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    strings(batches, column).iter().map(|s| s.parse().unwrap_or_else(|_| panic!("integer: {s}"))).collect()
}

/// A real (unmasked) TPC-H phone number starts with two digits.
fn is_real_phone(p: &str) -> bool {
    p.len() > 2 && p.as_bytes()[0].is_ascii_digit() && p.as_bytes()[1].is_ascii_digit()
}

#[tokio::test]
async fn finding_1_view_swapped_under_a_view_runs_the_gateways_expansion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    setup(
        &mut alice,
        &[
            "CREATE VIEW memory.default.va AS SELECT c_custkey, c_name, c_phone, c_address, c_nationkey FROM tpch.tiny.customer",
            "CREATE VIEW memory.default.vb AS SELECT * FROM memory.default.va",
        ],
    )
    .await;
    // Through the views, alice's policy applies to customer.
    let europe = direct.count("SELECT count(*) FROM customer WHERE c_nationkey IN (6, 7, 19, 22, 23)").await;
    assert_eq!(alice.count("SELECT count(*) FROM memory.default.vb").await, europe);
    setup(
        &mut alice,
        &[
            "DROP VIEW memory.default.va",
            "CREATE VIEW memory.default.va AS SELECT CAST(1 AS BIGINT) c_custkey, 'n' c_name, 'p' c_phone, \
             'a' c_address, 1 c_nationkey",
        ],
    )
    .await;
    // The worker's own vb still holds the plan it had when created (customer, unfiltered);
    // the gateway expands vb from its definition against today's va and the worker runs that.
    let b = alice.query("SELECT count(*), count(DISTINCT c_nationkey) FROM memory.default.vb").await;
    assert_eq!((single_i64(&b), strings(&b, 1)), (1, vec!["1".to_string()]));
    let phones = strings(&alice.query("SELECT c_phone FROM memory.default.vb").await, 0);
    assert_eq!(phones, vec!["p".to_string()]);
    // Shown to fail without the fix: the worker's own plan of vb reads every customer.
    assert_eq!(direct.count("SELECT count(*) FROM memory.default.vb").await, 1500);
}

#[tokio::test]
async fn finding_2_object_replaced_between_get_flight_info_and_do_get_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    setup(&mut alice, &["CREATE TABLE memory.default.vt AS SELECT 7 AS c_nationkey, 'p' AS c_phone"]).await;
    let ticket = alice.plan("SELECT * FROM memory.default.vt").await.expect("planned while vt is a table");
    setup(
        &mut alice,
        &[
            "DROP TABLE memory.default.vt",
            "CREATE VIEW memory.default.vt AS SELECT c_nationkey, c_phone FROM tpch.tiny.customer",
        ],
    )
    .await;
    let err = alice.fetch_info(ticket).await.expect_err("the ticket was authorized against a table");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("memory.default.vt became a view"), "{err}");
    assert!(err.message().contains("plan the statement again"), "{err}");
    // Planned again, the view is expanded and alice's policy applies.
    let b = alice.query("SELECT c_nationkey, c_phone FROM memory.default.vt").await;
    assert!(!b.is_empty());
    assert!(i64s(&b, 0).iter().all(|k| EUROPE.contains(k)));
    assert!(strings(&b, 1).iter().all(|p| !is_real_phone(p)));

    // Variants: columns added to a table, a table dropped.
    setup(&mut alice, &["CREATE TABLE memory.default.t2 AS SELECT 1 AS a"]).await;
    let ticket = alice.plan("SELECT * FROM memory.default.t2").await.expect("planned");
    setup(&mut alice, &["DROP TABLE memory.default.t2", "CREATE TABLE memory.default.t2 AS SELECT 1 AS a, 2 AS b"])
        .await;
    let err = alice.fetch_info(ticket).await.expect_err("columns changed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("the columns of memory.default.t2 changed"), "{err}");
    let ticket = alice.plan("SELECT * FROM memory.default.t2").await.expect("planned");
    setup(&mut alice, &["DROP TABLE memory.default.t2"]).await;
    let err = alice.fetch_info(ticket).await.expect_err("dropped");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
}

/// SetSessionOptions with string options, as the JDBC driver and ADBC send them.
async fn set_session(user: &mut User, options: &[(&str, &str)]) {
    let request = SetSessionOptionsRequest {
        session_options: options
            .iter()
            .map(|(k, v)| {
                let value = session_option_value::OptionValue::StringValue(v.to_string());
                (k.to_string(), SessionOptionValue { option_value: Some(value) })
            })
            .collect(),
    };
    let bodies = user.action("SetSessionOptions", request.encode_to_vec()).await.expect("SetSessionOptions");
    let result = SetSessionOptionsResult::decode(bodies[0].clone()).expect("result");
    assert!(result.errors.is_empty(), "{:?}", result.errors);
}

#[tokio::test]
async fn finding_3_the_session_schema_is_the_one_the_worker_resolves_names_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    setup(
        &mut alice,
        &[
            "CREATE SCHEMA memory.\"é\"",
            "CREATE TABLE memory.\"é\".customer AS SELECT 'dummy' AS c_phone",
            "CREATE SCHEMA memory.tiny",
            "CREATE VIEW memory.tiny.customer AS SELECT c_phone FROM tpch.tiny.customer",
        ],
    )
    .await;
    set_session(&mut alice, &[("catalog", "memory"), ("schema", "é")]).await;
    // Checked against memory."é".customer, and that is what runs (the worker used to drop the
    // non-ASCII schema and read memory.tiny.customer, every phone in clear).
    let phones = strings(&alice.query("SELECT c_phone FROM customer").await, 0);
    assert_eq!(phones, vec!["dummy".to_string()]);
}

#[tokio::test]
async fn finding_4_columns_read_only_inside_lateral_and_correlated_subqueries_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    setup(
        &mut alice,
        &["CREATE TABLE memory.default.r AS SELECT CAST(column1 AS BIGINT) AS value FROM (VALUES (1), (2), (3))"],
    )
    .await;
    // Compares every balance with a value alice controls: it would tell her each c_acctbal.
    let lateral = "SELECT c.c_custkey, x.value FROM tpch.tiny.customer c, LATERAL (SELECT r.value FROM memory.default.r r \
                   WHERE r.value < CAST(c.c_acctbal AS BIGINT)) x";
    // The shape works for someone who may read c_acctbal...
    assert!(rows(&erin.query(lateral).await) > 0);
    // ...and is refused for alice, as a query and as a view.
    for sql in [
        lateral.to_string(),
        format!("CREATE VIEW memory.default.leak AS {lateral}"),
        "SELECT c_custkey FROM tpch.tiny.customer c WHERE EXISTS (SELECT 1 FROM memory.default.r r \
         WHERE r.value = CAST(c.c_acctbal AS BIGINT))"
            .to_string(),
        "SELECT c_custkey, (SELECT max(value) FROM memory.default.r r WHERE r.value < c.c_acctbal) \
         FROM tpch.tiny.customer c"
            .to_string(),
        "SELECT c_custkey, rank() OVER (PARTITION BY c_acctbal ORDER BY c_custkey) FROM tpch.tiny.customer".to_string(),
        "SELECT c_name, count(*) FROM tpch.tiny.customer GROUP BY GROUPING SETS ((c_name), (c_acctbal))".to_string(),
    ] {
        let err = alice.run(&sql).await.expect_err(&sql);
        assert!(matches!(err.code(), Code::PermissionDenied | Code::InvalidArgument | Code::NotFound), "{sql}: {err}");
    }
    assert!(alice.run("SELECT * FROM memory.default.leak").await.is_err(), "the view was never created");
}

#[tokio::test]
async fn finding_5_explain_analyze_of_a_write_needs_the_writes_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, mut direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let before = direct.count("SELECT count(*) FROM nation").await;
    for sql in [
        "INSERT INTO tpch.tiny.nation VALUES (99, 'ALICELAND', 3, 'x')",
        "EXPLAIN ANALYZE INSERT INTO tpch.tiny.nation VALUES (99, 'ALICELAND', 3, 'x')",
        "EXPLAIN INSERT INTO tpch.tiny.nation VALUES (99, 'ALICELAND', 3, 'x')",
        "EXPLAIN ANALYZE DELETE FROM tpch.tiny.nation WHERE n_nationkey = 1",
        "EXPLAIN ANALYZE UPDATE tpch.tiny.nation SET n_comment = 'x' WHERE n_nationkey = 1",
    ] {
        let err = alice.run(sql).await.expect_err(sql);
        assert_eq!(err.code(), Code::PermissionDenied, "{sql}: {err}");
    }
    assert_eq!(direct.count("SELECT count(*) FROM nation").await, before);
    // In her scratch space the wrapped write is allowed, runs once, and is a write.
    setup(&mut alice, &["CREATE TABLE memory.default.w (a BIGINT)"]).await;
    alice.query("EXPLAIN ANALYZE INSERT INTO memory.default.w VALUES (1), (2)").await;
    assert_eq!(alice.count("SELECT count(*) FROM memory.default.w").await, 2);
}

#[tokio::test]
async fn finding_5_explain_analyze_of_a_write_invalidates_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = cached_policy_config(dir.path());
    let gw = gateway(cfg).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    setup(&mut erin, &["CREATE TABLE memory.default.n AS SELECT 1 AS a"]).await;
    assert_eq!(erin.count("SELECT count(*) FROM memory.default.n").await, 1);
    let (_, planned, _) = erin.run_with("SELECT count(*) FROM memory.default.n", &[]).await.expect("cached");
    assert_eq!(planned, "HIT");
    erin.query("EXPLAIN ANALYZE INSERT INTO memory.default.n VALUES (2)").await;
    let (b, planned, _) = erin.run_with("SELECT count(*) FROM memory.default.n", &[]).await.expect("after");
    assert_eq!((single_i64(&b), planned.as_str()), (2, "MISS"));
}

#[tokio::test]
async fn finding_6_errors_never_name_what_the_caller_may_not_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    // A typo next to a hidden column: the suggestion and the field list name visible columns.
    let err = alice.run("SELECT c_acctbl FROM customer").await.expect_err("no such column");
    assert!(!err.message().contains("c_acctbal"), "{err}");
    assert!(err.message().contains("c_acctbl"), "{err}");
    // A hidden column and a missing one answer alike: "not found", listing visible columns.
    let hidden = alice.run("SELECT c_acctbal FROM customer").await.expect_err("hidden");
    let missing = alice.run("SELECT c_nosuchc FROM customer").await.expect_err("missing");
    assert_eq!(hidden.code(), missing.code(), "{hidden} / {missing}");
    let before = |m: &str, name: &str| m[..m.find(name).unwrap_or(m.len())].to_string();
    assert_eq!(before(hidden.message(), "c_acctbal"), before(missing.message(), "c_nosuchc"));
    for m in [hidden.message(), missing.message()] {
        assert!(!m.to_ascii_lowercase().contains("denied"), "{m}");
    }
    // The hidden name appears only where the caller typed it, never in a list or suggestion.
    assert_eq!(hidden.message().matches("c_acctbal").count(), 1, "{hidden}");
    assert!(!missing.message().contains("c_acctbal"), "{missing}");
    // A hidden table and a missing one answer alike.
    let hidden = alice.run("SELECT * FROM tpch.tiny.orders").await.expect_err("hidden");
    let missing = alice.run("SELECT * FROM tpch.tiny.ordersx").await.expect_err("missing");
    assert_eq!(hidden.code(), missing.code(), "{hidden} / {missing}");
    assert_eq!(hidden.message().replace("ordersx", "orders"), missing.message().replace("ordersx", "orders"));
    assert!(!hidden.message().contains("o_orderkey"), "{hidden}");
    // A hidden catalog and a missing one answer alike.
    let mut mallory = User::login(gw.flight_addr, "mallory").await;
    let hidden = mallory.run("SELECT * FROM tpch.tiny.nation").await.expect_err("hidden catalog");
    let missing = mallory.run("SELECT * FROM tpcx.tiny.nation").await.expect_err("missing catalog");
    assert_eq!((hidden.code(), missing.code()), (Code::NotFound, Code::NotFound), "{hidden} / {missing}");
    assert_eq!(hidden.message().replace("tpch", "X"), missing.message().replace("tpcx", "X"));
}

#[tokio::test]
async fn finding_7_writes_through_prepared_statements_invalidate_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = cached_policy_config(dir.path());
    let gw = gateway(cfg).await;
    let mut erin = User::login(gw.flight_addr, "erin").await;
    let mut client = client_as(gw.flight_addr, "erin", "erin-secret").await;
    setup(&mut erin, &["CREATE TABLE memory.default.p AS SELECT 1 AS a"]).await;
    let count = "SELECT count(*) FROM memory.default.p";
    erin.query(count).await;
    assert_eq!(erin.run_with(count, &[]).await.expect("hit").1, "HIT");
    // ADBC's DB-API: the INSERT is prepared, then run with GetFlightInfo + DoGet.
    let mut prepared = client.prepare("INSERT INTO memory.default.p VALUES (2)".into(), None).await.expect("prepare");
    let info = prepared.execute().await.expect("execute");
    fetch(&mut client, info).await;
    let (b, planned, _) = erin.run_with(count, &[]).await.expect("after");
    assert_eq!((single_i64(&b), planned.as_str()), (2, "MISS"));
    assert_eq!(erin.run_with(count, &[]).await.expect("hit").1, "HIT");
    // JDBC's executeUpdate: DoPut of the prepared update.
    let mut prepared = client.prepare("INSERT INTO memory.default.p VALUES (3)".into(), None).await.expect("prepare");
    assert_eq!(prepared.execute_update().await.expect("update"), 1);
    let (b, planned, _) = erin.run_with(count, &[]).await.expect("after update");
    assert_eq!((single_i64(&b), planned.as_str()), (3, "MISS"));
}

#[tokio::test]
async fn finding_8_deep_statements_are_refused_and_the_gateway_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    // 1,000 terms (the default limit) plan and run, under a policy too.
    let sum = format!("SELECT {}", vec!["1"; 1000].join("+"));
    assert_eq!(alice.count(&sum).await, 1000);
    let filtered = format!("SELECT count(*) FROM customer WHERE c_custkey{} > 0", "+0".repeat(900));
    assert!(alice.count(&filtered).await > 0);
    // Deeper statements are an INVALID_ARGUMENT naming the limit, not a crash.
    for sql in [
        format!("SELECT {}", vec!["1"; 5000].join("+")),
        format!("SELECT {}1{}", "(".repeat(3000), ")".repeat(3000)),
        format!("SELECT 1 WHERE {}", vec!["true"; 3000].join(" AND ")),
        format!("SELECT * FROM customer WHERE {}", vec!["c_custkey = 1"; 3000].join(" OR ")),
    ] {
        let err = alice.run(&sql).await.expect_err("too deep");
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("server.max_statement_depth"), "{err}");
    }
    // Nested parentheses under the limit are refused by the parser's own limit, cleanly.
    let err = alice.run(&format!("SELECT {}1{}", "(".repeat(200), ")".repeat(200))).await.expect_err("nested");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(alice.count("SELECT 1").await, 1);
}

#[tokio::test]
async fn finding_9_failed_logins_are_throttled_per_user_and_the_gateway_stays_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut raw = raw(gw.flight_addr).await;
    let attempt = |user: &str, password: &str| {
        let mut request = tonic::Request::new(futures::stream::iter(vec![arrow_flight::HandshakeRequest::default()]));
        request.metadata_mut().insert("authorization", basic_auth(user, password).parse().expect("header"));
        request
    };
    for _ in 0..10 {
        let err = raw.handshake(attempt("alice", "wrong")).await.expect_err("wrong password");
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    }
    // The 11th attempt is refused before any password check, even with the right password.
    let err = raw.handshake(attempt("alice", "alice-secret")).await.expect_err("throttled");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("too many failed logins"), "{err}");
    // Other users are not locked out.
    assert!(raw.handshake(attempt("carol", "carol-secret")).await.is_ok());
    // Many concurrent wrong logins for distinct users: each answered, none crash anything.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let mut raw = raw.clone();
        let request = attempt(&format!("nobody{i}"), "wrong");
        tasks.push(tokio::spawn(async move { raw.handshake(request).await.map(|_| ()) }));
    }
    for t in tasks {
        let err = t.await.expect("join").expect_err("wrong");
        assert!(matches!(err.code(), Code::Unauthenticated | Code::Unavailable), "{err}");
    }
    let mut carol = User::login(gw.flight_addr, "carol").await;
    assert_eq!(carol.count("SELECT 1").await, 1);
}

#[tokio::test]
async fn finding_10_metrics_name_no_user_and_clients_cannot_choose_their_session_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = cached_policy_config(dir.path());
    cfg.admin.users = vec!["erin".into()];
    let gw = gateway(cfg).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    alice.query("SELECT count(*) FROM nation").await;
    let metrics = http_get(gw.http_addr, "/metrics", &[("authorization", &basic_auth("erin", "erin-secret"))]).await;
    assert!(metrics.contains("quiver_cache_requests_total"), "{metrics}");
    assert!(!metrics.contains("alice"), "{metrics}");
    // A login carrying a chosen session cookie gets a session id of the gateway's choosing.
    let mut raw = raw(gw.flight_addr).await;
    let mut request = tonic::Request::new(futures::stream::iter(vec![arrow_flight::HandshakeRequest::default()]));
    request.metadata_mut().insert("authorization", basic_auth("alice", "alice-secret").parse().expect("header"));
    request.metadata_mut().insert("cookie", "arrow_flight_session_id=attacker-chosen".parse().expect("cookie"));
    let response = raw.handshake(request).await.expect("handshake");
    let token = response.metadata().get("authorization").and_then(|v| v.to_str().ok()).expect("token").to_string();
    let claims = token_claims(&token);
    assert_ne!(claims["sid"], "attacker-chosen", "{claims}");
}

/// What a random round puts behind `memory.default.obj` (columns c_nationkey, c_phone).
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A table of dummy rows (nation 6, phone `p`).
    Table,
    /// A view over tpch.tiny.customer (alice's filter and mask apply).
    View,
    /// A view over a view over customer.
    ViewOfView,
    /// A view over a table of dummy rows.
    ViewOfTable,
}

const SHAPES: [Shape; 4] = [Shape::Table, Shape::View, Shape::ViewOfView, Shape::ViewOfTable];

async fn build(user: &mut User, shape: Shape) {
    let statements: &[&str] = match shape {
        Shape::Table => &["CREATE TABLE memory.default.obj AS SELECT CAST(6 AS INT) AS c_nationkey, 'p' AS c_phone"],
        Shape::View => &["CREATE VIEW memory.default.obj AS SELECT c_nationkey, c_phone FROM tpch.tiny.customer"],
        Shape::ViewOfView => &[
            "CREATE VIEW memory.default.inner_v AS SELECT c_nationkey, c_phone FROM tpch.tiny.customer",
            "CREATE VIEW memory.default.obj AS SELECT * FROM memory.default.inner_v",
        ],
        Shape::ViewOfTable => &[
            "CREATE TABLE memory.default.inner_t AS SELECT CAST(6 AS INT) AS c_nationkey, 'p' AS c_phone",
            "CREATE VIEW memory.default.obj AS SELECT * FROM memory.default.inner_t",
        ],
    };
    setup(user, statements).await;
}

async fn tear_down(user: &mut User) {
    for sql in [
        "DROP VIEW IF EXISTS memory.default.obj",
        "DROP TABLE IF EXISTS memory.default.obj",
        "DROP VIEW IF EXISTS memory.default.inner_v",
        "DROP TABLE IF EXISTS memory.default.inner_t",
    ] {
        let _ = user.run(sql).await;
    }
}

#[tokio::test]
async fn property_objects_swapped_between_plan_and_execution_never_leak() {
    let seed: u64 =
        std::env::var("QUIVER_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("property_objects_swapped_between_plan_and_execution_never_leak: QUIVER_PROPTEST_SEED={seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    let queries = [
        "SELECT c_nationkey, c_phone FROM memory.default.obj",
        "SELECT c_nationkey, max(c_phone) FROM memory.default.obj GROUP BY c_nationkey",
        "WITH x AS (SELECT * FROM memory.default.obj) SELECT c_nationkey, c_phone FROM x WHERE c_nationkey >= 0",
        "SELECT o.c_nationkey, o.c_phone FROM memory.default.obj o WHERE EXISTS (SELECT 1 FROM memory.default.obj p \
         WHERE p.c_nationkey = o.c_nationkey)",
    ];
    let (mut refused, mut answered) = (0, 0);
    for round in 0..40 {
        tear_down(&mut alice).await;
        let before = SHAPES[rand::Rng::random_range(&mut rng, 0..SHAPES.len())];
        let after = SHAPES[rand::Rng::random_range(&mut rng, 0..SHAPES.len())];
        let sql = queries[rand::Rng::random_range(&mut rng, 0..queries.len())];
        build(&mut alice, before).await;
        let info = alice.plan(sql).await.unwrap_or_else(|e| panic!("round {round} {before:?}: {e}"));
        let swap = rand::Rng::random_bool(&mut rng, 0.7);
        if swap {
            tear_down(&mut alice).await;
            build(&mut alice, after).await;
        }
        match alice.fetch_info(info).await {
            Ok(b) => {
                answered += 1;
                // Whatever was answered obeys alice's policy: her region, phones masked.
                for k in i64s(&b, 0) {
                    assert!(EUROPE.contains(&k), "round {round} ({before:?} -> {after:?}, seed {seed}): nation {k}");
                }
                for p in strings(&b, 1) {
                    assert!(!is_real_phone(&p), "round {round} ({before:?} -> {after:?}, seed {seed}): phone {p}");
                }
            }
            Err(e) => {
                refused += 1;
                assert!(!e.message().contains("c_acctbal"), "round {round}: {e}");
                assert!(swap, "round {round}: refused without a change: {e}");
                assert_eq!(e.code(), Code::FailedPrecondition, "round {round} ({before:?} -> {after:?}): {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!("{answered} answered, {refused} refused as changed");
    assert!(answered > 0 && refused > 0, "both outcomes occur: {answered} answered, {refused} refused");
}

#[tokio::test]
async fn authorized_handles_reach_the_worker_and_plain_sql_is_no_longer_trusted_blindly() {
    // The statement the worker gets for a query under a policy is an authorized handle: a
    // ticket redeemed straight at the worker (no gateway) with the objects changed is refused
    // by the worker itself.
    let dir = tempfile::tempdir().expect("tempdir");
    let (gw, _direct) = example_gateway(dir.path()).await;
    let mut alice = User::login(gw.flight_addr, "alice").await;
    setup(&mut alice, &["CREATE TABLE memory.default.h AS SELECT 1 AS a"]).await;
    let mut handle = quiver_engine::handle::StatementHandle::new(
        "SELECT a FROM memory.default.h",
        Some("memory".into()),
        Some("default".into()),
    );
    handle.authorized = Some(quiver_engine::handle::Authorized {
        tables: vec![quiver_engine::handle::AuthorizedTable {
            name: quiver_engine::reads::QualifiedName::new("memory", "default", "h"),
            fingerprint: "not the real one".into(),
            columns: vec!["a".into()],
        }],
    });
    let mut worker = raw(gw.engine_addr.expect("engine")).await;
    let cmd = arrow_flight::sql::CommandPreparedStatementQuery { prepared_statement_handle: handle.encode() };
    let err = worker
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()))
        .await
        .expect_err("fingerprint mismatch");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    // A column outside the authorized set is refused too.
    handle.sql = "SELECT a, a + 1 FROM memory.default.h".into();
    handle.authorized = Some(quiver_engine::handle::Authorized {
        tables: vec![quiver_engine::handle::AuthorizedTable {
            name: quiver_engine::reads::QualifiedName::new("memory", "default", "h"),
            fingerprint: {
                use datafusion::arrow::datatypes::{DataType, Field, Schema};
                quiver_engine::reads::schema_fingerprint(&Schema::new(vec![Field::new("a", DataType::Int64, false)]))
            },
            columns: vec![],
        }],
    });
    let cmd = arrow_flight::sql::CommandPreparedStatementQuery { prepared_statement_handle: handle.encode() };
    let err = worker
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec()))
        .await
        .expect_err("column not authorized");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
}
