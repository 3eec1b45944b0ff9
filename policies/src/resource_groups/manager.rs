//! Admission: the state machine that runs, queues or refuses each query in its group.
//!
//! Pure and deterministic: no clock, no threads, no I/O. The gateway owns one manager behind a
//! lock, calls [`ResourceGroupManager::submit`] when a statement arrives, starts the queries
//! that [`finish`](ResourceGroupManager::finish), [`tick`](ResourceGroupManager::tick) and
//! [`reload`](ResourceGroupManager::reload) hand back, and reports CPU time as workers send it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::selector::{SelectedGroup, SelectionContext};
use super::spec::ResourceGroupsSpec;
use super::template::GroupId;
use super::tree::{Limits, Node, QueuedQuery};

/// The gateway's id of a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub String);

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for QueryId {
    fn from(id: &str) -> Self {
        QueryId(id.to_string())
    }
}

impl From<String> for QueryId {
    fn from(id: String) -> Self {
        QueryId(id)
    }
}

/// What happened to a submitted query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Start it now.
    Run,
    /// It waits; a later `finish`, `tick` or `reload` returns its id when it may start.
    Queued,
    /// Refused (RESOURCE_EXHAUSTED for the client).
    Rejected {
        /// The group the query was selected into.
        group: GroupId,
        /// Why, naming the group whose limit was reached.
        reason: String,
    },
}

/// Where a known query is.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueryEntry {
    pub(super) node: usize,
    pub(super) running: bool,
}

/// Resource groups at run time: the concrete group tree, the queues, and CPU quota accounting.
#[derive(Debug)]
pub struct ResourceGroupManager {
    pub(super) spec: ResourceGroupsSpec,
    pub(super) nodes: Vec<Option<Node>>,
    pub(super) free: Vec<usize>,
    pub(super) by_id: HashMap<GroupId, usize>,
    pub(super) roots: Vec<usize>,
    pub(super) queries: HashMap<QueryId, QueryEntry>,
    /// Orders arrivals and round-robin turns.
    pub(super) seq: u64,
    pub(super) cluster_memory_bytes: u64,
}

impl ResourceGroupManager {
    /// A manager for `spec`. Groups whose path has no template exist from the start.
    pub fn new(spec: ResourceGroupsSpec) -> Self {
        let mut manager = ResourceGroupManager {
            spec,
            nodes: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            roots: Vec::new(),
            queries: HashMap::new(),
            seq: 0,
            cluster_memory_bytes: 0,
        };
        manager.create_literal_groups();
        manager
    }

    /// The spec in force.
    pub fn spec(&self) -> &ResourceGroupsSpec {
        &self.spec
    }

    /// The group for a query, by the selectors of the spec in force (first match wins).
    pub fn select(&self, context: &SelectionContext) -> Option<SelectedGroup> {
        self.spec.select(context)
    }

