//! Signed, self-contained tickets and prepared-statement handles.
//!
//! A ticket carries everything needed to serve its DoGet (the pool and the worker's own
//! ticket), the user it was issued to and an expiry, sealed with AES-256-GCM under a key
//! derived from the gateway secret: any replica holding the secret can serve it, nobody can
//! forge or alter one, and nobody can read one — a ticket's worker handle holds the effective
//! SQL, row-filter literals and mask expressions included, which the caller must not see. The
//! bytes clients see are a Flight SQL `TicketStatementQuery` (Any-encoded), as clients expect.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{GatewayError, Result};

const VERSION: u8 = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Sealed blobs larger than this are refused before any work.
const MAX_SEALED_BYTES: usize = 16 * 1024 * 1024;

/// What a sealed blob stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum Sealed {
    /// A statement's results: redeem the worker ticket on a worker of `pool`.
    Query {
        /// Ticket id, for cancellation.
        id: String,
        /// Pool that planned it.
        pool: String,
        /// The worker's own ticket.
        #[serde(with = "b64")]
        ticket: Vec<u8>,
        /// The statement changes data or the catalog (the pool's catalog view is refreshed
        /// once it has run).
        #[serde(default)]
        write: bool,
        /// Trino query type (SELECT, INSERT, ...), for query history and resource groups.
        #[serde(default)]
        kind: String,
        /// For a cache-eligible statement: its key and how to use the cache.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache: Option<crate::cache::CacheTicket>,
        /// For a statement that writes: the tables it names (cache entries reading them are
        /// evicted once it has run).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        writes: Vec<quiver_policies::TableRef>,
    },
    /// A metadata request answered by the gateway: the Any-encoded Flight SQL command.
    Metadata {
        /// The command.
        #[serde(with = "b64")]
        command: Vec<u8>,
    },
    /// A prepared statement.
    Prepared {
        /// Handle id: stays the same when parameters are bound.
        id: String,
        /// Pool that prepared it.
        pool: String,
        /// The worker's own handle.
        #[serde(with = "b64")]
        handle: Vec<u8>,
        /// Whether the statement changes data (no result set).
        update: bool,
        /// Under an access policy: what it was authorized as, to check again at execution.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<PreparedPolicy>,
        /// For a statement that writes: the tables it names (cache entries reading them are
        /// evicted before it reports success).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        writes: Vec<quiver_policies::TableRef>,
    },
}

/// A prepared statement as it was authorized: its SQL, defaults, and a digest of the
/// effective (rewritten) SQL the worker prepared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedPolicy {
    /// The SQL the client prepared.
    pub sql: String,
    /// Catalog for unqualified names.
    pub catalog: String,
    /// Schema for unqualified names.
    pub schema: String,
    /// Digest of the effective SQL.
    pub digest: String,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    /// User the blob was issued to.
    u: String,
    /// Expiry, seconds since the epoch.
    exp: u64,
    #[serde(flatten)]
    body: Sealed,
}

mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Seals and opens tickets with the gateway secret.
#[derive(Clone)]
pub struct Sealer {
    key: Vec<u8>,
    /// Keys derived from previous secrets: still opened, never used to seal.
    previous: Vec<Vec<u8>>,
    ttl_secs: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("ttl_secs", &self.ttl_secs).finish()
    }
}

impl Sealer {
    /// A sealer whose blobs expire after `ttl_secs`. The key is derived from the gateway
    /// secret so tickets and session tokens never share a key.
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Sealer { key: Self::derive(secret), previous: Vec::new(), ttl_secs }
    }

    /// Also opens blobs sealed with `old_secret` (secret rotation across replicas).
    pub fn also_accept(mut self, old_secret: &[u8]) -> Self {
        self.previous.push(Self::derive(old_secret));
        self
    }

    fn derive(secret: &[u8]) -> Vec<u8> {
        mac(secret, b"quiver ticket key v2 (aes-256-gcm)")
    }

    /// Seals `body` for `user`.
    pub fn seal(&self, user: &str, body: Sealed) -> Bytes {
        self.seal_with_expiry(user, body, now() + self.ttl_secs)
    }

    fn seal_with_expiry(&self, user: &str, body: Sealed, exp: u64) -> Bytes {
        let mut payload = serde_json::to_vec(&Envelope { u: user.to_string(), exp, body }).unwrap_or_default();
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
        let Some(key) = aead_key(&self.key) else { return Bytes::new() };
        let sealed = key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from([VERSION]),
            &mut payload,
        );
        if sealed.is_err() {
            return Bytes::new();
        }
        let mut out = Vec::with_capacity(1 + NONCE_LEN + payload.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&payload);
        Bytes::from(out)
    }

    pub fn open(&self, user: &str, sealed: &[u8]) -> Result<Sealed> {
        if sealed.len() > MAX_SEALED_BYTES {
            return Err(GatewayError::InvalidTicket("too large".into()));
        }
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(GatewayError::InvalidTicket("not issued by this gateway".into()));
        }
        let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().unwrap_or([0; NONCE_LEN]);
        let opened = std::iter::once(&self.key).chain(&self.previous).find_map(|key| {
            let mut buffer = sealed[1 + NONCE_LEN..].to_vec();
            let key = aead_key(key)?;
            let plain = key
                .open_in_place(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from([VERSION]),
                    &mut buffer,
                )
                .ok()?;
            Some(plain.to_vec())
        });
        let Some(plain) = opened else {
            return Err(GatewayError::InvalidTicket("signature mismatch".into()));
        };
        let envelope: Envelope =
            serde_json::from_slice(&plain).map_err(|_| GatewayError::InvalidTicket("malformed".into()))?;
        if envelope.exp <= now() {
            return Err(GatewayError::InvalidTicket("expired; call GetFlightInfo again".into()));
        }
        if envelope.u != user {
            return Err(GatewayError::InvalidTicket("issued to another user".into()));
        }
        Ok(envelope.body)
    }
}

