//! `quiver-cache-bench`: the result cache measured through the gateway (issue 6), every case in
//! one process, cold and cached interleaved (these machines are noisy: only ratios within a
//! run mean much).
//!
//!   cargo run --release -p quiver-tests --bin quiver-cache-bench -- [--scale 1] [--rounds 5] [--hits 2000]
//!
//! (a) TPC-H Q1: cold (`x-quiver-cache-control: no-cache`: planned and run on the worker every
//!     time) vs cached (a HIT), alternating, median end to end (GetFlightInfo + DoGet of every
//!     frame, decoded by the client);
//! (b) a small result: p50/p99 of cache hits vs no-cache misses, in alternating blocks;
//! (c) bytes the cache holds for a result vs its Arrow size, with `compression = "none"` and
//!     `"zstd"` (two gateways in front of one worker), and the time to serve each stored result.
//!
//! Every call checks the `x-quiver-cache` header of GetFlightInfo and DoGet (MISS for cold,
//! HIT for cached), so a number is never taken from the wrong path.

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
use quiver_gateway::RunningGateway;
use quiver_gateway::config::{CacheCompression, CacheConfig, PoolConfig, QuiverConfig};
use tonic::transport::Channel;

/// TPC-H Q1, as in the correctness suite.
const Q1: &str = include_str!("../tpch-queries/q01.sql");
/// A small result (25 rows).
const SMALL: &str = "SELECT n_name, n_regionkey FROM nation ORDER BY 1";
/// A large result (every order: 1.5 M rows at scale factor 1).
const LARGE: &str = "SELECT * FROM orders";

#[derive(Parser)]
struct Args {
    /// TPC-H scale factor of the embedded worker.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Q1 rounds per side (alternating cold / cached); the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Small-result calls per side (hits and no-cache misses, alternating in blocks of 100).
    #[arg(long, default_value_t = 2000)]
    hits: usize,
    /// Stored-result streams per compression in the size section; the median is reported.
    #[arg(long, default_value_t = 3)]
    serve_rounds: usize,
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

/// One statement end to end.
struct Outcome {
    rows: u64,
    /// FlightData bytes received (IPC header + body of every frame).
    ipc_bytes: u64,
    /// Sum of `RecordBatch::get_array_memory_size` of the decoded batches.
    array_memory: usize,
    /// Sum of the bytes the decoded arrays reference (`ArrayData::get_slice_memory_size`).
    slice_memory: usize,
    /// `x-quiver-cache` of GetFlightInfo and of DoGet.
    planned: String,
    served: String,
    /// GetFlightInfo, and GetFlightInfo + DoGet of every frame.
    info: Duration,
    total: Duration,
}

fn cache_status(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata.get("x-quiver-cache").and_then(|v| v.to_str().ok()).unwrap_or("none").to_string()
}

/// A request, with `x-quiver-cache-control: no-cache` when `no_cache`.
fn request<T>(body: T, no_cache: bool) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    if no_cache {
        r.metadata_mut().insert("x-quiver-cache-control", tonic::metadata::MetadataValue::from_static("no-cache"));
    }
    r
}

