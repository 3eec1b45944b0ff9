//! The admin API: queries (list, inspect, kill) and pools (state, drain).
//!
//! Everyone authenticated sees and kills their own queries; the admin role (`[admin]`) sees
//! and kills everyone's, and alone may read pool state and drain workers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use http::StatusCode;
use serde_json::json;

use super::HttpState;
use crate::auth_layer::CallContext;
use crate::pool::WorkerState;

/// The admin routes (mounted behind authentication).
pub(super) fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/v1/query", get(list_queries))
        .route("/v1/query/{id}", get(get_query).delete(kill_query))
        .route("/v1/pools", get(pools))
        .route("/v1/cache", get(cache_state).delete(evict))
        .route("/v1/resourceGroupState/{*id}", get(resource_group_state))
        .route("/v1/pools/{pool}/drain", post(drain_pool).delete(undrain_pool))
        .route("/v1/pools/{pool}/workers/{worker}/drain", post(drain_worker).delete(undrain_worker))
        .route("/v1/pools/{pool}/workers/{worker}", delete(undrain_worker))
}

/// The label a worker state has in metrics and JSON.
pub(super) fn state_label(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Healthy => "HEALTHY",
        WorkerState::Suspect => "SUSPECT",
        WorkerState::Ejected => "EJECTED",
        WorkerState::Draining => "DRAINING",
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn forbidden() -> Response {
    error(StatusCode::FORBIDDEN, "this needs the admin role ([admin] users or groups)")
}

fn is_admin(state: &HttpState, ctx: &CallContext) -> bool {
    state.admin.is_admin(&ctx.identity.user, &ctx.identity.groups)
}

async fn list_queries(State(state): State<Arc<HttpState>>, Extension(ctx): Extension<CallContext>) -> Response {
    let admin = is_admin(&state, &ctx);
    let visible: Vec<_> = state.queries.list().into_iter().filter(|q| admin || q.user == ctx.identity.user).collect();
    Json(visible).into_response()
}

async fn get_query(
    State(state): State<Arc<HttpState>>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    match state.queries.get(&id) {
        Some(q) if is_admin(&state, &ctx) || q.user == ctx.identity.user => Json(q.info()).into_response(),
        // Someone else's query looks like no query at all.
        _ => error(StatusCode::NOT_FOUND, format!("no query `{id}`")),
    }
}

async fn kill_query(
    State(state): State<Arc<HttpState>>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    match state.queries.get(&id) {
        Some(q) if is_admin(&state, &ctx) || q.user == ctx.identity.user => {
            if state.queries.cancel(&id) {
                tracing::info!(query = %id, by = %ctx.identity.user, "query killed");
                StatusCode::NO_CONTENT.into_response()
            } else {
                error(StatusCode::CONFLICT, format!("query `{id}` has already ended"))
            }
        }
        _ => error(StatusCode::NOT_FOUND, format!("no query `{id}`")),
    }
}

/// `GET /v1/cache`: entries and bytes held (admin).
async fn cache_state(State(state): State<Arc<HttpState>>, Extension(ctx): Extension<CallContext>) -> Response {
    if !is_admin(&state, &ctx) {
        return forbidden();
    }
    let Some(cache) = &state.cache else {
        return error(StatusCode::NOT_FOUND, "no result cache is configured ([cache])");
    };
    let (entries, bytes) = cache.held();
    Json(json!({"entries": entries, "bytes": bytes})).into_response()
}

/// Which entries `DELETE /v1/cache` evicts: `?table=catalog.schema.table`, `?catalog=name`,
/// or everything.
#[derive(Debug, serde::Deserialize)]
struct EvictQuery {
    table: Option<String>,
    catalog: Option<String>,
}

/// `DELETE /v1/cache[?table=c.s.t|?catalog=c]`: evicts and answers how many (admin).
async fn evict(
    State(state): State<Arc<HttpState>>,
    Extension(ctx): Extension<CallContext>,
    axum::extract::Query(q): axum::extract::Query<EvictQuery>,
) -> Response {
    if !is_admin(&state, &ctx) {
        return forbidden();
    }
    let Some(cache) = &state.cache else {
        return error(StatusCode::NOT_FOUND, "no result cache is configured ([cache])");
    };
    let evicted = match (q.table, q.catalog) {
        (Some(_), Some(_)) => return error(StatusCode::BAD_REQUEST, "give `table` or `catalog`, not both"),
        (Some(t), None) => {
            let parts: Vec<&str> = t.split('.').collect();
            let [c, s, n] = parts.as_slice() else {
                return error(StatusCode::BAD_REQUEST, format!("`{t}` is not catalog.schema.table"));
            };
            let tables = std::collections::BTreeSet::from([quiver_policies::TableRef::new(*c, *s, *n)]);
            cache.invalidate_tables(&tables)
        }
        (None, Some(c)) => cache.invalidate_catalog(&c),
        (None, None) => cache.invalidate_all(),
    };
    Json(json!({"evicted": evicted})).into_response()
}

async fn pools(State(state): State<Arc<HttpState>>, Extension(ctx): Extension<CallContext>) -> Response {
    if !is_admin(&state, &ctx) {
        return forbidden();
    }
    let pools: Vec<_> = state
        .router
        .pools()
        .iter()
        .map(|pool| {
            let workers: Vec<_> = pool
                .workers()
                .iter()
                .map(|w| {
                    json!({
                        "uri": w.uri,
                        "state": state_label(w.state()),
                        "outstanding": w.outstanding(),
                        "lastError": w.last_error(),
                        "lastProbeAgoMs": w.last_probe().map(|t| t.elapsed().as_millis() as u64),
                    })
                })
                .collect();
            json!({
                "name": pool.name,
                "maxConcurrentPerWorker": pool.policy().max_concurrent_per_worker,
                "workers": workers,
            })
        })
        .collect();
    Json(pools).into_response()
}

fn set_pool_draining(state: &HttpState, ctx: &CallContext, pool: &str, draining: bool) -> Response {
    if !is_admin(state, ctx) {
        return forbidden();
    }
    match state.router.pool(pool) {
        Ok(p) => {
            for w in p.workers() {
                w.set_draining(draining);
            }
            tracing::info!(pool, draining, by = %ctx.identity.user, "pool drain changed");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(_) => error(StatusCode::NOT_FOUND, format!("no pool `{pool}`")),
    }
}

fn set_worker_draining(state: &HttpState, ctx: &CallContext, pool: &str, worker: &str, draining: bool) -> Response {
    if !is_admin(state, ctx) {
        return forbidden();
    }
    let Ok(p) = state.router.pool(pool) else {
        return error(StatusCode::NOT_FOUND, format!("no pool `{pool}`"));
    };
    match p.worker(worker) {
        Some(w) => {
            w.set_draining(draining);
            tracing::info!(pool, worker = %w.uri, draining, by = %ctx.identity.user, "worker drain changed");
            StatusCode::NO_CONTENT.into_response()
        }
        None => error(StatusCode::NOT_FOUND, format!("pool `{pool}` has no worker `{worker}`")),
    }
}

async fn drain_pool(
    State(state): State<Arc<HttpState>>,
    Extension(ctx): Extension<CallContext>,
    Path(pool): Path<String>,
) -> Response {
    set_pool_draining(&state, &ctx, &pool, true)
}

async fn undrain_pool(
    State(state): State<Arc<HttpState>>,
    Extension(ctx): Extension<CallContext>,
    Path(pool): Path<String>,
) -> Response {
    set_pool_draining(&state, &ctx, &pool, false)
}

async fn drain_worker(
    State(state): State<Arc<HttpState>>,
    Extension(ctx): Extension<CallContext>,
    Path((pool, worker)): Path<(String, String)>,
) -> Response {
    set_worker_draining(&state, &ctx, &pool, &worker, true)
}

async fn undrain_worker(
    State(state): State<Arc<HttpState>>,
    Extension(ctx): Extension<CallContext>,
    Path((pool, worker)): Path<(String, String)>,
) -> Response {
    set_worker_draining(&state, &ctx, &pool, &worker, false)
}

/// Trino's `GET /v1/resourceGroupState/{id}` (id as path segments: `global/adhoc/alice`).
async fn resource_group_state(
    State(state): State<Arc<HttpState>>,
    Extension(ctx): Extension<CallContext>,
    Path(id): Path<String>,
) -> Response {
    if !is_admin(&state, &ctx) {
        return forbidden();
    }
    let Some(admission) = &state.admission else {
        return error(StatusCode::NOT_FOUND, "no resource groups are configured ([resource_groups])");
    };
    let group = quiver_policies::resource_groups::GroupId::from_url_path(&id);
    match group.and_then(|g| admission.state(&g)) {
        Some(info) => Json(info).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no resource group `{id}`")),
    }
}
