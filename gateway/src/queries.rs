//! Query history: every statement the gateway planned, queued, ran or finished, for
//! `GET /v1/query`, kill (`DELETE /v1/query/{id}`, CancelFlightInfo), metrics and graceful
//! shutdown.
//!
//! A query is born at GetFlightInfo (PLANNED: a sealed ticket was handed out), runs while its
//! DoGet streams (QUEUED first when its resource group is full), and ends FINISHED, FAILED or
//! CANCELLED. Ended queries stay in a bounded list of recent ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Where a query is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueryState {
    /// Planned; its ticket has not been redeemed yet.
    Planned,
    /// Waiting for its resource group.
    Queued,
    /// Streaming results.
    Running,
    /// Streamed to the end.
    Finished,
    /// Ended with an error.
    Failed,
    /// Cancelled by the client, an operator, or the client going away.
    Cancelled,
}

impl QueryState {
    /// Lower-case name for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            QueryState::Planned => "planned",
            QueryState::Queued => "queued",
            QueryState::Running => "running",
            QueryState::Finished => "finished",
            QueryState::Failed => "failed",
            QueryState::Cancelled => "cancelled",
        }
    }

    fn is_done(self) -> bool {
        matches!(self, QueryState::Finished | QueryState::Failed | QueryState::Cancelled)
    }
}

/// A running query's stop button (CancelFlightInfo, kill, shutdown deadline).
#[derive(Debug, Default)]
pub struct CancelFlag {
    cancelled: AtomicBool,
    notify: Notify,
}

impl CancelFlag {
    /// Cancels: the stream ends with CANCELLED at its next step.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Resolves when cancelled.
    pub async fn cancelled(&self) {
        let notified = self.notify.notified();
        if self.is_cancelled() {
            return;
        }
        notified.await;
    }
}

#[derive(Debug, Clone)]
struct Progress {
    state: QueryState,
    worker: Option<String>,
    group: Option<String>,
    started: Option<SystemTime>,
    ended: Option<SystemTime>,
    error: Option<String>,
}

/// One query.
#[derive(Debug)]
pub struct QueryRecord {
    /// The query id (the ticket id).
    pub id: String,
    /// Who ran it.
    pub user: String,
    /// The pool it runs on.
    pub pool: String,
    /// Trino query type (SELECT, INSERT, ...).
    pub query_type: String,
    /// The SQL text (first 2000 characters).
    pub sql: String,
    created: SystemTime,
    created_at: Instant,
    progress: Mutex<Progress>,
    /// Its stop button.
    pub cancel: CancelFlag,
    bytes: AtomicU64,
    rows: AtomicU64,
    cpu_nanos: AtomicU64,
}

/// What the admin API shows of a query.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryInfo {
    /// Query id.
    pub query_id: String,
    /// State.
    pub state: QueryState,
    /// User.
    pub user: String,
    /// Resource group (dotted path), once admitted.
    pub resource_group: Option<String>,
    /// Pool.
    pub pool: String,
    /// Worker URI, once running.
    pub worker: Option<String>,
    /// Query type.
    pub query_type: String,
    /// SQL text.
    pub query: String,
    /// When it was planned (ms since the epoch).
    pub created_ms: u64,
    /// When its DoGet started (ms since the epoch).
    pub started_ms: Option<u64>,
    /// When it ended (ms since the epoch).
    pub ended_ms: Option<u64>,
    /// Milliseconds from planning to the end (or to now).
    pub elapsed_ms: u64,
    /// Rows streamed.
    pub rows: u64,
    /// Arrow IPC bytes streamed.
    pub bytes: u64,
    /// CPU time the worker reported, in milliseconds (Quiver workers; 0 otherwise).
    pub cpu_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl QueryRecord {
    /// The query's state now.
    pub fn state(&self) -> QueryState {
        self.progress.lock().state
    }

    /// Records where it runs.
    pub fn set_worker(&self, worker: &str) {
        self.progress.lock().worker = Some(worker.to_string());
    }

    /// Records its resource group.
    pub fn set_group(&self, group: &str) {
        self.progress.lock().group = Some(group.to_string());
    }

    /// Moves it to `state` (QUEUED or RUNNING).
    pub fn set_state(&self, state: QueryState) {
        let mut p = self.progress.lock();
        if !p.state.is_done() {
            p.state = state;
            if state == QueryState::Running {
                p.started = Some(SystemTime::now());
            }
        }
    }

    /// Counts one frame that went to the client.
    pub fn add_frame(&self, bytes: usize, rows: u64) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Records CPU time the worker reported.
    pub fn add_cpu(&self, used: Duration) {
        self.cpu_nanos.fetch_add(used.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The admin API's view.
    pub fn info(&self) -> QueryInfo {
        let p = self.progress.lock().clone();
        let elapsed =
            p.ended.and_then(|e| e.duration_since(self.created).ok()).unwrap_or_else(|| self.created_at.elapsed());
        QueryInfo {
            query_id: self.id.clone(),
            state: p.state,
            user: self.user.clone(),
            resource_group: p.group,
            pool: self.pool.clone(),
            worker: p.worker,
            query_type: self.query_type.clone(),
            query: self.sql.clone(),
            created_ms: epoch_ms(self.created),
            started_ms: p.started.map(epoch_ms),
            ended_ms: p.ended.map(epoch_ms),
            elapsed_ms: elapsed.as_millis() as u64,
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            cpu_ms: self.cpu_nanos.load(Ordering::Relaxed) / 1_000_000,
            error: p.error,
        }
    }
}

/// Why a query was refused at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlreadyCancelled;

/// All queries this gateway knows of.
pub struct QueryRegistry {
    planned: Cache<String, Arc<QueryRecord>>,
    active: Mutex<HashMap<String, Arc<QueryRecord>>>,
    recent: Mutex<VecDeque<Arc<QueryRecord>>>,
    cancelled: Cache<String, ()>,
    recent_capacity: usize,
    metrics: Arc<Metrics>,
    idle: Notify,
    accepting: AtomicBool,
}

impl std::fmt::Debug for QueryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRegistry").field("active", &self.active.lock().len()).finish()
    }
}

