//! The worker's Flight SQL service.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use crate::error::EngineError;
use crate::handle::{StatementHandle, batches_to_ipc, batches_to_rows, check_param_count, empty_schema};
use crate::sql::{self, StatementKind};
use crate::{CATALOG_HEADER, Engine, SCHEMA_HEADER, metadata};

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

/// Target size of one FlightData message: well under the 4 MiB that gRPC clients (Go, Java)
/// accept by default, and small enough to stream smoothly.
const MAX_FLIGHT_DATA_BYTES: usize = 1024 * 1024;

/// Largest gRPC message the worker accepts or sends.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The Flight action returning the worker's counters.
pub const STATS_ACTION: &str = "quiver.stats";

/// Flight SQL over one [`Engine`].
#[derive(Clone)]
pub struct EngineService {
    engine: Arc<Engine>,
    sql_info: Arc<SqlInfoData>,
}

impl std::fmt::Debug for EngineService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineService").field("engine", &self.engine).finish()
    }
}

/// Serves `engine` on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "engine worker serving Flight SQL");
    tonic::transport::Server::builder()
        .add_service(EngineService::new(engine)?.into_server())
        .serve_with_incoming_shutdown(nodelay_incoming(listener), shutdown)
        .await
        .map_err(|e| EngineError::Internal(format!("engine server: {e}")))
}

/// Accepted connections with TCP_NODELAY set: with Nagle's algorithm on, small replies wait
/// for delayed ACKs (tens of milliseconds per call). `Server::tcp_nodelay` only applies when
/// tonic binds the socket itself, not to an incoming stream.
pub fn nodelay_incoming(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map_ok(|stream| {
        let _ = stream.set_nodelay(true);
        stream
    })
}

/// The session with its own memory pool when the request carries `x-quiver-memory-limit`:
/// the query may use at most that many bytes (spilling where it can, failing with
/// RESOURCE_EXHAUSTED where it cannot); files, caches and the spill directory stay shared.
fn with_memory_limit<T>(state: SessionState, request: &Request<T>) -> Result<SessionState, Status> {
    let Some(value) = request.metadata().get(crate::MEMORY_LIMIT_HEADER) else { return Ok(state) };
    let limit: usize = value.to_str().ok().and_then(|v| v.trim().parse().ok()).filter(|v| *v > 0).ok_or_else(|| {
        Status::invalid_argument(format!("{} must be a positive number of bytes", crate::MEMORY_LIMIT_HEADER))
    })?;
    let pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool> =
        Arc::new(datafusion::execution::memory_pool::FairSpillPool::new(limit));
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
        .with_memory_pool(pool)
        .build_arc()
        .map_err(|e| Status::internal(format!("per-query memory pool: {e}")))?;
    Ok(datafusion::execution::SessionStateBuilder::new_from_existing(state).with_runtime_env(runtime).build())
}

/// Whether the caller asked for the closing stats message.
fn wants_stats<T>(request: &Request<T>) -> bool {
    request.metadata().get(crate::REPORT_STATS_HEADER).is_some_and(|v| v.as_bytes() == b"1")
}

/// CPU time of a finished plan: every operator's `elapsed_compute`, summed over the tree.
fn cpu_nanos(plan: &dyn ExecutionPlan) -> u64 {
    let own = plan.metrics().and_then(|m| m.elapsed_compute()).unwrap_or(0) as u64;
    own + plan.children().into_iter().map(|c| cpu_nanos(c.as_ref())).sum::<u64>()
}

fn sql_info() -> Result<SqlInfoData, EngineError> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Quiver engine (DataFusion)");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.build().map_err(|e| EngineError::Internal(format!("building SqlInfo: {e}")))
}

impl EngineService {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Result<Self, EngineError> {
        Ok(EngineService { engine, sql_info: Arc::new(sql_info()?) })
    }

    /// The tonic server with message limits set.
    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Plans `handle` (binding its first parameter row, if any). A handle the gateway
    /// authorized is planned under its own defaults and checked against the objects it was
    /// authorized on ([`crate::authorized`]).
    async fn plan(&self, handle: &StatementHandle) -> Result<(SessionState, LogicalPlan), EngineError> {
        let mut state = self.engine.session(handle.catalog.as_deref(), handle.schema.as_deref());
        // The statement's start time: `now()`, `current_date` and friends are folded to it
        // while optimizing (without it they fail at execution).
        state.mark_start_execution();
        let plan = sql::plan_authorized(&state, &handle.sql, handle.authorized.as_ref()).await?;
        let rows = handle.param_rows()?;
        let plan = bind(plan, rows.first())?;
        Ok((state, plan))
    }

