//! Verification keys: one key from a file, or a JWKS fetched over HTTPS (directly or through
//! OpenID Connect discovery), decoded once into `DecodingKey`s and cached. An unknown `kid`
//! triggers at most one fetch per cooldown (counted from the last such fetch), shared by every
//! request that is waiting for it; the cached set is fetched again after its TTL.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use parking_lot::RwLock;
use serde_json::Value;

use super::config::{JwtConfig, KeyType, check_url};
use crate::AuthError;

/// Largest JWKS or discovery document read; the rest is not downloaded.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Shortest HMAC secret accepted (256 bits, RFC 7518 section 3.2 for HS256).
const MIN_HMAC_SECRET_BYTES: usize = 32;
/// After a failed fetch while no keys are known, wait at least this long before the next try
/// (or the cooldown, if shorter), so a down IdP is not hammered by every request.
const FAILED_FETCH_BACKOFF: Duration = Duration::from_secs(5);

/// One key a token can be verified with.
#[derive(Debug)]
pub(crate) struct VerificationKey {
    /// The JWK `kid`, if any.
    pub kid: Option<String>,
    /// The only algorithm this key verifies, when the JWK names one (`alg`) or the curve
    /// fixes it (P-256 -> ES256); otherwise any algorithm of `family`.
    pub alg: Option<Algorithm>,
    /// RSA, EC, Ed or HMAC.
    pub family: AlgorithmFamily,
    /// Decoded once, used for every token.
    pub key: DecodingKey,
}

impl VerificationKey {
    /// Whether a token signed with `alg` may be verified with this key.
    pub fn fits(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

/// The keys known at one moment.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub keys: Vec<Arc<VerificationKey>>,
}

impl KeySet {
    /// The key for a token signed with `alg` naming `kid`: by kid when given, else the only
    /// key that fits `alg`. `Err` when a kid-less token has several candidates.
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<Option<Arc<VerificationKey>>, String> {
        match kid {
            Some(kid) => Ok(self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).cloned()),
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(Some(key.clone())),
                    (None, _) => Ok(None),
                    (Some(_), Some(_)) => Err(format!("token has no kid and several {alg:?} keys fit")),
                }
            }
        }
    }
}

/// Reads `key_file`: a PEM public key or an HMAC secret. The error names the file.
pub(crate) fn load_key_file(path: &Path, key_type: Option<KeyType>) -> Result<VerificationKey, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("key_file {}: {e}", path.display()))?;
    let named = |e: String| format!("key_file {}: {e}", path.display());
    let text = String::from_utf8_lossy(&bytes);
    // A PEM block is never an HMAC secret, whatever `key_type` says: verifying HS256 with the
    // bytes of an RSA public key lets anyone who has the public key forge tokens.
    let pem_tag = pem_tag(&text);
    let key_type = match (key_type, pem_tag) {
        (Some(KeyType::HmacBase64 | KeyType::HmacRaw), Some(_)) => {
            return Err(named("holds a PEM block, which is never used as an HMAC secret".into()));
        }
        (Some(t), _) => t,
        (None, Some(_)) => KeyType::PublicKey,
        (None, None) => KeyType::HmacBase64,
    };
    let key = match key_type {
        KeyType::PublicKey => public_key_from_pem(&text, pem_tag).map_err(named)?,
        KeyType::HmacBase64 => {
            let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let secret = base64::engine::general_purpose::STANDARD
                .decode(compact.trim_end_matches('='))
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(compact.trim_end_matches('=')))
                .map_err(|e| named(format!("neither a PEM public key nor a base64 HMAC secret ({e})")))?;
            hmac_key(&secret).map_err(named)?
        }
        KeyType::HmacRaw => {
            let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
            let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
            hmac_key(secret).map_err(named)?
        }
    };
    Ok(key)
}

fn hmac_key(secret: &[u8]) -> Result<VerificationKey, String> {
    if looks_like_der(secret) {
        // The base64 body of a PEM public key without its BEGIN/END lines: as public as the
        // key itself, so never a secret.
        return Err(
            "holds a DER-encoded structure (a key or certificate?), which is never used as an HMAC secret".into()
        );
    }
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(format!("the HMAC secret has {} bytes; at least {MIN_HMAC_SECRET_BYTES} are needed", secret.len()));
    }
    Ok(VerificationKey { kid: None, alg: None, family: AlgorithmFamily::Hmac, key: DecodingKey::from_secret(secret) })
}

