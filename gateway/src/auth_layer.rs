//! Authentication as a tower layer in front of the Flight service.
//!
//! Every request's `authorization` header (Basic or Bearer) is checked here, once, and the
//! resulting [`CallContext`] is put into the request extensions for the handlers. On
//! Handshake, and on any call authenticated by password, the reply carries
//! `authorization: Bearer <session token>` so clients (ADBC, JDBC) switch to the cheap path.

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use quiver_auth::{AuthError, AuthFailure, AuthenticatorChain, Credentials, Identity, SessionTokens};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::Metrics;
use crate::session::cookie_session_id;

/// The gRPC path of Handshake.
const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// Who is calling and in which session; found in every request's extensions.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The client's `x-quiver-source` header, if sent (resource groups, routing).
    pub source: Option<String>,
    /// The client's `x-quiver-client-tags` header, if sent (comma-separated).
    pub client_tags: Option<Vec<String>>,
    /// The authenticated caller.
    pub identity: Identity,
    /// The caller's session id, from its token or cookie.
    pub session_id: Option<String>,
    /// The client's `x-quiver-cache-control` header (`no-cache`, `only-if-cached`,
    /// `max-age=N`), if sent.
    pub cache_control: Option<String>,
}

/// The outcome of authenticating one request.
#[derive(Debug)]
pub struct Authenticated {
    /// Who is calling.
    pub context: CallContext,
    /// A new session token to hand back in `authorization: Bearer ...`, after a login or on
    /// Handshake.
    pub token: Option<String>,
    /// A SPNEGO mutual-authentication token to hand back in `www-authenticate: Negotiate ...`.
    pub negotiate_reply: Option<Vec<u8>>,
    /// The method chain ran (a login); false when a session token was accepted.
    pub login: bool,
}

impl Authenticated {
    /// Adds the reply headers (`authorization`, `www-authenticate`) to `headers`.
    pub fn add_reply_headers(&self, headers: &mut http::HeaderMap) {
        if let Some(token) = &self.token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(http::header::AUTHORIZATION, value);
        }
        if let Some(reply) = &self.negotiate_reply
            && let Ok(value) = HeaderValue::from_str(&format!("Negotiate {}", STANDARD.encode(reply)))
        {
            headers.insert(http::header::WWW_AUTHENTICATE, value);
        }
    }
}

/// Failed logins counted per user and per client address over a fixed window; past a limit,
/// further logins for that user (or from that address) are refused without running the
/// chain, so password guessing costs the gateway nothing and locks out no one for long.
pub struct LoginThrottle {
    per_user: u32,
    per_address: u32,
    failures: moka::sync::Cache<String, Arc<parking_lot::Mutex<(u32, Instant)>>>,
    window: Duration,
}

impl LoginThrottle {
    /// At most `per_user` failed logins for one user name and `per_address` from one address
    /// per `window`; 0 is unlimited.
    pub fn new(per_user: u32, per_address: u32, window: Duration) -> Self {
        LoginThrottle {
            per_user,
            per_address,
            failures: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(window).build(),
            window,
        }
    }

    fn keys(user: Option<&str>, address: Option<IpAddr>) -> Vec<(String, bool)> {
        let mut keys = Vec::new();
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            keys.push((format!("user:{u}"), true));
        }
        if let Some(a) = address {
            keys.push((format!("addr:{a}"), false));
        }
        keys
    }

    /// How long until a login for `user` from `address` may be tried again, if it may not now.
    pub fn blocked(&self, user: Option<&str>, address: Option<IpAddr>) -> Option<Duration> {
        Self::keys(user, address).into_iter().find_map(|(key, is_user)| {
            let limit = if is_user { self.per_user } else { self.per_address };
            let entry = self.failures.get(&key)?;
            let (count, since) = *entry.lock();
            (limit > 0 && count >= limit)
                .then(|| self.window.saturating_sub(since.elapsed()).max(Duration::from_secs(1)))
        })
    }

    /// Counts a failed login.
    pub fn failed(&self, user: Option<&str>, address: Option<IpAddr>) {
        for (key, _) in Self::keys(user, address) {
            let entry = self.failures.get_with(key, || Arc::new(parking_lot::Mutex::new((0, Instant::now()))));
            entry.lock().0 += 1;
        }
    }

    /// A successful login clears the user's count (not the address's).
    pub fn succeeded(&self, user: &str) {
        self.failures.invalidate(&format!("user:{user}"));
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle::new(10, 100, Duration::from_secs(60))
    }
}

