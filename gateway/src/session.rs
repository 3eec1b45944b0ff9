//! Client sessions: the catalog and schema a connection set with SetSessionOptions.
//!
//! A session is found by the session id in the caller's gateway token (issued on Handshake)
//! or by the `arrow_flight_session_id` cookie, and belongs to one user: another user
//! presenting the same id does not see it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use parking_lot::Mutex;

/// The cookie Flight SQL clients send back to identify their session.
pub const SESSION_COOKIE: &str = "arrow_flight_session_id";

/// A value of a session option.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    /// A string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// A list of strings.
    StringList(Vec<String>),
}

/// One session's state.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    // (source, client tags and priority are read from `options`; see `SessionState::source`.)
    /// Default catalog.
    pub catalog: Option<String>,
    /// Default schema.
    pub schema: Option<String>,
    /// Every option as set, for GetSessionOptions.
    pub options: BTreeMap<String, OptionValue>,
}

impl SessionState {
    /// The `source` option.
    pub fn source(&self) -> Option<String> {
        match self.options.get("source") {
            Some(OptionValue::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }

    /// The `client_tags` option: a string list, or one comma-separated string.
    pub fn client_tags(&self) -> Vec<String> {
        match self.options.get("client_tags") {
            Some(OptionValue::StringList(tags)) => tags.clone(),
            Some(OptionValue::String(s)) => split_tags(s),
            _ => Vec::new(),
        }
    }

    /// The `cache_control` option (`no-cache`, `only-if-cached`, `max-age=N`).
    pub fn cache_control(&self) -> Option<String> {
        match self.options.get("cache_control") {
            Some(OptionValue::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }
    }

    /// The `query_priority` option.
    pub fn query_priority(&self) -> Option<i32> {
        match self.options.get("query_priority") {
            Some(OptionValue::Int(p)) => i32::try_from(*p).ok(),
            _ => None,
        }
    }
}

/// Comma-separated client tags, trimmed, empty ones dropped.
pub fn split_tags(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()
}

#[derive(Debug)]
struct Entry {
    user: String,
    state: Mutex<SessionState>,
}

/// All sessions of this gateway, expiring after an idle period.
#[derive(Clone)]
pub struct SessionStore {
    sessions: Cache<String, Arc<Entry>>,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore").field("sessions", &self.sessions.entry_count()).finish()
    }
}

impl Default for SessionStore {
    fn default() -> Self {
        Self::new(100_000, Duration::from_secs(8 * 3600))
    }
}

impl SessionStore {
    /// At most `capacity` sessions, each dropped after `idle` without use.
    pub fn new(capacity: u64, idle: Duration) -> Self {
        SessionStore { sessions: Cache::builder().max_capacity(capacity).time_to_idle(idle).build() }
    }

    /// The state of session `id` if it belongs to `user`.
    pub fn get(&self, id: &str, user: &str) -> Option<SessionState> {
        self.sessions.get(id).filter(|e| e.user == user).map(|e| e.state.lock().clone())
    }

    /// Changes session `id` of `user`, creating it if needed. Returns false if the id belongs
    /// to another user.
    pub fn update(&self, id: &str, user: &str, f: impl FnOnce(&mut SessionState)) -> bool {
        let entry = self
            .sessions
            .get_with(id.to_string(), || Arc::new(Entry { user: user.to_string(), state: Mutex::default() }));
        if entry.user != user {
            return false;
        }
        f(&mut entry.state.lock());
        true
    }

    /// Forgets session `id` of `user`.
    pub fn close(&self, id: &str, user: &str) -> bool {
        match self.sessions.get(id) {
            Some(e) if e.user == user => {
                self.sessions.invalidate(id);
                true
            }
            _ => false,
        }
    }
}

/// Reads the session cookie from a `cookie` header value.
pub fn cookie_session_id(cookie_header: &str) -> Option<String> {
    cookie_header.split(';').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        (name == SESSION_COOKIE && !value.is_empty() && value.len() <= 128).then(|| value.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_belong_to_one_user() {
        let store = SessionStore::default();
        assert!(store.update("s1", "alice", |s| s.catalog = Some("tpch".into())));
        assert_eq!(store.get("s1", "alice").and_then(|s| s.catalog), Some("tpch".into()));
        assert!(store.get("s1", "mallory").is_none());
        assert!(!store.update("s1", "mallory", |s| s.catalog = Some("x".into())));
        assert!(!store.close("s1", "mallory"));
        assert!(store.close("s1", "alice"));
        assert!(store.get("s1", "alice").is_none());
    }

    #[test]
    fn cookie_is_found_among_others() {
        assert_eq!(cookie_session_id("a=b; arrow_flight_session_id=xyz; c=d"), Some("xyz".into()));
        assert_eq!(cookie_session_id("a=b"), None);
    }
}
