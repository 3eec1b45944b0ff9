//! Authentication as a tower layer in front of the Flight service.
//!
//! Every request's `authorization` header (Basic or Bearer) is checked here, once, and the
//! resulting [`CallContext`] is put into the request extensions for the handlers. On
//! Handshake, and on any call authenticated by password, the reply carries
//! `authorization: Bearer <session token>` so clients (ADBC, JDBC) switch to the cheap path.

use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use quiver_auth::{AuthError, AuthFailure, AuthenticatorChain, Credentials, Identity, SessionTokens};
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use crate::session::cookie_session_id;

/// The gRPC path of Handshake.
const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// Who is calling and in which session; found in every request's extensions.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The authenticated caller.
    pub identity: Identity,
    /// The caller's session id, from its token or cookie.
    pub session_id: Option<String>,
}

/// Shared authentication state.
pub struct AuthState {
    chain: AuthenticatorChain,
    tokens: SessionTokens,
}

impl AuthState {
    /// A chain of methods plus the gateway's token issuer.
    pub fn new(chain: AuthenticatorChain, tokens: SessionTokens) -> Self {
        AuthState { chain, tokens }
    }

    /// Authenticates one set of headers. Returns the context and, when a new session token
    /// should be handed out, the token.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        is_handshake: bool,
    ) -> Result<(CallContext, Option<String>), AuthFailure> {
        let credentials = parse_authorization(headers).map_err(|error| AuthFailure { method: "header", error })?;
        let cookie = headers.get(http::header::COOKIE).and_then(|v| v.to_str().ok()).and_then(cookie_session_id);
        if let Credentials::Bearer(token) = &credentials
            && SessionTokens::is_session_token(token)
        {
            let claims = self.tokens.verify(token).map_err(|error| AuthFailure { method: "token", error })?;
            let identity = SessionTokens::identity(&claims);
            // A Bearer handshake (the JDBC driver does one even with `token=`) gets its token back.
            let reply = is_handshake.then(|| token.clone());
            return Ok((CallContext { identity, session_id: Some(claims.sid) }, reply));
        }
        let identity = self.chain.authenticate(&credentials).await?;
        let issue = is_handshake || matches!(credentials, Credentials::Basic { .. });
        if issue {
            let sid = cookie.clone().unwrap_or_else(crate::tickets::new_id);
            let token = self.tokens.issue(&identity, &sid);
            Ok((CallContext { identity, session_id: Some(sid) }, Some(token)))
        } else {
            Ok((CallContext { identity, session_id: cookie }, None))
        }
    }
}

/// Reads the `authorization` header.
pub fn parse_authorization(headers: &http::HeaderMap) -> Result<Credentials, AuthError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    let value = value.to_str().map_err(|_| AuthError::Unsupported("authorization header is not ASCII".into()))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            if rest.len() > 4096 {
                return Err(AuthError::InvalidCredentials);
            }
            // The ADBC Go driver sends Basic credentials without `=` padding.
            const LENIENT: GeneralPurpose = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            let decoded =
                LENIENT.decode(rest).map_err(|_| AuthError::Unsupported("malformed Basic credentials".into()))?;
            let text =
                String::from_utf8(decoded).map_err(|_| AuthError::Unsupported("malformed Basic credentials".into()))?;
            let (user, password) = text.split_once(':').unwrap_or((&text, ""));
            Ok(Credentials::Basic { user: user.to_string(), password: password.to_string() })
        }
        "bearer" if !rest.is_empty() => Ok(Credentials::Bearer(rest.to_string())),
        _ => Err(AuthError::Unsupported(format!("unsupported authorization scheme `{scheme}`"))),
    }
}

/// The layer.
#[derive(Clone)]
pub struct AuthLayer {
    state: Arc<AuthState>,
}

impl AuthLayer {
    /// Authenticates with `state`.
    pub fn new(state: Arc<AuthState>) -> Self {
        AuthLayer { state }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, state: self.state.clone() }
    }
}

/// The service the layer wraps around the Flight service.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    state: Arc<AuthState>,
}

impl<S, B, ResBody> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one we call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let is_handshake = request.uri().path() == HANDSHAKE_PATH;
            match state.authenticate(request.headers(), is_handshake).await {
                Ok((context, token)) => {
                    tracing::debug!(user = %context.identity.user, method = %context.identity.method, path = request.uri().path(), "authenticated");
                    request.extensions_mut().insert(context);
                    let mut response = inner.call(request).await?;
                    if let Some(token) = token
                        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
                    {
                        response.headers_mut().insert(http::header::AUTHORIZATION, value);
                    }
                    Ok(response)
                }
                Err(AuthFailure { method, error: e }) => {
                    tracing::info!(path = request.uri().path(), method, reason = %e.log_detail(), "authentication failed");
                    Ok(Status::from(crate::error::GatewayError::Auth(e)).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    fn headers(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(auth).expect("ascii"));
        h
    }

    #[test]
    fn authorization_headers_parse() {
        let basic = format!("Basic {}", STANDARD.encode("alice:pa:ss"));
        assert_eq!(
            parse_authorization(&headers(&basic)),
            Ok(Credentials::Basic { user: "alice".into(), password: "pa:ss".into() })
        );
        assert_eq!(parse_authorization(&headers("Bearer abc")), Ok(Credentials::Bearer("abc".into())));
        // Unpadded, as the ADBC Go driver sends it.
        let unpadded = format!("Basic {}", STANDARD.encode("bob:bob-secret").trim_end_matches('='));
        assert_eq!(
            parse_authorization(&headers(&unpadded)),
            Ok(Credentials::Basic { user: "bob".into(), password: "bob-secret".into() })
        );
        assert_eq!(parse_authorization(&http::HeaderMap::new()), Ok(Credentials::None));
        assert!(parse_authorization(&headers("Basic !!!")).is_err());
        assert!(parse_authorization(&headers("Digest x")).is_err());
    }

    #[tokio::test]
    async fn handshake_issues_a_token_that_later_calls_use() {
        let tokens = SessionTokens::new(b"k".to_vec(), std::time::Duration::from_secs(60));
        let chain = AuthenticatorChain::new(vec![Arc::new(quiver_auth::OpenAuthenticator)]);
        let state = AuthState::new(chain, tokens);
        let basic = format!("Basic {}", STANDARD.encode("alice:"));
        let (ctx, token) = state.authenticate(&headers(&basic), true).await.expect("auth");
        assert_eq!(ctx.identity.user, "alice");
        let token = token.expect("token on handshake");
        let (again, reply) = state.authenticate(&headers(&format!("Bearer {token}")), false).await.expect("token");
        assert_eq!(again.identity.user, "alice");
        assert_eq!(again.session_id, ctx.session_id);
        assert!(reply.is_none(), "no unrelated authorization header on ordinary calls");
        let forged = format!("Bearer {}x", token);
        assert!(state.authenticate(&headers(&forged), false).await.is_err());
    }
}