    /// The physical plan of a query or DML statement. For an authorized handle the plan is
    /// optimized once, its reads checked, and that same optimized plan is what runs.
    async fn physical_plan(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        authorized: Option<&crate::handle::Authorized>,
    ) -> Result<Arc<dyn ExecutionPlan>, EngineError> {
        let Some(authorized) = authorized else { return Ok(state.create_physical_plan(plan).await?) };
        let (catalog, schema) = sql::defaults(state);
        let optimized = state.optimize(plan)?;
        crate::authorized::check_reads(state, &optimized, true, authorized, &catalog, &schema)?;
        Ok(state.query_planner().create_physical_plan(&optimized, state).await?)
    }

    /// The schema a statement's results have on the wire, exactly as DoGet will send it.
    async fn output_schema(
        &self,
        state: &SessionState,
        plan: &LogicalPlan,
        authorized: Option<&crate::handle::Authorized>,
    ) -> Result<SchemaRef, EngineError> {
        Ok(match StatementKind::of(plan) {
            StatementKind::Ddl => {
                if let Some(authorized) = authorized {
                    let (catalog, schema) = sql::defaults(state);
                    crate::authorized::check_reads(state, plan, false, authorized, &catalog, &schema)?;
                }
                empty_schema()
            }
            StatementKind::Query | StatementKind::Dml => {
                flight_schema(&self.physical_plan(state, plan, authorized).await?.schema())
            }
        })
    }

    /// Runs a planned statement to a stream of FlightData; with `report_stats`, the stream
    /// ends with a metadata-only message carrying [`crate::QueryStats`].
    async fn execute(
        &self,
        state: SessionState,
        plan: LogicalPlan,
        authorized: Option<&crate::handle::Authorized>,
        report_stats: bool,
    ) -> Result<DoGetStream, EngineError> {
        self.engine.count_execution();
        let (schema, stream, physical) = match StatementKind::of(&plan) {
            StatementKind::Ddl => {
                if let Some(authorized) = authorized {
                    let (catalog, schema) = sql::defaults(&state);
                    crate::authorized::check_reads(&state, &plan, false, authorized, &catalog, &schema)?;
                }
                let ctx = SessionContext::new_with_state(state);
                let df = ctx.execute_logical_plan(plan).await?;
                (empty_schema(), df.execute_stream().await?, None)
            }
            StatementKind::Query | StatementKind::Dml => {
                let physical: Arc<dyn ExecutionPlan> = self.physical_plan(&state, &plan, authorized).await?;
                let schema = flight_schema(&physical.schema());
                let stream = execute_stream(physical.clone(), state.task_ctx())?;
                (schema, stream, Some(physical))
            }
        };
        let wire = schema.clone();
        let batches = stream
            .map_err(|e| FlightError::ExternalError(Box::new(e)))
            .and_then(move |batch| futures::future::ready(to_wire(&wire, batch)));
        let encoded = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
            .with_schema(schema)
            .build(batches)
            .map_err(flight_error_to_status);
        if !report_stats {
            return Ok(Box::pin(encoded));
        }
        // Polled only once every batch went out, so the plan's metrics are final.
        let stats = futures::stream::once(async move {
            let stats = crate::QueryStats { quiver_cpu_nanos: physical.as_deref().map(cpu_nanos).unwrap_or(0) };
            let json = serde_json::to_vec(&stats).map_err(|e| Status::internal(format!("query stats: {e}")))?;
            Ok(arrow_flight::FlightData { app_metadata: json.into(), ..arrow_flight::FlightData::default() })
        });
        Ok(Box::pin(futures::StreamExt::chain(encoded, stats)))
    }

    /// Runs a statement and returns the number of rows it changed.
    async fn execute_update(
        &self,
        handle: &StatementHandle,
        rows: &[Vec<datafusion::common::ScalarValue>],
    ) -> Result<i64, EngineError> {
        let state = self.engine.session(handle.catalog.as_deref(), handle.schema.as_deref());
        let plan = sql::plan_authorized(&state, &handle.sql, handle.authorized.as_ref()).await?;
        if let Some(authorized) = &handle.authorized {
            let (catalog, schema) = sql::defaults(&state);
            crate::authorized::check_reads(&state, &plan, false, authorized, &catalog, &schema)?;
        }
        let executions: Vec<Option<&Vec<datafusion::common::ScalarValue>>> =
            if rows.is_empty() { vec![None] } else { rows.iter().map(Some).collect() };
        let mut total = 0i64;
        for row in executions {
            let bound = bind(plan.clone(), row)?;
            let ctx = SessionContext::new_with_state(state.clone());
            let batches = ctx.execute_logical_plan(bound).await?.collect().await?;
            total += count_rows(&batches);
        }
        Ok(total)
    }

    fn flight_info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket { ticket: ticket.into() });
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor))
    }
}

