//! Operating the gateway: worker health (ejection, re-admission, retries), drain, the query
//! list and kill through the admin API, and graceful shutdown with a stream in flight.

use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::{StreamExt, TryStreamExt};
use quiver_gateway::config::{PoolHealthConfig, QuiverConfig};

use crate::common::*;

/// A gateway whose only pool is the given remote workers, probed every 100 ms.
fn pool_config(addrs: &[std::net::SocketAddr]) -> QuiverConfig {
    let mut cfg = gateway_config();
    let mut pool = remote_pool("workers", addrs);
    pool.health = PoolHealthConfig {
        interval_ms: 100,
        timeout_ms: 500,
        eject_after_failures: 2,
        backoff_base_ms: 200,
        backoff_max_ms: 400,
    };
    cfg.pools = vec![pool];
    cfg.session.default_catalog = Some("tpch".into());
    cfg.session.default_schema = Some("tiny".into());
    cfg
}

async fn pools_json(gw: &quiver_gateway::RunningGateway) -> serde_json::Value {
    json_body(&http_get(gw.http_addr, "/v1/pools", &[]).await)
}

async fn worker_state(gw: &quiver_gateway::RunningGateway, addr: std::net::SocketAddr) -> String {
    let pools = pools_json(gw).await;
    let uri = format!("grpc://{addr}");
    pools[0]["workers"].as_array().expect("workers").iter().find(|w| w["uri"] == uri.as_str()).expect("worker")["state"]
        .as_str()
        .expect("state")
        .to_string()
}

