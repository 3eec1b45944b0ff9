//! Admission at run time: Trino resource groups in front of every DoGet and update.
//!
//! The spec, selector matching and the scheduling state machine live in
//! `quiver_policies::resource_groups`; this module drives it. A query asks for a slot when its
//! DoGet (or DoPut update) starts — before it touches a worker — and either runs, waits in its
//! group's queue (holding no worker), or is refused with RESOURCE_EXHAUSTED naming the group.
//! The slot is given back when the stream ends; a client that goes away while queued leaves
//! the queue. The file is re-read when it changes (running queries are not disturbed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use quiver_policies::resource_groups::{
    Admission, GroupId, QueryId, ResourceGroupInfo, ResourceGroupManager, ResourceGroupsSpec, SelectionContext,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{GatewayError, Result};
use crate::metrics::Metrics;
use crate::queries::CancelFlag;

/// Resource groups of one gateway.
pub struct AdmissionController {
    manager: Mutex<ResourceGroupManager>,
    /// Queued queries' wake-up calls, by query id.
    waiting: Mutex<HashMap<String, oneshot::Sender<()>>>,
    path: PathBuf,
    loaded: Mutex<Option<SystemTime>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AdmissionController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionController").field("path", &self.path).finish()
    }
}

/// A query's slot in its resource group; dropping it gives the slot back (or leaves the
/// queue), which may start queued queries.
pub struct Permit {
    controller: Arc<AdmissionController>,
    id: QueryId,
    /// The group the query runs in (dotted).
    pub group: String,
    /// The per-query memory limit of the group (`softMemoryLimit`), if any.
    pub memory_limit: Option<u64>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("id", &self.id).field("group", &self.group).finish()
    }
}

