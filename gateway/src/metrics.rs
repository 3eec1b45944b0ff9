//! Prometheus metrics, served in the text format at `GET /metrics`.
//!
//! One registry per gateway; components get the handles they update. Label values are
//! bounded sets (method names, reason labels), never user input.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `quiver_auth_attempts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// The method that decided: `password-file`, `ldap`, `jwt`, `kerberos`, `certificate`,
    /// `token` (a gateway session token), `open`, or `chain` when no method took the call.
    pub method: String,
    /// `success` or `failure`.
    pub result: &'static str,
    /// Why it failed (`invalid_credentials`, `denied`, `invalid_token`, `unsupported`,
    /// `unavailable`); empty on success.
    pub reason: &'static str,
}

/// Labels of per-pool query metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// Pool name.
    pub pool: String,
    /// `finished`, `failed`, `cancelled` (ended), or `queued`, `running`, `planned` (gauges).
    pub state: &'static str,
}

/// Labels of a pool.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    /// Pool name.
    pub pool: String,
}

/// Labels of a worker.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    /// Pool name.
    pub pool: String,
    /// Worker URI.
    pub worker: String,
    /// `HEALTHY`, `SUSPECT`, `EJECTED`, `DRAINING`.
    pub state: &'static str,
}

/// Labels of a resource group.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// The group's dotted id.
    pub group: String,
}

/// Labels of `quiver_authz_decisions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Trino operation name.
    pub operation: &'static str,
    /// `allow`, `deny`, `filter`, `row_filters`, `column_masks` or `error`.
    pub decision: &'static str,
    /// `opa-embedded`, `opa-remote` or `rules-file`.
    pub backend: &'static str,
}

/// Labels of `quiver_cache_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `HIT`, `MISS` or `BYPASS`. (No user label: one series per user grows without bound and
    /// shows every user name to whoever reads the metrics.)
    pub result: &'static str,
}

