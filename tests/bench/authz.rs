//! `quiver-bench --authz`: the latency authorization adds to a query end to end through
//! Flight SQL, every case in one process and measured interleaved.
//!
//! One engine worker serves four gateways that differ only in `[authorization]`: none, the
//! example policy (conf/policies, embedded Rego, no decision cache: the embedded default), the
//! same on the Rego VM (`engine = "vm"`), and the interpreter with the decision cache on. Each runs `SELECT count(*) FROM nation` as
//! erin (engineers: checks only, the statement is forwarded as written) and as alice
//! (analysts: the gateway rewrites it to the EUROPE rows), with a session token, so
//! authentication costs one HMAC per call in every case.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use quiver_engine::config::{CatalogConfig, EngineConfig};
use quiver_gateway::RunningGateway;
use quiver_gateway::config::{AuthMethod, AuthorizationConfig, PoolConfig, QuiverConfig};
use quiver_policies::opa::{OpaConfig, RegoEngine};
use tonic::transport::Channel;

use crate::{connect, run_as};

const SQL: &str = "SELECT count(*) FROM nation";
/// What the gateway sends the worker for alice (her row filter on nation, as the rewrite
/// writes it), to tell the worker's extra work from the gateway's.
const ALICE_EFFECTIVE: &str = "SELECT count(1) FROM (SELECT nation.n_nationkey, nation.n_name, nation.n_regionkey, \
     nation.n_comment FROM tpch.tiny.nation WHERE quiver_policy_filter((n_regionkey = 3))) AS nation";

/// alice (analysts, EUROPE) and erin (engineers), passwords `<user>-secret`.
fn users_file(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("users.db");
    let mut text = String::new();
    for (user, groups) in [("alice", "analysts"), ("erin", "engineers")] {
        let hash = quiver_auth::hash_password(&format!("{user}-secret")).map_err(anyhow::Error::msg)?;
        text.push_str(&format!("{user}:{hash}:{groups}\n"));
    }
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The example policy with every Trino entry point; `ttl_ms` 0: no decision cache.
fn opa(ttl_ms: u64, engine: RegoEngine) -> OpaConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/policies");
    let mut c = OpaConfig::embedded_trino(dir).with_engine(engine);
    c.decision_cache_ttl_ms = Some(ttl_ms);
    c
}

/// A gateway in front of `worker` with password-file users and `opa` as its policy (if any).
async fn gateway(worker: SocketAddr, users: &Path, opa: Option<OpaConfig>) -> anyhow::Result<RunningGateway> {
    let mut cfg = QuiverConfig::embedded_default(0.01);
    cfg.server.flight_addr = "127.0.0.1:0".into();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.pools = vec![PoolConfig::new("default", false, vec![format!("grpc://{worker}")])];
    cfg.auth.methods = vec![AuthMethod::PasswordFile];
    cfg.auth.password_file = Some(users.to_path_buf());
    cfg.admin.users.clear();
    cfg.authorization = opa.map(|opa| AuthorizationConfig { opa: Some(opa), rules: None });
    cfg.cache = None;
    quiver_gateway::start(cfg).await
}

/// A client of `addr` and the session token `user` logs in for (none without a user);
/// checks once that `query` counts `expected` rows for them.
async fn login(
    addr: SocketAddr,
    user: Option<&str>,
    query: &str,
    expected: i64,
) -> anyhow::Result<(FlightServiceClient<Channel>, Option<String>)> {
    let raw = connect(addr).await?;
    let mut sql = FlightSqlServiceClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?,
    );
    let token = match user {
        Some(user) => {
            sql.handshake(user, &format!("{user}-secret")).await?;
            Some(sql.token().cloned().ok_or_else(|| anyhow::anyhow!("no session token for {user}"))?)
        }
        None => None,
    };
    let info = sql.execute(query.into(), None).await?;
    let mut count = None;
    for endpoint in info.endpoint {
        let batches: Vec<_> = sql.do_get(endpoint.ticket.unwrap_or_default()).await?.try_collect().await?;
        count = batches.first().map(|b| b.column(0).as_primitive::<Int64Type>().value(0));
    }
    anyhow::ensure!(count == Some(expected), "{user:?}: {query} gave {count:?}, expected {expected}");
    Ok((raw, token))
}