    /// Admits `query` into `group` (from [`select`](Self::select)) with `priority`
    /// (Trino's `query_priority` session property; higher first; default 1).
    ///
    /// It runs if every group from `group` up to its root is under its concurrency limit (CPU
    /// penalties included); otherwise it queues if every one of them is under `maxQueued`;
    /// otherwise it is refused, naming the group.
    pub fn submit(&mut self, query: QueryId, group: &SelectedGroup, priority: i32) -> Admission {
        let reject = |reason: String| Admission::Rejected { group: group.id().clone(), reason };
        if self.queries.contains_key(&query) {
            return reject(format!("query {query} was already submitted"));
        }
        match self.spec.find(group.template()) {
            None => return reject(format!("resource group \"{}\" is no longer configured", group.id())),
            Some(spec) if !spec.sub_groups.is_empty() => {
                return reject(format!("resource group \"{}\" has sub-groups and takes no queries", group.id()));
            }
            Some(_) => {}
        }
        let leaf = match self.get_or_create(group.id(), group.template()) {
            Ok(leaf) => leaf,
            Err(reason) => return reject(reason),
        };
        let path = self.path_up(leaf);
        let can_run = path.iter().all(|&i| self.can_run_more(i));
        let queue_full_at = path.iter().copied().find(|&i| !self.can_queue_more(i));
        if can_run {
            self.node_mut(leaf).running += 1;
            for &ancestor in &path[1..] {
                self.node_mut(ancestor).descendant_running += 1;
            }
            self.queries.insert(query, QueryEntry { node: leaf, running: true });
            return Admission::Run;
        }
        if let Some(full) = queue_full_at {
            let full_node = self.node(full);
            let mut reason = format!("Too many queued queries for \"{}\"", group.id());
            if full != leaf {
                reason.push_str(&format!(
                    " (group \"{}\" holds its maxQueued of {})",
                    full_node.id, full_node.limits.max_queued
                ));
            } else {
                reason.push_str(&format!(" (maxQueued {})", full_node.limits.max_queued));
            }
            self.prune_from(leaf);
            return reject(reason);
        }
        self.seq += 1;
        let seq = self.seq;
        for &i in &path {
            let node = self.node_mut(i);
            if node.total_queued() == 0 {
                // Newly eligible: joins the back of its parent's round robin.
                node.turn = seq;
            }
        }
        self.node_mut(leaf).queued.push(QueuedQuery { id: query.clone(), priority, seq });
        for &ancestor in &path[1..] {
            self.node_mut(ancestor).descendant_queued += 1;
        }
        self.queries.insert(query, QueryEntry { node: leaf, running: false });
        Admission::Queued
    }

    /// A running query ended (finished, failed or killed). Returns the queued queries that
    /// may start now, in start order. A queued query passed here is cancelled instead.
    pub fn finish(&mut self, query: &QueryId) -> Vec<QueryId> {
        let Some(entry) = self.queries.get(query).copied() else { return Vec::new() };
        if !entry.running {
            self.cancel_queued(query);
            return Vec::new();
        }
        self.queries.remove(query);
        let path = self.path_up(entry.node);
        let leaf = self.node_mut(entry.node);
        leaf.running = leaf.running.saturating_sub(1);
        for &ancestor in &path[1..] {
            let node = self.node_mut(ancestor);
            node.descendant_running = node.descendant_running.saturating_sub(1);
        }
        let started = self.start_queued();
        self.prune_from(entry.node);
        started
    }

    /// Takes a queued query out of its queue (its client went away). False if it was not queued.
    pub fn cancel_queued(&mut self, query: &QueryId) -> bool {
        let Some(entry) = self.queries.get(query).copied() else { return false };
        if entry.running {
            return false;
        }
        self.queries.remove(query);
        let path = self.path_up(entry.node);
        self.node_mut(entry.node).queued.retain(|q| &q.id != query);
        for &ancestor in &path[1..] {
            let node = self.node_mut(ancestor);
            node.descendant_queued = node.descendant_queued.saturating_sub(1);
        }
        self.prune_from(entry.node);
        true
    }

    /// The group a known (running or queued) query is in.
    pub fn group_of(&self, query: &QueryId) -> Option<&GroupId> {
        self.queries.get(query).map(|e| &self.node(e.node).id)
    }

    /// Charges CPU time a worker reported to `group` and every ancestor.
    pub fn add_cpu_usage(&mut self, group: &GroupId, used: Duration) {
        let Some(&index) = self.by_id.get(group) else { return };
        for i in self.path_up(index) {
            let node = self.node_mut(i);
            node.cpu_usage = node.cpu_usage.saturating_add(used);
        }
    }

    /// Charges CPU time to the group of a running or queued query. False if it is unknown.
    pub fn add_query_cpu_usage(&mut self, query: &QueryId, used: Duration) -> bool {
        let Some(group) = self.group_of(query).cloned() else { return false };
        self.add_cpu_usage(&group, used);
        true
    }

