//! Wiring: from a validated config to running Flight SQL and HTTP servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_auth::{
    Authenticator, AuthenticatorChain, CertificateAuthenticator, OpenAuthenticator, PasswordFileAuthenticator,
    SessionTokens, UserMapping,
};
use quiver_engine::Engine;
use quiver_engine::config::parse_bytes;
use quiver_policies::{AllowAll, Authorizer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admission::AdmissionController;
use crate::auth_layer::{AuthLayer, AuthState};
use crate::config::{AuthMethod, ClientAuth, QuiverConfig, TlsConfig};
use crate::flight::{FlightSettings, GatewayService};
use crate::http::{HttpState, routes};
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::queries::QueryRegistry;
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
    /// Queries planned, running and recent.
    pub queries: Arc<QueryRegistry>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl RunningGateway {
    /// Stops every server and waits for them. Running streams are cancelled first (they
    /// end with CANCELLED, never looking complete); `shutdown_gracefully` lets them finish.
    pub async fn shutdown(mut self) {
        self.queries.stop_accepting();
        self.queries.cancel_all();
        for task in self.background.drain(..) {
            task.abort();
        }
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }

    /// The SIGTERM path: readiness turns false and new queries are refused with UNAVAILABLE
    /// at once; running streams go on for up to `grace`, then are cancelled; then everything
    /// stops. Returns whether every stream finished within the grace period.
    pub async fn shutdown_gracefully(self, grace: Duration) -> bool {
        self.queries.stop_accepting();
        tracing::info!(active = self.queries.active_count(), ?grace, "shutting down: waiting for running queries");
        let drained = self.queries.wait_idle(Instant::now() + grace).await;
        if !drained {
            tracing::warn!(active = self.queries.active_count(), "grace period over: cancelling running queries");
            self.queries.cancel_all();
            self.queries.wait_idle(Instant::now() + Duration::from_secs(2)).await;
        }
        self.shutdown().await;
        drained
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

fn read_secret(key: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    Ok(std::fs::read(path).map_err(|e| anyhow::anyhow!("{key} {}: {e}", path.display()))?.trim_ascii().to_vec())
}

/// The signing secret and the previous secrets still accepted.
fn secrets(config: &QuiverConfig) -> anyhow::Result<(Vec<u8>, Vec<Vec<u8>>)> {
    let current = match &config.server.secret_file {
        Some(path) => read_secret("server.secret_file", path)?,
        None => SessionTokens::random_key(),
    };
    let previous = config
        .server
        .previous_secret_files
        .iter()
        .map(|path| read_secret("server.previous_secret_files", path))
        .collect::<anyhow::Result<_>>()?;
    Ok((current, previous))
}

/// The authentication methods of `[auth]`, in order, with the user mapping rules.
fn authenticator_chain(config: &QuiverConfig) -> anyhow::Result<AuthenticatorChain> {
    let auth = &config.auth;
    let mut methods: Vec<Arc<dyn Authenticator>> = Vec::new();
    for method in &auth.methods {
        methods.push(match method {
            AuthMethod::Open => Arc::new(OpenAuthenticator),
            AuthMethod::PasswordFile => {
                let path = auth.password_file.clone().unwrap_or_default();
                Arc::new(PasswordFileAuthenticator::load(path).map_err(|e| anyhow::anyhow!("auth.password_file: {e}"))?)
            }
            AuthMethod::Certificate => Arc::new(CertificateAuthenticator::new(auth.certificate.clone())),
            AuthMethod::Ldap => Arc::new(
                quiver_auth::LdapAuthenticator::new(auth.ldap.clone())
                    .map_err(|e| anyhow::anyhow!("auth.ldap: {e}"))?,
            ),
            AuthMethod::Jwt => {
                Arc::new(quiver_auth::JwtAuthenticator::new(&auth.jwt).map_err(|e| anyhow::anyhow!("auth.jwt: {e}"))?)
            }
            #[cfg(feature = "kerberos")]
            AuthMethod::Kerberos => Arc::new(
                quiver_auth::KerberosAuthenticator::new(&auth.kerberos)
                    .map_err(|e| anyhow::anyhow!("auth.kerberos: {e}"))?,
            ),
            #[cfg(not(feature = "kerberos"))]
            AuthMethod::Kerberos => anyhow::bail!("auth.methods: this quiver was built without Kerberos"),
        });
    }
    let mapping = UserMapping::new(&auth.user_mapping).map_err(|e| anyhow::anyhow!("auth.user_mapping: {e}"))?;
    Ok(AuthenticatorChain::new(methods).with_mapping(mapping))
}

/// tonic's TLS settings from `[server.tls]`.
fn server_tls(tls: &TlsConfig) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| anyhow::anyhow!("server.tls.{key} {}: {e}", path.display()))
    };
    let identity =
        tonic::transport::Identity::from_pem(read("cert_file", &tls.cert_file)?, read("key_file", &tls.key_file)?);
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity).timeout(Duration::from_secs(10));
    if let Some(ca) = &tls.client_ca_file {
        config = config
            .client_ca_root(tonic::transport::Certificate::from_pem(read("client_ca_file", ca)?))
            .client_auth_optional(tls.client_auth == ClientAuth::Optional);
    }
    Ok(config)
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
    let mut probers = Vec::new();
    for p in &config.pools {
        let mut workers = p.workers.clone();
        if p.embedded
            && let Some(addr) = engine_addr
        {
            workers.insert(0, format!("grpc://{addr}"));
        }
        let pool = Arc::new(Pool::new(&p.name, &workers, metadata_ttl, p.health_policy())?);
        probers.push(crate::pool::spawn_prober(pool.clone()));
        pools.push(pool);
    }
    let rules = crate::routing::RoutingRules::new(&config.routing).map_err(|e| anyhow::anyhow!("routing: {e}"))?;
    let router = Router::new(pools).with_rules(rules);

    let (secret, previous_secrets) = secrets(&config)?;
    let mut tokens = SessionTokens::new(secret.clone(), Duration::from_secs(config.auth.token_ttl_secs));
    let mut sealer = Sealer::new(&secret, config.server.ticket_ttl_secs);
    for old in &previous_secrets {
        tokens = tokens.also_accept(old.clone());
        sealer = sealer.also_accept(old);
    }
    let metrics = Arc::new(Metrics::new());
    let sessions = crate::session::SessionStore::default();
    let throttle = crate::auth_layer::LoginThrottle::new(
        config.auth.max_failed_logins_per_user,
        config.auth.max_failed_logins_per_address,
        Duration::from_secs(config.auth.failed_login_window_secs),
    );
    let auth = Arc::new(
        AuthState::new(authenticator_chain(&config)?, tokens, metrics.clone())
            .with_throttle(throttle)
            .with_sessions(sessions.clone()),
    );
    let authorizer = authorizer(&config, metrics.clone())?;
    let barrier_pools = config.pools.iter().filter(|p| p.policy_barrier).map(|p| p.name.clone()).collect();
    let enforcement = crate::authz::Enforcement::new(config.authorization.is_some(), barrier_pools)
        .planning_always(config.cache.is_some());
    let cache = match &config.cache {
        Some(c) => Some(Arc::new(
            crate::cache::ResultCache::new(c.clone(), metrics.clone()).map_err(|e| anyhow::anyhow!("cache: {e}"))?,
        )),
        None => None,
    };
    let max_request_bytes =
        quiver_engine::config::parse_bytes(&config.server.max_request_size).map_err(anyhow::Error::msg)?;
    let settings = FlightSettings {
        default_catalog: default_catalog.unwrap_or_else(|| "default".into()),
        default_schema: default_schema.unwrap_or_else(|| "default".into()),
        max_sql_bytes: quiver_engine::config::parse_bytes(&config.server.max_sql_size).map_err(anyhow::Error::msg)?,
        max_statement_depth: config.server.max_statement_depth,
        max_request_bytes,
    };
    let admission = match &config.resource_groups {
        Some(rg) => {
            let cluster_memory = rg
                .cluster_memory
                .as_deref()
                .map(parse_bytes)
                .transpose()
                .map_err(anyhow::Error::msg)?
                .map(|b| b as u64);
            let controller = AdmissionController::load(rg.config_file.clone(), cluster_memory, metrics.clone())
                .map_err(|e| anyhow::anyhow!("resource_groups.config_file: {e}"))?;
            let controller = Arc::new(controller);
            probers.push(controller.spawn_ticker(Duration::from_millis(rg.tick_ms)));
            Some(controller)
        }
        None => None,
    };
    let queries =
        Arc::new(QueryRegistry::new(Duration::from_secs(config.server.ticket_ttl_secs), 1000, metrics.clone()));
    let service = GatewayService::new(router.clone(), sealer, authorizer, settings, queries.clone())?
        .with_sessions(sessions)
        .with_admission(admission.clone())
        .with_enforcement(enforcement)
        .with_cache(cache.clone());

    let flight_listener = TcpListener::bind(&config.server.flight_addr).await?;
    let flight_addr = flight_listener.local_addr()?;
    let http_listener = TcpListener::bind(&config.server.http_addr).await?;
    let http_addr = http_listener.local_addr()?;

    let auth_for_http = auth.clone();
    let (tx, rx) = oneshot::channel::<()>();
    stop.push(tx);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.server.tls {
        // TLS (and client-certificate verification) before any byte reaches the auth layer.
        builder = builder.tls_config(server_tls(tls)?)?;
    }
    let flight = builder
        // Big windows so one stream can fill the pipe; nodelay for small-query latency.
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(32 * 1024 * 1024))
        .tcp_nodelay(true)
        // Authentication sits in front of every Flight call, so handlers only see callers it let in.
        .layer(AuthLayer::new(auth.clone()))
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
    let state = Arc::new(HttpState {
        router,
        started: Instant::now(),
        flight_addr: flight_addr.to_string(),
        auth: auth_for_http,
        metrics,
        queries: queries.clone(),
        admin: config.admin.clone(),
        admission,
        cache,
    });
    tasks.push(tokio::spawn(async move {
        let app = routes(state).into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(http_listener, app).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    tracing::info!(%flight_addr, %http_addr, ?engine_addr, "quiver gateway started");
    Ok(RunningGateway { flight_addr, http_addr, engine_addr, queries, stop, tasks, background: probers })
}

/// The configured authorizer (every decision audited and counted), or allow-all.
fn authorizer(config: &QuiverConfig, metrics: Arc<Metrics>) -> anyhow::Result<Arc<dyn Authorizer>> {
    let Some(a) = &config.authorization else {
        return Ok(Arc::new(AllowAll));
    };
    let observer: Arc<dyn quiver_policies::DecisionObserver> = metrics;
    Ok(match (&a.opa, &a.rules) {
        (Some(opa), None) => Arc::new(
            quiver_policies::opa::OpaAuthorizer::from_config(opa.clone())
                .map_err(|e| anyhow::anyhow!("authorization.opa: {e}"))?
                .with_observer(observer),
        ),
        (None, Some(rules)) => Arc::new(
            quiver_policies::rules::RulesAuthorizer::load(rules.clone())
                .map_err(|e| anyhow::anyhow!("authorization.rules: {e}"))?
                .with_observer(observer),
        ),
        _ => anyhow::bail!("authorization: set exactly one of `opa` and `rules`"),
    })
}
