//! JWT authentication against a real (tiny) JWKS / OpenID discovery server on 127.0.0.1:0,
//! with keys generated at test time. Each server counts the requests per path and stops when
//! dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use parking_lot::Mutex;
use quiver_auth::{AuthError, Authenticator, Credentials, Identity, JwtAuthenticator, JwtConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AUDIENCE: &str = "quiver";

/// Responses by path, and how many requests each path got.
#[derive(Default)]
struct Routes {
    bodies: HashMap<String, (u16, String)>,
    hits: HashMap<String, usize>,
}

/// A JWKS / discovery server. Dropping it stops it.
struct Idp {
    addr: SocketAddr,
    scheme: &'static str,
    routes: Arc<Mutex<Routes>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Idp {
    /// Plain http; `delay` holds every response back (so concurrent requests overlap).
    async fn start(delay: Duration) -> Idp {
        Idp::start_with(delay, None).await
    }

    async fn start_with(delay: Duration, tls: Option<tokio_rustls::TlsAcceptor>) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let served = routes.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
                    _ = &mut stopped => return,
                };
                let routes = served.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve(stream, routes, delay).await;
                            }
                        }
                        None => serve(stream, routes, delay).await,
                    }
                });
            }
        });
        Idp { addr, scheme, routes, _stop: stop }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    fn set(&self, path: &str, status: u16, body: String) {
        self.routes.lock().bodies.insert(path.into(), (status, body));
    }

    fn set_keys(&self, keys: &[&TestKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        self.set("/jwks", 200, json!({ "keys": keys }).to_string());
    }

    fn hits(&self, path: &str) -> usize {
        self.routes.lock().hits.get(path).copied().unwrap_or(0)
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    routes: Arc<Mutex<Routes>>,
    delay: Duration,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, body) = {
        let mut routes = routes.lock();
        *routes.hits.entry(path.clone()).or_default() += 1;
        routes.bodies.get(&path).cloned().unwrap_or((404, "{}".into()))
    };
    tokio::time::sleep(delay).await;
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A signing key and its public JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn new(kid: &str, alg: Algorithm) -> TestKey {
        let pair = match alg {
            Algorithm::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            Algorithm::ES384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            _ => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
        }
        .expect("keygen");
        let pem = pair.serialize_pem();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let raw = pair.public_key_raw();
        let (encoding, jwk) = match alg {
            Algorithm::EdDSA => {
                (EncodingKey::from_ed_pem(pem.as_bytes()), json!({"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}))
            }
            _ => {
                // An uncompressed point: 0x04 || x || y.
                let (x, y) = raw[1..].split_at((raw.len() - 1) / 2);
                let crv = if alg == Algorithm::ES256 { "P-256" } else { "P-384" };
                (EncodingKey::from_ec_pem(pem.as_bytes()), json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)}))
            }
        };
        let mut jwk = jwk;
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(format!("{alg:?}"));
        TestKey { alg, kid: kid.into(), encoding: encoding.expect("encoding key"), jwk }
    }

    /// A token for `sub` from `iss`, valid for five minutes, naming this key's kid.
    fn token(&self, iss: &str, sub: &str) -> String {
        self.token_with_kid(iss, sub, Some(&self.kid))
    }

    fn token_with_kid(&self, iss: &str, sub: &str, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(String::from);
        let now = get_current_timestamp();
        let claims = json!({"iss": iss, "aud": AUDIENCE, "sub": sub, "exp": now + 300, "iat": now});
        encode(&header, &claims, &self.encoding).expect("sign")
    }
}

const ISSUER: &str = "https://idp.test";

fn jwks_config(idp: &Idp) -> JwtConfig {
    JwtConfig {
        jwks_url: Some(idp.url("/jwks")),
        allow_insecure_http: true,
        required_issuer: Some(ISSUER.into()),
        required_audience: Some(vec![AUDIENCE.into()]),
        ..JwtConfig::default()
    }
}

