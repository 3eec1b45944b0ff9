//! Flight actions outside Flight SQL's own set: session options and CancelFlightInfo.

use std::collections::HashMap;

use arrow_flight::sql::{Any, Command};
use arrow_flight::{CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus};
use prost::Message;

use super::GatewayService;
use super::session_proto::{
    CloseSessionResult, CloseSessionStatus, GetSessionOptionsResult, SessionOptionValue, SetSessionOptionError,
    SetSessionOptionErrorValue, SetSessionOptionsRequest, SetSessionOptionsResult, session_option_value,
};
use crate::auth_layer::CallContext;
use crate::error::{GatewayError, Result};
use crate::session::OptionValue;
use crate::tickets::Sealed;

/// Action names (Flight.proto).
pub const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
/// See [`SET_SESSION_OPTIONS`].
pub const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
/// See [`SET_SESSION_OPTIONS`].
pub const CLOSE_SESSION: &str = "CloseSession";
/// See [`SET_SESSION_OPTIONS`].
pub const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Session options the gateway understands: the default catalog and schema, and what
/// resource-group selectors look at (`source`, `client_tags`, `query_priority`).
const KNOWN_OPTIONS: [&str; 6] = ["catalog", "schema", "source", "client_tags", "query_priority", "cache_control"];

fn to_value(v: &SessionOptionValue) -> Option<OptionValue> {
    use session_option_value::OptionValue as V;
    Some(match v.option_value.as_ref()? {
        V::StringValue(s) => OptionValue::String(s.clone()),
        V::BoolValue(b) => OptionValue::Bool(*b),
        V::Int64Value(i) => OptionValue::Int(*i),
        V::DoubleValue(d) => OptionValue::Double(*d),
        V::StringListValue(l) => OptionValue::StringList(l.values.clone()),
    })
}

fn from_value(v: &OptionValue) -> SessionOptionValue {
    use session_option_value::OptionValue as V;
    let value = match v {
        OptionValue::String(s) => V::StringValue(s.clone()),
        OptionValue::Bool(b) => V::BoolValue(*b),
        OptionValue::Int(i) => V::Int64Value(*i),
        OptionValue::Double(d) => V::DoubleValue(*d),
        OptionValue::StringList(l) => V::StringListValue(session_option_value::StringListValue { values: l.clone() }),
    };
    SessionOptionValue { option_value: Some(value) }
}

fn error(value: SetSessionOptionErrorValue) -> SetSessionOptionError {
    SetSessionOptionError { value: value as i32 }
}

impl GatewayService {
    /// SetSessionOptions. Returns the result and, if a session had to be created for a caller
    /// without one, its id (sent back as a cookie).
    pub(crate) async fn set_session_options(
        &self,
        ctx: &CallContext,
        body: &[u8],
    ) -> Result<(SetSessionOptionsResult, Option<String>)> {
        let request = SetSessionOptionsRequest::decode(body)
            .map_err(|e| GatewayError::InvalidArgument(format!("malformed SetSessionOptionsRequest: {e}")))?;
        let (session_id, created) = match &ctx.session_id {
            Some(id) => (id.clone(), None),
            None => {
                let id = crate::tickets::new_id();
                (id.clone(), Some(id))
            }
        };
        let catalogs = self.known_catalogs().await;
        let mut errors = HashMap::new();
        let mut accepted: Vec<(String, Option<OptionValue>)> = Vec::new();
        for (name, value) in request.session_options {
            if !KNOWN_OPTIONS.contains(&name.as_str()) {
                errors.insert(name, error(SetSessionOptionErrorValue::InvalidName));
                continue;
            }
            let value = to_value(&value);
            match (&value, name.as_str()) {
                // A valueless option clears it.
                (None, _) => accepted.push((name, None)),
                (Some(OptionValue::String(c)), "catalog")
                    if catalogs.as_ref().is_none_or(|known| known.contains(c)) =>
                {
                    accepted.push((name, value))
                }
                (Some(OptionValue::String(s)), "schema") if !s.is_empty() => accepted.push((name, value)),
                (Some(OptionValue::String(_)), "source")
                | (Some(OptionValue::String(_) | OptionValue::StringList(_)), "client_tags")
                | (Some(OptionValue::Int(_)), "query_priority") => accepted.push((name, value)),
                (Some(OptionValue::String(c)), "cache_control") if crate::cache::Control::parse(c).is_ok() => {
                    accepted.push((name, value))
                }
                _ => {
                    errors.insert(name, error(SetSessionOptionErrorValue::InvalidValue));
                }
            }
        }
        let owned = self.sessions.update(&session_id, &ctx.identity.user, |state| {
            for (name, value) in accepted {
                let text = match &value {
                    Some(OptionValue::String(s)) => Some(s.clone()),
                    _ => None,
                };
                match name.as_str() {
                    "catalog" => state.catalog = text,
                    "schema" => state.schema = text,
                    _ => {}
                }
                match value {
                    Some(v) => state.options.insert(name, v),
                    None => state.options.remove(&name),
                };
            }
        });
        if !owned {
            return Err(GatewayError::Auth(quiver_auth::AuthError::InvalidToken("session belongs to another user")));
        }
        Ok((SetSessionOptionsResult { errors }, created))
    }