/// Shared authentication state: the method chain, the token issuer and the counters.
pub struct AuthState {
    chain: AuthenticatorChain,
    tokens: SessionTokens,
    metrics: Arc<Metrics>,
    throttle: LoginThrottle,
    sessions: Option<crate::session::SessionStore>,
}

impl AuthState {
    /// A chain of methods plus the gateway's token issuer.
    pub fn new(chain: AuthenticatorChain, tokens: SessionTokens, metrics: Arc<Metrics>) -> Self {
        AuthState { chain, tokens, metrics, throttle: LoginThrottle::default(), sessions: None }
    }

    /// The same state limiting failed logins with `throttle`.
    pub fn with_throttle(mut self, throttle: LoginThrottle) -> Self {
        self.throttle = throttle;
        self
    }

    /// The same state continuing a client's existing session (cookie) at login only when
    /// `sessions` holds it for the same user: a client never picks its own session id.
    pub fn with_sessions(mut self, sessions: crate::session::SessionStore) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// The configured method names, in order.
    pub fn method_names(&self) -> Vec<&'static str> {
        self.chain.names()
    }

    /// Authenticates one request from its headers and, on a TLS connection, the verified
    /// client certificate (DER). A session token is checked first (no directory server is
    /// asked); otherwise the `authorization` header, or failing that the certificate, goes
    /// through the chain. Every outcome is logged and counted.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        client_certificate: Option<Vec<u8>>,
        is_handshake: bool,
        address: Option<IpAddr>,
    ) -> Result<Authenticated, AuthFailure> {
        let result = self.authenticate_inner(headers, client_certificate, is_handshake, address).await;
        match &result {
            Ok(done) => {
                let method = if done.login { done.context.identity.method.as_str() } else { "token" };
                self.metrics.auth_success(method);
            }
            Err(AuthFailure { method, error }) => {
                tracing::info!(method, reason = %error.log_detail(), "authentication failed");
                self.metrics.auth_failure(method, error.reason());
            }
        }
        result
    }

    async fn authenticate_inner(
        &self,
        headers: &http::HeaderMap,
        client_certificate: Option<Vec<u8>>,
        is_handshake: bool,
        address: Option<IpAddr>,
    ) -> Result<Authenticated, AuthFailure> {
        let mut credentials = parse_authorization(headers).map_err(|error| AuthFailure { method: "header", error })?;
        let cookie = headers.get(http::header::COOKIE).and_then(|v| v.to_str().ok()).and_then(cookie_session_id);
        let header =
            |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
        let source = header(crate::flight::SOURCE_HEADER).map(String::from);
        let client_tags = header(crate::flight::CLIENT_TAGS_HEADER).map(crate::session::split_tags);
        let cache_control = header(crate::cache::CACHE_CONTROL_HEADER).map(String::from);
        if let Credentials::Bearer(token) = &credentials
            && SessionTokens::is_session_token(token)
        {
            let claims = self.tokens.verify(token).map_err(|error| AuthFailure { method: "token", error })?;
            let identity = SessionTokens::identity(&claims);
            // A Bearer handshake (the JDBC driver does one even with `token=`) gets its token back.
            let token = is_handshake.then(|| token.clone());
            let context = CallContext { identity, session_id: Some(claims.sid), source, client_tags, cache_control };
            return Ok(Authenticated { context, token, negotiate_reply: None, login: false });
        }
        // The `authorization` header wins; a verified client certificate speaks only for a
        // caller that presented nothing else.
        if let (Credentials::None, Some(der)) = (&credentials, client_certificate) {
            credentials = Credentials::Certificate(der);
        }
        let claimed = match &credentials {
            Credentials::Basic { user, .. } => Some(user.clone()),
            _ => None,
        };
        if !matches!(credentials, Credentials::None)
            && let Some(wait) = self.throttle.blocked(claimed.as_deref(), address)
        {
            return Err(AuthFailure {
                method: "throttle",
                error: AuthError::Unavailable(format!(
                    "too many failed logins for this user or from this address; retry in {} s",
                    wait.as_secs()
                )),
            });
        }
        let mut identity = match self.chain.authenticate(&credentials).await {
            Ok(identity) => identity,
            Err(failure) => {
                if matches!(failure.error, AuthError::InvalidCredentials | AuthError::Denied(_)) {
                    self.throttle.failed(claimed.as_deref(), address);
                }
                return Err(failure);
            }
        };
        if claimed.is_some() {
            self.throttle.succeeded(&identity.user);
        }
        let negotiate_reply = identity.reply_token.take();
        tracing::info!(user = %identity.user, method = %identity.method, "login");
        // Any login with presented credentials, and every Handshake, gets a session token so
        // later calls skip the slow path (LDAP, KDC, JWKS).
        if is_handshake || !matches!(credentials, Credentials::None) {
            // A session named by the client's cookie continues only if it is already this
            // user's; otherwise the gateway picks the id (no session fixation).
            let continued =
                cookie.filter(|id| self.sessions.as_ref().is_some_and(|store| store.get(id, &identity.user).is_some()));
            let sid = continued.unwrap_or_else(crate::tickets::new_id);
            let token = self.tokens.issue(&identity, &sid);
            let context = CallContext { identity, session_id: Some(sid), source, client_tags, cache_control };
            Ok(Authenticated { context, token: Some(token), negotiate_reply, login: true })
        } else {
            let context = CallContext { identity, session_id: cookie, source, client_tags, cache_control };
            Ok(Authenticated { context, token: None, negotiate_reply, login: true })
        }
    }
}