impl QueryRegistry {
    /// A registry keeping planned queries for `ticket_ttl` and the last `recent_capacity`
    /// ended ones.
    pub fn new(ticket_ttl: Duration, recent_capacity: usize, metrics: Arc<Metrics>) -> Self {
        QueryRegistry {
            planned: Cache::builder().max_capacity(100_000).time_to_live(ticket_ttl).build(),
            active: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
            cancelled: Cache::builder().max_capacity(100_000).time_to_live(ticket_ttl).build(),
            recent_capacity,
            metrics,
            idle: Notify::new(),
            accepting: AtomicBool::new(true),
        }
    }

    fn record(id: &str, user: &str, pool: &str, query_type: &str, sql: &str, state: QueryState) -> Arc<QueryRecord> {
        Arc::new(QueryRecord {
            id: id.to_string(),
            user: user.to_string(),
            pool: pool.to_string(),
            query_type: query_type.to_string(),
            sql: sql.chars().take(2000).collect(),
            created: SystemTime::now(),
            created_at: Instant::now(),
            progress: Mutex::new(Progress {
                state,
                worker: None,
                group: None,
                started: None,
                ended: None,
                error: None,
            }),
            cancel: CancelFlag::default(),
            bytes: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            cpu_nanos: AtomicU64::new(0),
        })
    }

    /// A statement was planned and its ticket handed out.
    pub fn plan(&self, id: &str, user: &str, pool: &str, query_type: &str, sql: &str) {
        let record = Self::record(id, user, pool, query_type, sql, QueryState::Planned);
        self.planned.insert(id.to_string(), record);
    }

    /// A ticket is being redeemed: the query becomes active (the planned record if this
    /// gateway planned it, a new one if another replica did). Refused if it was cancelled.
    pub fn start(
        &self,
        id: &str,
        user: &str,
        pool: &str,
        query_type: &str,
    ) -> Result<Arc<QueryRecord>, AlreadyCancelled> {
        if self.cancelled.contains_key(id) {
            return Err(AlreadyCancelled);
        }
        let record = self
            .planned
            .remove(id)
            .unwrap_or_else(|| Self::record(id, user, pool, query_type, "", QueryState::Planned));
        self.active.lock().insert(id.to_string(), record.clone());
        Ok(record)
    }

    /// The query ended.
    pub fn finish(&self, record: &Arc<QueryRecord>, state: QueryState, error: Option<String>) {
        {
            let mut p = record.progress.lock();
            if p.state.is_done() {
                return;
            }
            p.state = state;
            p.ended = Some(SystemTime::now());
            p.error = error;
        }
        self.active.lock().remove(&record.id);
        let mut recent = self.recent.lock();
        recent.push_back(record.clone());
        while recent.len() > self.recent_capacity {
            recent.pop_front();
        }
        drop(recent);
        self.metrics.query_finished(
            &record.pool,
            state.label(),
            record.created_at.elapsed(),
            record.bytes.load(Ordering::Relaxed),
        );
        if self.active.lock().is_empty() {
            self.idle.notify_waiters();
        }
    }

    /// Cancels a query: a running one stops at its next frame, a planned one can no longer be
    /// redeemed. Returns false when the id is unknown or already ended.
    pub fn cancel(&self, id: &str) -> bool {
        if let Some(record) = self.active.lock().get(id).cloned() {
            record.cancel.cancel();
            return true;
        }
        if let Some(record) = self.planned.remove(id) {
            self.cancelled.insert(id.to_string(), ());
            self.finish(&record, QueryState::Cancelled, Some("cancelled before it ran".into()));
            return true;
        }
        false
    }