    async fn known_catalogs(&self) -> Option<std::collections::BTreeSet<String>> {
        let mut all = std::collections::BTreeSet::new();
        for pool in self.router.pools() {
            all.extend(pool.catalog().await.ok()?.catalogs.iter().cloned());
        }
        Some(all)
    }

    /// GetSessionOptions: every option as set, plus the effective catalog and schema.
    pub(crate) fn get_session_options(
        &self,
        ctx: &CallContext,
        catalog: &str,
        schema: &str,
    ) -> GetSessionOptionsResult {
        let mut options: HashMap<String, SessionOptionValue> = ctx
            .session_id
            .as_deref()
            .and_then(|id| self.sessions.get(id, &ctx.identity.user))
            .map(|s| s.options.iter().map(|(k, v)| (k.clone(), from_value(v))).collect())
            .unwrap_or_default();
        options.entry("catalog".into()).or_insert_with(|| from_value(&OptionValue::String(catalog.into())));
        options.entry("schema".into()).or_insert_with(|| from_value(&OptionValue::String(schema.into())));
        GetSessionOptionsResult { session_options: options }
    }

    /// CloseSession.
    pub(crate) fn close_session(&self, ctx: &CallContext) -> CloseSessionResult {
        if let Some(id) = &ctx.session_id {
            self.sessions.close(id, &ctx.identity.user);
        }
        CloseSessionResult { status: CloseSessionStatus::Closed as i32 }
    }

    /// CancelFlightInfo: stops the DoGets of the FlightInfo's tickets, running or not yet begun.
    pub(crate) fn cancel_flight_info(&self, ctx: &CallContext, body: &[u8]) -> Result<CancelFlightInfoResult> {
        let request = CancelFlightInfoRequest::decode(body)
            .map_err(|e| GatewayError::InvalidArgument(format!("malformed CancelFlightInfoRequest: {e}")))?;
        let info =
            request.info.ok_or_else(|| GatewayError::InvalidArgument("CancelFlightInfoRequest has no info".into()))?;
        let mut status = CancelStatus::NotCancellable;
        for endpoint in info.endpoint {
            let Some(ticket) = endpoint.ticket else { continue };
            let Ok(any) = Any::decode(ticket.ticket) else { continue };
            let Ok(Command::TicketStatementQuery(t)) = Command::try_from(any) else { continue };
            if let Sealed::Query { id, .. } = self.sealer.open(&ctx.identity.user, &t.statement_handle)? {
                self.queries.cancel_ticket(&id);
                status = CancelStatus::Cancelled;
            }
        }
        Ok(CancelFlightInfoResult { status: status as i32 })
    }
}