/// Whether `bytes` is exactly one DER `SEQUENCE` (how public keys and certificates are
/// encoded). A random secret matches with negligible probability.
fn looks_like_der(bytes: &[u8]) -> bool {
    let total = match bytes {
        [0x30, len, ..] if *len < 0x80 => 2 + usize::from(*len),
        [0x30, 0x81, len, ..] => 3 + usize::from(*len),
        [0x30, 0x82, hi, lo, ..] => 4 + (usize::from(*hi) << 8 | usize::from(*lo)),
        _ => return false,
    };
    total == bytes.len()
}

/// The label of the first `-----BEGIN <label>-----` line, if the text holds one.
fn pem_tag(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let end = text[start..].find("-----")?;
    Some(&text[start..start + end])
}

fn public_key_from_pem(text: &str, tag: Option<&str>) -> Result<VerificationKey, String> {
    match tag {
        Some("PUBLIC KEY" | "RSA PUBLIC KEY") => {}
        Some(tag) if tag.contains("PRIVATE") => {
            return Err(format!("holds a private key ({tag}); give the public key only"));
        }
        Some(tag) => return Err(format!("holds a PEM `{tag}`, not a `PUBLIC KEY`")),
        None => return Err("is not a PEM public key".into()),
    }
    let pem = text.as_bytes();
    let (family, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        (AlgorithmFamily::Rsa, key)
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        (AlgorithmFamily::Ec, key)
    } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        (AlgorithmFamily::Ed, key)
    } else {
        return Err("is not an RSA, EC or Ed25519 public key".into());
    };
    Ok(VerificationKey { kid: None, alg: None, family, key })
}

/// Turns a JWKS document into keys. Keys that are not for signatures, symmetric, of an
/// unsupported type or malformed are skipped with a warning: one odd key in the IdP's set must
/// not lock out every user.
pub(crate) fn parse_jwks(doc: &Value, source: &str) -> Result<KeySet, String> {
    let keys = doc.get("keys").and_then(Value::as_array).ok_or("no `keys` array")?;
    let mut set = KeySet::default();
    for jwk in keys {
        match parse_jwk(jwk) {
            Ok(Some(key)) => set.keys.push(Arc::new(key)),
            Ok(None) => {}
            Err(reason) => {
                let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("(none)");
                tracing::warn!(jwks = source, kid, reason, "JWKS key skipped");
            }
        }
    }
    Ok(set)
}

fn parse_jwk(jwk: &Value) -> Result<Option<VerificationKey>, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return Ok(None); // an encryption key
    }
    let kty = field("kty").ok_or("no `kty`")?;
    let required = |name: &str| field(name).ok_or_else(|| format!("{kty} key without `{name}`"));
    let declared = match field("alg") {
        Some(name) => Some(super::config::parse_algorithm(name)?),
        None => None,
    };
    let (family, implied, key) = match kty {
        "RSA" => (AlgorithmFamily::Rsa, None, DecodingKey::from_rsa_components(required("n")?, required("e")?)),
        "EC" => {
            let implied = match required("crv")? {
                "P-256" => Algorithm::ES256,
                "P-384" => Algorithm::ES384,
                other => return Err(format!("EC curve {other} is not supported")),
            };
            (AlgorithmFamily::Ec, Some(implied), DecodingKey::from_ec_components(required("x")?, required("y")?))
        }
        "OKP" => {
            if required("crv")? != "Ed25519" {
                return Err("only the Ed25519 OKP curve is supported".into());
            }
            (AlgorithmFamily::Ed, Some(Algorithm::EdDSA), DecodingKey::from_ed_components(required("x")?))
        }
        "oct" => return Err("symmetric keys are not accepted from a JWKS".into()),
        other => return Err(format!("key type {other} is not supported")),
    };
    let key = key.map_err(|e| format!("malformed {kty} key: {e}"))?;
    // The JWK's `alg` must agree with its `kty` (and curve): an `RSA` key declaring HS256 is refused.
    if let Some(alg) = declared
        && (alg.family() != family || implied.is_some_and(|i| i != alg))
    {
        return Err(format!("`alg` {alg:?} does not match a {kty} key"));
    }
    Ok(Some(VerificationKey { kid: field("kid").map(String::from), alg: declared.or(implied), family, key }))
}

/// Where remote keys come from.
#[derive(Debug, Clone)]
enum Location {
    Jwks(String),
    Discovery(String),
}

#[derive(Debug, Default)]
struct FetchState {
    /// When the last fetch (successful or not) started.
    last_attempt: Option<Instant>,
    /// When the last fetch caused by an unknown key id started: the cooldown runs from here,
    /// so keys rotated right after start-up or a periodic refresh are still picked up.
    last_miss_attempt: Option<Instant>,
    /// Number of fetches started so far; waiters compare it to see whether one happened
    /// while they queued.
    attempts: u64,
    /// Why the last fetch failed, if it did.
    last_error: Option<AuthError>,
}