/// Largest `authorization` value decoded for Basic and Negotiate.
const MAX_AUTHORIZATION_BYTES: usize = 64 * 1024;

/// Reads the `authorization` header.
pub fn parse_authorization(headers: &http::HeaderMap) -> Result<Credentials, AuthError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(Credentials::None);
    };
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthError::Unsupported("authorization header too large".into()));
    }
    let value = value.to_str().map_err(|_| AuthError::Unsupported("authorization header is not ASCII".into()))?;
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    // The ADBC Go driver sends Basic credentials without `=` padding.
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            if rest.len() > 4096 {
                return Err(AuthError::InvalidCredentials);
            }
            let decoded =
                LENIENT.decode(rest).map_err(|_| AuthError::Unsupported("malformed Basic credentials".into()))?;
            let text =
                String::from_utf8(decoded).map_err(|_| AuthError::Unsupported("malformed Basic credentials".into()))?;
            let (user, password) = text.split_once(':').unwrap_or((&text, ""));
            Ok(Credentials::Basic { user: user.to_string(), password: password.to_string() })
        }
        "bearer" if !rest.is_empty() => Ok(Credentials::Bearer(rest.to_string())),
        "negotiate" if !rest.is_empty() => LENIENT
            .decode(rest)
            .map(Credentials::Negotiate)
            .map_err(|_| AuthError::Unsupported("malformed Negotiate token".into())),
        _ => Err(AuthError::Unsupported(format!("unsupported authorization scheme `{scheme}`"))),
    }
}

