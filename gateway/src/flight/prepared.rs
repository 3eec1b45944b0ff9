//! Prepared statements. The worker's handle is self-contained (SQL, defaults, bound
//! parameters); the gateway seals it with the pool and the user, so any replica can serve any
//! step. Binding parameters returns an updated handle (DoPutPreparedStatementResult), and the
//! gateway also remembers it for clients that keep using the original handle.

use std::sync::Arc;

use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo};
use bytes::Bytes;
use prost::Message;
use tonic::Request;

use super::GatewayService;
use super::statements::{CachePlan, Planned};
use super::statements::{forwardable, put_update};
use crate::auth_layer::CallContext;
use crate::cache::CacheStatus;
use crate::error::{GatewayError, Result};
use crate::pool::{Pool, Worker};
use crate::tickets::{PreparedPolicy, Sealed, new_id};
use datafusion::arrow::datatypes::{Field, Schema};
use quiver_policies::TableRef;
use sha2::{Digest, Sha256};

/// An opened prepared-statement handle.
pub(crate) struct Prepared {
    id: String,
    pool: Arc<Pool>,
    handle: Vec<u8>,
    update: bool,
    policy: Option<PreparedPolicy>,
    /// For a statement that writes: the tables it names (cache entries reading them are
    /// evicted before it reports success).
    writes: Vec<TableRef>,
}

impl GatewayService {
    fn open_prepared(&self, ctx: &CallContext, sealed: &[u8]) -> Result<Prepared> {
        let open = |bytes: &[u8]| match self.sealer.open(&ctx.identity.user, bytes)? {
            Sealed::Prepared { id, pool, handle, update, policy, writes } => {
                Ok((id, pool, handle, update, policy, writes))
            }
            _ => Err(GatewayError::InvalidTicket("not a prepared-statement handle".into())),
        };
        let (id, pool, mut handle, update, policy, writes) = open(sealed)?;
        // A client that kept the creation handle gets the parameters it bound since.
        if let Some(latest) = self.bound.get(&id)
            && let Ok((_, _, latest_handle, _, _, _)) = open(&latest)
        {
            handle = latest_handle;
        }
        Ok(Prepared { id, pool: self.router.pool(&pool)?, handle, update, policy, writes })
    }

    fn seal_prepared(&self, ctx: &CallContext, p: &Prepared, handle: Vec<u8>) -> Bytes {
        self.sealer.seal(
            &ctx.identity.user,
            Sealed::Prepared {
                id: p.id.clone(),
                pool: p.pool.name.clone(),
                handle,
                update: p.update,
                policy: p.policy.clone(),
                writes: p.writes.clone(),
            },
        )
    }

    /// ActionCreatePreparedStatement: checked now and again at execution.
    pub(crate) async fn create_prepared(
        &self,
        ctx: &CallContext,
        mut query: ActionCreatePreparedStatementRequest,
        catalog: &str,
        schema: &str,
    ) -> Result<ActionCreatePreparedStatementResult> {
        let (analysis, pool) = self.admit(ctx, &query.query, catalog, schema).await?;
        let effective = self.enforce(ctx, &pool, &query.query, catalog, schema, &analysis.catalogs).await?;
        let policy = (self.enforcement.enabled || self.enforcement.plan_always).then(|| PreparedPolicy {
            sql: query.query.clone(),
            catalog: catalog.to_string(),
            schema: schema.to_string(),
            digest: effective.digest(),
        });
        let update = analysis.query_type.is_write();
        let writes: Vec<TableRef> = if update { analysis.tables.iter().cloned().collect() } else { vec![] };
        let authorized = self.authorized_handle(&pool.name, &effective, catalog, schema);
        let mut result = match (&authorized, &effective.output) {
            // The gateway planned it: no worker round trip.
            (Some(handle), output) if output.is_some() || update => ActionCreatePreparedStatementResult {
                prepared_statement_handle: handle.clone().into(),
                dataset_schema: schema_bytes(output.as_deref().filter(|_| !update).unwrap_or(&Schema::empty()))?,
                parameter_schema: schema_bytes(&Schema::new(
                    effective.parameters.iter().map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>(),
                ))?,
            },
            _ => {
                query.query = effective.sql.clone();
                let mut result = self.prepare_on_worker(&pool, query, catalog, schema).await?;
                if let Some(handle) = &authorized {
                    result.prepared_statement_handle = handle.clone().into();
                }
                result
            }
        };
        let prepared =
            Prepared { id: new_id(), pool, handle: result.prepared_statement_handle.to_vec(), update, policy, writes };
        result.prepared_statement_handle = self.seal_prepared(ctx, &prepared, prepared.handle.clone());
        Ok(result)
    }

