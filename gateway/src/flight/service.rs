//! The Flight SQL trait, wired to the gateway's handlers. Each method reads the caller from
//! the request (put there by the authentication layer), does one thing, and maps errors
//! through `GatewayError`.

use std::pin::Pin;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, Command, CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{Action, ActionType, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket};
use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::actions::{CANCEL_FLIGHT_INFO, CLOSE_SESSION, GET_SESSION_OPTIONS, SET_SESSION_OPTIONS};
use super::{GatewayService, caller, client_info, session_defaults};
use crate::error::GatewayError;
use crate::session::SESSION_COOKIE;
use crate::tickets::Sealed;

type DoGet = <GatewayService as FlightService>::DoGetStream;
type DoAction = <GatewayService as FlightService>::DoActionStream;

fn one_result(body: Vec<u8>) -> Response<DoAction> {
    Response::new(Box::pin(futures::stream::iter(vec![Ok(arrow_flight::Result { body: body.into() })])))
}

impl GatewayService {
    async fn info_for(
        &self,
        command: Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = caller(&request)?;
        Ok(Response::new(self.metadata_info(&ctx, command, request.into_inner())?))
    }

    async fn get_for(&self, command: Command, request: Request<Ticket>) -> Result<Response<DoGet>, Status> {
        let ctx = caller(&request)?;
        Ok(Response::new(self.metadata_stream(&ctx, &command.into_any().encode_to_vec()).await?))
    }
}

