//! `quiver`: the gateway, a standalone engine worker, and config tools in one binary.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quiver_gateway::config::QuiverConfig;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "quiver", version, about = "Arrow Flight SQL gateway and query router")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config: the embedded default (open mode on loopback, an
    /// in-process engine with the `tpch` demo catalog).
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Flight SQL address, overriding the config.
        #[arg(long)]
        flight_addr: Option<String>,
        /// HTTP address, overriding the config.
        #[arg(long)]
        http_addr: Option<String>,
        /// TPC-H scale factor of the embedded default's `tpch` catalog.
        #[arg(long, default_value_t = 0.01)]
        tpch_scale_factor: f64,
    },
    /// Run a standalone engine worker serving Flight SQL (the `[engine]` table of FILE).
    Engine {
        /// Configuration file (TOML) with an `[engine]` table.
        #[arg(long)]
        config: PathBuf,
        /// Flight SQL address, overriding `engine.flight_addr`.
        #[arg(long)]
        flight_addr: Option<String>,
    },
    /// Validate a configuration file; prints each problem as file, key and reason.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Read a password from standard input and print its argon2id hash for a password file.
    HashPassword,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUIVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn load(path: &std::path::Path) -> Result<QuiverConfig, ExitCode> {
    QuiverConfig::load(path).map_err(|errors| {
        for e in errors {
            eprintln!("{e}");
        }
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Kerberos: the MIT library reads its keytab and krb5.conf from the process environment,
    // which cannot be changed safely once threads run; so when `[auth.kerberos]` names files
    // the environment does not select yet, re-execute with them set, before any runtime starts.
    if let Command::Serve { config: Some(path), .. } = &cli.command
        && let Ok(cfg) = QuiverConfig::load(path)
        && cfg.auth.methods.contains(&quiver_gateway::config::AuthMethod::Kerberos)
        && let Err(e) = cfg.auth.kerberos.reexec_with_process_env()
    {
        eprintln!("quiver: auth.kerberos: cannot set the Kerberos environment: {e}");
        return ExitCode::FAILURE;
    }
    // 8 MiB stacks: statements are walked recursively (within `server.max_statement_depth`).
    match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(8 * 1024 * 1024).build() {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => {
            eprintln!("quiver: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config, flight_addr, http_addr, tpch_scale_factor } => {
            init_logging();
            let mut cfg = match &config {
                Some(path) => match load(path) {
                    Ok(c) => c,
                    Err(code) => return code,
                },
                None => QuiverConfig::embedded_default(tpch_scale_factor),
            };
            if let Some(a) = flight_addr {
                cfg.server.flight_addr = a;
            }
            if let Some(a) = http_addr {
                cfg.server.http_addr = a;
            }
            let grace = std::time::Duration::from_secs(cfg.server.shutdown_grace_secs);
            let running = match quiver_gateway::start(cfg).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("quiver: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            // One machine-readable line on stdout when both servers listen.
            println!(
                "{}",
                serde_json::json!({"event": "ready", "flight_addr": running.flight_addr.to_string(), "http_addr": running.http_addr.to_string()})
            );
            eprintln!("quiver: Flight SQL on grpc://{}, HTTP on http://{}", running.flight_addr, running.http_addr);
            shutdown_signal().await;
            tracing::info!("shutting down");
            running.shutdown_gracefully(grace).await;
            ExitCode::SUCCESS
        }
        Command::Engine { config, flight_addr } => {
            init_logging();
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let problems = cfg.engine.validate("engine");
            if !problems.is_empty() {
                for p in problems {
                    eprintln!("{}: {}: {}", config.display(), p.key, p.reason);
                }
                return ExitCode::from(2);
            }
            let addr = flight_addr.or(cfg.engine.flight_addr.clone()).unwrap_or_else(|| "127.0.0.1:8817".into());
            let engine = match quiver_engine::Engine::start(&cfg.engine).await {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("quiver engine: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let listener = match TcpListener::bind(&addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("quiver engine: cannot listen on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let local = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
            println!("{}", serde_json::json!({"event": "ready", "flight_addr": local}));
            let (stop, task) = quiver_gateway::start_engine(engine, listener).await;
            shutdown_signal().await;
            let _ = stop.send(());
            let _ = task.await;
            ExitCode::SUCCESS
        }
        Command::CheckConfig { file } => {
            let cfg = match load(&file) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let problems = cfg.validate();
            if problems.is_empty() {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    println!("{}: {}: {}", file.display(), p.key, p.reason);
                }
                ExitCode::from(2)
            }
        }
        Command::HashPassword => {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() {
                eprintln!("quiver: could not read a password from standard input");
                return ExitCode::FAILURE;
            }
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("quiver: empty password");
                return ExitCode::FAILURE;
            }
            match quiver_auth::hash_password(password) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("quiver: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
