//! Gateway session tokens: `qv1.<payload>.<signature>`, the payload a base64url JSON of
//! [`TokenClaims`], the signature HMAC-SHA256 over `qv1.<payload>` with a shared key. Any
//! gateway replica holding the key accepts the token, so directory servers are not asked
//! again while it is valid.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{AuthError, Identity};

const PREFIX: &str = "qv1.";
/// Tokens longer than this are refused before any decoding work.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a session token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// User name.
    pub u: String,
    /// Groups.
    #[serde(default)]
    pub g: Vec<String>,
    /// The method that authenticated the user originally.
    pub m: String,
    /// Session id: ties session options to the connection that set them.
    pub sid: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Issues and verifies session tokens.
#[derive(Clone)]
pub struct SessionTokens {
    /// Signing key first, then keys still accepted (rotation).
    keys: Vec<Vec<u8>>,
    ttl: Duration,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTokens").field("keys", &self.keys.len()).field("ttl", &self.ttl).finish()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl SessionTokens {
    /// Tokens signed with `key` (at least 32 bytes recommended), valid for `ttl`.
    pub fn new(key: Vec<u8>, ttl: Duration) -> Self {
        SessionTokens { keys: vec![key], ttl }
    }

    /// Also accept tokens signed with `old` (key rotation).
    pub fn also_accept(mut self, old: Vec<u8>) -> Self {
        self.keys.push(old);
        self
    }

    /// A random key, for a single gateway that needs no shared secret.
    pub fn random_key() -> Vec<u8> {
        use rand::RngCore;
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        key
    }

    /// Token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `identity` in session `sid`.
    pub fn issue(&self, identity: &Identity, sid: &str) -> String {
        let iat = now();
        let claims = TokenClaims {
            u: identity.user.clone(),
            g: identity.groups.clone(),
            m: identity.method.clone(),
            sid: sid.to_string(),
            iat,
            exp: iat + self.ttl.as_secs().max(1),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signed = format!("{PREFIX}{payload}");
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&self.keys[0], signed.as_bytes()));
        format!("{signed}.{sig}")
    }

    fn mac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // new_from_slice accepts keys of any length for HMAC.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return Vec::new() };
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// True if `token` looks like one of ours (so other bearer methods can take the rest).
    pub fn is_session_token(token: &str) -> bool {
        token.starts_with(PREFIX)
    }

    /// Verifies signature and expiry and returns the claims.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken("too long"));
        }
        let rest = token.strip_prefix(PREFIX).ok_or(AuthError::InvalidToken("not a session token"))?;
        let (payload, sig) = rest.rsplit_once('.').ok_or(AuthError::InvalidToken("malformed"))?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| AuthError::InvalidToken("malformed"))?;
        let signed = &token[..PREFIX.len() + payload.len()];
        let valid = self.keys.iter().any(|key| {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
            mac.update(signed.as_bytes());
            mac.verify_slice(&sig).is_ok()
        });
        if !valid {
            return Err(AuthError::InvalidToken("bad signature"));
        }
        let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| AuthError::InvalidToken("malformed"))?;
        let claims: TokenClaims = serde_json::from_slice(&bytes).map_err(|_| AuthError::InvalidToken("malformed"))?;
        if claims.exp <= now() {
            return Err(AuthError::InvalidToken("expired"));
        }
        Ok(claims)
    }

    /// The identity a verified token stands for.
    pub fn identity(claims: &TokenClaims) -> Identity {
        let mut id = Identity::new(claims.u.clone(), claims.m.clone()).with_groups(claims.g.clone());
        id.attributes.insert("session".into(), claims.sid.clone());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::new("alice", "password-file").with_groups(vec!["analysts".into()])
    }

    #[test]
    fn round_trip_across_replicas_with_the_same_key() {
        let a = SessionTokens::new(b"shared-key-shared-key-shared-key".to_vec(), Duration::from_secs(60));
        let b = SessionTokens::new(b"shared-key-shared-key-shared-key".to_vec(), Duration::from_secs(60));
        let token = a.issue(&alice(), "s1");
        let claims = b.verify(&token).expect("valid");
        assert_eq!(claims.u, "alice");
        assert_eq!(claims.g, vec!["analysts"]);
        assert_eq!(claims.sid, "s1");
    }

    #[test]
    fn forged_tampered_foreign_and_huge_tokens_are_refused() {
        let tokens = SessionTokens::new(b"k1".to_vec(), Duration::from_secs(60));
        let other = SessionTokens::new(b"k2".to_vec(), Duration::from_secs(60));
        let token = tokens.issue(&alice(), "s");
        assert_eq!(other.verify(&token), Err(AuthError::InvalidToken("bad signature")));
        // Change the payload to claim another user, keep the signature.
        let (head, sig) = token.rsplit_once('.').expect("dot");
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"u":"admin","m":"x","sid":"s","iat":0,"exp":99999999999}"#);
        let forged = format!("qv1.{forged_payload}.{sig}");
        assert_ne!(head, format!("qv1.{forged_payload}"));
        assert_eq!(tokens.verify(&forged), Err(AuthError::InvalidToken("bad signature")));
        assert!(tokens.verify("qv1.garbage").is_err());
        assert!(tokens.verify("eyJhbGciOi.x.y").is_err());
        assert_eq!(tokens.verify(&".".repeat(1 << 20)), Err(AuthError::InvalidToken("too long")));
    }

    #[test]
    fn rotated_keys_are_still_accepted() {
        let old = SessionTokens::new(b"old".to_vec(), Duration::from_secs(60));
        let new = SessionTokens::new(b"new".to_vec(), Duration::from_secs(60)).also_accept(b"old".to_vec());
        assert!(new.verify(&old.issue(&alice(), "s")).is_ok());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = SessionTokens::new(b"k".to_vec(), Duration::from_secs(60));
        let claims = TokenClaims { u: "a".into(), g: vec![], m: "x".into(), sid: "s".into(), iat: 1, exp: 2 };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("json"));
        let signed = format!("qv1.{payload}");
        let sig = URL_SAFE_NO_PAD.encode(tokens.mac(b"k", signed.as_bytes()));
        assert_eq!(tokens.verify(&format!("{signed}.{sig}")), Err(AuthError::InvalidToken("expired")));
    }
}
