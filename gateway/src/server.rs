//! Wiring: from a validated config to running Flight SQL and HTTP servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_auth::{Authenticator, AuthenticatorChain, OpenAuthenticator, PasswordFileAuthenticator, SessionTokens};
use quiver_engine::Engine;
use quiver_policies::{AllowAll, Authorizer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth_layer::{AuthLayer, AuthState};
use crate::config::{AuthMode, QuiverConfig};
use crate::flight::{FlightSettings, GatewayService};
use crate::http::{HttpState, routes};
use crate::pool::Pool;
use crate::router::Router;
use crate::tickets::Sealer;

/// A running gateway. Dropping it does not stop it; call [`RunningGateway::shutdown`].
#[derive(Debug)]
pub struct RunningGateway {
    /// Where Flight SQL listens.
    pub flight_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// The embedded engine's own Flight SQL address, if one runs.
    pub engine_addr: Option<SocketAddr>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// Stops every server and waits for them.
    pub async fn shutdown(mut self) {
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// Waits until the servers stop by themselves (they only do on error).
    pub async fn wait(mut self) {
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

/// Starts an engine worker on `listener`, for `quiver engine` and the embedded pool.
pub async fn start_engine(engine: Arc<Engine>, listener: TcpListener) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = quiver_engine::serve(engine, listener, async move {
            let _ = rx.await;
        })
        .await
        {
            tracing::error!(error = %e, "engine worker stopped");
        }
    });
    (tx, task)
}

fn secret(config: &QuiverConfig) -> anyhow::Result<Vec<u8>> {
    Ok(match &config.server.secret_file {
        Some(path) => std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("server.secret_file {}: {e}", path.display()))?
            .trim_ascii()
            .to_vec(),
        None => SessionTokens::random_key(),
    })
}

/// Validates `config` and starts everything it describes.
pub async fn start(config: QuiverConfig) -> anyhow::Result<RunningGateway> {
    let problems = config.validate();
    if !problems.is_empty() {
        let text: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.key, p.reason)).collect();
        anyhow::bail!("invalid configuration:\n  {}", text.join("\n  "));
    }
    let mut stop = Vec::new();
    let mut tasks = Vec::new();

    // The embedded engine serves on an ephemeral loopback port; pools reach it like any worker.
    let mut engine_addr = None;
    let mut default_catalog = config.session.default_catalog.clone();
    let mut default_schema = config.session.default_schema.clone();
    if config.pools.iter().any(|p| p.embedded) {
        let engine = Engine::start(&config.engine).await?;
        default_catalog.get_or_insert_with(|| engine.default_catalog().to_string());
        default_schema.get_or_insert_with(|| engine.default_schema().to_string());
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        engine_addr = Some(listener.local_addr()?);
        let (tx, task) = start_engine(engine, listener).await;
        stop.push(tx);
        tasks.push(task);
    }
    let metadata_ttl = Duration::from_secs(config.server.metadata_ttl_secs);
    let mut pools = Vec::new();
    for p in &config.pools {
        let mut workers = p.workers.clone();
        if p.embedded
            && let Some(addr) = engine_addr
        {
            workers.insert(0, format!("grpc://{addr}"));
        }
        pools.push(Arc::new(Pool::new(&p.name, &workers, metadata_ttl)?));
    }
    let router = Router::new(pools);

    let secret = secret(&config)?;
    let tokens = SessionTokens::new(secret.clone(), Duration::from_secs(config.auth.token_ttl_secs));
    let method: Arc<dyn Authenticator> = match config.auth.mode {
        AuthMode::Open => Arc::new(OpenAuthenticator),
        AuthMode::PasswordFile => {
            let path = config.auth.password_file.clone().unwrap_or_default();
            Arc::new(PasswordFileAuthenticator::load(path).map_err(|e| anyhow::anyhow!("auth.password_file: {e}"))?)
        }
    };
    let auth = Arc::new(AuthState::new(AuthenticatorChain::new(vec![method]), tokens));
    let authorizer: Arc<dyn Authorizer> = Arc::new(AllowAll);
    let max_request_bytes =
        quiver_engine::config::parse_bytes(&config.server.max_request_size).map_err(anyhow::Error::msg)?;
    let settings = FlightSettings {
        default_catalog: default_catalog.unwrap_or_else(|| "default".into()),
        default_schema: default_schema.unwrap_or_else(|| "default".into()),
        max_sql_bytes: quiver_engine::config::parse_bytes(&config.server.max_sql_size).map_err(anyhow::Error::msg)?,
        max_request_bytes,
    };
    let sealer = Sealer::new(&secret, config.server.ticket_ttl_secs);
    let service = GatewayService::new(router.clone(), sealer, authorizer, settings)?;

    let flight_listener = TcpListener::bind(&config.server.flight_addr).await?;
    let flight_addr = flight_listener.local_addr()?;
    let http_listener = TcpListener::bind(&config.server.http_addr).await?;
    let http_addr = http_listener.local_addr()?;

    let (tx, rx) = oneshot::channel::<()>();
    stop.push(tx);
    let flight = tonic::transport::Server::builder()
        // Big windows so one stream can fill the pipe; nodelay for small-query latency.
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(32 * 1024 * 1024))
        .tcp_nodelay(true)
        // Authentication sits in front of every Flight call, so handlers only see callers it let in.
        .layer(AuthLayer::new(auth))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(quiver_engine::nodelay_incoming(flight_listener), async move {
            let _ = rx.await;
        });
    tasks.push(tokio::spawn(async move {
        if let Err(e) = flight.await {
            tracing::error!(error = %e, "Flight SQL server stopped");
        }
    }));

    let (tx, rx) = oneshot::channel::<()>();
    stop.push(tx);
    let state = Arc::new(HttpState { router, started: Instant::now(), flight_addr: flight_addr.to_string() });
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(http_listener, routes(state)).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    tracing::info!(%flight_addr, %http_addr, ?engine_addr, "quiver gateway started");
    Ok(RunningGateway { flight_addr, http_addr, engine_addr, stop, tasks })
}
