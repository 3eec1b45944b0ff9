//! The HTTP side: health probes, information, metrics and the admin API (`admin.rs`).
//!
//! Every route except the health probes sits behind the same authentication as Flight SQL
//! (Basic, Bearer session tokens and JWTs, Negotiate): a middleware runs the gateway's
//! [`AuthState`] and puts the caller's `CallContext` into the request extensions. Routes that
//! change or reveal other users' work also need the admin role (`[admin]`).

mod admin;

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use quiver_auth::{AuthError, AuthFailure};
use serde_json::{Value, json};

use crate::admission::AdmissionController;
use crate::auth_layer::{AuthState, CallContext};
use crate::config::AdminConfig;
use crate::metrics::Metrics;
use crate::queries::QueryRegistry;
use crate::router::Router as PoolRouter;

/// State shared by the HTTP handlers.
pub struct HttpState {
    /// Pools, for /v1/info.
    pub router: PoolRouter,
    /// When the gateway started.
    pub started: Instant,
    /// The Flight SQL address clients connect to.
    pub flight_addr: String,
    /// Authentication, shared with the Flight side.
    pub auth: Arc<AuthState>,
    /// The registry behind /metrics.
    pub metrics: Arc<Metrics>,
    /// Query history (list, kill).
    pub queries: Arc<QueryRegistry>,
    /// Who has the admin role.
    pub admin: AdminConfig,
    /// Resource groups, when configured.
    pub admission: Option<Arc<AdmissionController>>,
    /// The result cache, when configured.
    pub cache: Option<Arc<crate::cache::ResultCache>>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState").field("flight_addr", &self.flight_addr).finish()
    }
}

/// The HTTP routes.
pub fn routes(state: Arc<HttpState>) -> Router {
    let authenticated = Router::new()
        .route("/v1/info", get(info))
        .route("/v1/whoami", get(whoami))
        .route("/metrics", get(metrics))
        .merge(admin::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Probes stay open: orchestrators call them without credentials.
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(health))
        .route("/health/ready", get(ready))
        .merge(authenticated)
        .with_state(state)
}

/// Authenticates an HTTP request; 401 with the accepted schemes in `www-authenticate` when it
/// fails, 503 when the authentication back end is down.
async fn authenticate(State(state): State<Arc<HttpState>>, mut request: Request, next: Next) -> Response {
    let address = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    match state.auth.authenticate(request.headers(), None, false, address).await {
        Ok(done) => {
            request.extensions_mut().insert(done.context.clone());
            let mut response = next.run(request).await;
            done.add_reply_headers(response.headers_mut());
            response
        }
        Err(AuthFailure { error, .. }) => {
            let status = match error {
                AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                AuthError::InvalidCredentials
                | AuthError::Denied(_)
                | AuthError::Unsupported(_)
                | AuthError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            };
            let mut response = (status, Json(json!({ "error": error.to_string() }))).into_response();
            if status == StatusCode::UNAUTHORIZED {
                let names = state.auth.method_names();
                let mut schemes = vec!["Bearer"];
                if names.iter().any(|m| matches!(*m, "password-file" | "ldap" | "open")) {
                    schemes.push(r#"Basic realm="quiver""#);
                }
                if names.contains(&"kerberos") {
                    schemes.push("Negotiate");
                }
                for scheme in schemes {
                    response.headers_mut().append(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
                }
            }
            response
        }
    }
}

async fn health() -> &'static str {
    "ok"
}

/// Ready while the gateway takes new queries and every pool has a usable worker.
async fn ready(State(state): State<Arc<HttpState>>) -> Response {
    if !state.queries.accepting() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    for pool in state.router.pools() {
        if !pool.workers().iter().any(|w| w.usable()) {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("pool `{}` has no usable worker", pool.name))
                .into_response();
        }
    }
    "ready".into_response()
}

async fn whoami(axum::Extension(context): axum::Extension<CallContext>) -> Json<Value> {
    let identity = &context.identity;
    Json(json!({ "user": identity.user, "groups": identity.groups, "method": identity.method }))
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    // Gauges are read off the live state at scrape time.
    let active: Vec<(String, &'static str)> =
        state.queries.active_by_state().into_iter().map(|(pool, s)| (pool, s.label())).collect();
    state.metrics.set_active(&active);
    let mut workers = Vec::new();
    for pool in state.router.pools() {
        for w in pool.workers() {
            workers.push((pool.name.clone(), w.uri.clone(), admin::state_label(w.state())));
        }
    }
    state.metrics.set_workers(&workers);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
}

async fn info(State(state): State<Arc<HttpState>>) -> Json<Value> {
    let mut pools = Vec::new();
    for pool in state.router.pools() {
        let catalogs: Vec<String> = match pool.catalog().await {
            Ok(view) => view.catalogs.iter().cloned().collect(),
            Err(_) => Vec::new(),
        };
        pools.push(json!({
            "name": pool.name,
            "workers": pool.workers().len(),
            "catalogs": catalogs,
        }));
    }
    Json(json!({
        "name": "quiver",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "flight_addr": state.flight_addr,
        "pools": pools,
    }))
}