    /// CreatePreparedStatement on a worker (for its handle and the statement's schemas).
    async fn prepare_on_worker(
        &self,
        pool: &Arc<Pool>,
        query: ActionCreatePreparedStatementRequest,
        catalog: &str,
        schema: &str,
    ) -> Result<ActionCreatePreparedStatementResult> {
        let headers = super::defaults_metadata(catalog, schema)?;
        let worker = pool.pick()?;
        let _inflight = worker.begin();
        let action = Action { r#type: "CreatePreparedStatement".into(), body: query.as_any().encode_to_vec().into() };
        let mut request = Request::new(action);
        headers.apply(&mut request);
        let mut results = worker.client().do_action(request).await.map_err(|s| worker.error(s))?.into_inner();
        let body = results
            .message()
            .await
            .map_err(|s| worker.error(s))?
            .ok_or_else(|| GatewayError::Internal(format!("worker {} returned no prepared statement", worker.uri)))?
            .body;
        Any::decode(body).ok().and_then(|any| any.unpack().ok().flatten()).ok_or_else(|| {
            GatewayError::Internal(format!("worker {} returned a malformed prepared statement", worker.uri))
        })
    }

    /// DoPut(CommandPreparedStatementQuery): bind parameters on a worker, return the new handle.
    pub(crate) async fn bind_prepared(
        &self,
        ctx: &CallContext,
        cmd: CommandPreparedStatementQuery,
        stream: PeekableFlightDataStream,
    ) -> Result<DoPutPreparedStatementResult> {
        let prepared = self.open_prepared(ctx, &cmd.prepared_statement_handle)?;
        let worker: Arc<Worker> = prepared.pool.pick()?;
        let _inflight = worker.begin();
        let worker_cmd = CommandPreparedStatementQuery { prepared_statement_handle: prepared.handle.clone().into() };
        let outbound = forwardable(stream, Some(worker_cmd.as_any().encode_to_vec().into()));
        let mut results =
            worker.client().do_put(Request::new(outbound)).await.map_err(|s| worker.error(s))?.into_inner();
        let first = results
            .message()
            .await
            .map_err(|s| worker.error(s))?
            .ok_or_else(|| GatewayError::Internal(format!("worker {} sent no DoPut result", worker.uri)))?;
        let bound = DoPutPreparedStatementResult::decode(first.app_metadata)
            .map_err(|e| GatewayError::Internal(format!("worker {} sent a bad DoPut result: {e}", worker.uri)))?;
        let new_handle = bound.prepared_statement_handle.map(|h| h.to_vec()).unwrap_or(prepared.handle.clone());
        let sealed = self.seal_prepared(ctx, &prepared, new_handle);
        self.bound.insert(prepared.id.clone(), sealed.clone());
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(sealed) })
    }

    /// GetFlightInfo(CommandPreparedStatementQuery): served from the result cache (the key
    /// includes the bound parameters), or planned on a worker with the bound parameters.
    pub(crate) async fn prepared_info(
        &self,
        ctx: &CallContext,
        cmd: CommandPreparedStatementQuery,
        descriptor: FlightDescriptor,
    ) -> Result<(FlightInfo, CacheStatus)> {
        let prepared = self.open_prepared(ctx, &cmd.prepared_statement_handle)?;
        let effective = self.recheck(ctx, &prepared).await?;
        let kind = if prepared.update { "INSERT" } else { "SELECT" };
        if prepared.update {
            self.invalidate_written(&prepared);
        }
        let sql = prepared.policy.as_ref().map(|p| p.sql.as_str()).unwrap_or("");
        let cache_plan = match (&effective, &prepared.policy) {
            (Some(effective), Some(policy)) if !prepared.update => {
                // The worker handle carries the bound parameters: they are part of the key.
                let mut keyed = effective.clone();
                let params: String =
                    Sha256::digest(&prepared.handle).iter().take(16).map(|b| format!("{b:02x}")).collect();
                keyed.sql = format!("{}\n-- quiver prepared statement, parameters {params}", effective.sql);
                self.cache_plan(ctx, &keyed, &prepared.pool.name, &policy.catalog, &policy.schema)?
            }
            _ => CachePlan::Bypass,
        };
        let (cache, status) = match cache_plan {
            CachePlan::Hit(entry, mut ticket) => {
                ticket.prepared = Some(prepared.handle.clone());
                let info = self.cached_info(ctx, &prepared.pool.name, kind, sql, &entry, ticket, descriptor)?;
                return Ok((info, CacheStatus::Hit));
            }
            CachePlan::Miss(mut ticket) => {
                ticket.prepared = Some(prepared.handle.clone());
                (Some(ticket), CacheStatus::Miss)
            }
            CachePlan::Bypass => (None, CacheStatus::Bypass),
        };
        let worker = prepared.pool.pick()?;
        let _inflight = worker.begin();
        let worker_cmd = CommandPreparedStatementQuery { prepared_statement_handle: prepared.handle.clone().into() };
        let worker_descriptor = FlightDescriptor::new_cmd(worker_cmd.as_any().encode_to_vec());
        let info = worker
            .client()
            .get_flight_info(Request::new(worker_descriptor))
            .await
            .map_err(|s| worker.error(s))?
            .into_inner();
        let planned = Planned {
            user: &ctx.identity.user,
            pool: &prepared.pool.name,
            write: prepared.update,
            kind,
            sql,
            cache,
            writes: prepared.writes.clone(),
        };
        Ok((self.seal_info(&planned, info, descriptor), status))
    }

    /// DoPut(CommandPreparedStatementUpdate): run with the parameters sent or bound.
    pub(crate) async fn prepared_update(
        &self,
        ctx: &CallContext,
        cmd: CommandPreparedStatementUpdate,
        stream: PeekableFlightDataStream,
    ) -> Result<i64> {
        let prepared = self.open_prepared(ctx, &cmd.prepared_statement_handle)?;
        self.recheck(ctx, &prepared).await?;
        let worker = prepared.pool.pick()?;
        let worker_cmd = CommandPreparedStatementUpdate { prepared_statement_handle: prepared.handle.clone().into() };
        let outbound = forwardable(stream, Some(worker_cmd.as_any().encode_to_vec().into()));
        let count = put_update(&worker, Request::new(outbound)).await;
        if prepared.update {
            prepared.pool.invalidate_catalog();
            self.invalidate_written(&prepared);
        }
        count
    }

    /// Evicts the cached results a prepared write may have made stale: those reading the
    /// tables it names (everything, for a handle that does not say).
    fn invalidate_written(&self, prepared: &Prepared) {
        let Some(cache) = &self.cache else { return };
        if prepared.writes.is_empty() {
            cache.invalidate_all();
        } else {
            cache.invalidate_tables(&prepared.writes.iter().cloned().collect());
        }
    }

    /// ActionClosePreparedStatement: forget the bound parameters.
    pub(crate) fn close_prepared(&self, ctx: &CallContext, sealed: &[u8]) -> Result<()> {
        let prepared = self.open_prepared(ctx, sealed)?;
        self.bound.invalidate(&prepared.id);
        Ok(())
    }

    /// Prepared statements are authorized again at execution: the policy may have changed.
    /// Under an access policy the statement is checked in full again, and if its effective
    /// form (row filters, masks) is no longer what the worker prepared, it must be prepared
    /// again. Returns the statement as planned now, when the gateway plans statements.
    async fn recheck(&self, ctx: &CallContext, prepared: &Prepared) -> Result<Option<crate::authz::Effective>> {
        self.authorizer
            .check(&ctx.identity, quiver_policies::Operation::ExecuteQuery, &quiver_policies::Resource::None)
            .await?;
        let Some(policy) = &prepared.policy else {
            if self.enforcement.enabled {
                return Err(GatewayError::FailedPrecondition(
                    "this statement was prepared before the access policy was in force; prepare it again".into(),
                ));
            }
            return Ok(None);
        };
        let effective = self
            .enforce(ctx, &prepared.pool, &policy.sql, &policy.catalog, &policy.schema, &Default::default())
            .await?;
        if self.enforcement.enabled && effective.digest() != policy.digest {
            return Err(GatewayError::FailedPrecondition(
                "the row filters or column masks for this statement changed since it was prepared; prepare it again"
                    .into(),
            ));
        }
        Ok(Some(effective))
    }
}

/// A schema as Flight SQL carries it in prepared-statement results.
fn schema_bytes(schema: &Schema) -> Result<Bytes> {
    let arrow_flight::IpcMessage(bytes) =
        arrow_flight::SchemaAsIpc::new(schema, &datafusion::arrow::ipc::writer::IpcWriteOptions::default())
            .try_into()
            .map_err(|e: datafusion::arrow::error::ArrowError| {
                GatewayError::Internal(format!("encoding a schema: {e}"))
            })?;
    Ok(bytes)
}
