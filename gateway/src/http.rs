//! The HTTP side: health and information. (The admin API grows here.)

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use crate::router::Router as PoolRouter;

/// State shared by the HTTP handlers.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Pools, for /v1/info.
    pub router: PoolRouter,
    /// When the gateway started.
    pub started: Instant,
    /// The Flight SQL address clients connect to.
    pub flight_addr: String,
}

/// The HTTP routes.
pub fn routes(state: Arc<HttpState>) -> Router {
    Router::new().route("/health", get(health)).route("/v1/info", get(info)).with_state(state)
}

async fn health() -> &'static str {
    "ok"
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
