//! `quiver-bench`: the gateway's overhead against a direct connection to the worker, measured
//! side by side in one run (these machines are noisy, so only ratios within a run mean much).
//!
//!   cargo run --release -p quiver-tests --bin quiver-bench -- [--rows N] [--latency-iters N]
//!
//! (a) streaming throughput of a large result, direct vs through the gateway;
//! (b) p50/p99 latency of `SELECT 1`, direct vs through the gateway.
//!
//! With `--authz`, instead: the latency authorization adds to a query end to end (see
//! `authz.rs`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arrow_flight::FlightDescriptor;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandStatementQuery, ProstMessageExt};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use prost::Message;
use quiver_engine::config::{CatalogConfig, EngineConfig};
use quiver_gateway::config::QuiverConfig;
use tonic::transport::Channel;

mod authz;

#[derive(Parser)]
struct Args {
    /// Rows streamed in the throughput test.
    #[arg(long, default_value_t = 30_000_000)]
    rows: u64,
    /// Throughput rounds per side (alternating direct / gateway); the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// `SELECT 1` calls per side in the latency test.
    #[arg(long, default_value_t = 2000)]
    latency_iters: usize,
    /// Measure authorization end to end (gateways without and with the example policy)
    /// instead; `--latency-iters` queries per case.
    #[arg(long)]
    authz: bool,
}

async fn connect(addr: SocketAddr) -> anyhow::Result<FlightServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(32 * 1024 * 1024))
        .connect()
        .await?;
    Ok(FlightServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// Runs `sql`; returns (rows, wire bytes of FlightData received).
async fn run(client: &mut FlightServiceClient<Channel>, sql: &str) -> anyhow::Result<(u64, u64)> {
    run_as(client, None, sql).await
}

/// A request carrying the session token `token` (`authorization: Bearer ...`), if any.
fn request<T>(body: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(body);
    if let Some(token) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    }
    Ok(r)
}

/// [`run`] as the holder of a session token.
async fn run_as(
    client: &mut FlightServiceClient<Channel>,
    token: Option<&str>,
    sql: &str,
) -> anyhow::Result<(u64, u64)> {
    let cmd = CommandStatementQuery { query: sql.into(), transaction_id: None };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let info = client.get_flight_info(request(descriptor, token)?).await?.into_inner();
    let mut rows = 0u64;
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for endpoint in info.endpoint {
        let stream = client.do_get(request(endpoint.ticket.unwrap_or_default(), token)?).await?.into_inner();
        let counter = bytes.clone();
        let counted = stream.inspect(move |frame| {
            if let Ok(f) = frame {
                counter
                    .fetch_add((f.data_header.len() + f.data_body.len()) as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut batches =
            FlightRecordBatchStream::new_from_flight_data(counted.map_err(arrow_flight::error::FlightError::from));
        while let Some(batch) = batches.try_next().await? {
            rows += batch.num_rows() as u64;
        }
    }
    Ok((rows, bytes.load(std::sync::atomic::Ordering::Relaxed)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.authz {
        return authz::run(args.latency_iters).await;
    }
    let mut cfg = QuiverConfig::embedded_default(0.01);
    cfg.server.flight_addr = "127.0.0.1:0".into();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.engine = EngineConfig {
        catalogs: vec![CatalogConfig::Tpch { name: "tpch".into(), scale_factor: 0.01, schema: None }],
        ..Default::default()
    };
    let gw = quiver_gateway::start(cfg).await?;
    let engine = gw.engine_addr.ok_or_else(|| anyhow::anyhow!("no embedded engine"))?;
    let mut direct = connect(engine).await?;
    let mut gateway = connect(gw.flight_addr).await?;

    let sql = format!("SELECT value, value * 2 AS doubled, value % 7 AS bucket FROM range({})", args.rows);
    // Warm up both paths.
    run(&mut direct, "SELECT 1").await?;
    run(&mut gateway, "SELECT 1").await?;

    let mut direct_rps = Vec::new();
    let mut gateway_rps = Vec::new();
    let mut direct_bps = Vec::new();
    let mut gateway_bps = Vec::new();
    for _ in 0..args.rounds {
        for (client, rps, bps) in
            [(&mut direct, &mut direct_rps, &mut direct_bps), (&mut gateway, &mut gateway_rps, &mut gateway_bps)]
        {
            let start = Instant::now();
            let (rows, bytes) = run(client, &sql).await?;
            let secs = start.elapsed().as_secs_f64();
            anyhow::ensure!(rows == args.rows, "expected {} rows, got {rows}", args.rows);
            rps.push(rows as f64 / secs);
            bps.push(bytes as f64 / secs);
        }
    }
    let (d_rps, g_rps) = (median(direct_rps), median(gateway_rps));
    let (d_bps, g_bps) = (median(direct_bps), median(gateway_bps));

    let mut direct_lat = Histogram::<u64>::new(3)?;
    let mut gateway_lat = Histogram::<u64>::new(3)?;
    // Interleave in blocks so drift affects both sides alike.
    let block = 100.min(args.latency_iters.max(1));
    let mut done = 0;
    while done < args.latency_iters {
        for (client, hist) in [(&mut direct, &mut direct_lat), (&mut gateway, &mut gateway_lat)] {
            for _ in 0..block {
                let start = Instant::now();
                run(client, "SELECT 1").await?;
                hist.record(start.elapsed().as_micros() as u64)?;
            }
        }
        done += block;
    }
    let us = |h: &Histogram<u64>, q: f64| Duration::from_micros(h.value_at_quantile(q)).as_secs_f64() * 1e3;

    println!("## Gateway overhead ({} rows, {} rounds, {} SELECT 1 per side)\n", args.rows, args.rounds, done);
    println!("| measure | direct to worker | through gateway | gateway / direct |");
    println!("|---|---|---|---|");
    println!("| rows/s (median) | {:.2} M | {:.2} M | {:.1}% |", d_rps / 1e6, g_rps / 1e6, 100.0 * g_rps / d_rps);
    println!(
        "| bytes/s (median) | {:.0} MB/s | {:.0} MB/s | {:.1}% |",
        d_bps / 1e6,
        g_bps / 1e6,
        100.0 * g_bps / d_bps
    );
    println!(
        "| SELECT 1 p50 | {:.3} ms | {:.3} ms | +{:.3} ms |",
        us(&direct_lat, 0.5),
        us(&gateway_lat, 0.5),
        us(&gateway_lat, 0.5) - us(&direct_lat, 0.5)
    );
    println!(
        "| SELECT 1 p99 | {:.3} ms | {:.3} ms | +{:.3} ms |",
        us(&direct_lat, 0.99),
        us(&gateway_lat, 0.99),
        us(&gateway_lat, 0.99) - us(&direct_lat, 0.99)
    );
    gw.shutdown().await;
    Ok(())
}
