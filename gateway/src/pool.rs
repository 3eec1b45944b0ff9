//! Worker pools: pooled Flight SQL channels to engine workers, least-outstanding balancing,
//! and the gateway's cached view of the catalogs each pool serves.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables, ProstMessageExt};
use arrow_flight::{FlightDescriptor, Ticket};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::convert::try_schema_from_ipc_buffer;
use futures::TryStreamExt;
use parking_lot::Mutex;
use prost::Message;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{GatewayError, Result};

/// Largest message the gateway accepts from a worker.
const MAX_WORKER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

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

/// One engine worker.
#[derive(Debug)]
pub struct Worker {
    /// The URI as configured.
    pub uri: String,
    channel: Channel,
    outstanding: AtomicUsize,
}

impl Worker {
    /// Connects lazily: the first call dials.
    pub fn connect(uri: &str) -> Result<Self> {
        let target = worker_endpoint_uri(uri).map_err(GatewayError::InvalidArgument)?;
        let mut endpoint = Endpoint::from_shared(target.clone())
            .map_err(|e| GatewayError::InvalidArgument(format!("worker `{uri}`: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(32 * 1024 * 1024));
        if target.starts_with("https://") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_enabled_roots())
                .map_err(|e| GatewayError::InvalidArgument(format!("worker `{uri}`: {e}")))?;
        }
        Ok(Worker { uri: uri.to_string(), channel: endpoint.connect_lazy(), outstanding: AtomicUsize::new(0) })
    }

    /// A Flight client over the worker's shared channel.
    pub fn client(&self) -> FlightServiceClient<Channel> {
        FlightServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_WORKER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_WORKER_MESSAGE_BYTES)
    }

    /// Calls in flight on this worker.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Counts one call in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight { worker: self.clone() }
    }

    /// Maps a worker's failure: transport failures become UNAVAILABLE naming the worker;
    /// the worker's own statuses pass through.
    pub fn error(&self, status: tonic::Status) -> GatewayError {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown if is_transport(&status) => {
                GatewayError::Unavailable(format!("worker {} is unavailable: {}", self.uri, status.message()))
            }
            _ => GatewayError::Worker(status),
        }
    }
}

fn is_transport(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        || status.message().contains("transport error")
        || status.message().contains("connection")
}

/// A call in flight on a worker.
#[derive(Debug)]
pub struct InFlight {
    worker: Arc<Worker>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.worker.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
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
}

impl Pool {
    /// A pool of `workers` (URIs).
    pub fn new(name: &str, workers: &[String], metadata_ttl: Duration) -> Result<Self> {
        let workers = workers.iter().map(|w| Worker::connect(w).map(Arc::new)).collect::<Result<Vec<_>>>()?;
        Ok(Pool {
            name: name.to_string(),
            workers,
            next: AtomicUsize::new(0),
            catalog: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            metadata_ttl,
        })
    }

    /// The workers.
    pub fn workers(&self) -> &[Arc<Worker>] {
        &self.workers
    }

    /// The worker with the fewest calls in flight (round-robin among equals).
    pub fn pick(&self) -> Result<Arc<Worker>> {
        let n = self.workers.len();
        if n == 0 {
            return Err(GatewayError::Unavailable(format!("pool `{}` has no workers", self.name)));
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let best = (0..n).map(|i| &self.workers[(start + i) % n]).min_by_key(|w| w.outstanding()).cloned();
        best.ok_or_else(|| GatewayError::Unavailable(format!("pool `{}` has no workers", self.name)))
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

    async fn fetch_catalog(&self) -> Result<PoolCatalog> {
        let worker = self.pick()?;
        let _inflight = worker.begin();
        let mut out = PoolCatalog::default();
        for batch in fetch(&worker, CommandGetCatalogs {}.as_any().encode_to_vec()).await? {
            let names = string_column(&batch, "catalog_name")?;
            out.catalogs.extend(names.into_iter().flatten());
        }
        let cmd = CommandGetDbSchemas { catalog: None, db_schema_filter_pattern: None };
        for batch in fetch(&worker, cmd.as_any().encode_to_vec()).await? {
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
        for batch in fetch(&worker, cmd.as_any().encode_to_vec()).await? {
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
                });
            }
        }
        Ok(out)
    }
}

/// Runs a metadata command on `worker` and collects the batches.
async fn fetch(worker: &Worker, command: Vec<u8>) -> Result<Vec<RecordBatch>> {
    let mut client = worker.client();
    let info =
        client.get_flight_info(FlightDescriptor::new_cmd(command)).await.map_err(|s| worker.error(s))?.into_inner();
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket: Ticket = endpoint.ticket.unwrap_or_default();
        let stream = client.do_get(ticket).await.map_err(|s| worker.error(s))?.into_inner();
        let decoded =
            FlightRecordBatchStream::new_from_flight_data(stream.map_err(arrow_flight::error::FlightError::from));
        let mut got: Vec<RecordBatch> = decoded
            .try_collect()
            .await
            .map_err(|e| GatewayError::Unavailable(format!("worker {}: {e}", worker.uri)))?;
        batches.append(&mut got);
    }
    Ok(batches)
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
        let pool = Pool::new("p", &["grpc://127.0.0.1:1".into(), "grpc://127.0.0.1:2".into()], Duration::from_secs(1))
            .expect("pool");
        let first = pool.pick().expect("worker");
        let _busy = first.begin();
        for _ in 0..4 {
            assert_ne!(pool.pick().expect("worker").uri, first.uri);
        }
    }
}
