//! OAuth2 / OpenID Connect bearer tokens: `authorization: Bearer <JWT>` verified against a
//! public key file, an HMAC secret, a JWKS URL, or an issuer's discovered JWKS, the way
//! Trino's JWT authenticator does.
//!
//! A token is checked cheaply before any decoding (size, shape, alphabet), then its header:
//! the algorithm must be on the allow-list *and* fit the selected key's type, so neither
//! `alg: none` nor an HS256 token "signed" with an RSA public key gets through. `exp` is
//! required, `nbf` honoured, both with a bounded leeway; `iss` and `aud` are required unless
//! the config says explicitly that any will do.
//!
//! ```toml
//! [auth.jwt]
//! issuer_url = "https://idp.example.com/realms/data"   # or jwks_url = ..., or key_file = ...
//! required_audience = "quiver"
//! principal_field = ["preferred_username", "sub"]
//! groups_field = "groups"
//! ```
//!
//! Keys named inside a token (`jku`, `x5u`, `jwk` headers) are never fetched or used.

mod config;
mod keys;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use config::{DEFAULT_ALGORITHMS, JwtConfig, KeyType, MAX_LEEWAY_SECS};
use keys::{KeySet, Need, RemoteKeys, VerificationKey};

use crate::{AuthError, Authenticator, Credentials, Identity};

/// The method name in config, metrics and `Identity::method`.
const METHOD: &str = "jwt";

/// Prefix of the gateway's own session tokens, which are left to the session-token check.
const SESSION_TOKEN_PREFIX: &str = "qv1.";

enum KeySource {
    /// `key_file`: one key, read at construction.
    Static(Arc<KeySet>),
    /// `jwks_url` / `issuer_url`: fetched on first use, cached, refreshed.
    Remote(Box<RemoteKeys>),
}

/// Authenticates `Credentials::Bearer` JWTs.
pub struct JwtAuthenticator {
    keys: KeySource,
    /// The allow-list, in config order.
    algorithms: Vec<Algorithm>,
    /// One prepared validation per allowed algorithm (built once, not per token).
    validations: HashMap<Algorithm, Validation>,
    principal_field: Vec<String>,
    groups_field: Option<String>,
    max_token_bytes: usize,
    /// Tokens already verified, by SHA-256 of the token, with their `exp`: a client that sends
    /// the same IdP token on every call pays for one signature check, not one per call.
    verified: Option<VerifiedCache>,
}

/// SHA-256 of a token -> the identity it proved and its `exp`.
type VerifiedCache = moka::sync::Cache<[u8; 32], Arc<(Identity, u64)>>;

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            KeySource::Static(_) => "key_file".to_string(),
            KeySource::Remote(remote) => format!("{remote:?}"),
        };
        f.debug_struct("JwtAuthenticator").field("keys", &keys).field("algorithms", &self.algorithms).finish()
    }
}

/// The part of a JOSE header we look at.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

impl JwtAuthenticator {
    /// Builds the authenticator: validates `config`, reads `key_file` and `ca_file` now (the
    /// error names the file). Remote keys are fetched on first use, so the gateway starts
    /// even while the IdP is briefly down.
    pub fn new(config: &JwtConfig) -> Result<Self, String> {
        let problems = config.validate();
        if !problems.is_empty() {
            let text: Vec<String> = problems.iter().map(|(k, r)| format!("{k}: {r}")).collect();
            return Err(text.join("; "));
        }
        let algorithms = config.parsed_algorithms();
        let keys = match (&config.key_file, RemoteKeys::new(config)?) {
            (_, Some(remote)) => KeySource::Remote(Box::new(remote)),
            (Some(path), None) => {
                let key = keys::load_key_file(path, config.key_type)?;
                check_static_key(&key, &algorithms).map_err(|e| format!("key_file {}: {e}", path.display()))?;
                KeySource::Static(Arc::new(KeySet { keys: vec![Arc::new(key)] }))
            }
            (None, None) => return Err("no key source".into()),
        };
        let audience: Vec<&String> = config.required_audience.iter().flatten().filter(|a| !a.is_empty()).collect();
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = config.leeway_secs;
                v.validate_exp = true;
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                if let Some(issuer) = config.effective_issuer().filter(|i| !i.is_empty()) {
                    v.set_issuer(&[issuer]);
                    required.push("iss");
                }
                if audience.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&audience);
                    required.push("aud");
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        Ok(JwtAuthenticator {
            keys,
            algorithms,
            validations,
            principal_field: config.principal_field.clone(),
            groups_field: config.groups_field.clone(),
            max_token_bytes: config.max_token_bytes,
            verified: (config.verified_cache_secs > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(std::time::Duration::from_secs(config.verified_cache_secs))
                    .build()
            }),
        })
    }

    /// The key for a token, fetching keys when none are cached, the cache is old, or the
    /// token names a key we do not know (at most once per cooldown).
    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<VerificationKey>, AuthError> {
        let remote = match &self.keys {
            // One configured key: the token's kid, if any, does not matter.
            KeySource::Static(set) => {
                return set.select(None, alg).map_err(AuthError::Denied)?.ok_or_else(|| {
                    AuthError::Denied(format!("{alg:?} token, but key_file holds a key of another type"))
                });
            }
            KeySource::Remote(remote) => remote,
        };
        let keys = match remote.cached() {
            Some(keys) if !remote.stale() => keys,
            _ => remote.refresh(Need::Any).await?,
        };
        if let Some(key) = keys.select(kid, alg).map_err(AuthError::Denied)? {
            return Ok(key);
        }
        let keys = remote.refresh(Need::Missing).await?;
        keys.select(kid, alg).map_err(AuthError::Denied)?.ok_or_else(|| match kid {
            Some(kid) => AuthError::Denied(format!("no key with kid `{kid}`")),
            None => AuthError::Denied(format!("token has no kid and no {alg:?} key fits")),
        })
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthError> {
        let (field, user) = self
            .principal_field
            .iter()
            .find_map(|field| match claim(claims, field) {
                Some(Value::String(s)) if !s.is_empty() => Some((field, s.clone())),
                _ => None,
            })
            .ok_or_else(|| {
                AuthError::Denied(format!("token has no principal claim ({})", self.principal_field.join(", ")))
            })?;
        let groups = match self.groups_field.as_deref().and_then(|f| claim(claims, f)) {
            Some(Value::Array(items)) => {
                items.iter().filter_map(Value::as_str).filter(|g| !g.is_empty()).map(String::from).collect()
            }
            Some(Value::String(s)) => {
                s.split(|c: char| c == ',' || c.is_whitespace()).filter(|g| !g.is_empty()).map(String::from).collect()
            }
            _ => Vec::new(),
        };
        let mut identity = Identity::new(user.clone(), METHOD).with_groups(groups);
        for name in ["iss", "sub"] {
            if let Some(Value::String(v)) = claims.get(name) {
                identity.attributes.insert(name.into(), v.clone());
            }
        }
        identity.attributes.insert(field.clone(), user);
        Ok(identity)
    }
}