    /// Marks a ticket id cancelled even if this gateway never saw it (CancelFlightInfo for a
    /// ticket another replica planned).
    pub fn cancel_ticket(&self, id: &str) {
        if !self.cancel(id) {
            self.cancelled.insert(id.to_string(), ());
        }
    }

    /// Whether a ticket id was cancelled.
    pub fn is_cancelled(&self, id: &str) -> bool {
        self.cancelled.contains_key(id)
    }

    /// One query by id.
    pub fn get(&self, id: &str) -> Option<Arc<QueryRecord>> {
        if let Some(r) = self.active.lock().get(id) {
            return Some(r.clone());
        }
        if let Some(r) = self.planned.get(id) {
            return Some(r);
        }
        self.recent.lock().iter().rev().find(|r| r.id == id).cloned()
    }

    /// Every query: active, planned, then recent (newest first).
    pub fn list(&self) -> Vec<QueryInfo> {
        let mut out: Vec<QueryInfo> = self.active.lock().values().map(|r| r.info()).collect();
        out.extend(self.planned.iter().map(|(_, r)| r.info()));
        out.extend(self.recent.lock().iter().rev().map(|r| r.info()));
        out
    }

    /// Queries streaming or queued now.
    pub fn active_count(&self) -> usize {
        self.active.lock().len()
    }

    /// Queries by active state, for gauges.
    pub fn active_by_state(&self) -> Vec<(String, QueryState)> {
        self.active.lock().values().map(|r| (r.pool.clone(), r.state())).collect()
    }

    /// Waits until no query is active or `deadline` passes; returns whether it drained.
    pub async fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            if self.active_count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return self.active_count() == 0;
            }
        }
    }

    /// Whether new queries are taken (false once shutdown began).
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Stops taking new queries; running ones go on.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Cancels every active query (the shutdown deadline passed).
    pub fn cancel_all(&self) {
        for record in self.active.lock().values() {
            record.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> QueryRegistry {
        QueryRegistry::new(Duration::from_secs(60), 2, Arc::new(Metrics::new()))
    }

    #[test]
    fn a_query_goes_from_planned_to_finished_and_stays_in_recent() {
        let q = registry();
        q.plan("q1", "alice", "default", "SELECT", "SELECT 1");
        assert_eq!(q.get("q1").expect("planned").state(), QueryState::Planned);
        let r = q.start("q1", "alice", "default", "SELECT").expect("start");
        r.set_state(QueryState::Running);
        r.set_worker("grpc://w1");
        r.add_frame(100, 5);
        assert_eq!(q.active_count(), 1);
        q.finish(&r, QueryState::Finished, None);
        assert_eq!(q.active_count(), 0);
        let info = q.get("q1").expect("recent").info();
        assert_eq!(
            (info.state, info.rows, info.bytes, info.query.as_str()),
            (QueryState::Finished, 5, 100, "SELECT 1")
        );
        assert_eq!(info.worker.as_deref(), Some("grpc://w1"));
        // Finishing twice changes nothing.
        q.finish(&r, QueryState::Failed, Some("late".into()));
        assert_eq!(q.get("q1").expect("recent").state(), QueryState::Finished);
    }

    #[test]
    fn cancelled_tickets_cannot_start_and_recent_is_bounded() {
        let q = registry();
        q.plan("q1", "alice", "p", "SELECT", "SELECT 1");
        assert!(q.cancel("q1"));
        assert_eq!(q.start("q1", "alice", "p", "SELECT").expect_err("an error"), AlreadyCancelled);
        q.cancel_ticket("elsewhere");
        assert!(q.start("elsewhere", "alice", "p", "SELECT").is_err());
        for id in ["a", "b", "c"] {
            let r = q.start(id, "bob", "p", "SELECT").expect("start");
            q.finish(&r, QueryState::Finished, None);
        }
        let ids: Vec<String> = q.list().into_iter().map(|i| i.query_id).collect();
        assert_eq!(ids, vec!["c", "b"], "newest first, two kept");
        assert!(!q.cancel("nope"));
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_query_ends() {
        let q = Arc::new(registry());
        let r = q.start("q", "a", "p", "SELECT").expect("start");
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.wait_idle(Instant::now() + Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.finish(&r, QueryState::Finished, None);
        assert!(waiter.await.expect("join"));
        let r = q.start("q2", "a", "p", "SELECT").expect("start");
        assert!(!q.wait_idle(Instant::now() + Duration::from_millis(30)).await);
        r.cancel.cancel();
        assert!(r.cancel.is_cancelled());
    }
}