/// Keys fetched over HTTP and cached.
pub(crate) struct RemoteKeys {
    location: Location,
    allow_insecure_http: bool,
    client: reqwest::Client,
    /// The keys in use and when they were fetched.
    current: RwLock<Option<(Arc<KeySet>, Instant)>>,
    fetch: tokio::sync::Mutex<FetchState>,
    /// Read without the async lock, to tell a waiter whether a fetch ran while it waited.
    attempts: std::sync::atomic::AtomicU64,
    cooldown: Duration,
    ttl: Duration,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys").field("location", &self.location).finish_non_exhaustive()
    }
}

/// Why keys are wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any keys (none loaded yet, or the cache is old).
    Any,
    /// A token names a key we do not have.
    Missing,
}

impl RemoteKeys {
    /// A key source for `config`'s `jwks_url` or `issuer_url`. Reads `ca_file` now.
    pub fn new(config: &JwtConfig) -> Result<Option<Self>, String> {
        let location = match (&config.jwks_url, &config.issuer_url) {
            (Some(url), _) => Location::Jwks(url.clone()),
            (None, Some(issuer)) => Location::Discovery(issuer.clone()),
            (None, None) => return Ok(None),
        };
        let tls = crate::tls::client_config(config.ca_file.as_deref())?;
        let timeout = Duration::from_secs(config.http_timeout_secs);
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect could lead from https to plain http; IdPs publish the final URLs.
            .redirect(reqwest::redirect::Policy::none())
            .https_only(!config.allow_insecure_http)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Some(RemoteKeys {
            location,
            allow_insecure_http: config.allow_insecure_http,
            client,
            current: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            attempts: Default::default(),
            cooldown: Duration::from_secs(config.jwks_refresh_cooldown_secs),
            ttl: Duration::from_secs(config.jwks_cache_ttl_secs),
        }))
    }

    /// The cached keys, without any I/O. `None` before the first successful fetch.
    pub fn cached(&self) -> Option<Arc<KeySet>> {
        self.current.read().as_ref().map(|(keys, _)| keys.clone())
    }

    /// Whether the cached keys are older than the TTL.
    pub fn stale(&self) -> bool {
        self.current.read().as_ref().is_none_or(|(_, fetched)| fetched.elapsed() >= self.ttl)
    }

    /// Fetches keys if allowed now, and returns the newest set. Concurrent callers share
    /// one fetch: whoever waits for the lock while a fetch runs gets its result.
    pub async fn refresh(&self, need: Need) -> Result<Arc<KeySet>, AuthError> {
        use std::sync::atomic::Ordering;
        let seen = self.attempts.load(Ordering::Acquire);
        let mut state = self.fetch.lock().await;
        let current = self.cached();
        if state.attempts != seen {
            // Someone fetched while we waited: use that result.
            return self.outcome(current, &state, need);
        }
        let since_last = state.last_attempt.map(|t| t.elapsed());
        let allowed = match (&current, need) {
            (None, _) => since_last.is_none_or(|d| d >= self.cooldown.min(FAILED_FETCH_BACKOFF)),
            (Some(_), Need::Missing) => state.last_miss_attempt.is_none_or(|t| t.elapsed() >= self.cooldown),
            (Some(_), Need::Any) => self.stale() && since_last.is_none_or(|d| d >= self.cooldown),
        };
        if !allowed {
            return self.outcome(current, &state, need);
        }
        state.last_attempt = Some(Instant::now());
        if need == Need::Missing {
            state.last_miss_attempt = state.last_attempt;
        }
        state.attempts += 1;
        self.attempts.store(state.attempts, Ordering::Release);
        match self.fetch_keys().await {
            Ok(keys) => {
                tracing::info!(source = %self.describe(), keys = keys.keys.len(), "JWT verification keys fetched");
                let keys = Arc::new(keys);
                *self.current.write() = Some((keys.clone(), Instant::now()));
                state.last_error = None;
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWT verification keys not fetched");
                state.last_error = Some(e);
                self.outcome(current, &state, need)
            }
        }
    }

    /// The keys to use without fetching: the current ones, or the last fetch's error when
    /// there are none or a key is missing (a needed key could not be looked up). Old keys stay
    /// in use when a periodic refresh fails.
    fn outcome(&self, current: Option<Arc<KeySet>>, state: &FetchState, need: Need) -> Result<Arc<KeySet>, AuthError> {
        match (current, &state.last_error) {
            (Some(keys), None) => Ok(keys),
            (Some(keys), Some(_)) if need == Need::Any => Ok(keys),
            (_, Some(e)) => Err(e.clone()),
            (None, None) => Err(AuthError::Unavailable(format!("no keys from {}", self.describe()))),
        }
    }

    fn describe(&self) -> String {
        match &self.location {
            Location::Jwks(url) => format!("JWKS {url}"),
            Location::Discovery(issuer) => format!("issuer {issuer}"),
        }
    }

    async fn fetch_keys(&self) -> Result<KeySet, AuthError> {
        let jwks_url = match &self.location {
            Location::Jwks(url) => url.clone(),
            Location::Discovery(issuer) => self.discover(issuer).await?,
        };
        let doc = self.get_json(&jwks_url, "JWKS").await?;
        parse_jwks(&doc, &jwks_url).map_err(|e| AuthError::Unavailable(format!("JWKS {jwks_url} is malformed: {e}")))
    }

    /// Reads the issuer's discovery document and returns its `jwks_uri`.
    async fn discover(&self, issuer: &str) -> Result<String, AuthError> {
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let doc = self.get_json(&url, "OpenID discovery").await?;
        let bad = |reason: String| AuthError::Unavailable(format!("OpenID discovery {url}: {reason}"));
        let found = doc.get("issuer").and_then(Value::as_str).ok_or_else(|| bad("no `issuer`".into()))?;
        if found != issuer {
            return Err(bad(format!("`issuer` is {found}, not the configured {issuer}")));
        }
        let jwks = doc.get("jwks_uri").and_then(Value::as_str).ok_or_else(|| bad("no `jwks_uri`".into()))?;
        check_url(jwks, self.allow_insecure_http).map_err(|e| bad(format!("jwks_uri {e}")))?;
        Ok(jwks.to_string())
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, AuthError> {
        let unreachable = |e: String| AuthError::Unavailable(format!("{what} {url} unreachable: {e}"));
        let mut response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(AuthError::Unavailable(format!("{what} {url} answered HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(error_chain(&e)))? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(AuthError::Unavailable(format!("{what} {url} is larger than {MAX_DOCUMENT_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| AuthError::Unavailable(format!("{what} {url} is not JSON: {e}")))
    }
}

/// An error and its sources, one line: reqwest's own message rarely says *why*.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jwks_keys_are_parsed_and_odd_ones_skipped() {
        let doc = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "alg": "HS256", "kid": "liar",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "RSA", "kid": "no-n", "e": "AQAB"},
            {"kty": "XYZ", "kid": "odd"}
        ]});
        let set = parse_jwks(&doc, "test").expect("jwks");
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap_or_default()).collect();
        assert_eq!(kids, vec!["ec"]);
        assert_eq!(set.keys[0].alg, Some(Algorithm::ES256));
        assert!(set.keys[0].fits(Algorithm::ES256));
        assert!(!set.keys[0].fits(Algorithm::ES384));
        assert!(!set.keys[0].fits(Algorithm::HS256));
        assert!(parse_jwks(&json!({"nokeys": []}), "test").is_err());
    }

    #[test]
    fn pem_tags_are_found() {
        assert_eq!(pem_tag("junk\n-----BEGIN PUBLIC KEY-----\nabc\n"), Some("PUBLIC KEY"));
        assert_eq!(pem_tag("c2VjcmV0"), None);
    }

    #[test]
    fn key_files_are_read_by_content_and_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, base64::engine::general_purpose::STANDARD.encode([7u8; 32]) + "\n").expect("write");
        let key = load_key_file(&secret, None).expect("hmac");
        assert_eq!(key.family, AlgorithmFamily::Hmac);

        let short = dir.path().join("short");
        std::fs::write(&short, "c2VjcmV0").expect("write");
        let err = load_key_file(&short, None).expect_err("refused");
        assert!(err.contains("short") && err.contains("at least 32"), "{err}");

        let pem = dir.path().join("key.pem");
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        std::fs::write(&pem, kp.public_key_pem()).expect("write");
        assert_eq!(load_key_file(&pem, None).expect("pem").family, AlgorithmFamily::Ec);
        let err = load_key_file(&pem, Some(KeyType::HmacRaw)).expect_err("refused");
        assert!(err.contains("never used as an HMAC secret"), "{err}");

        // The base64 body of the PEM without its armour is not a secret either.
        let body = dir.path().join("body");
        let armourless: String = kp.public_key_pem().lines().filter(|l| !l.starts_with("-----")).collect();
        std::fs::write(&body, armourless).expect("write");
        let err = load_key_file(&body, None).expect_err("refused");
        assert!(err.contains("DER-encoded"), "{err}");

        let private = dir.path().join("private.pem");
        std::fs::write(&private, kp.serialize_pem()).expect("write");
        assert!(load_key_file(&private, None).expect_err("refused").contains("private key"));
        let missing = dir.path().join("missing.pem");
        assert!(load_key_file(&missing, None).expect_err("refused").contains("missing.pem"));
    }
}
