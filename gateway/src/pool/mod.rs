//! Worker pools: pooled Flight SQL channels to engine workers, least-outstanding balancing
//! among the healthy ones, per-worker concurrency caps, drain, and the gateway's cached view
//! of the catalogs each pool serves.

mod health;
mod worker;

pub use health::spawn_prober;
pub use worker::{HealthPolicy, InFlight, Worker, WorkerState, is_transport};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::sql::{CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer;
use futures::TryStreamExt;
use parking_lot::Mutex;
use prost::Message;

use crate::error::{GatewayError, Result};

/// Turns a worker URI (`grpc://h:p`, `grpc+tls://h:p`) into the HTTP/2 URI tonic dials.
pub fn worker_endpoint_uri(uri: &str) -> std::result::Result<String, String> {
    let (scheme, rest) =
        uri.split_once("://").ok_or_else(|| format!("`{uri}` has no scheme (grpc:// or grpc+tls://)"))?;
    let http = match scheme {
        "grpc" | "grpc+tcp" => "http",
        "grpc+tls" => "https",
        other => return Err(format!("`{uri}`: unsupported scheme `{other}` (use grpc:// or grpc+tls://)")),
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("`{uri}` must be scheme://host:port"));
    }
    let out = format!("{http}://{rest}");
    out.parse::<http::Uri>().map_err(|e| format!("`{uri}`: {e}"))?;
    Ok(out)
}

/// One table as a pool reports it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Catalog.
    pub catalog: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// TABLE, VIEW, ...
    pub table_type: String,
    /// Columns.
    pub arrow_schema: SchemaRef,
    /// For a view, its `CREATE VIEW` statement when the pool reports it (Quiver and other
    /// DataFusion workers do, in `information_schema.views`).
    pub definition: Option<String>,
}

/// What a pool serves, as last fetched.
#[derive(Debug, Clone, Default)]
pub struct PoolCatalog {
    /// Catalog names.
    pub catalogs: BTreeSet<String>,
    /// (catalog, schema) pairs.
    pub schemas: BTreeSet<(String, String)>,
    /// Tables with their columns.
    pub tables: Vec<TableInfo>,
}

/// A named set of workers.
#[derive(Debug)]
pub struct Pool {
    /// Pool name.
    pub name: String,
    workers: Vec<Arc<Worker>>,
    next: AtomicUsize,
    catalog: Mutex<Option<(Instant, Arc<PoolCatalog>)>>,
    refresh: tokio::sync::Mutex<()>,
    metadata_ttl: Duration,
    policy: HealthPolicy,
}

impl Pool {
    /// A pool of `workers` (URIs) judged and limited by `policy`.
    pub fn new(name: &str, workers: &[String], metadata_ttl: Duration, policy: HealthPolicy) -> Result<Self> {
        let workers = workers.iter().map(|w| Worker::connect(w).map(Arc::new)).collect::<Result<Vec<_>>>()?;
        Ok(Pool {
            name: name.to_string(),
            workers,
            next: AtomicUsize::new(0),
            catalog: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            metadata_ttl,
            policy,
        })
    }

    /// The workers.
    pub fn workers(&self) -> &[Arc<Worker>] {
        &self.workers
    }

    /// The health policy.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The worker whose URI or `host:port` is `name`.
    pub fn worker(&self, name: &str) -> Option<&Arc<Worker>> {
        self.workers.iter().find(|w| w.uri == name || w.uri.split_once("://").is_some_and(|(_, hp)| hp == name))
    }

    /// The usable worker (not ejected, not draining, under its cap) with the fewest calls in
    /// flight, round-robin among equals.
    pub fn pick(&self) -> Result<Arc<Worker>> {
        self.pick_excluding(None)
    }