/// Binds one row of parameters, or checks that the plan needs none.
fn bind(plan: LogicalPlan, row: Option<&Vec<datafusion::common::ScalarValue>>) -> Result<LogicalPlan, EngineError> {
    let expected = plan.get_parameter_types()?.len();
    match row {
        Some(values) => {
            if values.len() != expected {
                return Err(EngineError::InvalidRequest(format!(
                    "the statement has {expected} parameter(s) but {} value(s) were bound",
                    values.len()
                )));
            }
            // Cast each value to the type the plan expects where it knows one, so a client that
            // binds Int32 or Utf8 for a BIGINT or VARCHAR slot is served, not refused.
            let types = plan.get_parameter_types()?;
            let values = values
                .iter()
                .enumerate()
                .map(|(i, v)| match types.get(&format!("${}", i + 1)) {
                    Some(Some(t)) if &v.data_type() != t && !v.is_null() => v.cast_to(t).map_err(|e| {
                        EngineError::InvalidRequest(format!("parameter ${}: cannot use {v:?} as {t}: {e}", i + 1))
                    }),
                    _ => Ok(v.clone()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(plan.with_param_values(values).map_err(|e| EngineError::InvalidRequest(format!("parameters: {e}")))?)
        }
        None if expected > 0 => {
            Err(EngineError::InvalidRequest(format!("the statement has {expected} parameter(s) but none were bound")))
        }
        None => Ok(plan),
    }
}

fn count_rows(batches: &[RecordBatch]) -> i64 {
    batches
        .iter()
        .filter_map(|b| b.column_by_name("count"))
        .filter_map(|c| c.as_any().downcast_ref::<UInt64Array>().cloned())
        .map(|a| a.iter().flatten().sum::<u64>() as i64)
        .sum()
}

/// The schema results have on the wire: dictionaries hydrated to their value type, and view
/// types as their plain forms. Views are unknown to many clients (JDBC, ODBC), and a sliced
/// view array still carries all of its data buffers into IPC, which would blow message sizes.
pub fn flight_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match wire_type(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn wire_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Dictionary(_, value) => Some(wire_type(value).unwrap_or_else(|| value.as_ref().clone())),
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    }
}

/// Casts a batch's columns to the wire schema where their types differ.
fn to_wire(wire: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch, FlightError> {
    if batch.schema().fields().iter().zip(wire.fields()).all(|(a, b)| a.data_type() == b.data_type()) {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(wire.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new_with_options(
        wire.clone(),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )?)
}

/// Maps an error raised while streaming results.
pub fn flight_error_to_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(status) => *status,
        FlightError::ExternalError(inner) => match inner.downcast::<datafusion::error::DataFusionError>() {
            Ok(df) => EngineError::from(*df).into(),
            Err(other) => Status::internal(other.to_string()),
        },
        FlightError::Arrow(e) => {
            EngineError::from(datafusion::error::DataFusionError::ArrowError(Box::new(e), None)).into()
        }
        other => Status::internal(other.to_string()),
    }
}

fn header<T>(request: &Request<T>, name: &str) -> Option<String> {
    request.metadata().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(format!("encoding schema: {e}")))?;
    Ok(bytes)
}

async fn read_params(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>, EngineError> {
    // into_peekable keeps the first message (descriptor and schema) that dispatch peeked at.
    // A descriptor-only message (no IPC header) carries no data: skip it.
    let messages = stream
        .into_peekable()
        .try_filter(|m| futures::future::ready(!m.data_header.is_empty()))
        .map_err(FlightError::from);
    let decoded = FlightRecordBatchStream::new_from_flight_data(messages);
    decoded.try_collect().await.map_err(|e| EngineError::InvalidRequest(format!("invalid parameter data: {e}")))
}

fn batch_stream(batch: RecordBatch) -> DoGetStream {
    let schema = batch.schema();
    let stream =
        FlightDataEncoderBuilder::new().with_schema(schema).build(futures::stream::once(async move { Ok(batch) }));
    Box::pin(stream.map_err(flight_error_to_status))
}

#[tonic::async_trait]
impl FlightSqlService for EngineService {
    type FlightService = EngineService;

    /// `quiver.stats`: the worker's counters as JSON (`{"statements_executed": n}`).
    async fn do_action_fallback(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let action = request.into_inner();
        if action.r#type != STATS_ACTION {
            return Err(Status::invalid_argument(format!("unknown action `{}`", action.r#type)));
        }
        let body = format!(r#"{{"statements_executed": {}}}"#, self.engine.statements_executed());
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(result)]))))
    }

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let reply = HandshakeResponse { protocol_version: 0, payload: Default::default() };
        Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(reply)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle =
            StatementHandle::new(query.query, header(&request, CATALOG_HEADER), header(&request, SCHEMA_HEADER));
        let (state, plan) = self.plan(&handle).await?;
        let schema = self.output_schema(&state, &plan, handle.authorized.as_ref()).await?;
        let ticket = TicketStatementQuery { statement_handle: handle.encode() }.as_any().encode_to_vec();
        Ok(Response::new(self.flight_info(&schema, ticket, request.into_inner())?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let handle = StatementHandle::decode(&cmd.prepared_statement_handle)?;
        let (state, plan) = self.plan(&handle).await?;
        let schema = self.output_schema(&state, &plan, handle.authorized.as_ref()).await?;
        let ticket = TicketStatementQuery { statement_handle: handle.encode() }.as_any().encode_to_vec();
        Ok(Response::new(self.flight_info(&schema, ticket, request.into_inner())?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = StatementHandle::decode(&ticket.statement_handle)?;
        let (state, plan) = self.plan(&handle).await?;
        let state = with_memory_limit(state, &request)?;
        Ok(Response::new(self.execute(state, plan, handle.authorized.as_ref(), wants_stats(&request)).await?))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let handle = StatementHandle::decode(&cmd.prepared_statement_handle)?;
        let (state, plan) = self.plan(&handle).await?;
        let state = with_memory_limit(state, &request)?;
        Ok(Response::new(self.execute(state, plan, handle.authorized.as_ref(), wants_stats(&request)).await?))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::invalid_argument(format!("invalid ticket (unknown type `{}`)", message.type_url)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(batch_stream(metadata::catalogs(&self.engine, query)?)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(batch_stream(metadata::schemas(&self.engine, query)?)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(batch_stream(metadata::tables(&self.engine, query).await?)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::table_types(query)?.schema();
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(Response::new(batch_stream(metadata::table_types(query)?)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        Ok(Response::new(self.flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let batch = query.into_builder(&self.sql_info).build().map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(batch_stream(batch)))
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let handle =
            StatementHandle::new(ticket.query, header(&request, CATALOG_HEADER), header(&request, SCHEMA_HEADER));
        Ok(self.execute_update(&handle, &[]).await?)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let mut handle = StatementHandle::decode(&query.prepared_statement_handle)?;
        let batches = read_params(request.into_inner()).await?;
        let state = self.engine.session(handle.catalog.as_deref(), handle.schema.as_deref());
        let plan = sql::plan_authorized(&state, &handle.sql, handle.authorized.as_ref()).await?;
        check_param_count(&batches, plan.get_parameter_types().map_err(EngineError::from)?.len())?;
        // Bind now so wrong types fail here, at DoPut, with a clear message.
        let rows = batches_to_rows(&batches)?;
        bind(plan, rows.first())?;
        handle.params = Some(batches_to_ipc(&batches)?);
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(handle.encode()) })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let handle = StatementHandle::decode(&query.prepared_statement_handle)?;
        let batches = read_params(request.into_inner()).await?;
        let rows =
            if batches.iter().any(|b| b.num_rows() > 0) { batches_to_rows(&batches)? } else { handle.param_rows()? };
        Ok(self.execute_update(&handle, &rows).await?)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let handle =
            StatementHandle::new(query.query, header(&request, CATALOG_HEADER), header(&request, SCHEMA_HEADER));
        let state = self.engine.session(handle.catalog.as_deref(), handle.schema.as_deref());
        let plan = sql::plan(&state, &handle.sql).await?;
        let parameter_schema = Schema::new(
            sql::parameters(&plan)?.into_iter().map(|(name, ty)| Field::new(name, ty, true)).collect::<Vec<_>>(),
        );
        // An empty dataset schema tells clients (the JDBC driver) that this is an update.
        let dataset_schema = match StatementKind::of(&plan) {
            StatementKind::Query => flight_schema(plan.schema().as_arrow()),
            StatementKind::Dml | StatementKind::Ddl => empty_schema(),
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.encode(),
            dataset_schema: schema_bytes(&dataset_schema)?,
            parameter_schema: schema_bytes(&parameter_schema)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Handles are self-contained: nothing is held on the worker.
        Ok(())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    #[test]
    fn dictionary_fields_are_hydrated_in_the_wire_schema() {
        let schema = Schema::new(vec![
            Field::new("year", DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)), false),
            Field::new("n", DataType::Int64, true),
        ]);
        let wire = flight_schema(&schema);
        assert_eq!(wire.field(0).data_type(), &DataType::Utf8);
        assert!(!wire.field(0).is_nullable());
        assert_eq!(wire.field(1), schema.field(1));
        let views = Schema::new(vec![Field::new("s", DataType::Utf8View, true)]);
        assert_eq!(flight_schema(&views).field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn update_counts_are_summed() {
        let schema = Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(vec![3, 4]))]).expect("batch");
        assert_eq!(count_rows(&[b.clone(), b]), 14);
        let other = RecordBatch::try_from_iter(vec![("x", Arc::new(StringArray::from(vec!["a"])) as _)]).expect("b");
        assert_eq!(count_rows(&[other]), 0);
    }
}
