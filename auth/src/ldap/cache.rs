//! Successful logins remembered for a while, so a busy client does not cost a directory bind
//! per request. The key is the user; the entry holds a salted SHA-256 of the password (the
//! salt is random per process), compared in constant time. Failures are never stored.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Identity;

/// Most entries kept; beyond that expired entries are dropped, then the oldest.
const MAX_ENTRIES: usize = 10_000;

struct Entry {
    digest: [u8; 32],
    identity: Identity,
    expires: Instant,
}

/// A TTL cache of successful logins.
pub(super) struct LoginCache {
    ttl: Duration,
    salt: [u8; 32],
    entries: Mutex<HashMap<String, Entry>>,
}

impl LoginCache {
    /// A cache keeping logins for `ttl` (zero: nothing is kept).
    pub(super) fn new(ttl: Duration) -> Self {
        let mut salt = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        LoginCache { ttl, salt, entries: Mutex::new(HashMap::new()) }
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_be_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The identity of an unexpired login of `user` with this same `password`.
    pub(super) fn get(&self, user: &str, password: &str) -> Option<Identity> {
        if self.ttl.is_zero() {
            return None;
        }
        let digest = self.digest(user, password);
        let mut entries = self.entries.lock();
        let entry = entries.get(user)?;
        if entry.expires <= Instant::now() {
            entries.remove(user);
            return None;
        }
        bool::from(entry.digest.ct_eq(&digest)).then(|| entry.identity.clone())
    }

    /// Remembers a successful login.
    pub(super) fn put(&self, user: &str, password: &str, identity: &Identity) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let entry = Entry { digest: self.digest(user, password), identity: identity.clone(), expires: now + self.ttl };
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(user) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(user.to_string(), entry);
    }

    /// Number of entries (expired ones included until touched).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_the_same_password_within_the_ttl() {
        let cache = LoginCache::new(Duration::from_secs(60));
        let id = Identity::new("alice", "ldap");
        assert_eq!(cache.get("alice", "pw"), None);
        cache.put("alice", "pw", &id);
        assert_eq!(cache.get("alice", "pw"), Some(id.clone()));
        assert_eq!(cache.get("alice", "other"), None);
        assert_eq!(cache.get("bob", "pw"), None);
        // User/password boundary: ("ali", "cepw") must not collide with ("alice", "pw").
        assert_eq!(cache.get("ali", "cepw"), None);
    }

    #[test]
    fn expires_and_zero_ttl_disables() {
        let cache = LoginCache::new(Duration::from_millis(20));
        cache.put("alice", "pw", &Identity::new("alice", "ldap"));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(cache.get("alice", "pw"), None);
        assert_eq!(cache.len(), 0);
        let off = LoginCache::new(Duration::ZERO);
        off.put("alice", "pw", &Identity::new("alice", "ldap"));
        assert_eq!(off.get("alice", "pw"), None);
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn stays_bounded() {
        let cache = LoginCache::new(Duration::from_secs(60));
        for i in 0..MAX_ENTRIES + 5 {
            cache.put(&format!("user{i}"), "pw", &Identity::new("u", "ldap"));
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
    }
}