    /// Like [`pick`](Self::pick), avoiding `avoid` when another worker is usable (retries).
    pub fn pick_excluding(&self, avoid: Option<&Arc<Worker>>) -> Result<Arc<Worker>> {
        let n = self.workers.len();
        if n == 0 {
            return Err(GatewayError::Unavailable(format!("pool `{}` has no workers", self.name)));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let usable: Vec<&Arc<Worker>> = (0..n).map(|i| &self.workers[(start + i) % n]).filter(|w| w.usable()).collect();
        if usable.is_empty() {
            let draining = self.workers.iter().all(|w| w.state() == WorkerState::Draining);
            return Err(GatewayError::Unavailable(if draining {
                format!("pool `{}`: every worker is draining", self.name)
            } else {
                format!("pool `{}` has no healthy worker", self.name)
            }));
        }
        let cap = self.policy.max_concurrent_per_worker.unwrap_or(usize::MAX);
        let under_cap = usable.iter().copied().filter(|w| w.outstanding() < cap);
        let preferred = under_cap.clone().filter(|w| avoid.is_none_or(|a| !Arc::ptr_eq(a, w)));
        match preferred.min_by_key(|w| w.outstanding()).or_else(|| under_cap.min_by_key(|w| w.outstanding())) {
            Some(w) => Ok(w.clone()),
            None => Err(GatewayError::ResourceExhausted(format!(
                "pool `{}`: every worker is at its concurrency cap ({cap} calls; pools.max_concurrent_per_worker)",
                self.name
            ))),
        }
    }

    /// Runs an idempotent call (planning, metadata, the start of a DoGet before any frame
    /// arrived) on a worker; a transport failure is retried once on another worker. Every
    /// outcome feeds the workers' health. Returns the result and the worker that answered.
    pub async fn call_idempotent<T, F, Fut>(&self, mut call: F) -> Result<(T, Arc<Worker>)>
    where
        F: FnMut(Arc<Worker>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let mut tried: Option<Arc<Worker>> = None;
        loop {
            let worker = self.pick_excluding(tried.as_ref())?;
            if tried.as_ref().is_some_and(|t| Arc::ptr_eq(t, &worker)) {
                // No other worker to try; the first failure stands.
                return Err(GatewayError::Unavailable(format!(
                    "worker {} is unavailable and pool `{}` has no other",
                    worker.uri, self.name
                )));
            }
            match call(worker.clone()).await {
                Ok(value) => {
                    self.observe(&worker, None);
                    return Ok((value, worker));
                }
                Err(status) => {
                    self.observe(&worker, Some(&status));
                    if tried.is_some() || !is_transport(&status) || self.workers.len() < 2 {
                        return Err(worker.error(status));
                    }
                    tracing::info!(pool = %self.name, worker = %worker.uri, error = %status.message(), "retrying on another worker");
                    tried = Some(worker);
                }
            }
        }
    }

    /// Whether `worker` may be ejected: some other worker of the pool stays usable.
    pub fn may_eject(&self, worker: &Arc<Worker>) -> bool {
        self.workers.iter().any(|w| !Arc::ptr_eq(w, worker) && w.usable())
    }

    /// Records the outcome of a real call on `worker`: transport failures count towards
    /// ejection, anything else proves the worker is alive.
    pub fn observe(&self, worker: &Arc<Worker>, status: Option<&tonic::Status>) {
        match status {
            Some(s) if is_transport(s) => {
                worker.record_failure(s.message(), false, &self.policy, self.may_eject(worker));
            }
            _ => worker.record_success(false),
        }
    }

    /// Forgets the cached catalog view (after DDL).
    pub fn invalidate_catalog(&self) {
        *self.catalog.lock() = None;
    }

    /// The catalogs, schemas and tables this pool serves, fetched at most once per TTL.
    pub async fn catalog(&self) -> Result<Arc<PoolCatalog>> {
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        // One refresh at a time; the others wait and reuse it.
        let _guard = self.refresh.lock().await;
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let fetched = Arc::new(self.fetch_catalog().await?);
        *self.catalog.lock() = Some((Instant::now(), fetched.clone()));
        Ok(fetched)
    }

    fn fresh(&self) -> Option<Arc<PoolCatalog>> {
        match &*self.catalog.lock() {
            Some((at, c)) if at.elapsed() < self.metadata_ttl => Some(c.clone()),
            _ => None,
        }
    }

    /// Fetches the catalog view; an idempotent call, so a transport failure is retried once
    /// on another worker.
    async fn fetch_catalog(&self) -> Result<PoolCatalog> {
        let first = self.pick()?;
        match self.fetch_catalog_from(&first).await {
            Err(GatewayError::Unavailable(e)) if self.workers.len() > 1 => {
                let second = self.pick_excluding(Some(&first))?;
                if Arc::ptr_eq(&first, &second) {
                    return Err(GatewayError::Unavailable(e));
                }
                tracing::info!(pool = %self.name, failed = %first.uri, retry = %second.uri, "retrying metadata on another worker");
                self.fetch_catalog_from(&second).await
            }
            other => other,
        }
    }

    async fn fetch_catalog_from(&self, worker: &Arc<Worker>) -> Result<PoolCatalog> {
        let _inflight = worker.begin();
        let mut out = PoolCatalog::default();
        for batch in self.fetch(worker, CommandGetCatalogs {}.as_any().encode_to_vec()).await? {
            let names = string_column(&batch, "catalog_name")?;
            out.catalogs.extend(names.into_iter().flatten());
        }
        let cmd = CommandGetDbSchemas { catalog: None, db_schema_filter_pattern: None };
        for batch in self.fetch(worker, cmd.as_any().encode_to_vec()).await? {
            let cats = string_column(&batch, "catalog_name")?;
            let schemas = string_column(&batch, "db_schema_name")?;
            for (c, s) in cats.into_iter().zip(schemas) {
                if let (Some(c), Some(s)) = (c, s) {
                    out.schemas.insert((c, s));
                }
            }
        }
        let cmd = CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: true,
        };
        for batch in self.fetch(worker, cmd.as_any().encode_to_vec()).await? {
            let cats = string_column(&batch, "catalog_name")?;
            let schemas = string_column(&batch, "db_schema_name")?;
            let tables = string_column(&batch, "table_name")?;
            let types = string_column(&batch, "table_type")?;
            let ipc = batch.column_by_name("table_schema").and_then(|c| c.as_binary_opt::<i32>().cloned()).ok_or_else(
                || GatewayError::Internal(format!("pool `{}`: GetTables without table_schema", self.name)),
            )?;
            for i in 0..batch.num_rows() {
                let arrow_schema = try_schema_from_ipc_buffer(ipc.value(i))
                    .map_err(|e| GatewayError::Internal(format!("pool `{}`: bad table schema: {e}", self.name)))?;
                out.tables.push(TableInfo {
                    catalog: cats[i].clone().unwrap_or_default(),
                    schema: schemas[i].clone().unwrap_or_default(),
                    table: tables[i].clone().unwrap_or_default(),
                    table_type: types[i].clone().unwrap_or_default(),
                    arrow_schema: Arc::new(arrow_schema),
                    definition: None,
                });
            }
        }
        if out.tables.iter().any(|t| t.table_type == "VIEW") {
            self.fetch_view_definitions(worker, &mut out).await;
        }
        Ok(out)
    }
}