fn aead_key(key: &[u8]) -> Option<ring::aead::LessSafeKey> {
    ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key).ok().map(ring::aead::LessSafeKey::new)
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// A new random id for tickets and handles.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> Sealed {
        Sealed::Query {
            id: "t1".into(),
            pool: "default".into(),
            ticket: b"worker ticket".to_vec(),
            write: false,
            kind: "SELECT".into(),
            cache: None,
            writes: vec![],
        }
    }

    #[test]
    fn sealed_tickets_open_on_any_replica_with_the_secret() {
        let a = Sealer::new(b"secret", 60);
        let b = Sealer::new(b"secret", 60);
        assert_eq!(b.open("alice", &a.seal("alice", query())).expect("open"), query());
    }

    #[test]
    fn tampered_foreign_expired_and_garbage_tickets_are_invalid() {
        let sealer = Sealer::new(b"secret", 60);
        let mut sealed = sealer.seal("alice", query()).to_vec();
        let mid = sealed.len() / 2;
        sealed[mid] ^= 1;
        for (bytes, why) in [
            (sealed, "signature mismatch"),
            (Sealer::new(b"other", 60).seal("alice", query()).to_vec(), "signature mismatch"),
            (sealer.seal_with_expiry("alice", query(), 1).to_vec(), "expired"),
            (b"garbage".to_vec(), "not issued"),
            (vec![], "not issued"),
        ] {
            let err = sealer.open("alice", &bytes).expect_err("an error");
            assert!(matches!(err, GatewayError::InvalidTicket(_)));
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn rotated_secrets_still_open_but_never_seal() {
        let old = Sealer::new(b"old secret", 60);
        let rotated = Sealer::new(b"new secret", 60).also_accept(b"old secret");
        assert_eq!(rotated.open("alice", &old.seal("alice", query())).expect("old ticket"), query());
        // New tickets are sealed with the new secret only.
        let fresh = rotated.seal("alice", query());
        assert!(old.open("alice", &fresh).is_err());
        assert!(Sealer::new(b"new secret", 60).open("alice", &fresh).is_ok());
    }

    #[test]
    fn sealed_bytes_do_not_show_what_they_carry() {
        let sealer = Sealer::new(b"secret", 60);
        let secret_sql = "SELECT * FROM t WHERE quiver_policy_filter(region = 'EUROPE')";
        let body = Sealed::Query {
            id: "t1".into(),
            pool: "default".into(),
            ticket: secret_sql.as_bytes().to_vec(),
            write: false,
            kind: "SELECT".into(),
            cache: None,
            writes: vec![],
        };
        let sealed = sealer.seal("alice", body.clone());
        let text = String::from_utf8_lossy(&sealed);
        for needle in ["EUROPE", "quiver_policy_filter", "alice", "default", "SELECT"] {
            assert!(!text.contains(needle), "{needle} readable in the sealed bytes");
        }
        let b64 = STANDARD.encode(secret_sql);
        assert!(!text.contains(&b64[..12]));
        // Two seals of the same body differ (fresh nonce).
        assert_ne!(sealed, sealer.seal("alice", body.clone()));
        assert_eq!(sealer.open("alice", &sealed).expect("open"), body);
    }

    #[test]
    fn tickets_are_bound_to_their_user() {
        let sealer = Sealer::new(b"secret", 60);
        let err = sealer.open("mallory", &sealer.seal("alice", query())).expect_err("an error");
        assert!(err.to_string().contains("another user"));
    }
}
