//! Statements: plan on a worker, hand out sealed tickets, forward the results untouched.

use std::sync::Arc;

use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{DoPutUpdateResult, ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightData, FlightDescriptor, FlightInfo, Ticket};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use quiver_policies::{Operation, Resource};
use tonic::{Request, Status, Streaming};

use super::{CancelFlag, FlightDataStream, GatewayService, with_defaults};
use crate::auth_layer::CallContext;
use crate::error::{GatewayError, Result};
use crate::pool::{InFlight, Pool, Worker};
use crate::router::{Analysis, analyze};
use crate::tickets::{Sealed, new_id};

/// Removes a DoGet from the running set when its stream ends or the client goes away.
/// For a statement that writes, refreshes the pool's catalog view once it has run.
struct Running {
    map: Arc<parking_lot::Mutex<std::collections::HashMap<String, Arc<CancelFlag>>>>,
    id: String,
    wrote: Option<Arc<Pool>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.map.lock().remove(&self.id);
        if let Some(pool) = &self.wrote {
            pool.invalidate_catalog();
        }
    }
}

impl GatewayService {
    /// Checks the statement against limits and policy, and picks its pool.
    pub(crate) async fn admit(
        &self,
        ctx: &CallContext,
        sql: &str,
        catalog: &str,
        schema: &str,
    ) -> Result<(Analysis, Arc<Pool>)> {
        if sql.len() > self.settings.max_sql_bytes {
            return Err(GatewayError::ResourceExhausted(format!(
                "the SQL text is {} bytes; the limit is {} (server.max_sql_size)",
                sql.len(),
                self.settings.max_sql_bytes
            )));
        }
        self.authorizer.check(&ctx.identity, Operation::ExecuteQuery, &Resource::None).await?;
        let analysis = analyze(sql, catalog, schema)?;
        for c in &analysis.catalogs {
            self.authorizer.check(&ctx.identity, Operation::AccessCatalog, &Resource::Catalog(c.clone())).await?;
        }
        let pool = self.router.route(&analysis.catalogs).await?;
        tracing::info!(
            user = %ctx.identity.user,
            query_type = analysis.query_type.as_str(),
            pool = %pool.name,
            tables = ?analysis.tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "statement admitted"
        );
        Ok((analysis, pool))
    }

    /// GetFlightInfo for a statement: plan on a worker, seal its tickets.
    pub(crate) async fn statement_info(
        &self,
        ctx: &CallContext,
        sql: &str,
        catalog: &str,
        schema: &str,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let (analysis, pool) = self.admit(ctx, sql, catalog, schema).await?;
        let worker = pool.pick()?;
        let _inflight = worker.begin();
        let request = with_defaults(Request::new(descriptor.clone()), catalog, schema);
        let info = worker.client().get_flight_info(request).await.map_err(|s| worker.error(s))?.into_inner();
        Ok(self.seal_info(&ctx.identity.user, &pool.name, info, descriptor, analysis.query_type.is_write()))
    }

    /// Replaces each endpoint's worker ticket with a sealed gateway ticket and drops
    /// locations, so clients come back to the gateway on the connection they have.
    pub(crate) fn seal_info(
        &self,
        user: &str,
        pool: &str,
        mut info: FlightInfo,
        descriptor: FlightDescriptor,
        write: bool,
    ) -> FlightInfo {
        for endpoint in &mut info.endpoint {
            let worker_ticket = endpoint.ticket.take().unwrap_or_default();
            let sealed = self.sealer.seal(
                user,
                Sealed::Query { id: new_id(), pool: pool.to_string(), ticket: worker_ticket.ticket.to_vec(), write },
            );
            endpoint.ticket = Some(ticket_bytes(sealed));
            endpoint.location.clear();
        }
        info.flight_descriptor = Some(descriptor);
        info
    }