impl Pool {
    /// Reads view definitions from `information_schema.views`, so the gateway can expand views
    /// into the tables they read. A worker that does not answer leaves its views opaque.
    async fn fetch_view_definitions(&self, worker: &Arc<Worker>, out: &mut PoolCatalog) {
        let query = arrow_flight::sql::CommandStatementQuery {
            query: "SELECT table_catalog, table_schema, table_name, definition FROM information_schema.views \
                    WHERE definition IS NOT NULL"
                .into(),
            transaction_id: None,
        };
        let batches = match self.fetch(worker, query.as_any().encode_to_vec()).await {
            Ok(batches) => batches,
            Err(e) => {
                tracing::warn!(pool = %self.name, error = %e, "view definitions unavailable; views stay opaque");
                return;
            }
        };
        let mut definitions = std::collections::BTreeMap::new();
        for batch in &batches {
            let columns =
                ["table_catalog", "table_schema", "table_name", "definition"].map(|c| string_column(batch, c));
            let [Ok(c), Ok(s), Ok(t), Ok(d)] = columns else {
                tracing::warn!(pool = %self.name, "information_schema.views has unexpected columns; views stay opaque");
                return;
            };
            for i in 0..batch.num_rows() {
                if let (Some(c), Some(s), Some(t), Some(d)) = (&c[i], &s[i], &t[i], &d[i]) {
                    definitions.insert((c.clone(), s.clone(), t.clone()), d.clone());
                }
            }
        }
        for t in &mut out.tables {
            if t.table_type == "VIEW" {
                t.definition = definitions.remove(&(t.catalog.clone(), t.schema.clone(), t.table.clone()));
            }
        }
    }