/// A key file's key must be usable with at least one allowed algorithm, and an HMAC secret
/// and a public key never share an allow-list.
fn check_static_key(key: &VerificationKey, algorithms: &[Algorithm]) -> Result<(), String> {
    let names = |algs: &[Algorithm]| algs.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    let hmac_allowed: Vec<Algorithm> =
        algorithms.iter().copied().filter(|a| a.family() == AlgorithmFamily::Hmac).collect();
    if key.family != AlgorithmFamily::Hmac && !hmac_allowed.is_empty() {
        return Err(format!("holds a public key, but `algorithms` allows {}", names(&hmac_allowed)));
    }
    if !algorithms.iter().any(|a| key.fits(*a)) {
        return Err(format!(
            "holds a {:?} key, but `algorithms` ({}) has none for it (add e.g. {:?})",
            key.family,
            names(algorithms),
            key.family.algorithms().first().copied().unwrap_or_default()
        ));
    }
    Ok(())
}

/// A claim by name, or by dotted path into nested objects (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, part| v.get(part))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Checks done before any decoding, in one pass over the bytes without allocating: size,
/// exactly two dots, base64url alphabet. `Ok(false)`: not a JWT (another method's token).
fn precheck(token: &str, max_bytes: usize) -> Result<bool, AuthError> {
    if token.starts_with(SESSION_TOKEN_PREFIX) {
        return Ok(false);
    }
    if token.len() > max_bytes {
        return Err(AuthError::Denied(format!("token of {} bytes exceeds max_token_bytes {max_bytes}", token.len())));
    }
    let mut dots = 0;
    for b in token.bytes() {
        match b {
            b'.' => {
                dots += 1;
                if dots > 2 {
                    return Ok(false);
                }
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            _ => return Ok(false),
        }
    }
    Ok(dots == 2 && !token.starts_with('.'))
}

/// The token's header, or `None` when the first segment is not a base64url JSON object with
/// an `alg`.
fn decode_header(token: &str) -> Option<Header> {
    let encoded = token.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn denied_by(e: &jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Denied(match e.kind() {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "token from another issuer".into(),
        ErrorKind::InvalidAudience => "token for another audience".into(),
        ErrorKind::InvalidSignature => "bad token signature".into(),
        ErrorKind::MissingRequiredClaim(c) => format!("token lacks the `{c}` claim"),
        ErrorKind::InvalidAlgorithm => "token algorithm does not fit the key".into(),
        other => format!("malformed token: {other:?}"),
    })
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    fn name(&self) -> &'static str {
        METHOD
    }

    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Identity>, AuthError> {
        let Credentials::Bearer(token) = credentials else {
            return Ok(None);
        };
        if !precheck(token, self.max_token_bytes)? {
            return Ok(None);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.verified.as_ref().and_then(|cache| cache.get(&digest)) {
            // Still bounded by the token's own expiry (no leeway on a cached answer).
            if now_secs() < hit.1 {
                return Ok(Some(hit.0.clone()));
            }
        }
        let Some(header) = decode_header(token) else {
            return Ok(None);
        };
        let alg = config::parse_algorithm(&header.alg)
            .ok()
            .filter(|alg| self.algorithms.contains(alg))
            .ok_or_else(|| AuthError::Denied(format!("algorithm `{}` is not allowed", header.alg)))?;
        if header.crit.is_some() {
            return Err(AuthError::Denied("token has critical header extensions (crit)".into()));
        }
        let key = self.key_for(header.kid.as_deref(), alg).await?;
        if !key.fits(alg) {
            return Err(AuthError::Denied(format!(
                "{alg:?} token names key `{}`, a {:?} key for {:?}",
                header.kid.as_deref().unwrap_or(""),
                key.family,
                key.alg
            )));
        }
        let validation =
            self.validations.get(&alg).ok_or_else(|| AuthError::Denied(format!("algorithm {alg:?} is not allowed")))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token.as_bytes(), &key.key, validation)
            .map_err(|e| denied_by(&e))?;
        let identity = self.identity(&data.claims)?;
        if let (Some(cache), Some(exp)) = (&self.verified, data.claims.get("exp").and_then(Value::as_u64)) {
            cache.insert(digest, Arc::new((identity.clone(), exp)));
        }
        Ok(Some(identity))
    }
}

#[cfg(test)]
mod tests;