async fn wait_for_state(gw: &quiver_gateway::RunningGateway, addr: std::net::SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = worker_state(gw, addr).await;
        if state == want {
            return;
        }
        assert!(Instant::now() < deadline, "worker {addr} stayed {state}, expected {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dead_worker_is_ejected_queries_go_on_and_a_restarted_one_is_readmitted() {
    let (a, stop_a) = worker(engine_config()).await;
    let (b, _stop_b) = worker(engine_config()).await;
    let gw = gateway(pool_config(&[a, b])).await;
    let mut client = client(gw.flight_addr).await;
    assert_eq!(rows(&query(&mut client, "SELECT * FROM nation").await), 25);
    wait_for_state(&gw, a, "HEALTHY").await;

    let _ = stop_a.send(());
    // Every query keeps working: planning and DoGet starts are retried on the other worker.
    for _ in 0..10 {
        assert_eq!(rows(&query(&mut client, "SELECT * FROM region").await), 5);
    }
    wait_for_state(&gw, a, "EJECTED").await;
    assert_eq!(worker_state(&gw, b).await, "HEALTHY");
    let pools = pools_json(&gw).await;
    let dead = pools[0]["workers"].as_array().expect("workers").iter().find(|w| w["state"] == "EJECTED").cloned();
    assert!(dead.expect("ejected worker")["lastError"].is_string(), "{pools}");
    let metrics = http_get(gw.http_addr, "/metrics", &[]).await;
    assert!(
        metrics.contains(&format!(r#"quiver_worker_state{{pool="workers",worker="grpc://{a}",state="EJECTED"}} 1"#)),
        "{metrics}"
    );

    // Back where it was: a probe re-admits it.
    let (_a2, _stop_a2) = worker_at(engine_config(), &a.to_string()).await;
    wait_for_state(&gw, a, "HEALTHY").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_last_worker_of_a_pool_is_never_ejected() {
    let (a, stop_a) = worker(engine_config()).await;
    let gw = gateway(pool_config(&[a])).await;
    let _ = stop_a.send(());
    let mut raw = raw(gw.flight_addr).await;
    let err = raw_query(&mut raw, "SELECT 1").await.expect_err("worker is gone");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains(&a.to_string()), "names the worker: {err}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(worker_state(&gw, a).await, "SUSPECT");
    gw.shutdown().await;
}

#[tokio::test]
async fn drained_workers_get_no_new_queries_and_the_query_list_says_where_queries_ran() {
    let (a, _stop_a) = worker(engine_config()).await;
    let (b, _stop_b) = worker(engine_config()).await;
    let gw = gateway(pool_config(&[a, b])).await;
    let drain = http_request(gw.http_addr, "POST", &format!("/v1/pools/workers/workers/{a}/drain"), &[]).await;
    assert!(drain.starts_with("HTTP/1.1 204"), "{drain}");
    assert_eq!(worker_state(&gw, a).await, "DRAINING");
    let mut client = client(gw.flight_addr).await;
    for _ in 0..6 {
        query(&mut client, "SELECT * FROM region").await;
    }
    let list = json_body(&http_get(gw.http_addr, "/v1/query", &[]).await);
    let finished: Vec<&serde_json::Value> =
        list.as_array().expect("list").iter().filter(|q| q["state"] == "FINISHED").collect();
    assert!(finished.len() >= 6, "{list}");
    for q in &finished {
        assert_eq!(q["worker"], format!("grpc://{b}").as_str(), "a drained worker got a query: {q}");
        assert_eq!(q["rows"], 5);
        assert_eq!(q["query"], "SELECT * FROM region");
        assert_eq!(q["user"], "anonymous");
    }
    // Draining the whole pool leaves nothing to run on; undrain brings it back.
    let drain = http_request(gw.http_addr, "POST", "/v1/pools/workers/drain", &[]).await;
    assert!(drain.starts_with("HTTP/1.1 204"), "{drain}");
    let mut raw = raw(gw.flight_addr).await;
    let err = raw_query(&mut raw, "SELECT 1").await.expect_err("all drained");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("draining"), "{err}");
    let ready = http_get(gw.http_addr, "/health/ready", &[]).await;
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    http_request(gw.http_addr, "DELETE", "/v1/pools/workers/drain", &[]).await;
    assert_eq!(rows(&query(&mut client, "SELECT * FROM region").await), 5);
    let missing = http_request(gw.http_addr, "POST", "/v1/pools/workers/workers/10.0.0.1:1/drain", &[]).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    gw.shutdown().await;
}

/// Starts a long stream and returns its decoded batches after the first one arrived.
async fn start_long_stream(addr: std::net::SocketAddr, rows_total: u64) -> (FlightRecordBatchStream, u64) {
    let mut client = client(addr).await;
    let sql = format!("SELECT value, value * 2 AS doubled FROM range({rows_total})");
    let info = client.execute(sql, None).await.expect("plan");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = client.do_get(ticket).await.expect("do_get");
    let first = stream.next().await.expect("a batch").expect("ok");
    (stream, first.num_rows() as u64)
}

#[tokio::test]
async fn an_operator_kills_a_running_query_and_the_stream_ends_cancelled() {
    let gw = gateway(gateway_config()).await;
    let (mut stream, _) = start_long_stream(gw.flight_addr, 500_000_000).await;
    let list = json_body(&http_get(gw.http_addr, "/v1/query", &[]).await);
    let running = list.as_array().expect("list").iter().find(|q| q["state"] == "RUNNING").expect("a running query");
    let id = running["queryId"].as_str().expect("id").to_string();
    assert!(running["worker"].is_string() && running["rows"].as_u64().expect("rows") > 0, "{running}");
    let one = json_body(&http_get(gw.http_addr, &format!("/v1/query/{id}"), &[]).await);
    assert_eq!(one["queryId"], id.as_str());

    let killed = http_request(gw.http_addr, "DELETE", &format!("/v1/query/{id}"), &[]).await;
    assert!(killed.starts_with("HTTP/1.1 204"), "{killed}");
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream stops soon after the kill");
    match outcome {
        Some(FlightError::Tonic(status)) => assert_eq!(status.code(), tonic::Code::Cancelled, "{status}"),
        other => panic!("a killed query must end with CANCELLED, not {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = json_body(&http_get(gw.http_addr, &format!("/v1/query/{id}"), &[]).await);
    assert_eq!(after["state"], "CANCELLED", "{after}");
    let again = http_request(gw.http_addr, "DELETE", &format!("/v1/query/{id}"), &[]).await;
    assert!(again.starts_with("HTTP/1.1 409"), "{again}");
    gw.shutdown().await;
}

#[tokio::test]
async fn users_see_and_kill_only_their_own_queries_unless_admin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = password_config(dir.path());
    cfg.admin.users = vec!["bob".into()];
    let gw = gateway(cfg).await;
    let mut alice = client_as(gw.flight_addr, "alice", "alice-secret").await;
    query(&mut alice, "SELECT * FROM region").await;
    let (alice_auth, bob_auth) = (basic_auth("alice", "alice-secret"), basic_auth("bob", "bob-secret"));
    let a = [("Authorization", alice_auth.as_str())];
    let b = [("Authorization", bob_auth.as_str())];
    let mine = json_body(&http_get(gw.http_addr, "/v1/query", &a).await);
    assert_eq!(mine.as_array().expect("list").len(), 1, "{mine}");
    let id = mine[0]["queryId"].as_str().expect("id").to_string();
    // bob is admin: he sees alice's query and the pools.
    let all = json_body(&http_get(gw.http_addr, "/v1/query", &b).await);
    assert!(all.as_array().expect("list").iter().any(|q| q["queryId"] == id.as_str()));
    assert!(http_get(gw.http_addr, "/v1/pools", &b).await.starts_with("HTTP/1.1 200"));
    // alice is not: no pools, no drain.
    assert!(http_get(gw.http_addr, "/v1/pools", &a).await.starts_with("HTTP/1.1 403"));
    let drain = http_request(gw.http_addr, "POST", "/v1/pools/default/drain", &a).await;
    assert!(drain.starts_with("HTTP/1.1 403"), "{drain}");
    let unknown = http_get(gw.http_addr, "/v1/query/nope", &a).await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    gw.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_refuses_new_queries_and_lets_the_running_stream_finish() {
    let gw = gateway(gateway_config()).await;
    let total = 3_000_000;
    let (stream, first) = start_long_stream(gw.flight_addr, total).await;
    let http = gw.http_addr;
    let flight = gw.flight_addr;
    let shutdown = tokio::spawn(gw.shutdown_gracefully(Duration::from_secs(60)));
    tokio::time::sleep(Duration::from_millis(100)).await;

    let ready = http_get(http, "/health/ready", &[]).await;
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("shutting down"), "{ready}");
    let mut raw = raw(flight).await;
    let err = raw_info(&mut raw, "SELECT 1").await.expect_err("new queries are refused");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("shutting down"), "{err}");

    // The stream in flight runs to its end.
    let rest: Vec<_> = stream.try_collect().await.expect("the running stream completes");
    let got: u64 = first + rest.iter().map(|b| b.num_rows() as u64).sum::<u64>();
    assert_eq!(got, total);
    assert!(shutdown.await.expect("join"), "every stream finished within the grace period");
}

#[tokio::test]
async fn the_grace_period_ends_with_running_streams_cancelled() {
    let gw = gateway(gateway_config()).await;
    let (mut stream, _) = start_long_stream(gw.flight_addr, 500_000_000).await;
    let shutdown = tokio::spawn(gw.shutdown_gracefully(Duration::from_millis(300)));
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream ends after the grace period");
    assert!(outcome.is_some(), "a stream cut by shutdown must not look complete");
    assert!(!shutdown.await.expect("join"), "reported as not drained");
}

#[tokio::test]
async fn per_worker_caps_refuse_with_resource_exhausted_naming_the_pool() {
    let (a, _stop) = worker(engine_config()).await;
    let mut cfg = pool_config(&[a]);
    cfg.pools[0].max_concurrent_per_worker = Some(1);
    let gw = gateway(cfg).await;
    let (stream, _) = start_long_stream(gw.flight_addr, 500_000_000).await;
    let mut raw = raw(gw.flight_addr).await;
    let err = raw_query(&mut raw, "SELECT 1").await.expect_err("at the cap");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("`workers`") && err.message().contains("max_concurrent_per_worker"), "{err}");
    // Once the stream is gone the slot is free again.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw_query(&mut raw, "SELECT 1").await.is_err() {
        assert!(Instant::now() < deadline, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_full_resource_group_runs_two_queues_three_and_refuses_the_rest_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = dir.path().join("resource-groups.json");
    std::fs::write(
        &groups,
        r#"{
          "rootGroups": [
            {"name": "global", "softMemoryLimit": "100%", "hardConcurrencyLimit": 100, "maxQueued": 100,
             "subGroups": [{"name": "adhoc", "softMemoryLimit": "50%", "hardConcurrencyLimit": 2, "maxQueued": 3}]}
          ],
          "selectors": [{"group": "global.adhoc"}]
        }"#,
    )
    .expect("write");
    let mut cfg = gateway_config();
    cfg.resource_groups =
        Some(quiver_gateway::config::ResourceGroupsConfig { config_file: groups, tick_ms: 100, cluster_memory: None });
    let gw = gateway(cfg).await;

    // Ten long streams at once: each plans, then asks for its results.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = gw.flight_addr;
        tasks.push(tokio::spawn(async move {
            let mut client = client(addr).await;
            let info = client.execute("SELECT value FROM range(500000000)".into(), None).await.expect("plan");
            let ticket = info.endpoint[0].ticket.clone().expect("ticket");
            client.do_get(ticket).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let state = json_body(&http_get(gw.http_addr, "/v1/resourceGroupState/global/adhoc", &[]).await);
        let finished = tasks.iter().filter(|t| t.is_finished()).count();
        if state["numRunningQueries"] == 2 && state["numQueuedQueries"] == 3 && finished == 7 {
            break state;
        }
        assert!(Instant::now() < deadline, "expected 2 running, 3 queued, 7 answered; got {state} and {finished}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state["hardConcurrencyLimit"], 2, "{state}");
    let mut running = Vec::new();
    let mut refused = 0;
    let mut queued = Vec::new();
    for task in tasks {
        if task.is_finished() {
            match task.await.expect("join") {
                Ok(stream) => running.push(stream),
                Err(e) => {
                    let status = match e {
                        FlightError::Tonic(s) => *s,
                        other => panic!("unexpected {other:?}"),
                    };
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
                    assert!(status.message().contains("global.adhoc"), "names the group: {status}");
                    refused += 1;
                }
            }
        } else {
            queued.push(task);
        }
    }
    assert_eq!((running.len(), refused, queued.len()), (2, 5, 3));
    let list = json_body(&http_get(gw.http_addr, "/v1/query", &[]).await);
    let count = |s: &str| list.as_array().expect("list").iter().filter(|q| q["state"] == s).count();
    assert_eq!((count("RUNNING"), count("QUEUED")), (2, 3), "{list}");
    assert!(
        list.as_array().expect("list").iter().all(|q| q["state"] != "RUNNING" || q["resourceGroup"] == "global.adhoc")
    );
    let metrics = http_get(gw.http_addr, "/metrics", &[]).await;
    assert!(metrics.contains(r#"quiver_resource_group_queued{group="global.adhoc"} 3"#), "{metrics}");
    assert!(metrics.contains(r#"quiver_resource_group_rejected_total{group="global.adhoc"} 5"#), "{metrics}");

    // Ending the running streams starts queued ones, which held no worker meanwhile.
    drop(running);
    let mut started = 0;
    for task in queued {
        if let Ok(Ok(Ok(stream))) = tokio::time::timeout(Duration::from_secs(2), task).await {
            started += 1;
            drop(stream);
        }
    }
    assert!(started >= 2, "queued queries start when slots free up (started {started})");
    gw.shutdown().await;
}

#[tokio::test]
async fn routing_rules_pick_pools_by_user_and_source_and_fall_back_unless_strict() {
    use quiver_gateway::routing::{RoutingConfig, RoutingRule};
    let (w, _stop) = worker(engine_config()).await;
    let mut cfg = gateway_config();
    cfg.pools.push(remote_pool("remote", &[w]));
    cfg.routing = RoutingConfig {
        default_pool: Some("default".into()),
        fallback_pool: Some("default".into()),
        rules: vec![
            RoutingRule {
                name: "bob".into(),
                users: vec!["bob".into()],
                pool: Some("remote".into()),
                ..Default::default()
            },
            RoutingRule {
                name: "airflow".into(),
                sources: vec!["airflow.*".into()],
                pool: Some("remote".into()),
                strict: true,
                ..Default::default()
            },
        ],
    };
    let gw = gateway(cfg).await;
    let pool_of_last = || async {
        let list = json_body(&http_get(gw.http_addr, "/v1/query", &[]).await);
        list[0]["pool"].as_str().expect("pool").to_string()
    };
    let mut anon = client(gw.flight_addr).await;
    query(&mut anon, "SELECT * FROM region").await;
    assert_eq!(pool_of_last().await, "default");
    let mut bob = client(gw.flight_addr).await;
    bob.handshake("bob", "").await.expect("open mode");
    query(&mut bob, "SELECT * FROM region").await;
    assert_eq!(pool_of_last().await, "remote");
    let mut airflow = client(gw.flight_addr).await;
    airflow.set_header("x-quiver-source", "airflow-prod");
    query(&mut airflow, "SELECT * FROM region").await;
    assert_eq!(pool_of_last().await, "remote");

    // The remote pool drained: bob falls back to the default pool; the strict rule does not.
    let drain = http_request(gw.http_addr, "POST", "/v1/pools/remote/drain", &[]).await;
    assert!(drain.starts_with("HTTP/1.1 204"), "{drain}");
    query(&mut bob, "SELECT * FROM region").await;
    assert_eq!(pool_of_last().await, "default");
    let err = airflow.execute("SELECT * FROM region".into(), None).await.expect_err("strict rule, no fallback");
    assert!(err.to_string().contains("draining"), "{err}");
    gw.shutdown().await;
}

fn write_groups(path: &std::path::Path, hard: u32, queued: u32) {
    let json = format!(
        r#"{{"rootGroups": [{{"name": "global", "softMemoryLimit": "100%", "hardConcurrencyLimit": 100, "maxQueued": 100,
             "subGroups": [{{"name": "adhoc", "softMemoryLimit": "50%", "hardConcurrencyLimit": {hard}, "maxQueued": {queued}}}]}}],
           "selectors": [{{"group": "global.adhoc"}}]}}"#
    );
    std::fs::write(path, json).expect("write");
}

async fn group_state(gw: &quiver_gateway::RunningGateway) -> serde_json::Value {
    json_body(&http_get(gw.http_addr, "/v1/resourceGroupState/global/adhoc", &[]).await)
}

#[tokio::test]
async fn a_queued_client_that_goes_away_leaves_the_queue_and_the_file_reloads_on_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = dir.path().join("resource-groups.json");
    write_groups(&groups, 1, 5);
    let mut cfg = gateway_config();
    cfg.resource_groups = Some(quiver_gateway::config::ResourceGroupsConfig {
        config_file: groups.clone(),
        tick_ms: 50,
        cluster_memory: None,
    });
    let gw = gateway(cfg).await;
    let (running, _) = start_long_stream(gw.flight_addr, 500_000_000).await;
    let addr = gw.flight_addr;
    let waiter = tokio::spawn(async move {
        let mut client = client(addr).await;
        let info = client.execute("SELECT 1".into(), None).await.expect("plan");
        client.do_get(info.endpoint[0].ticket.clone().expect("ticket")).await.map(|_| ())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_state(&gw).await["numQueuedQueries"] != 1 {
        assert!(Instant::now() < deadline, "the second query never queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    waiter.abort(); // the client goes away while queued
    while group_state(&gw).await["numQueuedQueries"] != 0 {
        assert!(Instant::now() < deadline, "the abandoned query stayed in the queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(group_state(&gw).await["numRunningQueries"], 1, "the running query was not disturbed");

    // An operator kills a queued query: it leaves the queue and its client gets CANCELLED.
    let waiter = tokio::spawn(async move {
        let mut client = client(addr).await;
        let info = client.execute("SELECT 2".into(), None).await.expect("plan");
        client.do_get(info.endpoint[0].ticket.clone().expect("ticket")).await.map(|_| ())
    });
    let id = loop {
        let list = json_body(&http_get(gw.http_addr, "/v1/query", &[]).await);
        if let Some(q) = list.as_array().expect("list").iter().find(|q| q["state"] == "QUEUED") {
            break q["queryId"].as_str().expect("id").to_string();
        }
        assert!(Instant::now() < deadline, "no queued query: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let killed = http_request(gw.http_addr, "DELETE", &format!("/v1/query/{id}"), &[]).await;
    assert!(killed.starts_with("HTTP/1.1 204"), "{killed}");
    match tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("prompt").expect("join") {
        Err(FlightError::Tonic(status)) => assert_eq!(status.code(), tonic::Code::Cancelled, "{status}"),
        other => panic!("a killed queued query must end CANCELLED, got {other:?}"),
    }
    assert_eq!(group_state(&gw).await["numQueuedQueries"], 0);

    // A new file takes effect without a restart; the running query goes on.
    write_groups(&groups, 3, 5);
    while group_state(&gw).await["hardConcurrencyLimit"] != 3 {
        assert!(Instant::now() < deadline, "the file was not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(group_state(&gw).await["numRunningQueries"], 1);
    let mut c = client(gw.flight_addr).await;
    assert_eq!(rows(&query(&mut c, "SELECT 1").await), 1, "a second slot exists now");
    // A broken file keeps the groups in force.
    std::fs::write(&groups, "{ not json").expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(group_state(&gw).await["hardConcurrencyLimit"], 3);
    drop(running);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_groups_soft_memory_limit_becomes_the_querys_memory_pool_on_the_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = dir.path().join("resource-groups.json");
    std::fs::write(
        &groups,
        r#"{"rootGroups": [
              {"name": "small", "softMemoryLimit": "1MB", "hardConcurrencyLimit": 4, "maxQueued": 4},
              {"name": "big", "softMemoryLimit": "50%", "hardConcurrencyLimit": 4, "maxQueued": 4}],
            "selectors": [{"user": "bob", "group": "big"}, {"group": "small"}]}"#,
    )
    .expect("write");
    let mut cfg = gateway_config();
    cfg.resource_groups = Some(quiver_gateway::config::ResourceGroupsConfig {
        config_file: groups,
        tick_ms: 100,
        cluster_memory: Some("1GiB".into()),
    });
    let gw = gateway(cfg).await;
    // array_agg cannot spill: 3 M values need ~24 MB.
    let sql = "SELECT cardinality(array_agg(value)) FROM range(3000000)";
    let mut small = raw(gw.flight_addr).await;
    let err = raw_query(&mut small, sql).await.expect_err("1 MB is not enough");
    assert!(err.message().to_lowercase().contains("resources exhausted"), "{err}");
    let mut bob = client(gw.flight_addr).await;
    bob.handshake("bob", "").await.expect("open mode");
    assert_eq!(rows(&query(&mut bob, sql).await), 1, "512 MiB (50% of 1 GiB) is enough");
    gw.shutdown().await;
}

#[tokio::test]
async fn cpu_time_reported_by_workers_counts_against_the_groups_hard_cpu_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let groups = dir.path().join("resource-groups.json");
    std::fs::write(
        &groups,
        r#"{"cpuQuotaPeriod": "1h",
            "rootGroups": [{"name": "metered", "softMemoryLimit": "100%", "hardConcurrencyLimit": 10,
                            "maxQueued": 10, "softCpuLimit": "1ms", "hardCpuLimit": "2ms"}],
            "selectors": [{"group": "metered"}]}"#,
    )
    .expect("write");
    let mut cfg = gateway_config();
    cfg.resource_groups =
        Some(quiver_gateway::config::ResourceGroupsConfig { config_file: groups, tick_ms: 100, cluster_memory: None });
    let gw = gateway(cfg).await;
    let mut c = client(gw.flight_addr).await;
    let sql = "SELECT l_returnflag, sum(l_extendedprice * (1 - l_discount)) FROM lineitem GROUP BY l_returnflag";
    assert_eq!(rows(&query(&mut c, sql).await), 3);
    let list = json_body(&http_get(gw.http_addr, "/v1/query", &[]).await);
    let cpu = list[0]["cpuMs"].as_u64().expect("cpuMs");
    assert!(list[0]["state"] == "FINISHED" && cpu >= 2, "the worker reported {cpu} ms: {list}");

    // Over hardCpuLimit, the next query waits (the quota regenerates 2 ms per hour).
    let addr = gw.flight_addr;
    let waiting = tokio::spawn(async move {
        let mut c = client(addr).await;
        let info = c.execute("SELECT 1".into(), None).await.expect("plan");
        c.do_get(info.endpoint[0].ticket.clone().expect("ticket")).await.map(|_| ())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = json_body(&http_get(gw.http_addr, "/v1/resourceGroupState/metered", &[]).await);
        if state["numQueuedQueries"] == 1 {
            assert_eq!(state["numRunningQueries"], 0, "{state}");
            break;
        }
        assert!(Instant::now() < deadline, "the query ran despite the spent CPU quota: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    waiting.abort();
    gw.shutdown().await;
}