#[tonic::async_trait]
impl FlightSqlService for GatewayService {
    type FlightService = GatewayService;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        // The authentication layer has checked the credentials and adds the token header.
        let ctx = caller(&request)?;
        tracing::info!(user = %ctx.identity.user, method = %ctx.identity.method, "handshake");
        let reply = HandshakeResponse { protocol_version: 0, payload: Default::default() };
        Ok(Response::new(Box::pin(futures::stream::iter(vec![Ok(reply)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = caller(&request)?;
        let (catalog, schema) = session_defaults(self, &ctx, &request);
        let (info, status) = self.statement_info(&ctx, &query.query, &catalog, &schema, request.into_inner()).await?;
        Ok(with_cache_status(Response::new(info), status))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ctx = caller(&request)?;
        let (info, status) = self.prepared_info(&ctx, cmd, request.into_inner()).await?;
        Ok(with_cache_status(Response::new(info), status))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetCatalogs(query), request).await
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetDbSchemas(query), request).await
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetTables(query), request).await
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetTableTypes(query), request).await
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetSqlInfo(query), request).await
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetPrimaryKeys(query), request).await
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetExportedKeys(query), request).await
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetImportedKeys(query), request).await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetCrossReference(query), request).await
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.info_for(Command::CommandGetXdbcTypeInfo(query), request).await
    }

    async fn get_flight_info_fallback(
        &self,
        cmd: Command,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::invalid_argument(format!("unsupported command `{}`", cmd.type_url())))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        let ctx = caller(&request)?;
        let (stream, status) = match self.sealer.open(&ctx.identity.user, &ticket.statement_handle)? {
            Sealed::Query { id, pool, ticket, write, kind, cache: Some(cache), .. } if !write => {
                let client = client_info(self, &ctx);
                self.redeem_cached(&ctx, &client, id, &pool, ticket, &kind, cache).await?
            }
            Sealed::Query { id, pool, ticket, write, kind, writes, .. } => {
                let client = client_info(self, &ctx);
                let stream = self.redeem_query(&ctx, &client, id, &pool, ticket, write, &kind, writes).await?;
                (stream, crate::cache::CacheStatus::Bypass)
            }
            Sealed::Metadata { command } => {
                (self.metadata_stream(&ctx, &command).await?, crate::cache::CacheStatus::Bypass)
            }
            Sealed::Prepared { .. } => {
                return Err(GatewayError::InvalidTicket("a prepared-statement handle is not a ticket".into()).into());
            }
        };
        Ok(with_cache_status(Response::new(stream), status))
    }

    async fn do_get_prepared_statement(
        &self,
        _query: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        Err(GatewayError::InvalidTicket("use the ticket returned by GetFlightInfo".into()).into())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetCatalogs(query), request).await
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetDbSchemas(query), request).await
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetTables(query), request).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetTableTypes(query), request).await
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetSqlInfo(query), request).await
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetPrimaryKeys(query), request).await
    }

    async fn do_get_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetExportedKeys(query), request).await
    }

    async fn do_get_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetImportedKeys(query), request).await
    }

    async fn do_get_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetCrossReference(query), request).await
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGet>, Status> {
        self.get_for(Command::CommandGetXdbcTypeInfo(query), request).await
    }

    async fn do_get_fallback(&self, _request: Request<Ticket>, message: Any) -> Result<Response<DoGet>, Status> {
        Err(GatewayError::InvalidTicket(format!("unknown ticket type `{}`", message.type_url)).into())
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ctx = caller(&request)?;
        let (catalog, schema) = session_defaults(self, &ctx, &request);
        let client = client_info(self, &ctx);
        Ok(self.statement_update(&ctx, &client, &ticket.query, &catalog, &schema, request.into_inner()).await?)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let ctx = caller(&request)?;
        Ok(self.bind_prepared(&ctx, query, request.into_inner()).await?)
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let ctx = caller(&request)?;
        Ok(self.prepared_update(&ctx, query, request.into_inner()).await?)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let ctx = caller(&request)?;
        let (catalog, schema) = session_defaults(self, &ctx, &request);
        Ok(self.create_prepared(&ctx, query, &catalog, &schema).await?)
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let ctx = caller(&request)?;
        Ok(self.close_prepared(&ctx, &query.prepared_statement_handle)?)
    }

    async fn do_action_fallback(&self, request: Request<Action>) -> Result<Response<DoAction>, Status> {
        let ctx = caller(&request)?;
        let (catalog, schema) = session_defaults(self, &ctx, &request);
        let action = request.get_ref();
        match action.r#type.as_str() {
            SET_SESSION_OPTIONS => {
                let (result, created) = self.set_session_options(&ctx, &action.body).await?;
                let mut response = one_result(result.encode_to_vec());
                if let Some(id) = created
                    && let Ok(cookie) = format!("{SESSION_COOKIE}={id}").parse()
                {
                    response.metadata_mut().insert("set-cookie", cookie);
                }
                Ok(response)
            }
            GET_SESSION_OPTIONS => Ok(one_result(self.get_session_options(&ctx, &catalog, &schema).encode_to_vec())),
            CLOSE_SESSION => Ok(one_result(self.close_session(&ctx).encode_to_vec())),
            CANCEL_FLIGHT_INFO => Ok(one_result(self.cancel_flight_info(&ctx, &action.body)?.encode_to_vec())),
            other => Err(Status::invalid_argument(format!("unknown action `{other}`"))),
        }
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        let described = [
            (SET_SESSION_OPTIONS, "Set session options (catalog, schema)"),
            (GET_SESSION_OPTIONS, "Get the session's options"),
            (CLOSE_SESSION, "Close the session"),
            (CANCEL_FLIGHT_INFO, "Cancel the execution of a FlightInfo's tickets"),
        ];
        Some(described.into_iter().map(|(t, d)| Ok(ActionType { r#type: t.into(), description: d.into() })).collect())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Adds the `x-quiver-cache` response header (HIT, MISS or BYPASS).
fn with_cache_status<T>(mut response: Response<T>, status: crate::cache::CacheStatus) -> Response<T> {
    response
        .metadata_mut()
        .insert(crate::cache::CACHE_STATUS_HEADER, tonic::metadata::MetadataValue::from_static(status.as_str()));
    response
}
