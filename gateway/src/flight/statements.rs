//! Statements: plan on a worker, hand out sealed tickets, forward the results untouched.

use std::sync::Arc;

use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutUpdateResult, ProstMessageExt, TicketStatementQuery,
};
use arrow_flight::{FlightData, FlightDescriptor, FlightInfo, Ticket};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use std::collections::BTreeSet;

use quiver_policies::{Operation, Resource, TableRef};
use tonic::{Request, Status, Streaming};

use super::{ClientInfo, FlightDataStream, GatewayService, defaults_metadata};
use crate::admission::Permit;
use crate::auth_layer::CallContext;
use crate::cache::{CacheKey, CacheStatus, CacheTicket, Control, Entry, Joined, ResultCache};
use crate::error::{GatewayError, Result};
use crate::pool::{InFlight, Pool, Worker};
use crate::queries::{QueryRecord, QueryRegistry, QueryState};
use crate::router::{Analysis, analyze};
use crate::routing::RouteRequest;
use crate::tickets::{Sealed, new_id};

/// The cache's part in a statement's GetFlightInfo.
pub(crate) enum CachePlan {
    /// Not eligible, or the cache is off.
    Bypass,
    /// Stored: answer from it.
    Hit(Arc<Entry>, CacheTicket),
    /// Run it (and store it).
    Miss(CacheTicket),
}

/// What `seal_info` records about a planned statement.
pub(crate) struct Planned<'a> {
    /// Who planned it.
    pub user: &'a str,
    /// The pool it runs on.
    pub pool: &'a str,
    /// It changes data or the catalog.
    pub write: bool,
    /// Trino query type.
    pub kind: &'a str,
    /// The SQL text (empty for prepared statements).
    pub sql: &'a str,
    /// The cache key and use, for a cache-eligible statement.
    pub cache: Option<CacheTicket>,
    /// Tables a writing statement names (cache eviction after it ran).
    pub writes: Vec<TableRef>,
}

/// Ends a query in the registry however its stream ends: at its end (FINISHED), with an
/// error (FAILED), cancelled, or dropped because the client went away (CANCELLED). For a
/// statement that writes, refreshes the pool's catalog view once it has run.
struct QueryGuard {
    queries: Arc<QueryRegistry>,
    record: Arc<QueryRecord>,
    outcome: Option<(QueryState, Option<String>)>,
    wrote: Option<Arc<Pool>>,
    /// The resource-group slot, given back when the stream ends.
    permit: Option<Permit>,
    /// Cache entries reading these tables are evicted once the statement has run.
    evict: Option<(Arc<ResultCache>, BTreeSet<TableRef>)>,
}

impl QueryGuard {
    fn new(queries: Arc<QueryRegistry>, record: Arc<QueryRecord>) -> Self {
        QueryGuard { queries, record, outcome: None, wrote: None, permit: None, evict: None }
    }
}