/// Labels of `quiver_cache_evictions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    /// `size`, `expired`, `invalidated` or `replaced`.
    pub reason: &'static str,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    auth_attempts: Family<AuthLabels, Counter>,
    queries: Family<QueryLabels, Counter>,
    active: Family<QueryLabels, Gauge>,
    latency: Family<PoolLabels, Histogram>,
    bytes: Family<PoolLabels, Counter>,
    workers: Family<WorkerLabels, Gauge>,
    group_running: Family<GroupLabels, Gauge>,
    group_queued: Family<GroupLabels, Gauge>,
    group_rejected: Family<GroupLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    decision_seconds: Family<DecisionLabels, Histogram>,
    cache_requests: Family<CacheLabels, Counter>,
    cache_evictions: Family<EvictionLabels, Counter>,
    cache_bytes: Gauge,
    cache_entries: Gauge,
    cache_hit_ratio: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("quiver");
        let auth_attempts = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_attempts",
            "Authentications by method and result (session-token calls count as method `token`)",
            auth_attempts.clone(),
        );
        let queries = Family::<QueryLabels, Counter>::default();
        registry.register("queries", "Queries that ended, by pool and final state", queries.clone());
        let active = Family::<QueryLabels, Gauge>::default();
        registry.register("queries_active", "Queries queued or running now, by pool and state", active.clone());
        let latency = Family::<PoolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        registry.register("query_duration_seconds", "Time from planning to the end of the stream", latency.clone());
        let bytes = Family::<PoolLabels, Counter>::default();
        registry.register("streamed_bytes", "Arrow IPC bytes streamed to clients", bytes.clone());
        let workers = Family::<WorkerLabels, Gauge>::default();
        registry.register("worker_state", "1 for each worker's current state", workers.clone());
        let group_running = Family::<GroupLabels, Gauge>::default();
        registry.register("resource_group_running", "Running queries per resource group", group_running.clone());
        let group_queued = Family::<GroupLabels, Gauge>::default();
        registry.register("resource_group_queued", "Queue depth per resource group", group_queued.clone());
        let group_rejected = Family::<GroupLabels, Counter>::default();
        registry.register(
            "resource_group_rejected",
            "Queries refused by a full resource group",
            group_rejected.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authz_decisions",
            "Authorization decisions by Trino operation, outcome and back end",
            decisions.clone(),
        );
        let decision_seconds = Family::<DecisionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_005, 2.0, 16))
        });
        registry.register("authz_decision_seconds", "Time one authorization decision took", decision_seconds.clone());
        let cache_requests = Family::<CacheLabels, Counter>::default();
        registry.register("cache_requests", "Statements by cache outcome (HIT, MISS, BYPASS)", cache_requests.clone());
        let cache_evictions = Family::<EvictionLabels, Counter>::default();
        registry.register("cache_evictions", "Cache entries removed, by reason", cache_evictions.clone());
        let cache_bytes = Gauge::default();
        registry.register("cache_bytes", "Bytes of results held in the cache", cache_bytes.clone());
        let cache_entries = Gauge::default();
        registry.register("cache_entries", "Results held in the cache", cache_entries.clone());
        let cache_hit_ratio = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register("cache_hit_ratio", "Hits / (hits + misses) since start", cache_hit_ratio.clone());
        Metrics {
            registry,
            auth_attempts,
            queries,
            active,
            latency,
            bytes,
            workers,
            group_running,
            group_queued,
            group_rejected,
            decisions,
            decision_seconds,
            cache_requests,
            cache_evictions,
            cache_bytes,
            cache_entries,
            cache_hit_ratio,
        }
    }

    /// Counts a statement's cache outcome; `hits`/`misses` are the totals so far.
    pub fn cache_request(&self, result: &'static str, hits: u64, misses: u64) {
        self.cache_requests.get_or_create(&CacheLabels { result }).inc();
        if hits + misses > 0 {
            self.cache_hit_ratio.set(hits as f64 / (hits + misses) as f64);
        }
    }

    /// Sets what the cache holds.
    pub fn cache_held(&self, bytes: u64, entries: u64) {
        self.cache_bytes.set(bytes as i64);
        self.cache_entries.set(entries as i64);
    }

    /// Counts an eviction.
    pub fn cache_evicted(&self, reason: &'static str, _bytes: usize) {
        self.cache_evictions.get_or_create(&EvictionLabels { reason }).inc();
    }

    /// Counts an ended query.
    pub fn query_finished(&self, pool: &str, state: &'static str, elapsed: Duration, bytes: u64) {
        self.queries.get_or_create(&QueryLabels { pool: pool.into(), state }).inc();
        let pool = PoolLabels { pool: pool.into() };
        self.latency.get_or_create(&pool).observe(elapsed.as_secs_f64());
        self.bytes.get_or_create(&pool).inc_by(bytes);
    }

    /// Sets the active-query gauges from (pool, state) pairs.
    pub fn set_active(&self, active: &[(String, &'static str)]) {
        self.active.clear();
        for (pool, state) in active {
            self.active.get_or_create(&QueryLabels { pool: pool.clone(), state }).inc();
        }
    }

    /// Sets the worker-state gauges from (pool, worker, state) triples.
    pub fn set_workers(&self, workers: &[(String, String, &'static str)]) {
        self.workers.clear();
        for (pool, worker, state) in workers {
            self.workers.get_or_create(&WorkerLabels { pool: pool.clone(), worker: worker.clone(), state }).set(1);
        }
    }

    /// Sets a resource group's running and queued gauges.
    pub fn set_group(&self, group: &str, running: usize, queued: usize) {
        let labels = GroupLabels { group: group.into() };
        self.group_running.get_or_create(&labels).set(running as i64);
        self.group_queued.get_or_create(&labels).set(queued as i64);
    }

    /// Forgets every group's running/queued gauges (before they are set again).
    pub fn clear_groups(&self) {
        self.group_running.clear();
        self.group_queued.clear();
    }

    /// Counts a query a resource group refused.
    pub fn group_rejected(&self, group: &str) {
        self.group_rejected.get_or_create(&GroupLabels { group: group.into() }).inc();
    }

    /// Counts a successful authentication by `method`.
    pub fn auth_success(&self, method: &str) {
        self.auth_attempts.get_or_create(&AuthLabels { method: method.into(), result: "success", reason: "" }).inc();
    }

    /// Counts a failed authentication.
    pub fn auth_failure(&self, method: &str, reason: &'static str) {
        self.auth_attempts.get_or_create(&AuthLabels { method: method.into(), result: "failure", reason }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

impl quiver_policies::DecisionObserver for Metrics {
    fn observe(&self, event: &quiver_policies::DecisionEvent<'_>) {
        let labels =
            DecisionLabels { operation: event.operation, decision: event.decision.label(), backend: event.backend };
        self.decision_seconds.get_or_create(&labels).observe(event.elapsed.as_secs_f64());
        self.decisions.get_or_create(&labels).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_counters_are_exposed_by_method_and_reason() {
        let metrics = Metrics::new();
        metrics.auth_success("ldap");
        metrics.auth_failure("ldap", "denied");
        metrics.auth_failure("ldap", "denied");
        let text = metrics.encode();
        assert!(
            text.contains(r#"quiver_auth_attempts_total{method="ldap",result="failure",reason="denied"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"quiver_auth_attempts_total{method="ldap",result="success",reason=""} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
