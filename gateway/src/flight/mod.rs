//! The gateway's Flight SQL service: the front door every client talks to.
//!
//! Statements are planned and run on a worker of the pool the router picks; their FlightData
//! frames are forwarded to the client as they arrive, never decoded. Metadata calls are
//! answered by the gateway from the merged, authorization-filtered view of all pools.

mod actions;
mod metadata;
mod prepared;
mod service;
pub mod session_proto;
mod statements;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::FlightData;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use bytes::Bytes;
use futures::Stream;
use moka::sync::Cache;
use quiver_policies::Authorizer;
use tonic::Request;

use crate::admission::{AdmissionController, Permit};
use crate::auth_layer::CallContext;
use crate::error::{GatewayError, Result};
use crate::queries::QueryRegistry;
use crate::router::Router;
use crate::session::SessionStore;
use crate::tickets::Sealer;

pub(crate) use statements::frame_rows;

/// A stream of FlightData as the service returns it.
pub type FlightDataStream = Pin<Box<dyn Stream<Item = std::result::Result<FlightData, tonic::Status>> + Send>>;

/// Client headers that override the session's catalog and schema for one call.
pub const CATALOG_HEADER: &str = quiver_engine::CATALOG_HEADER;
/// See [`CATALOG_HEADER`].
pub const SCHEMA_HEADER: &str = quiver_engine::SCHEMA_HEADER;

/// Settings of the Flight service.
#[derive(Debug, Clone)]
pub struct FlightSettings {
    /// Catalog for unqualified names when the session sets none.
    pub default_catalog: String,
    /// Schema for unqualified names when the session sets none.
    pub default_schema: String,
    /// Longest SQL text accepted.
    pub max_sql_bytes: usize,
    /// Deepest statement accepted (`server.max_statement_depth`).
    pub max_statement_depth: usize,
    /// Largest gRPC message accepted from a client.
    pub max_request_bytes: usize,
}

/// The Flight SQL front door.
pub struct GatewayService {
    pub(crate) router: Router,
    pub(crate) sealer: Sealer,
    pub(crate) sessions: SessionStore,
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) settings: FlightSettings,
    pub(crate) sql_info: SqlInfoData,
    pub(crate) xdbc: XdbcTypeInfoData,
    /// Prepared-statement id -> latest sealed handle (with bound parameters), for clients
    /// that keep using the handle they got at creation.
    pub(crate) bound: Cache<String, Bytes>,
    /// Planned, running and recent queries (cancel, kill, history, shutdown).
    pub(crate) queries: Arc<QueryRegistry>,
    /// Resource groups, when configured.
    pub(crate) admission: Option<Arc<AdmissionController>>,
    /// Statement planning, checks and the row-filter/mask rewrite (on when a policy is set).
    pub(crate) enforcement: Arc<crate::authz::Enforcement>,
    /// The result cache, when configured.
    pub(crate) cache: Option<Arc<crate::cache::ResultCache>>,
}

impl std::fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayService").field("settings", &self.settings).finish()
    }
}

impl GatewayService {
    /// Builds the service.
    pub fn new(
        router: Router,
        sealer: Sealer,
        authorizer: Arc<dyn Authorizer>,
        settings: FlightSettings,
        queries: Arc<QueryRegistry>,
    ) -> Result<Self> {
        let sql_info = crate::sql_info::sql_info_data(env!("CARGO_PKG_VERSION"))
            .map_err(|e| GatewayError::Internal(format!("SqlInfo: {e}")))?;
        let xdbc =
            crate::xdbc::xdbc_type_info_data().map_err(|e| GatewayError::Internal(format!("XdbcTypeInfo: {e}")))?;
        Ok(GatewayService {
            router,
            sealer,
            sessions: SessionStore::default(),
            authorizer,
            settings,
            sql_info,
            xdbc,
            bound: Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(3600)).build(),
            queries,
            admission: None,
            enforcement: Arc::new(crate::authz::Enforcement::default()),
            cache: None,
        })
    }

    /// The same service keeping sessions in `sessions` (shared with the authentication layer).
    pub fn with_sessions(mut self, sessions: SessionStore) -> Self {
        self.sessions = sessions;
        self
    }

    /// The same service with a result cache.
    pub fn with_cache(mut self, cache: Option<Arc<crate::cache::ResultCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// The same service planning and checking every statement (a policy is configured).
    pub fn with_enforcement(mut self, enforcement: crate::authz::Enforcement) -> Self {
        self.enforcement = Arc::new(enforcement);
        self
    }

    /// The same service with resource-group admission.
    pub fn with_admission(mut self, admission: Option<Arc<AdmissionController>>) -> Self {
        self.admission = admission;
        self
    }

    /// The tonic server for this service, with the request size limit applied.
    pub fn into_server(self) -> FlightServiceServer<Self> {
        let limit = self.settings.max_request_bytes;
        FlightServiceServer::new(self).max_decoding_message_size(limit).max_encoding_message_size(64 * 1024 * 1024)
    }
}