impl Drop for QueryGuard {
    fn drop(&mut self) {
        let (state, error) =
            self.outcome.take().unwrap_or((QueryState::Cancelled, Some("the client went away".into())));
        self.permit.take();
        self.queries.finish(&self.record, state, error);
        if let Some(pool) = &self.wrote {
            pool.invalidate_catalog();
        }
        if let Some((cache, tables)) = &self.evict {
            cache.invalidate_tables(tables);
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
        if !self.queries.accepting() {
            return Err(GatewayError::Unavailable("the gateway is shutting down; retry on another replica".into()));
        }
        if sql.len() > self.settings.max_sql_bytes {
            return Err(GatewayError::ResourceExhausted(format!(
                "the SQL text is {} bytes; the limit is {} (server.max_sql_size)",
                sql.len(),
                self.settings.max_sql_bytes
            )));
        }
        let depth =
            quiver_engine::sql::statement_depth(sql).map_err(|e| GatewayError::InvalidArgument(e.to_string()))?;
        if depth > self.settings.max_statement_depth {
            return Err(GatewayError::InvalidArgument(format!(
                "the statement nests about {depth} levels deep; the limit is {} (server.max_statement_depth)",
                self.settings.max_statement_depth
            )));
        }
        self.authorizer.check(&ctx.identity, Operation::ExecuteQuery, &Resource::None).await?;
        let analysis = analyze(sql, catalog, schema)?;
        for c in &analysis.catalogs {
            let resource = Resource::Catalog(c.clone());
            if let Err(e) = self.authorizer.check(&ctx.identity, Operation::AccessCatalog, &resource).await {
                // A catalog the caller may not see is "not found", exactly as a missing one.
                let hidden = matches!(e, quiver_policies::PolicyError::Denied { .. })
                    && self
                        .authorizer
                        .filter(&ctx.identity, Operation::FilterCatalogs, std::slice::from_ref(&resource))
                        .await?
                        .is_empty();
                if hidden {
                    return Err(GatewayError::NotFound(format!("catalog `{c}` not found")));
                }
                return Err(e.into());
            }
        }
        let client = super::client_info(self, ctx);
        let resource_group = self.admission.as_ref().and_then(|a| {
            a.select_group(&quiver_policies::resource_groups::SelectionContext {
                user: &ctx.identity.user,
                groups: &ctx.identity.groups,
                source: client.source.as_deref(),
                query_type: Some(analysis.query_type),
                client_tags: &client.tags,
            })
        });
        let request = RouteRequest {
            user: &ctx.identity.user,
            groups: &ctx.identity.groups,
            source: client.source.as_deref(),
            client_tags: &client.tags,
            query_type: analysis.query_type.as_str(),
            catalogs: &analysis.catalogs,
            resource_group: resource_group.as_deref(),
        };
        let (pool, rule) = self.router.route_request(&request).await?;
        tracing::info!(
            user = %ctx.identity.user,
            query_type = analysis.query_type.as_str(),
            pool = %pool.name,
            rule = %rule,
            tables = ?analysis.tables.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "statement admitted"
        );
        Ok((analysis, pool))
    }

    /// GetFlightInfo for a statement: served from the result cache, or planned on a worker;
    /// either way the client gets sealed tickets.
    pub(crate) async fn statement_info(
        &self,
        ctx: &CallContext,
        sql: &str,
        catalog: &str,
        schema: &str,
        descriptor: FlightDescriptor,
    ) -> Result<(FlightInfo, CacheStatus)> {
        let (analysis, pool) = self.admit(ctx, sql, catalog, schema).await?;
        let effective = self.enforce(ctx, &pool, sql, catalog, schema, &analysis.catalogs).await?;
        let write = analysis.query_type.is_write();
        let writes: Vec<TableRef> = if write { analysis.tables.iter().cloned().collect() } else { vec![] };
        if write && let Some(cache) = &self.cache {
            cache.invalidate_tables(&analysis.tables);
        }
        let kind = analysis.query_type.as_str();
        let cache_plan = self.cache_plan(ctx, &effective, &pool.name, catalog, schema)?;
        // A result evicted before its DoGet is planned again from the authorized handle.
        let handle = self.authorized_handle(&pool.name, &effective, catalog, schema);
        let (ticket, status) = match cache_plan {
            CachePlan::Hit(entry, mut ticket) => {
                ticket.prepared = handle.clone();
                let info = self.cached_info(ctx, &pool.name, kind, sql, &entry, ticket, descriptor)?;
                return Ok((info, CacheStatus::Hit));
            }
            CachePlan::Miss(mut ticket) => {
                ticket.prepared = handle.clone();
                (Some(ticket), CacheStatus::Miss)
            }
            CachePlan::Bypass => (None, CacheStatus::Bypass),
        };
        let worker_command = match &handle {
            Some(handle) => Some(
                CommandPreparedStatementQuery { prepared_statement_handle: handle.clone().into() }
                    .as_any()
                    .encode_to_vec(),
            ),
            None if effective.rewritten => Some(
                CommandStatementQuery { query: effective.sql.clone(), transaction_id: None }.as_any().encode_to_vec(),
            ),
            None => None,
        };
        let worker_descriptor = match worker_command {
            Some(cmd) => FlightDescriptor::new_cmd(cmd),
            None => descriptor.clone(),
        };
        let headers = handle.is_none().then(|| defaults_metadata(catalog, schema)).transpose()?;
        // Planning has no side effects: a worker that cannot be reached is retried once.
        let (info, _worker) = pool
            .call_idempotent(|worker| {
                let mut request = Request::new(worker_descriptor.clone());
                if let Some(headers) = &headers {
                    headers.apply(&mut request);
                }
                async move {
                    let _inflight = worker.begin();
                    worker.client().get_flight_info(request).await.map(|r| r.into_inner())
                }
            })
            .await?;
        let planned = Planned { user: &ctx.identity.user, pool: &pool.name, write, kind, sql, cache: ticket, writes };
        Ok((self.seal_info(&planned, info, descriptor), status))
    }

    /// For a pool of Quiver workers under an access policy: the statement handle that makes
    /// the worker run exactly what was authorized — the effective SQL, its defaults (sent in the
    /// handle, never as headers a worker might drop) and the objects it was authorized against,
    /// which the worker checks before every execution ([`quiver_engine::authorized`]).
    pub(crate) fn authorized_handle(
        &self,
        pool: &str,
        effective: &crate::authz::Effective,
        catalog: &str,
        schema: &str,
    ) -> Option<Vec<u8>> {
        let authorized = effective.authorized.clone()?;
        if !self.enforcement.enabled || !self.enforcement.barrier_pools.contains(pool) {
            return None;
        }
        let mut handle = quiver_engine::handle::StatementHandle::new(
            effective.sql.clone(),
            Some(catalog.to_string()),
            Some(schema.to_string()),
        );
        handle.authorized = Some(authorized);
        Some(handle.encode().to_vec())
    }

    /// Whether and how the cache serves this statement. A statement is eligible when it was
    /// planned as a query, is deterministic, and reads no volatile catalog and no
    /// `information_schema`.
    pub(crate) fn cache_plan(
        &self,
        ctx: &CallContext,
        effective: &crate::authz::Effective,
        pool: &str,
        catalog: &str,
        schema: &str,
    ) -> Result<CachePlan> {
        let Some(cache) = &self.cache else { return Ok(CachePlan::Bypass) };
        let control = self.cache_control(ctx)?;
        let why_not = match &effective.facts {
            None => Some("it is not a query"),
            Some(f) if !f.deterministic => Some("it is not deterministic"),
            Some(f) if f.tables.iter().any(|t| t.schema == "information_schema") => Some("it reads information_schema"),
            Some(f) if f.tables.iter().any(|t| cache.is_volatile(&t.catalog)) => Some("it reads a volatile catalog"),
            Some(_) => None,
        };
        let facts = match (why_not, &effective.facts) {
            (None, Some(facts)) => facts,
            (reason, _) => {
                if control == Control::OnlyIfCached {
                    return Err(GatewayError::FailedPrecondition(format!(
                        "only-if-cached: this statement is never cached ({})",
                        reason.unwrap_or("not eligible")
                    )));
                }
                cache.count(&ctx.identity.user, CacheStatus::Bypass);
                return Ok(CachePlan::Bypass);
            }
        };
        let catalogs: BTreeSet<String> = facts.tables.iter().map(|t| t.catalog.clone()).collect();
        let key = CacheKey {
            sql: effective.sql.clone(),
            pool: pool.to_string(),
            catalog: catalog.to_string(),
            schema: schema.to_string(),
            versions: cache.versions(&facts.tables),
        };
        let max_age = match control {
            Control::MaxAge(age) => Some(age),
            _ => None,
        };
        let ticket = CacheTicket {
            key,
            tables: facts.tables.iter().cloned().collect(),
            ttl_secs: cache.ttl_for(&catalogs).as_secs(),
            read: control != Control::NoCache,
            max_age_secs: max_age.map(|a| a.as_secs()),
            prepared: None,
        };
        let found = if ticket.read { cache.lookup(&ticket.key, max_age) } else { None };
        match (found, control) {
            (Some(entry), _) => {
                cache.count(&ctx.identity.user, CacheStatus::Hit);
                Ok(CachePlan::Hit(entry, ticket))
            }
            (None, Control::OnlyIfCached) => {
                Err(GatewayError::FailedPrecondition("only-if-cached: the result is not in the cache".into()))
            }
            (None, _) => {
                cache.count(&ctx.identity.user, CacheStatus::Miss);
                Ok(CachePlan::Miss(ticket))
            }
        }
    }

    /// The caller's cache control: the request header, else the session option.
    fn cache_control(&self, ctx: &CallContext) -> Result<Control> {
        let session = ctx.session_id.as_deref().and_then(|id| self.sessions.get(id, &ctx.identity.user));
        let value = ctx.cache_control.clone().or_else(|| session.and_then(|s| s.cache_control()));
        match value {
            Some(v) => Control::parse(&v).map_err(GatewayError::InvalidArgument),
            None => Ok(Control::Default),
        }
    }

    /// A FlightInfo answered from a stored result: its schema, its row count, and a ticket
    /// that streams it (or runs the statement, should it be evicted before DoGet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cached_info(
        &self,
        ctx: &CallContext,
        pool: &str,
        kind: &str,
        sql: &str,
        entry: &Entry,
        ticket: CacheTicket,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo> {
        let schema = entry.schema()?;
        let id = new_id();
        self.queries.plan(&id, &ctx.identity.user, pool, kind, sql);
        let sealed = self.sealer.seal(
            &ctx.identity.user,
            Sealed::Query {
                id,
                pool: pool.to_string(),
                ticket: vec![],
                write: false,
                kind: kind.to_string(),
                cache: Some(ticket),
                writes: vec![],
            },
        );
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| GatewayError::Internal(format!("cached schema: {e}")))?
            .with_endpoint(arrow_flight::FlightEndpoint::new().with_ticket(ticket_bytes(sealed)))
            .with_descriptor(descriptor)
            .with_total_records(entry.rows as i64);
        Ok(info)
    }

