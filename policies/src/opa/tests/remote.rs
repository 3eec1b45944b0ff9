//! Remote OPA against a server that speaks OPA's REST data API (`POST /v1/data/<path>`), started
//! by the test on 127.0.0.1:0 and evaluating with regorus (no OPA binary is installable here).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use serde_json::{Value, json};

use super::*;

struct Server {
    engine: regorus::Engine,
    requests: AtomicUsize,
    delay: Duration,
}

async fn data_api(State(s): State<Arc<Server>>, UrlPath(path): UrlPath<String>, body: String) -> axum::Json<Value> {
    s.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(s.delay).await;
    let mut engine = s.engine.clone();
    let doc: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    engine.set_input(regorus::Value::from(doc.get("input").cloned().unwrap_or(Value::Null)));
    let rule = format!("data.{}", path.trim_matches('/').replace('/', "."));
    match engine.eval_rule(rule) {
        Ok(v) if v != regorus::Value::Undefined => {
            axum::Json(json!({"result": serde_json::to_value(&v).unwrap_or(Value::Null)}))
        }
        // OPA answers an undefined document with an empty object.
        _ => axum::Json(json!({})),
    }
}

/// Starts the server; returns its base URL and shared state. It stops with the test runtime.
async fn start(delay: Duration) -> (String, Arc<Server>) {
    let mut engine = regorus::Engine::new();
    for f in ["trino.rego", "data.json"] {
        let path = example_dir().join(f);
        let text = std::fs::read_to_string(&path).expect("example policy");
        if f.ends_with(".rego") {
            engine.add_policy(f.into(), text).expect("policy parses");
        } else {
            engine.add_data(regorus::Value::from_json_str(&text).expect("data")).expect("data");
        }
    }
    let state = Arc::new(Server { engine, requests: AtomicUsize::new(0), delay });
    let app = axum::Router::new().route("/v1/data/{*path}", post(data_api)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (format!("http://{addr}/v1/data/trino"), state)
}

fn remote_config(base: &str, ttl_ms: u64, timeout_ms: u64) -> OpaConfig {
    let mut c = OpaConfig::remote(format!("{base}/allow"));
    c.batch_policy_uri = Some(format!("{base}/batch"));
    c.row_filters_policy_uri = Some(format!("{base}/rowFilters"));
    c.batch_column_masking_policy_uri = Some(format!("{base}/batchColumnMasks"));
    c.decision_cache_ttl_ms = Some(ttl_ms);
    if let Some(r) = c.remote.as_mut() {
        r.timeout_ms = timeout_ms;
    }
    c
}

#[tokio::test]
async fn remote_decisions_match_the_policy() {
    let (base, _) = start(Duration::ZERO).await;
    let opa = OpaAuthorizer::from_config(remote_config(&base, 0, 2_000)).expect("client");
    assert_eq!(opa.check(&alice(), Operation::SelectFromColumns, &columns("customer", &["c_name"])).await, Ok(()));
    let denied = opa.check(&alice(), Operation::SelectFromColumns, &columns("orders", &["o_totalprice"])).await;
    assert!(matches!(denied, Err(PolicyError::Denied { .. })), "{denied:?}");
    let tables = [columns("customer", &[]), columns("orders", &[])];
    assert_eq!(opa.filter(&alice(), Operation::FilterTables, &tables).await, Ok(vec![0]));
    let filters = opa.row_filters(&alice(), &table("nation")).await.expect("filters");
    assert_eq!(filters, vec![RowFilter { expression: "n_regionkey = 3".into(), identity: None }]);
    let masks =
        opa.column_masks(&bob(), &table("customer"), &[ColumnInfo::new("c_phone", "varchar")]).await.expect("masks");
    assert_eq!(masks.keys().collect::<Vec<_>>(), ["c_phone"]);
    assert_eq!(opa.status().backend, "opa-remote");
}

#[tokio::test]
async fn decision_cache_saves_repeated_requests() {
    let (base, server) = start(Duration::ZERO).await;
    let opa = OpaAuthorizer::from_config(remote_config(&base, 60_000, 2_000)).expect("client");
    let read = columns("customer", &["c_name"]);
    for _ in 0..5 {
        assert_eq!(opa.check(&alice(), Operation::SelectFromColumns, &read).await, Ok(()));
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    // Another user or another resource is another decision.
    assert_eq!(opa.check(&bob(), Operation::SelectFromColumns, &read).await, Ok(()));
    assert!(opa.check(&alice(), Operation::DropTable, &read).await.is_err());
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);

    let uncached = OpaAuthorizer::from_config(remote_config(&base, 0, 2_000)).expect("client");
    for _ in 0..3 {
        uncached.check(&alice(), Operation::SelectFromColumns, &read).await.ok();
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn remote_down_fails_closed() {
    // Bind and drop: nothing listens on this port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let base = format!("http://{addr}/v1/data/trino");
    let opa = OpaAuthorizer::from_config(remote_config(&base, 2_000, 1_000)).expect("client");
    let r = opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await;
    assert!(matches!(&r, Err(PolicyError::Unavailable(m)) if m.contains(&addr.to_string())), "{r:?}");
    let r = opa.row_filters(&alice(), &table("customer")).await;
    assert!(matches!(r, Err(PolicyError::Unavailable(_))), "{r:?}");
    assert!(opa.status().last_error.is_some());
}

#[tokio::test]
async fn remote_slow_times_out_and_fails_closed() {
    let (base, _) = start(Duration::from_secs(5)).await;
    let opa = OpaAuthorizer::from_config(remote_config(&base, 2_000, 200)).expect("client");
    let start = Instant::now();
    let r = opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await;
    assert!(matches!(&r, Err(PolicyError::Unavailable(m)) if m.contains("remote OPA")), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[tokio::test]
async fn remote_undefined_allow_fails_closed() {
    let (base, _) = start(Duration::ZERO).await;
    let mut c = remote_config(&base, 0, 2_000);
    c.policy_uri = format!("{base}/no_such_rule");
    let opa = OpaAuthorizer::from_config(c).expect("client");
    let r = opa.check(&alice(), Operation::ExecuteQuery, &Resource::None).await;
    assert!(matches!(&r, Err(PolicyError::Unavailable(m)) if m.contains("undefined")), "{r:?}");
}