    /// Time passed: each group with CPU limits earns back `hardCpuLimit` of CPU time per
    /// `cpuQuotaPeriod` (pro rata); groups without CPU limits forget their usage. Returns the
    /// queued queries that may start now.
    pub fn tick(&mut self, elapsed: Duration) -> Vec<QueryId> {
        let period = self.spec.cpu_quota_period();
        for node in self.nodes.iter_mut().flatten() {
            node.cpu_usage = match (node.limits.hard_cpu_limit, period) {
                (Some(hard), Some(period)) => {
                    let earned = hard.as_nanos().saturating_mul(elapsed.as_nanos()) / period.as_nanos().max(1);
                    let earned = Duration::from_nanos(u64::try_from(earned).unwrap_or(u64::MAX));
                    node.cpu_usage.saturating_sub(earned)
                }
                _ => Duration::ZERO,
            };
        }
        let started = self.start_queued();
        self.prune_all();
        started
    }

    /// Swaps in a new spec without disturbing any query.
    ///
    /// Running queries finish in their group. Groups the new spec still defines (same path of
    /// names) take its limits at once, for queued and new queries. A group the new spec no
    /// longer defines keeps its last limits for the queries already in it (queued ones still
    /// start there), receives no new ones, and is dropped once empty. Returns the queued
    /// queries that may start under the new limits.
    pub fn reload(&mut self, spec: ResourceGroupsSpec) -> Vec<QueryId> {
        self.spec = spec;
        let live: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].is_some()).collect();
        for i in live {
            let limits = self.spec.find(&self.node(i).template).map(Limits::from);
            let node = self.node_mut(i);
            match limits {
                Some(limits) => {
                    node.limits = limits;
                    node.orphaned = false;
                }
                None => node.orphaned = true,
            }
        }
        self.create_literal_groups();
        let started = self.start_queued();
        self.prune_all();
        started
    }

    /// The memory the cluster (pool) has, to resolve percentage `softMemoryLimit`s.
    pub fn set_cluster_memory_bytes(&mut self, bytes: u64) {
        self.cluster_memory_bytes = bytes;
    }

    /// The memory limit to send with a query of `group`: the smallest `softMemoryLimit` of the
    /// group and its ancestors. Percentages count only once
    /// [`set_cluster_memory_bytes`](Self::set_cluster_memory_bytes) was called.
    pub fn soft_memory_limit_bytes(&self, group: &GroupId) -> Option<u64> {
        let &index = self.by_id.get(group)?;
        self.path_up(index)
            .into_iter()
            .filter_map(|i| match self.node(i).limits.soft_memory_limit {
                super::units::MemoryLimit::Fraction(_) if self.cluster_memory_bytes == 0 => None,
                limit => Some(limit.resolve(self.cluster_memory_bytes)),
            })
            .min()
    }

    /// The ids of the queries running in `group` itself (not its sub-groups).
    pub fn running_queries(&self, group: &GroupId) -> Vec<QueryId> {
        let Some(&index) = self.by_id.get(group) else { return Vec::new() };
        let mut ids: Vec<QueryId> =
            self.queries.iter().filter(|(_, e)| e.node == index && e.running).map(|(q, _)| q.clone()).collect();
        ids.sort();
        ids
    }

    /// The ids of the queries queued in `group` itself, in arrival order.
    pub fn queued_queries(&self, group: &GroupId) -> Vec<QueryId> {
        let Some(&index) = self.by_id.get(group) else { return Vec::new() };
        let mut queued = self.node(index).queued.clone();
        queued.sort_by_key(|q| q.seq);
        queued.into_iter().map(|q| q.id).collect()
    }

    /// Every concrete group that exists now, sorted.
    pub fn group_ids(&self) -> Vec<GroupId> {
        let mut ids: Vec<GroupId> = self.by_id.keys().cloned().collect();
        ids.sort();
        ids
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
pub(crate) mod tests;
