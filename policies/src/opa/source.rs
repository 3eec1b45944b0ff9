//! Where decisions come from: a [`DecisionSource`] evaluates a policy path against an input
//! document. Embedded Rego and remote OPA are the two sources; [`CachedSource`] puts a short
//! decision cache in front of either.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::PolicyError;

/// The health of a source, for the admin API and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    /// `opa-embedded` or `opa-remote`.
    pub backend: &'static str,
    /// The policy version in use.
    pub version: String,
    /// Why the last (re)load failed, if it did; the previous policy stays in use.
    pub last_error: Option<String>,
}

/// Evaluates policies.
#[async_trait]
pub trait DecisionSource: Send + Sync + 'static {
    /// Evaluates the rule at `path` (`data.trino.allow` embedded, a `/v1/data/...` URL remote)
    /// against `document` (`{"input": ...}`). `Ok(None)` means the result is undefined.
    async fn evaluate(&self, path: &str, document: &Value) -> Result<Option<Value>, PolicyError>;

    /// The policy version decisions are made with now.
    fn version(&self) -> String;

    /// `opa-embedded` or `opa-remote`.
    fn backend(&self) -> &'static str;

    /// Health and the last load error.
    fn status(&self) -> SourceStatus;
}

/// A short-lived decision cache in front of a source. The key is the path, the policy version
/// and a SHA-256 of the input without `context.queryId` (which differs per query and would
/// defeat the cache; policies must not decide on it). Errors are never cached.
pub struct CachedSource {
    inner: Arc<dyn DecisionSource>,
    cache: moka::sync::Cache<[u8; 32], Option<Value>>,
}

impl std::fmt::Debug for CachedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedSource").field("backend", &self.inner.backend()).finish_non_exhaustive()
    }
}

impl CachedSource {
    /// Caches `inner`'s decisions for `ttl`, at most `max_entries` of them.
    pub fn new(inner: Arc<dyn DecisionSource>, ttl: Duration, max_entries: u64) -> Self {
        let cache = moka::sync::Cache::builder().time_to_live(ttl).max_capacity(max_entries).build();
        CachedSource { inner, cache }
    }

    fn key(&self, path: &str, document: &Value) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(path.as_bytes());
        h.update([0]);
        h.update(self.inner.version().as_bytes());
        h.update([0]);
        // serde_json's Map keeps keys sorted (no preserve_order feature): the text is canonical.
        // It is written straight into the hash; the document is copied only to drop a queryId.
        let written = if document.pointer("/input/context/queryId").is_some() {
            let mut doc = document.clone();
            if let Some(ctx) = doc.pointer_mut("/input/context").and_then(Value::as_object_mut) {
                ctx.remove("queryId");
            }
            serde_json::to_writer(HashWriter(&mut h), &doc)
        } else {
            serde_json::to_writer(HashWriter(&mut h), document)
        };
        // Writing into a hash cannot fail, and a Value always serializes.
        debug_assert!(written.is_ok());
        h.finalize().into()
    }
}

/// `io::Write` into a running SHA-256.
struct HashWriter<'a>(&'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl DecisionSource for CachedSource {
    async fn evaluate(&self, path: &str, document: &Value) -> Result<Option<Value>, PolicyError> {
        let key = self.key(path, document);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let result = self.inner.evaluate(path, document).await?;
        self.cache.insert(key, result.clone());
        Ok(result)
    }

    fn version(&self) -> String {
        self.inner.version()
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn status(&self) -> SourceStatus {
        self.inner.status()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl DecisionSource for Counting {
        async fn evaluate(&self, _: &str, _: &Value) -> Result<Option<Value>, PolicyError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Some(json!(true)))
        }
        fn version(&self) -> String {
            "v1".into()
        }
        fn backend(&self) -> &'static str {
            "test"
        }
        fn status(&self) -> SourceStatus {
            SourceStatus { backend: "test", version: "v1".into(), last_error: None }
        }
    }

    #[tokio::test]
    async fn cache_ignores_query_id_but_not_the_rest_of_the_input() {
        let inner = Arc::new(Counting::default());
        let cached = CachedSource::new(inner.clone(), Duration::from_secs(60), 100);
        let doc = |user: &str, q: &str| json!({"input": {"context": {"identity": {"user": user}, "queryId": q}}});
        cached.evaluate("p", &doc("alice", "q1")).await.ok();
        cached.evaluate("p", &doc("alice", "q2")).await.ok();
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        cached.evaluate("p", &doc("bob", "q1")).await.ok();
        cached.evaluate("other", &doc("alice", "q1")).await.ok();
        assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    }
}