/// Runs `sql` through the gateway, with `x-quiver-cache-control: no-cache` when `no_cache`.
async fn run(
    client: &mut FlightServiceClient<Channel>,
    sql: &str,
    no_cache: bool,
    sizes: bool,
) -> anyhow::Result<Outcome> {
    let cmd = CommandStatementQuery { query: sql.into(), transaction_id: None };
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let start = Instant::now();
    let response = client.get_flight_info(request(descriptor, no_cache)).await?;
    let planned = cache_status(response.metadata());
    let info = response.into_inner();
    let info_elapsed = start.elapsed();
    let mut out = Outcome {
        rows: 0,
        ipc_bytes: 0,
        array_memory: 0,
        slice_memory: 0,
        planned,
        served: String::new(),
        info: info_elapsed,
        total: Duration::ZERO,
    };
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for endpoint in info.endpoint {
        let response = client.do_get(request(endpoint.ticket.unwrap_or_default(), no_cache)).await?;
        out.served = cache_status(response.metadata());
        let counter = bytes.clone();
        let counted = response.into_inner().inspect(move |frame| {
            if let Ok(f) = frame {
                counter
                    .fetch_add((f.data_header.len() + f.data_body.len()) as u64, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut batches =
            FlightRecordBatchStream::new_from_flight_data(counted.map_err(arrow_flight::error::FlightError::from));
        while let Some(batch) = batches.try_next().await? {
            out.rows += batch.num_rows() as u64;
            if sizes {
                out.array_memory += batch.get_array_memory_size();
                for column in batch.columns() {
                    out.slice_memory += column.to_data().get_slice_memory_size()?;
                }
            }
        }
    }
    out.total = start.elapsed();
    out.ipc_bytes = bytes.load(std::sync::atomic::Ordering::Relaxed);
    Ok(out)
}

/// [`run`], insisting that both GetFlightInfo and DoGet said `expected`.
async fn expect(
    client: &mut FlightServiceClient<Channel>,
    sql: &str,
    no_cache: bool,
    sizes: bool,
    expected: &str,
) -> anyhow::Result<Outcome> {
    let o = run(client, sql, no_cache, sizes).await?;
    anyhow::ensure!(
        o.planned == expected && o.served == expected,
        "expected {expected}, got GetFlightInfo {} / DoGet {} for {sql}",
        o.planned,
        o.served
    );
    Ok(o)
}

/// A raw HTTP/1.1 request without a body; returns the response body.
async fn http(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "{method} {path}: {text}");
    let (_, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("{method} {path}: no body"))?;
    Ok(body.to_string())
}

/// `GET /v1/cache`: (entries, bytes) held.
async fn held(addr: SocketAddr) -> anyhow::Result<(u64, u64)> {
    let json: serde_json::Value = serde_json::from_str(&http(addr, "GET", "/v1/cache").await?)?;
    let field = |k: &str| json[k].as_u64().ok_or_else(|| anyhow::anyhow!("no `{k}` in {json}"));
    Ok((field("entries")?, field("bytes")?))
}

/// `quiver_cache_bytes` from `GET /metrics`.
async fn metric_bytes(addr: SocketAddr) -> anyhow::Result<u64> {
    let text = http(addr, "GET", "/metrics").await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("quiver_cache_bytes ") || l.starts_with("quiver_cache_bytes{"))
        .ok_or_else(|| anyhow::anyhow!("no quiver_cache_bytes in /metrics"))?;
    let value = line.rsplit(' ').next().unwrap_or_default();
    Ok(value.parse::<f64>()? as u64)
}

/// Waits until the gateway at `addr` holds `entries` entries (a result is stored by the pump
/// after its stream ended, so shortly after the client saw the last frame).
async fn wait_for_entries(addr: SocketAddr, entries: u64) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let h = held(addr).await?;
        if h.0 >= entries {
            return Ok(h);
        }
        anyhow::ensure!(Instant::now() < deadline, "the result was not stored within 120 s ({h:?})");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// A gateway with the cache configured `cache`: with the embedded worker at `scale`, or in
/// front of `worker`.
async fn gateway(scale: f64, cache: CacheConfig, worker: Option<SocketAddr>) -> anyhow::Result<RunningGateway> {
    let mut cfg = QuiverConfig::embedded_default(scale);
    cfg.server.flight_addr = "127.0.0.1:0".into();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.cache = Some(cache);
    if let Some(worker) = worker {
        cfg.pools = vec![PoolConfig::new("default", false, vec![format!("grpc://{worker}")])];
    }
    quiver_gateway::start(cfg).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    // The size section keeps a ~200 MiB result: raise the per-entry cap (default 64 MiB) and
    // the total so nothing is evicted under it. Everything else is the default.
    let cache = |compression| CacheConfig {
        max_size: "4GiB".into(),
        max_entry_size: "1GiB".into(),
        compression,
        ..CacheConfig::default()
    };
    let plain = gateway(args.scale, cache(CacheCompression::None), None).await?;
    let worker = plain.engine_addr.ok_or_else(|| anyhow::anyhow!("no embedded engine"))?;
    let zstd = gateway(args.scale, cache(CacheCompression::Zstd), Some(worker)).await?;
    eprintln!("gateways up after {:.1} s (TPC-H generated at SF {})", started.elapsed().as_secs_f64(), args.scale);
    let mut client = connect(plain.flight_addr).await?;
    let mut zclient = connect(zstd.flight_addr).await?;

    // (a) Q1 cold vs cached. The first cached call stores the result (a MISS); after that,
    // every plain call must be a HIT and every no-cache call a MISS.
    let first = expect(&mut client, Q1, false, false, "MISS").await?;
    wait_for_entries(plain.http_addr, 1).await?;
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    let (mut cold_info, mut cached_info) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let c = expect(&mut client, Q1, true, false, "MISS").await?;
        let h = expect(&mut client, Q1, false, false, "HIT").await?;
        anyhow::ensure!(c.rows == first.rows && h.rows == first.rows, "Q1 row counts differ");
        cold.push(ms(c.total));
        cached.push(ms(h.total));
        cold_info.push(ms(c.info));
        cached_info.push(ms(h.info));
    }
    let (cold_ms, cached_ms) = (median(cold.clone()), median(cached.clone()));

    // (b) A small result: hits vs no-cache misses, alternating blocks of 100.
    expect(&mut client, SMALL, false, false, "MISS").await?;
    wait_for_entries(plain.http_addr, 2).await?;
    let mut hit_total = Histogram::<u64>::new(3)?;
    let mut hit_info = Histogram::<u64>::new(3)?;
    let mut miss_total = Histogram::<u64>::new(3)?;
    let mut miss_info = Histogram::<u64>::new(3)?;
    // Warm-up.
    for _ in 0..50 {
        expect(&mut client, SMALL, false, false, "HIT").await?;
        expect(&mut client, SMALL, true, false, "MISS").await?;
    }
    let block = 100.min(args.hits.max(1));
    let mut done = 0;
    while done < args.hits {
        for (no_cache, status, total, info) in
            [(false, "HIT", &mut hit_total, &mut hit_info), (true, "MISS", &mut miss_total, &mut miss_info)]
        {
            for _ in 0..block {
                let o = expect(&mut client, SMALL, no_cache, false, status).await?;
                total.record(o.total.as_micros() as u64)?;
                info.record(o.info.as_micros() as u64)?;
            }
        }
        done += block;
    }

    // (c) Stored bytes vs Arrow size, none and zstd side by side.
    http(plain.http_addr, "DELETE", "/v1/cache").await?;
    struct Sized {
        name: &'static str,
        rows: u64,
        ipc: u64,
        array_memory: usize,
        slice_memory: usize,
        stored: [u64; 2],
        miss_ms: [f64; 2],
        hit_ms: [f64; 2],
    }
    let mut sized = Vec::new();
    for (i, (name, sql)) in
        [("TPC-H Q1", Q1), ("nation (25 rows)", SMALL), ("orders (SELECT *)", LARGE)].into_iter().enumerate()
    {
        let mut s = Sized {
            name,
            rows: 0,
            ipc: 0,
            array_memory: 0,
            slice_memory: 0,
            stored: [0; 2],
            miss_ms: [0.0; 2],
            hit_ms: [0.0; 2],
        };
        for (side, (c, gw)) in [(&mut client, &plain), (&mut zclient, &zstd)].into_iter().enumerate() {
            let (_, before) = held(gw.http_addr).await?;
            let o = expect(c, sql, false, true, "MISS").await?;
            let (_, after) = wait_for_entries(gw.http_addr, i as u64 + 1).await?;
            s.stored[side] = after - before;
            s.miss_ms[side] = ms(o.total);
            if side == 0 {
                (s.rows, s.ipc, s.array_memory, s.slice_memory) = (o.rows, o.ipc_bytes, o.array_memory, o.slice_memory);
            } else {
                anyhow::ensure!(
                    o.rows == s.rows && o.ipc_bytes == s.ipc,
                    "{name}: the two gateways streamed different results"
                );
            }
        }
        // Serving the stored result, alternating the two gateways.
        let mut hits = [Vec::new(), Vec::new()];
        for _ in 0..args.serve_rounds {
            for (side, c) in [&mut client, &mut zclient].into_iter().enumerate() {
                let o = expect(c, sql, false, false, "HIT").await?;
                anyhow::ensure!(o.rows == s.rows && o.ipc_bytes == s.ipc, "{name}: a hit streamed a different result");
                hits[side].push(ms(o.total));
            }
        }
        s.hit_ms = [median(hits[0].clone()), median(hits[1].clone())];
        sized.push(s);
    }
    let totals = [held(plain.http_addr).await?.1, held(zstd.http_addr).await?.1];
    let metrics = [metric_bytes(plain.http_addr).await?, metric_bytes(zstd.http_addr).await?];

    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    println!(
        "## Result cache (scale factor {}, {} Q1 rounds per side, {} small-result calls per side)\n",
        args.scale, args.rounds, done
    );
    println!("### TPC-H Q1, cold (no-cache, MISS) vs cached (HIT), {} rows\n", first.rows);
    println!("| measure | cold | cached | cold / cached |");
    println!("|---|---|---|---|");
    println!("| end to end (median) | {cold_ms:.2} ms | {cached_ms:.3} ms | {:.0}× |", cold_ms / cached_ms);
    println!(
        "| GetFlightInfo (median) | {:.2} ms | {:.3} ms | |",
        median(cold_info.clone()),
        median(cached_info.clone())
    );
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    println!("| every round (ms) | {} | {} | |", fmt(&cold), fmt(&cached));
    println!();
    println!("### Small result (`{SMALL}`), end to end\n");
    println!("| measure | cache hit | no-cache (MISS) |");
    println!("|---|---|---|");
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        println!("| {label} | {} µs | {} µs |", us(&hit_total, q), us(&miss_total, q));
    }
    println!("| GetFlightInfo p50 | {} µs | {} µs |", us(&hit_info, 0.5), us(&miss_info, 0.5));
    println!();
    println!("### Stored bytes vs Arrow size\n");
    println!(
        "| result | rows | Arrow (decoded, get_array_memory_size) | Arrow (referenced slices) | IPC streamed | stored, none | stored, zstd | zstd / IPC |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for s in &sized {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1}% |",
            s.name,
            s.rows,
            mib(s.array_memory as u64),
            mib(s.slice_memory as u64),
            mib(s.ipc),
            mib(s.stored[0]),
            mib(s.stored[1]),
            100.0 * s.stored[1] as f64 / s.ipc as f64
        );
    }
    println!(
        "| **held in total** (`GET /v1/cache`; `quiver_cache_bytes`) | | | | | {} ({}) | {} ({}) | |",
        mib(totals[0]),
        mib(metrics[0]),
        mib(totals[1]),
        mib(metrics[1])
    );
    println!();
    println!(
        "### Serving each result: first run (MISS, stored) and from the cache (HIT, median of {})\n",
        args.serve_rounds
    );
    println!("| result | MISS, none | MISS, zstd | HIT, none | HIT, zstd |");
    println!("|---|---|---|---|---|");
    for s in &sized {
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            s.name, s.miss_ms[0], s.miss_ms[1], s.hit_ms[0], s.hit_ms[1]
        );
    }
    zstd.shutdown().await;
    plain.shutdown().await;
    Ok(())
}