    /// DoGet of a cache-eligible statement: the stored result, another caller's execution in
    /// flight, or this caller's execution feeding the cache.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn redeem_cached(
        &self,
        ctx: &CallContext,
        client: &ClientInfo,
        id: String,
        pool: &str,
        ticket: Vec<u8>,
        kind: &str,
        cache_ticket: CacheTicket,
    ) -> Result<(FlightDataStream, CacheStatus)> {
        let Some(cache) = self.cache.clone() else {
            // A replica without a cache: run it.
            let ticket = self.worker_ticket(pool, &cache_ticket.key, cache_ticket.prepared.clone(), ticket).await?;
            let stream = self.redeem_query(ctx, client, id, pool, ticket, false, kind, vec![]).await?;
            return Ok((stream, CacheStatus::Bypass));
        };
        match cache.join(&cache_ticket) {
            Joined::Stored(entry) => {
                let stream = self.served_without_worker(ctx, &id, pool, kind, ResultCache::stream(entry))?;
                Ok((stream, CacheStatus::Hit))
            }
            Joined::Follow(fill) => {
                let stream = self.served_without_worker(ctx, &id, pool, kind, fill.reader())?;
                Ok((stream, CacheStatus::Hit))
            }
            Joined::Lead(fill) => {
                let started =
                    match self.worker_ticket(pool, &cache_ticket.key, cache_ticket.prepared.clone(), ticket).await {
                        Ok(ticket) => self.redeem_query(ctx, client, id, pool, ticket, false, kind, vec![]).await,
                        Err(e) => Err(e),
                    };
                match started {
                    Ok(stream) => {
                        let reader = fill.reader();
                        cache.spawn_pump(fill, stream);
                        Ok((reader, CacheStatus::Miss))
                    }
                    Err(e) => {
                        cache.abandon(
                            &fill,
                            Status::from(GatewayError::Unavailable(format!(
                                "the execution this result was shared from failed: {e}"
                            ))),
                        );
                        Err(e)
                    }
                }
            }
        }
    }

    /// The worker ticket of a cache ticket: the one planned at GetFlightInfo, or (for a
    /// result evicted since it was found in the cache) a fresh plan of the effective SQL.
    async fn worker_ticket(
        &self,
        pool: &str,
        key: &CacheKey,
        prepared: Option<Vec<u8>>,
        ticket: Vec<u8>,
    ) -> Result<Vec<u8>> {
        if !ticket.is_empty() {
            return Ok(ticket);
        }
        let pool = self.router.pool(pool)?;
        let headers = prepared.is_none().then(|| defaults_metadata(&key.catalog, &key.schema)).transpose()?;
        let command = match prepared {
            Some(handle) => {
                CommandPreparedStatementQuery { prepared_statement_handle: handle.into() }.as_any().encode_to_vec()
            }
            None => CommandStatementQuery { query: key.sql.clone(), transaction_id: None }.as_any().encode_to_vec(),
        };
        let descriptor = FlightDescriptor::new_cmd(command);
        let (info, _) = pool
            .call_idempotent(|worker| {
                let mut request = Request::new(descriptor.clone());
                if let Some(headers) = &headers {
                    headers.apply(&mut request);
                }
                async move {
                    let _inflight = worker.begin();
                    worker.client().get_flight_info(request).await.map(|r| r.into_inner())
                }
            })
            .await?;
        info.endpoint
            .into_iter()
            .find_map(|e| e.ticket.map(|t| t.ticket.to_vec()))
            .ok_or_else(|| GatewayError::Internal("the worker planned the statement without a ticket".into()))
    }

    /// Streams a result that needs no worker (stored, or shared from another execution),
    /// recorded in the query registry like any other.
    fn served_without_worker(
        &self,
        ctx: &CallContext,
        id: &str,
        pool: &str,
        kind: &str,
        stream: FlightDataStream,
    ) -> Result<FlightDataStream> {
        let record = self
            .queries
            .start(id, &ctx.identity.user, pool, kind)
            .map_err(|_| GatewayError::Cancelled("the query was cancelled".into()))?;
        record.set_worker("cache");
        record.set_state(QueryState::Running);
        let guard = QueryGuard::new(self.queries.clone(), record);
        Ok(Box::pin(futures::stream::unfold((stream, Some(guard)), |(mut stream, guard)| async move {
            let mut guard = guard?;
            if guard.record.cancel.is_cancelled() {
                guard.outcome = Some((QueryState::Cancelled, Some("cancelled".into())));
                return Some((Err(Status::cancelled("the query was cancelled")), (stream, None)));
            }
            match stream.next().await {
                Some(Ok(frame)) => {
                    guard.record.add_frame(frame.data_header.len() + frame.data_body.len(), frame_rows(&frame));
                    Some((Ok(frame), (stream, Some(guard))))
                }
                Some(Err(status)) => {
                    guard.outcome = Some((QueryState::Failed, Some(status.message().to_string())));
                    Some((Err(status), (stream, None)))
                }
                None => {
                    guard.outcome = Some((QueryState::Finished, None));
                    None
                }
            }
        })))
    }

    /// Replaces each endpoint's worker ticket with a sealed gateway ticket and drops
    /// locations, so clients come back to the gateway on the connection they have.
    pub(crate) fn seal_info(
        &self,
        planned: &Planned<'_>,
        mut info: FlightInfo,
        descriptor: FlightDescriptor,
    ) -> FlightInfo {
        for endpoint in &mut info.endpoint {
            let worker_ticket = endpoint.ticket.take().unwrap_or_default();
            let id = new_id();
            self.queries.plan(&id, planned.user, planned.pool, planned.kind, planned.sql);
            let sealed = self.sealer.seal(
                planned.user,
                Sealed::Query {
                    id,
                    pool: planned.pool.to_string(),
                    ticket: worker_ticket.ticket.to_vec(),
                    write: planned.write,
                    kind: planned.kind.to_string(),
                    cache: planned.cache.clone(),
                    writes: planned.writes.clone(),
                },
            );
            endpoint.ticket = Some(ticket_bytes(sealed));
            endpoint.location.clear();
        }
        info.flight_descriptor = Some(descriptor);
        info
    }

    /// DoGet of a statement ticket: stream the worker's frames through as they are.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn redeem_query(
        &self,
        ctx: &CallContext,
        client: &ClientInfo,
        id: String,
        pool: &str,
        ticket: Vec<u8>,
        write: bool,
        kind: &str,
        writes: Vec<TableRef>,
    ) -> Result<FlightDataStream> {
        let record = self
            .queries
            .start(&id, &ctx.identity.user, pool, kind)
            .map_err(|_| GatewayError::Cancelled("the query was cancelled".into()))?;
        let mut guard = QueryGuard::new(self.queries.clone(), record);
        if write && let Some(cache) = &self.cache {
            guard.evict = Some((cache.clone(), writes.into_iter().collect()));
        }
        // The resource group first: a queued query holds no worker.
        let record = guard.record.clone();
        let admitted = self
            .admit_to_group(ctx, client, &id, kind, &record.cancel, |group| {
                record.set_group(group);
                record.set_state(QueryState::Queued);
            })
            .await;
        match admitted {
            Ok(permit) => {
                if let Some(p) = &permit {
                    guard.record.set_group(&p.group);
                }
                guard.permit = permit;
            }
            Err(e) => {
                let state =
                    if matches!(e, GatewayError::Cancelled(_)) { QueryState::Cancelled } else { QueryState::Failed };
                guard.outcome = Some((state, Some(e.to_string())));
                return Err(e);
            }
        }
        if guard.record.cancel.is_cancelled() {
            guard.outcome = Some((QueryState::Cancelled, Some("cancelled while queued".into())));
            return Err(GatewayError::Cancelled("the query was cancelled".into()));
        }
        let pool = match self.router.pool(pool) {
            Ok(pool) => pool,
            Err(e) => {
                guard.outcome = Some((QueryState::Failed, Some(e.to_string())));
                return Err(e);
            }
        };
        // Until the first frame arrives nothing has run for the client: a worker that cannot
        // be reached is retried once (tickets are self-contained, any worker can serve them).
        let ticket = Bytes::from(ticket);
        // The group's softMemoryLimit becomes the query's memory pool on the worker.
        let memory_limit = guard.permit.as_ref().and_then(|p| p.memory_limit);
        let started = pool
            .call_idempotent(|worker| {
                let mut request = Request::new(Ticket { ticket: ticket.clone() });
                // Quiver workers end the stream with the query's CPU time (other engines
                // ignore the header).
                request
                    .metadata_mut()
                    .insert(quiver_engine::REPORT_STATS_HEADER, tonic::metadata::MetadataValue::from_static("1"));
                if let Some(limit) = memory_limit
                    && let Ok(value) = limit.to_string().parse()
                {
                    request.metadata_mut().insert(quiver_engine::MEMORY_LIMIT_HEADER, value);
                }
                async move {
                    let inflight = worker.begin();
                    let stream = worker.client().do_get(request).await?.into_inner();
                    Ok((stream, inflight))
                }
            })
            .await;
        let ((stream, inflight), worker) = match started {
            Ok(started) => started,
            Err(e) => {
                guard.outcome = Some((QueryState::Failed, Some(e.to_string())));
                return Err(e);
            }
        };
        guard.record.set_worker(&worker.uri);
        guard.record.set_state(QueryState::Running);
        guard.wrote = write.then(|| pool.clone());
        Ok(forward(stream, worker, pool, inflight, guard))
    }

    /// DoPut of CommandStatementUpdate: forward the client's stream to a worker.
    pub(crate) async fn statement_update(
        &self,
        ctx: &CallContext,
        client: &ClientInfo,
        sql: &str,
        catalog: &str,
        schema: &str,
        stream: PeekableFlightDataStream,
    ) -> Result<i64> {
        let (analysis, pool) = self.admit(ctx, sql, catalog, schema).await?;
        let effective = self.enforce(ctx, &pool, sql, catalog, schema, &analysis.catalogs).await?;
        let handle = self.authorized_handle(&pool.name, &effective, catalog, schema);
        let command: Option<Bytes> = match handle {
            Some(handle) => Some(
                arrow_flight::sql::CommandPreparedStatementUpdate { prepared_statement_handle: handle.into() }
                    .as_any()
                    .encode_to_vec()
                    .into(),
            ),
            None => effective.rewritten.then(|| {
                arrow_flight::sql::CommandStatementUpdate { query: effective.sql.clone(), transaction_id: None }
                    .as_any()
                    .encode_to_vec()
                    .into()
            }),
        };
        let never = crate::queries::CancelFlag::default();
        let _slot = self.admit_to_group(ctx, client, &new_id(), analysis.query_type.as_str(), &never, |_| {}).await?;
        let worker = pool.pick()?;
        let mut request = Request::new(forwardable(stream, command));
        defaults_metadata(catalog, schema)?.apply(&mut request);
        let count = put_update(&worker, request).await;
        if analysis.query_type.is_write() {
            pool.invalidate_catalog();
            if let Some(cache) = &self.cache {
                cache.invalidate_tables(&analysis.tables);
            }
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

/// Rows in a FlightData frame, read from its IPC message header (no body decoding).
pub(crate) fn frame_rows(data: &FlightData) -> u64 {
    datafusion::arrow::ipc::root_as_message(&data.data_header)
        .ok()
        .and_then(|m| m.header_as_record_batch())
        .map(|b| b.length().max(0) as u64)
        .unwrap_or(0)
}

fn forward(
    stream: Streaming<FlightData>,
    worker: Arc<Worker>,
    pool: Arc<Pool>,
    inflight: InFlight,
    guard: QueryGuard,
) -> FlightDataStream {
    let state = Some((stream, worker, pool, (inflight, guard)));
    Box::pin(futures::stream::unfold(state, |state| async move {
        let (mut stream, worker, pool, (inflight, mut guard)) = state?;
        let record = guard.record.clone();
        let cancelled = |mut guard: QueryGuard| {
            guard.outcome = Some((QueryState::Cancelled, Some("cancelled".into())));
            Some((Err(Status::cancelled("the query was cancelled")), None))
        };
        loop {
            if record.cancel.is_cancelled() {
                return cancelled(guard);
            }
            tokio::select! {
                biased;
                item = stream.message() => match item {
                    Ok(Some(data)) => {
                        // The worker's closing stats message is for the gateway, not the client.
                        if data.data_header.is_empty()
                            && let Some(stats) = quiver_engine::QueryStats::from_app_metadata(&data.app_metadata)
                        {
                            let cpu = std::time::Duration::from_nanos(stats.quiver_cpu_nanos);
                            record.add_cpu(cpu);
                            if let Some(permit) = &guard.permit {
                                permit.charge_cpu(cpu);
                            }
                            continue;
                        }
                        record.add_frame(data.data_header.len() + data.data_body.len(), frame_rows(&data));
                        return Some((Ok(data), Some((stream, worker, pool, (inflight, guard)))));
                    }
                    Ok(None) => {
                        guard.outcome = Some((QueryState::Finished, None));
                        return None;
                    }
                    // A worker that fails mid-stream must never look like a complete result, and
                    // it counts against the worker's health. Frames have flowed: no retry.
                    Err(status) => {
                        pool.observe(&worker, Some(&status));
                        let status = Status::from(worker.error(status));
                        guard.outcome = Some((QueryState::Failed, Some(status.message().to_string())));
                        return Some((Err(status), None));
                    }
                },
                _ = record.cancel.cancelled() => return cancelled(guard),
            }
        }
    }))
}