async fn check(auth: &JwtAuthenticator, token: &str) -> Result<Option<Identity>, AuthError> {
    auth.authenticate(&Credentials::Bearer(token.to_string())).await
}

async fn user(auth: &JwtAuthenticator, token: &str) -> String {
    check(auth, token).await.expect("accepted").expect("identity").user
}

fn assert_denied(result: Result<Option<Identity>, AuthError>, needle: &str) {
    match result {
        Err(AuthError::Denied(detail)) => assert!(detail.contains(needle), "`{detail}` lacks `{needle}`"),
        other => panic!("expected Denied({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn keys_are_fetched_lazily_once_and_cached() {
    let idp = Idp::start(Duration::from_millis(50)).await;
    let k1 = TestKey::new("k1", Algorithm::ES256);
    idp.set_keys(&[&k1]);
    let auth = Arc::new(JwtAuthenticator::new(&jwks_config(&idp)).expect("authenticator"));
    assert_eq!(idp.hits("/jwks"), 0, "nothing fetched at construction");
    // Twenty concurrent first requests share one fetch.
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (auth, token) = (auth.clone(), k1.token(ISSUER, &format!("user{i}")));
            tokio::spawn(async move { check(&auth, &token).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.expect("join").expect("accepted").is_some());
    }
    assert_eq!(idp.hits("/jwks"), 1);
    // Cached: no more requests.
    let started = Instant::now();
    for _ in 0..50 {
        assert_eq!(user(&auth, &k1.token(ISSUER, "alice")).await, "alice");
    }
    assert_eq!(idp.hits("/jwks"), 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn unknown_kid_refreshes_jwks_at_most_once_per_cooldown() {
    let idp = Idp::start(Duration::from_millis(100)).await;
    let k1 = TestKey::new("k1", Algorithm::ES256);
    let stranger = TestKey::new("stranger", Algorithm::ES256);
    idp.set_keys(&[&k1]);
    let auth = Arc::new(JwtAuthenticator::new(&jwks_config(&idp)).expect("authenticator"));
    assert_eq!(user(&auth, &k1.token(ISSUER, "alice")).await, "alice");
    assert_eq!(idp.hits("/jwks"), 1);
    // Fifty concurrent tokens naming unknown kids: one refresh between them.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let auth = auth.clone();
            let token = stranger.token_with_kid(ISSUER, "mallory", Some(&format!("unknown-{i}")));
            tokio::spawn(async move { check(&auth, &token).await })
        })
        .collect();
    for task in tasks {
        assert_denied(task.await.expect("join"), "no key with kid");
    }
    assert_eq!(idp.hits("/jwks"), 2, "one refresh for all concurrent misses");
    // Within the cooldown, more unknown kids cost no request at all.
    for i in 0..20 {
        let token = stranger.token_with_kid(ISSUER, "mallory", Some(&format!("again-{i}")));
        assert_denied(check(&auth, &token).await, "no key with kid");
    }
    assert_eq!(idp.hits("/jwks"), 2);
    // Known keys keep working.
    assert_eq!(user(&auth, &k1.token(ISSUER, "bob")).await, "bob");
}

#[tokio::test]
async fn key_rotation() {
    let idp = Idp::start(Duration::ZERO).await;
    let old = TestKey::new("old", Algorithm::ES256);
    let new = TestKey::new("new", Algorithm::EdDSA);
    idp.set_keys(&[&old]);
    let auth = JwtAuthenticator::new(&jwks_config(&idp)).expect("authenticator");
    assert_eq!(user(&auth, &old.token(ISSUER, "alice")).await, "alice");
    // The IdP rotates: both keys published. The first token naming the new kid refreshes once.
    idp.set_keys(&[&new, &old]);
    assert_eq!(user(&auth, &new.token(ISSUER, "bob")).await, "bob");
    assert_eq!(idp.hits("/jwks"), 2, "one refresh picked up the new key");
    // The old key is still published, so its tokens are still good; no further fetch.
    assert_eq!(user(&auth, &old.token(ISSUER, "alice")).await, "alice");
    assert_eq!(user(&auth, &new.token(ISSUER, "bob")).await, "bob");
    assert_eq!(idp.hits("/jwks"), 2);
    // Another rotation within the cooldown is not fetched: its tokens wait for the cooldown.
    let newer = TestKey::new("newer", Algorithm::ES256);
    idp.set_keys(&[&newer, &new]);
    assert_denied(check(&auth, &newer.token(ISSUER, "carol")).await, "no key with kid `newer`");
    assert_eq!(idp.hits("/jwks"), 2);
}

#[tokio::test]
async fn rotated_keys_are_picked_up_after_the_cooldown() {
    let idp = Idp::start(Duration::ZERO).await;
    let (a, b, c) =
        (TestKey::new("a", Algorithm::ES256), TestKey::new("b", Algorithm::ES256), TestKey::new("c", Algorithm::ES256));
    idp.set_keys(&[&a]);
    let auth = JwtAuthenticator::new(&JwtConfig { jwks_refresh_cooldown_secs: 1, ..jwks_config(&idp) })
        .expect("authenticator");
    assert_eq!(user(&auth, &a.token(ISSUER, "alice")).await, "alice");
    idp.set_keys(&[&b]);
    let refreshed = Instant::now();
    assert_eq!(user(&auth, &b.token(ISSUER, "bob")).await, "bob");
    idp.set_keys(&[&c]);
    assert_denied(check(&auth, &c.token(ISSUER, "carol")).await, "no key with kid `c`");
    tokio::time::sleep(Duration::from_millis(1050).saturating_sub(refreshed.elapsed())).await;
    assert_eq!(user(&auth, &c.token(ISSUER, "carol")).await, "carol");
    assert_eq!(idp.hits("/jwks"), 3);
    // `a` is gone from the set now, and with it its tokens.
    assert_denied(check(&auth, &a.token(ISSUER, "alice")).await, "no key with kid `a`");
}

#[tokio::test]
async fn oidc_discovery() {
    let idp = Idp::start(Duration::ZERO).await;
    let issuer = idp.url("/realms/test");
    let key = TestKey::new("k1", Algorithm::ES384);
    idp.set_keys(&[&key]);
    idp.set(
        "/realms/test/.well-known/openid-configuration",
        200,
        json!({"issuer": issuer, "jwks_uri": idp.url("/jwks")}).to_string(),
    );
    let config = JwtConfig {
        issuer_url: Some(issuer.clone()),
        allow_insecure_http: true,
        required_audience: Some(vec![AUDIENCE.into()]),
        ..JwtConfig::default()
    };
    let auth = JwtAuthenticator::new(&config).expect("authenticator");
    let id = check(&auth, &key.token(&issuer, "alice")).await.expect("accepted").expect("identity");
    assert_eq!((id.user.as_str(), id.attributes.get("iss")), ("alice", Some(&issuer)));
    assert_eq!(idp.hits("/realms/test/.well-known/openid-configuration"), 1);
    // The issuer URL is also the required issuer.
    assert_denied(check(&auth, &key.token(ISSUER, "alice")).await, "issuer");

    // A discovery document naming another issuer is not trusted.
    idp.set(
        "/realms/evil/.well-known/openid-configuration",
        200,
        json!({"issuer": "https://evil.test", "jwks_uri": idp.url("/jwks")}).to_string(),
    );
    let evil = idp.url("/realms/evil");
    let auth = JwtAuthenticator::new(&JwtConfig { issuer_url: Some(evil.clone()), ..config }).expect("authenticator");
    match check(&auth, &key.token(&evil, "alice")).await {
        Err(AuthError::Unavailable(msg)) => assert!(msg.contains("https://evil.test"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_jwks_is_unavailable_and_the_gateway_still_starts() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}/jwks");
    let config = JwtConfig {
        jwks_url: Some(url.clone()),
        allow_insecure_http: true,
        required_issuer: Some(ISSUER.into()),
        required_audience: Some(vec![AUDIENCE.into()]),
        ..JwtConfig::default()
    };
    let auth = JwtAuthenticator::new(&config).expect("built while the IdP is down");
    let key = TestKey::new("k1", Algorithm::ES256);
    match check(&auth, &key.token(ISSUER, "alice")).await {
        Err(AuthError::Unavailable(msg)) => assert!(msg.contains(&format!("JWKS {url} unreachable")), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // An IdP answering 500 is unavailable too.
    let idp = Idp::start(Duration::ZERO).await;
    idp.set("/jwks", 500, "{}".into());
    let auth = JwtAuthenticator::new(&jwks_config(&idp)).expect("authenticator");
    match check(&auth, &key.token(ISSUER, "alice")).await {
        Err(AuthError::Unavailable(msg)) => assert!(msg.contains("HTTP 500"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn kid_less_tokens_need_exactly_one_fitting_key() {
    let idp = Idp::start(Duration::ZERO).await;
    let es = TestKey::new("es", Algorithm::ES256);
    let ed = TestKey::new("ed", Algorithm::EdDSA);
    idp.set_keys(&[&es, &ed]);
    let auth = JwtAuthenticator::new(&jwks_config(&idp)).expect("authenticator");
    assert_eq!(user(&auth, &es.token_with_kid(ISSUER, "alice", None)).await, "alice");
    let es2 = TestKey::new("es2", Algorithm::ES256);
    idp.set_keys(&[&es, &es2]);
    let auth = JwtAuthenticator::new(&jwks_config(&idp)).expect("authenticator");
    assert_denied(check(&auth, &es.token_with_kid(ISSUER, "alice", None)).await, "several");
}

#[tokio::test]
async fn token_alg_must_match_the_jwk() {
    let idp = Idp::start(Duration::ZERO).await;
    let p256 = TestKey::new("p256", Algorithm::ES256);
    let p384 = TestKey::new("p384", Algorithm::ES384);
    idp.set_keys(&[&p256]);
    let auth = JwtAuthenticator::new(&jwks_config(&idp)).expect("authenticator");
    // An ES384 token claiming the P-256 key's kid is refused before any signature check.
    assert_denied(check(&auth, &p384.token_with_kid(ISSUER, "alice", Some("p256"))).await, "p256");
}

#[tokio::test]
async fn https_jwks_with_a_ca_file() {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&server_key, &ca)
        .expect("server cert");
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .expect("server tls");
    let idp = Idp::start_with(Duration::ZERO, Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await;
    let key = TestKey::new("k1", Algorithm::ES256);
    idp.set_keys(&[&key]);

    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let config = JwtConfig { allow_insecure_http: false, ca_file: Some(ca_file), ..jwks_config(&idp) };
    assert!(config.jwks_url.as_deref().is_some_and(|u| u.starts_with("https://")));
    let auth = JwtAuthenticator::new(&config).expect("authenticator");
    assert_eq!(user(&auth, &key.token(ISSUER, "alice")).await, "alice");

    // Without the CA (system roots) the server is not trusted.
    let auth = JwtAuthenticator::new(&JwtConfig { ca_file: None, ..config }).expect("authenticator");
    match check(&auth, &key.token(ISSUER, "alice")).await {
        Err(AuthError::Unavailable(msg)) => assert!(msg.contains("unreachable"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A missing CA file is named at construction.
    let err = JwtAuthenticator::new(&JwtConfig { ca_file: Some(dir.path().join("nope.pem")), ..jwks_config(&idp) })
        .expect_err("refused");
    assert!(err.contains("nope.pem"), "{err}");
}