pub async fn run(iters: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let users = users_file(dir.path())?;
    let engine = quiver_engine::Engine::start(&EngineConfig {
        catalogs: vec![CatalogConfig::Tpch { name: "tpch".into(), scale_factor: 0.01, schema: None }],
        ..Default::default()
    })
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let worker = listener.local_addr()?;
    let (stop_worker, _task) = quiver_gateway::start_engine(engine, listener).await;

    let open = gateway(worker, &users, None).await?;
    let uncached = gateway(worker, &users, Some(opa(0, RegoEngine::Interpreter))).await?;
    let vm = gateway(worker, &users, Some(opa(0, RegoEngine::Vm))).await?;
    let cached = gateway(worker, &users, Some(opa(60_000, RegoEngine::Interpreter))).await?;

    let mut cases = Vec::new();
    for (name, addr, user) in [
        ("direct to the worker", worker, None),
        ("direct to the worker, alice's effective SQL", worker, None),
        ("gateway, no [authorization] (erin)", open.flight_addr, Some("erin")),
        ("gateway, policy uncached, erin (checks)", uncached.flight_addr, Some("erin")),
        ("gateway, policy uncached, alice (checks + rewrite)", uncached.flight_addr, Some("alice")),
        ("gateway, policy uncached on the Rego VM, erin (checks)", vm.flight_addr, Some("erin")),
        ("gateway, policy uncached on the Rego VM, alice (checks + rewrite)", vm.flight_addr, Some("alice")),
        ("gateway, policy cached, erin (checks)", cached.flight_addr, Some("erin")),
        ("gateway, policy cached, alice (checks + rewrite)", cached.flight_addr, Some("alice")),
    ] {
        let sql = if name.contains("effective") { ALICE_EFFECTIVE } else { SQL };
        // alice (and her effective SQL) sees EUROPE's five nations; everyone else all 25.
        let expected = if user == Some("alice") || sql == ALICE_EFFECTIVE { 5 } else { 25 };
        let (client, token) = login(addr, user, sql, expected).await?;
        cases.push((name, sql, client, token, Histogram::<u64>::new(3)?));
    }
    // Warm-up (plans the pool's tables in each gateway, fills the decision caches).
    for (_, sql, client, token, _) in cases.iter_mut() {
        for _ in 0..50 {
            run_as(client, token.as_deref(), sql).await?;
        }
    }
    // Interleave in blocks so drift affects every case alike.
    let block = 100.min(iters.max(1));
    let mut done = 0;
    while done < iters {
        for (_, sql, client, token, hist) in cases.iter_mut() {
            for _ in 0..block {
                let start = std::time::Instant::now();
                let (rows, _) = run_as(client, token.as_deref(), sql).await?;
                hist.record(start.elapsed().as_micros() as u64)?;
                anyhow::ensure!(rows == 1, "expected one row, got {rows}");
            }
        }
        done += block;
    }
    let ms = |h: &Histogram<u64>, q: f64| Duration::from_micros(h.value_at_quantile(q)).as_secs_f64() * 1e3;
    let base = ms(&cases[2].4, 0.5);

    println!("## Authorization end to end ({done} × `{SQL}` per case, interleaved)\n");
    println!("| case | p50 | p99 | p50 vs no [authorization] |");
    println!("|---|---|---|---|");
    for (name, _, _, _, h) in &cases {
        println!("| {name} | {:.3} ms | {:.3} ms | {:+.3} ms |", ms(h, 0.5), ms(h, 0.99), ms(h, 0.5) - base);
    }
    for gw in [open, uncached, vm, cached] {
        gw.shutdown().await;
    }
    let _ = stop_worker.send(());
    Ok(())
}