    /// Runs a metadata command on `worker` and collects the batches.
    async fn fetch(&self, worker: &Arc<Worker>, command: Vec<u8>) -> Result<Vec<RecordBatch>> {
        let mut client = worker.client();
        let failed = |s: tonic::Status| {
            self.observe(worker, Some(&s));
            worker.error(s)
        };
        let info = client.get_flight_info(FlightDescriptor::new_cmd(command)).await.map_err(failed)?.into_inner();
        let mut batches = Vec::new();
        for endpoint in info.endpoint {
            let ticket: Ticket = endpoint.ticket.unwrap_or_default();
            let stream = client.do_get(ticket).await.map_err(failed)?.into_inner();
            let decoded =
                FlightRecordBatchStream::new_from_flight_data(stream.map_err(arrow_flight::error::FlightError::from));
            let mut got: Vec<RecordBatch> = decoded
                .try_collect()
                .await
                .map_err(|e| GatewayError::Unavailable(format!("worker {}: {e}", worker.uri)))?;
            batches.append(&mut got);
        }
        self.observe(worker, None);
        Ok(batches)
    }
}

fn string_column(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let col =
        batch.column_by_name(name).ok_or_else(|| GatewayError::Internal(format!("metadata result lacks `{name}`")))?;
    let col = datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Utf8)
        .map_err(|e| GatewayError::Internal(format!("metadata column `{name}`: {e}")))?;
    let strings = col.as_string::<i32>();
    Ok((0..strings.len()).map(|i| strings.is_valid(i).then(|| strings.value(i).to_string())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_uris_are_checked() {
        assert_eq!(worker_endpoint_uri("grpc://127.0.0.1:9000"), Ok("http://127.0.0.1:9000".into()));
        assert_eq!(worker_endpoint_uri("grpc+tls://w1:443"), Ok("https://w1:443".into()));
        assert!(worker_endpoint_uri("http://x:1").is_err());
        assert!(worker_endpoint_uri("grpc://").is_err());
        assert!(worker_endpoint_uri("nonsense").is_err());
    }

    #[tokio::test]
    async fn least_outstanding_worker_is_picked() {
        let pool = Pool::new(
            "p",
            &["grpc://127.0.0.1:1".into(), "grpc://127.0.0.1:2".into()],
            Duration::from_secs(1),
            HealthPolicy::default(),
        )
        .expect("pool");
        let first = pool.pick().expect("worker");
        let _busy = first.begin();
        for _ in 0..4 {
            assert_ne!(pool.pick().expect("worker").uri, first.uri);
        }
    }

    #[tokio::test]
    async fn drained_and_ejected_workers_get_nothing_and_caps_hold() {
        let policy =
            HealthPolicy { eject_after_failures: 1, max_concurrent_per_worker: Some(1), ..HealthPolicy::default() };
        let pool = Pool::new(
            "p",
            &["grpc://127.0.0.1:1".into(), "grpc://127.0.0.1:2".into(), "grpc://127.0.0.1:3".into()],
            Duration::from_secs(1),
            policy,
        )
        .expect("pool");
        let [a, b, c] = [0, 1, 2].map(|i| pool.workers()[i].clone());
        pool.worker("127.0.0.1:1").expect("by host:port").set_draining(true);
        pool.observe(&b, Some(&tonic::Status::unavailable("connection refused")));
        assert_eq!(b.state(), WorkerState::Ejected);
        for _ in 0..5 {
            assert_eq!(pool.pick().expect("worker").uri, c.uri);
        }
        // The last usable worker is never ejected.
        pool.observe(&c, Some(&tonic::Status::unavailable("connection refused")));
        assert_eq!(c.state(), WorkerState::Suspect);
        // At its cap, the pool refuses with RESOURCE_EXHAUSTED naming it.
        let _busy = c.begin();
        assert!(matches!(pool.pick(), Err(GatewayError::ResourceExhausted(m)) if m.contains("`p`")));
        a.set_draining(false);
        assert_eq!(pool.pick().expect("worker").uri, a.uri);
    }
}
