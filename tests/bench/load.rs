//! `quiver-load`: a bounded load test on loopback. N concurrent clients run a mix of queries
//! through a real `quiver serve` process (whose pool is a separate `quiver engine` process, so
//! the gateway's own memory can be read) for a fixed time; any error fails the run.
//!
//!   cargo build --release -p quiver-gateway --bin quiver
//!   cargo run --release -p quiver-tests --bin quiver-load -- --clients 256 --seconds 60
//!
//! Prints p50/p99 latency per query kind, throughput, and the gateway's RSS (VmHWM and VmRSS
//! from /proc) as markdown.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::FlightDescriptor;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandGetTables, CommandStatementQuery, ProstMessageExt};
use clap::Parser;
use futures::TryStreamExt;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use prost::Message;
use tonic::transport::Channel;

#[derive(Parser)]
struct Args {
    /// Concurrent clients (each its own connection).
    #[arg(long, default_value_t = 256)]
    clients: usize,
    /// How long the load runs.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The quiver binary (default: target/release/quiver next to this binary).
    #[arg(long)]
    quiver: Option<PathBuf>,
}

/// The mix: (name, weight, SQL or None for a metadata call).
const MIX: &[(&str, u32, Option<&str>)] = &[
    ("SELECT 1", 40, Some("SELECT 1")),
    ("point lookup", 20, Some("SELECT n_name FROM nation WHERE n_nationkey = 7")),
    ("aggregate", 15, Some("SELECT l_returnflag, count(*), sum(l_extendedprice) FROM lineitem GROUP BY l_returnflag")),
    ("scan 25k rows", 10, Some("SELECT o_orderkey, o_totalprice FROM orders WHERE o_orderkey % 6 = 0")),
    (
        "join",
        10,
        Some(
            "SELECT c_name, count(*) FROM customer JOIN orders ON c_custkey = o_custkey GROUP BY c_name ORDER BY 2 DESC LIMIT 10",
        ),
    ),
    ("GetTables", 5, None),
];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `quiver ARGS` and returns it with the `flight_addr` of its ready line.
fn start(binary: &PathBuf, args: &[&str]) -> anyhow::Result<(Proc, String)> {
    let mut child = Command::new(binary).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let ready: serde_json::Value = serde_json::from_str(&line)?;
    let addr = ready["flight_addr"].as_str().ok_or_else(|| anyhow::anyhow!("no ready line: {line}"))?.to_string();
    Ok((Proc(child), addr))
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn run_one(client: &mut FlightServiceClient<Channel>, sql: Option<&str>) -> anyhow::Result<u64> {
    let cmd = match sql {
        Some(sql) => CommandStatementQuery { query: sql.into(), transaction_id: None }.as_any().encode_to_vec(),
        None => CommandGetTables {
            catalog: Some("tpch".into()),
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        }
        .as_any()
        .encode_to_vec(),
    };
    let info = client.get_flight_info(FlightDescriptor::new_cmd(cmd)).await?.into_inner();
    let mut rows = 0;
    for endpoint in info.endpoint {
        let stream = client.do_get(endpoint.ticket.unwrap_or_default()).await?.into_inner();
        let mut batches = FlightRecordBatchStream::new_from_flight_data(stream.map_err(Into::into));
        while let Some(batch) = batches.try_next().await? {
            rows += batch.num_rows() as u64;
        }
    }
    Ok(rows)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let quiver = match args.quiver {
        Some(p) => p,
        None => std::env::current_exe()?.parent().map(|d| d.join("quiver")).ok_or_else(|| anyhow::anyhow!("no dir"))?,
    };
    let dir = tempfile::tempdir()?;
    let worker_cfg = dir.path().join("worker.toml");
    std::fs::write(
        &worker_cfg,
        "[engine]\n[[engine.catalogs]]\nkind = \"tpch\"\nname = \"tpch\"\nscale_factor = 0.01\n",
    )?;
    let (_engine, engine_addr) =
        start(&quiver, &["engine", "--config", &worker_cfg.to_string_lossy(), "--flight-addr", "127.0.0.1:0"])?;
    let gateway_cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &gateway_cfg,
        format!(
            "[server]\nflight_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n[session]\ndefault_catalog = \"tpch\"\ndefault_schema = \"tiny\"\n[[pools]]\nname = \"workers\"\nworkers = [\"grpc://{engine_addr}\"]\n"
        ),
    )?;
    let (gateway, gateway_addr) = start(&quiver, &["serve", "--config", &gateway_cfg.to_string_lossy()])?;
    let gateway_pid = gateway.0.id();
    let (rss_idle, _) = rss_kib(gateway_pid);

    let hists: Arc<Vec<Mutex<Histogram<u64>>>> =
        Arc::new(MIX.iter().map(|_| Mutex::new(Histogram::new(3).expect("histogram"))).collect());
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicU64::new(0));
    let total_weight: u32 = MIX.iter().map(|m| m.1).sum();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (hists, errors, done) = (hists.clone(), errors.clone(), done.clone());
        let uri = format!("http://{gateway_addr}");
        tasks.push(tokio::spawn(async move {
            let channel = match Channel::from_shared(uri).map(|e| e.tcp_nodelay(true)) {
                Ok(e) => match e.connect().await {
                    Ok(ch) => ch,
                    Err(err) => {
                        errors.lock().push(format!("client {c}: connect: {err}"));
                        return;
                    }
                },
                Err(err) => {
                    errors.lock().push(format!("client {c}: {err}"));
                    return;
                }
            };
            let mut client = FlightServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
            let mut n: u64 = c as u64 * 7919;
            while Instant::now() < deadline {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let mut roll = ((n >> 33) % u64::from(total_weight)) as u32;
                let kind = MIX.iter().position(|m| {
                    if roll < m.1 {
                        true
                    } else {
                        roll -= m.1;
                        false
                    }
                });
                let kind = kind.unwrap_or(0);
                let start = Instant::now();
                match run_one(&mut client, MIX[kind].2).await {
                    Ok(_) => {
                        let _ = hists[kind].lock().record(start.elapsed().as_micros() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().push(format!("{}: {e}", MIX[kind].0)),
                }
            }
        }));
    }
    // Sample the gateway's memory while the load runs.
    let mut rss_peak_sampled = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak_sampled = rss_peak_sampled.max(rss_kib(gateway_pid).0);
    }
    for t in tasks {
        t.await?;
    }
    let (rss_after, hwm) = rss_kib(gateway_pid);
    let total = done.load(Ordering::Relaxed);
    let errors = errors.lock().clone();

    println!("## Load: {} clients, {} s, mixed queries (TPC-H tiny)\n", args.clients, args.seconds);
    println!("| query | weight | count | p50 | p99 |");
    println!("|---|---|---|---|---|");
    let mut all = Histogram::<u64>::new(3)?;
    for (i, (name, weight, _)) in MIX.iter().enumerate() {
        let h = hists[i].lock();
        all.add(&*h)?;
        println!(
            "| {name} | {weight} | {} | {:.2} ms | {:.2} ms |",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    println!(
        "| **all** | | {} | {:.2} ms | {:.2} ms |",
        all.len(),
        all.value_at_quantile(0.5) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0
    );
    println!("\nthroughput: {:.0} queries/s; errors: {}", total as f64 / args.seconds as f64, errors.len());
    println!(
        "gateway RSS: {:.1} MiB idle, {:.1} MiB peak sampled, {:.1} MiB high-water mark, {:.1} MiB after",
        rss_idle as f64 / 1024.0,
        rss_peak_sampled as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    for e in errors.iter().take(10) {
        println!("error: {e}");
    }
    drop(gateway);
    anyhow::ensure!(errors.is_empty(), "{} unexpected errors", errors.len());
    Ok(())
}