impl Permit {
    /// Charges CPU time the worker reported for this query to its group (and ancestors):
    /// over `softCpuLimit` a group runs fewer queries, over `hardCpuLimit` none, until the
    /// quota regenerates.
    pub fn charge_cpu(&self, used: Duration) {
        self.controller.manager.lock().add_query_cpu_usage(&self.id, used);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.controller.release(&self.id);
    }
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl AdmissionController {
    /// Loads Trino's `resource-groups.json` from `path`; `cluster_memory` is what
    /// `softMemoryLimit` percentages are taken of.
    pub fn load(
        path: PathBuf,
        cluster_memory: Option<u64>,
        metrics: Arc<Metrics>,
    ) -> std::result::Result<Self, String> {
        let spec = ResourceGroupsSpec::from_file(&path).map_err(|e| e.to_string())?;
        let loaded = mtime(&path);
        let mut manager = ResourceGroupManager::new(spec);
        if let Some(bytes) = cluster_memory {
            manager.set_cluster_memory_bytes(bytes);
        }
        Ok(AdmissionController {
            manager: Mutex::new(manager),
            waiting: Mutex::new(HashMap::new()),
            path,
            loaded: Mutex::new(loaded),
            metrics,
        })
    }

    /// Asks for a slot for query `id`. Resolves when it may run; while it waits, `on_queued`
    /// has been called once. Dropping the future, or `cancel` firing (a kill), leaves the queue.
    pub async fn admit(
        self: &Arc<Self>,
        id: &str,
        context: &SelectionContext<'_>,
        priority: i32,
        cancel: &CancelFlag,
        on_queued: impl FnOnce(&str),
    ) -> Result<Permit> {
        let query = QueryId::from(id);
        let (admission, group, memory_limit, wait) = {
            let mut manager = self.manager.lock();
            let selected = manager.select(context).ok_or_else(|| {
                GatewayError::ResourceExhausted(format!(
                    "no resource group selector matches user `{}` (source {:?}, query type {:?}, tags {:?})",
                    context.user,
                    context.source,
                    context.query_type.map(|q| q.as_str()),
                    context.client_tags
                ))
            })?;
            let group = selected.id().to_string();
            let memory_limit = manager.soft_memory_limit_bytes(selected.id());
            let admission = manager.submit(query.clone(), &selected, priority);
            // The wake-up call is registered while the manager is locked, so a slot freed
            // right after cannot be missed.
            let wait = match admission {
                Admission::Queued => {
                    let (tx, rx) = oneshot::channel();
                    self.waiting.lock().insert(id.to_string(), tx);
                    Some(rx)
                }
                _ => None,
            };
            (admission, group, memory_limit, wait)
        };
        self.update_gauges();
        match admission {
            Admission::Rejected { group, reason } => {
                self.metrics.group_rejected(&group.to_string());
                Err(GatewayError::ResourceExhausted(format!("resource group `{group}`: {reason}")))
            }
            Admission::Run => Ok(Permit { controller: self.clone(), id: query, group, memory_limit }),
            Admission::Queued => {
                // From here on, dropping the permit (the client went away) leaves the queue.
                let permit = Permit { controller: self.clone(), id: query, group, memory_limit };
                on_queued(&permit.group);
                if let Some(rx) = wait {
                    tokio::select! {
                        woken = rx => woken
                            .map_err(|_| GatewayError::Unavailable("the resource group queue was dropped".into()))?,
                        _ = cancel.cancelled() => {
                            return Err(GatewayError::Cancelled("the query was cancelled while queued".into()));
                        }
                    }
                }
                Ok(permit)
            }
        }
    }

    /// Gives a slot back (or leaves the queue) and starts whoever may start now.
    fn release(&self, id: &QueryId) {
        self.waiting.lock().remove(&id.0);
        let started = {
            let mut manager = self.manager.lock();
            if manager.cancel_queued(id) { Vec::new() } else { manager.finish(id) }
        };
        self.wake(started);
        self.update_gauges();
    }

    fn wake(&self, started: Vec<QueryId>) {
        let mut waiting = self.waiting.lock();
        for id in started {
            if let Some(tx) = waiting.remove(&id.0) {
                let _ = tx.send(());
            }
        }
    }

    fn update_gauges(&self) {
        let manager = self.manager.lock();
        // Groups made from templates come and go: start from a clean slate each time.
        self.metrics.clear_groups();
        for group in manager.group_ids() {
            let running = manager.running_queries(&group).len();
            let queued = manager.queued_queries(&group).len();
            self.metrics.set_group(&group.to_string(), running, queued);
        }
    }

    /// The group the selectors would choose (dotted), without submitting anything; routing
    /// rules can look at it.
    pub fn select_group(&self, context: &SelectionContext<'_>) -> Option<String> {
        self.manager.lock().select(context).map(|g| g.id().to_string())
    }

    /// Trino's `/v1/resourceGroupState/{id}` answer.
    pub fn state(&self, group: &GroupId) -> Option<ResourceGroupInfo> {
        self.manager.lock().state(group)
    }

    /// Regenerates CPU quota and re-reads the file when it changed; run on an interval.
    fn tick(&self, elapsed: Duration) {
        let mut started = self.manager.lock().tick(elapsed);
        let now = mtime(&self.path);
        let changed = { *self.loaded.lock() != now };
        if changed {
            match ResourceGroupsSpec::from_file(&self.path) {
                Ok(spec) => {
                    started.extend(self.manager.lock().reload(spec));
                    *self.loaded.lock() = now;
                    tracing::info!(path = %self.path.display(), "resource groups reloaded");
                }
                Err(e) => {
                    // Keep the groups in force; say why once per change.
                    *self.loaded.lock() = now;
                    tracing::error!(path = %self.path.display(), error = %e, "resource groups not reloaded");
                }
            }
        }
        self.wake(started);
        self.update_gauges();
    }

    /// Ticks every `interval` until aborted.
    pub fn spawn_ticker(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let controller = self.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            let mut ticker = tokio::time::interval(interval);
            loop {
                ticker.tick().await;
                let now = Instant::now();
                controller.tick(now - last);
                last = now;
            }
        })
    }
}