    /// DoGet of a statement ticket: stream the worker's frames through as they are.
    pub(crate) async fn redeem_query(
        &self,
        id: String,
        pool: &str,
        ticket: Vec<u8>,
        write: bool,
    ) -> Result<FlightDataStream> {
        if self.cancelled.contains_key(&id) {
            return Err(GatewayError::Cancelled("the query was cancelled".into()));
        }
        let pool = self.router.pool(pool)?;
        let worker = pool.pick()?;
        let inflight = worker.begin();
        let stream = worker
            .client()
            .do_get(Ticket { ticket: Bytes::from(ticket) })
            .await
            .map_err(|s| worker.error(s))?
            .into_inner();
        let flag = Arc::new(CancelFlag::default());
        self.running.lock().insert(id.clone(), flag.clone());
        let running = Running { map: self.running.clone(), id, wrote: write.then(|| pool.clone()) };
        Ok(forward(stream, worker, inflight, flag, running))
    }

    /// DoPut of CommandStatementUpdate: forward the client's stream to a worker.
    pub(crate) async fn statement_update(
        &self,
        ctx: &CallContext,
        sql: &str,
        catalog: &str,
        schema: &str,
        stream: PeekableFlightDataStream,
    ) -> Result<i64> {
        let (analysis, pool) = self.admit(ctx, sql, catalog, schema).await?;
        let worker = pool.pick()?;
        let count = put_update(&worker, with_defaults(Request::new(forwardable(stream, None)), catalog, schema)).await;
        if analysis.query_type.is_write() {
            pool.invalidate_catalog();
        }
        count
    }
}

/// Ticket bytes as clients expect them: an Any-encoded `TicketStatementQuery`.
pub(crate) fn ticket_bytes(sealed: Bytes) -> Ticket {
    Ticket { ticket: TicketStatementQuery { statement_handle: sealed }.as_any().encode_to_vec().into() }
}

/// The client's DoPut frames, ready to send on; `command` replaces the descriptor's command
/// (a worker handle in place of the gateway's sealed one).
pub(crate) fn forwardable(
    stream: PeekableFlightDataStream,
    command: Option<Bytes>,
) -> impl Stream<Item = FlightData> + Send + 'static {
    let mut command = command;
    stream
        .into_peekable()
        .take_while(|item| futures::future::ready(item.is_ok()))
        .filter_map(|item| futures::future::ready(item.ok()))
        .map(move |mut data| {
            if let Some(cmd) = command.take()
                && let Some(descriptor) = data.flight_descriptor.as_mut()
            {
                descriptor.cmd = cmd;
            }
            data
        })
}

/// Sends a DoPut to `worker` and reads the update count it returns.
pub(crate) async fn put_update<S>(worker: &Arc<Worker>, request: Request<S>) -> Result<i64>
where
    S: Stream<Item = FlightData> + Send + 'static,
{
    let _inflight = worker.begin();
    let mut results = worker.client().do_put(request).await.map_err(|s| worker.error(s))?.into_inner();
    let first = results.message().await.map_err(|s| worker.error(s))?;
    let result = first.ok_or_else(|| GatewayError::Internal(format!("worker {} sent no DoPut result", worker.uri)))?;
    let update = DoPutUpdateResult::decode(result.app_metadata)
        .map_err(|e| GatewayError::Internal(format!("worker {} sent a bad DoPut result: {e}", worker.uri)))?;
    Ok(update.record_count)
}

fn forward(
    stream: Streaming<FlightData>,
    worker: Arc<Worker>,
    inflight: InFlight,
    flag: Arc<CancelFlag>,
    running: Running,
) -> FlightDataStream {
    let state = Some((stream, worker, flag, (inflight, running)));
    Box::pin(futures::stream::unfold(state, |state| async move {
        let (mut stream, worker, flag, guards) = state?;
        let cancelled = || Status::cancelled("the query was cancelled");
        if flag.is_cancelled() {
            return Some((Err(cancelled()), None));
        }
        tokio::select! {
            biased;
            item = stream.message() => match item {
                Ok(Some(data)) => Some((Ok(data), Some((stream, worker, flag, guards)))),
                Ok(None) => None,
                // A worker that fails mid-stream must never look like a complete result.
                Err(status) => Some((Err(Status::from(worker.error(status))), None)),
            },
            _ = flag.notify.notified() => Some((Err(cancelled()), None)),
        }
    }))
}