/// The caller of a request, put there by the authentication layer.
pub(crate) fn caller<T>(request: &Request<T>) -> Result<CallContext> {
    request
        .extensions()
        .get::<CallContext>()
        .cloned()
        .ok_or_else(|| GatewayError::Auth(quiver_auth::AuthError::Unsupported("request was not authenticated".into())))
}

/// The catalog and schema unqualified names resolve to for this call: request headers, then
/// the session, then the configured defaults.
pub(crate) fn session_defaults<T>(svc: &GatewayService, ctx: &CallContext, request: &Request<T>) -> (String, String) {
    let header = |name: &str| {
        request.metadata().get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_string)
    };
    let session = ctx.session_id.as_deref().and_then(|id| svc.sessions.get(id, &ctx.identity.user));
    let catalog = header(CATALOG_HEADER)
        .or_else(|| session.as_ref().and_then(|s| s.catalog.clone()))
        .unwrap_or_else(|| svc.settings.default_catalog.clone());
    let schema = header(SCHEMA_HEADER)
        .or_else(|| session.as_ref().and_then(|s| s.schema.clone()))
        .unwrap_or_else(|| svc.settings.default_schema.clone());
    (catalog, schema)
}

/// Header with the client's source, for resource-group selectors.
pub const SOURCE_HEADER: &str = "x-quiver-source";
/// Header with the client's tags (comma-separated), for resource-group selectors.
pub const CLIENT_TAGS_HEADER: &str = "x-quiver-client-tags";

/// What resource-group selectors and scheduling look at besides the identity: headers first,
/// then the session's options.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientInfo {
    pub source: Option<String>,
    pub tags: Vec<String>,
    pub priority: i32,
}

pub(crate) fn client_info(svc: &GatewayService, ctx: &CallContext) -> ClientInfo {
    let session = ctx.session_id.as_deref().and_then(|id| svc.sessions.get(id, &ctx.identity.user));
    ClientInfo {
        source: ctx.source.clone().or_else(|| session.as_ref().and_then(|s| s.source())),
        tags: ctx.client_tags.clone().unwrap_or_else(|| session.as_ref().map(|s| s.client_tags()).unwrap_or_default()),
        priority: session.as_ref().and_then(|s| s.query_priority()).unwrap_or(0),
    }
}

impl GatewayService {
    /// A resource-group slot for query `id` (waiting in the queue if need be), or `None`
    /// when no resource groups are configured.
    pub(crate) async fn admit_to_group(
        &self,
        ctx: &CallContext,
        client: &ClientInfo,
        id: &str,
        kind: &str,
        cancel: &crate::queries::CancelFlag,
        on_queued: impl FnOnce(&str),
    ) -> Result<Option<Permit>> {
        let Some(admission) = &self.admission else { return Ok(None) };
        let context = quiver_policies::resource_groups::SelectionContext {
            user: &ctx.identity.user,
            groups: &ctx.identity.groups,
            source: client.source.as_deref(),
            query_type: quiver_policies::QueryType::from_trino_name(kind),
            client_tags: &client.tags,
        };
        admission.admit(id, &context, client.priority, cancel, on_queued).await.map(Some)
    }
}

/// The session defaults as worker request headers. A name that cannot travel in a header is
/// refused rather than dropped: a worker would otherwise resolve names under its own defaults.
pub(crate) struct DefaultsMetadata {
    catalog: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    schema: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl DefaultsMetadata {
    /// Sets the headers on `request`.
    pub(crate) fn apply<T>(&self, request: &mut Request<T>) {
        request.metadata_mut().insert(CATALOG_HEADER, self.catalog.clone());
        request.metadata_mut().insert(SCHEMA_HEADER, self.schema.clone());
    }
}

/// See [`DefaultsMetadata`].
pub(crate) fn defaults_metadata(catalog: &str, schema: &str) -> Result<DefaultsMetadata> {
    let value = |what: &str, name: &str| {
        name.parse().map_err(|_| {
            GatewayError::InvalidArgument(format!(
                "the session {what} `{name}` cannot be sent to this pool's workers (only printable ASCII names can)"
            ))
        })
    };
    Ok(DefaultsMetadata { catalog: value("catalog", catalog)?, schema: value("schema", schema)? })
}