/// The client's address, from the connection (plain TCP or TLS).
pub fn client_address(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(info) = extensions.get::<TcpConnectInfo>() {
        return info.remote_addr().map(|a| a.ip());
    }
    extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|i| i.get_ref().remote_addr()).map(|a| a.ip())
}

/// The verified client certificate (DER) of a TLS connection, if the client sent one.
pub fn client_certificate(extensions: &http::Extensions) -> Option<Vec<u8>> {
    let info = extensions.get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    certs.first().map(|c| c.as_ref().to_vec())
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
            let certificate = client_certificate(request.extensions());
            let address = client_address(request.extensions());
            match state.authenticate(request.headers(), certificate, is_handshake, address).await {
                Ok(done) => {
                    request.extensions_mut().insert(done.context.clone());
                    let mut response = inner.call(request).await?;
                    done.add_reply_headers(response.headers_mut());
                    Ok(response)
                }
                Err(AuthFailure { error: e, .. }) => Ok(Status::from(crate::error::GatewayError::Auth(e)).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parse_authorization(&headers("Negotiate YWJj")), Ok(Credentials::Negotiate(b"abc".to_vec())));
        assert!(parse_authorization(&headers("Negotiate %%%")).is_err());
    }

    #[tokio::test]
    async fn handshake_issues_a_token_that_later_calls_use() {
        let tokens = SessionTokens::new(b"k".to_vec(), std::time::Duration::from_secs(60));
        let chain = AuthenticatorChain::new(vec![Arc::new(quiver_auth::OpenAuthenticator)]);
        let metrics = Arc::new(Metrics::new());
        let state = AuthState::new(chain, tokens, metrics.clone());
        let basic = format!("Basic {}", STANDARD.encode("alice:"));
        let done = state.authenticate(&headers(&basic), None, true, None).await.expect("auth");
        assert_eq!(done.context.identity.user, "alice");
        let token = done.token.expect("token on handshake");
        let again = state.authenticate(&headers(&format!("Bearer {token}")), None, false, None).await.expect("token");
        assert_eq!(again.context.identity.user, "alice");
        assert_eq!(again.context.session_id, done.context.session_id);
        assert!(again.token.is_none(), "no unrelated authorization header on ordinary calls");
        let forged = format!("Bearer {}x", token);
        assert!(state.authenticate(&headers(&forged), None, false, None).await.is_err());
        let text = metrics.encode();
        assert!(text.contains(r#"method="open",result="success""#), "{text}");
        assert!(text.contains(r#"method="token",result="success""#), "{text}");
        assert!(text.contains(r#"method="token",result="failure",reason="invalid_token"} 1"#), "{text}");
    }

    #[test]
    fn failed_logins_are_limited_per_user_and_per_address_and_success_clears_the_user() {
        let throttle = LoginThrottle::new(3, 5, Duration::from_secs(60));
        let here: Option<IpAddr> = "10.1.2.3".parse().ok();
        let there: Option<IpAddr> = "10.9.9.9".parse().ok();
        for _ in 0..3 {
            assert!(throttle.blocked(Some("alice"), here).is_none());
            throttle.failed(Some("alice"), here);
        }
        // alice is blocked from anywhere; bob from the same address is not (yet).
        assert!(throttle.blocked(Some("alice"), there).is_some());
        assert!(throttle.blocked(Some("bob"), here).is_none());
        throttle.failed(Some("bob"), here);
        throttle.failed(Some("carol"), here);
        // Five failures from one address block it for every user.
        assert!(throttle.blocked(Some("dave"), here).is_some());
        assert!(throttle.blocked(Some("dave"), there).is_none());
        throttle.succeeded("alice");
        assert!(throttle.blocked(Some("alice"), there).is_none());
        let unlimited = LoginThrottle::new(0, 0, Duration::from_secs(60));
        for _ in 0..50 {
            unlimited.failed(Some("eve"), here);
        }
        assert!(unlimited.blocked(Some("eve"), here).is_none());
    }
}
