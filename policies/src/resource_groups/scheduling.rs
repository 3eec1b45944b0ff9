//! Which queued query starts next: the limits that make a group able to run more, and the four
//! scheduling policies.
//!
//! Trino's `weighted` policy draws at random; here it is deterministic with the same long-run
//! shares: sub-groups start queries in proportion to `schedulingWeight` (smooth weighted round
//! robin), and queued queries start by priority (highest first, FIFO among equals).
//!
//! `softConcurrencyLimit`, as Trino documents it: a sub-group at or past its soft limit starts
//! a query only when no eligible peer is below its own (for `fair`, `weighted` and
//! `weighted_fair`; `query_priority` is strictly by priority).

use std::cmp::Reverse;

use super::manager::{QueryId, ResourceGroupManager};
use super::spec::SchedulingPolicy;

impl ResourceGroupManager {
    /// The concurrency limit in force, after the CPU penalty: between `softCpuLimit` and
    /// `hardCpuLimit` the hard limit shrinks linearly (by at least one, to no less than one).
    pub(super) fn effective_hard_limit(&self, index: usize) -> usize {
        let node = self.node(index);
        let hard = node.limits.hard_concurrency_limit;
        match (node.limits.soft_cpu_limit, node.limits.hard_cpu_limit) {
            (Some(soft), Some(hard_cpu)) if node.cpu_usage >= soft && hard_cpu > soft => {
                let penalty = (node.cpu_usage - soft).as_secs_f64() / (hard_cpu - soft).as_secs_f64();
                let reduced = (hard as f64 * (1.0 - penalty.min(1.0))).floor() as usize;
                reduced.min(hard.saturating_sub(1)).max(1).min(hard)
            }
            _ => hard,
        }
    }

    /// True if the group itself (not counting ancestors) may start another query.
    pub(super) fn can_run_more(&self, index: usize) -> bool {
        let node = self.node(index);
        if node.limits.hard_cpu_limit.is_some_and(|hard| node.cpu_usage >= hard) {
            return false;
        }
        node.total_running() < self.effective_hard_limit(index)
    }

    /// True if the group itself may queue another query.
    pub(super) fn can_queue_more(&self, index: usize) -> bool {
        let node = self.node(index);
        node.total_queued() < node.limits.max_queued
    }

    /// True if the group can start one of its queued queries (down the tree).
    pub(super) fn is_eligible(&self, index: usize) -> bool {
        let node = self.node(index);
        node.total_queued() > 0
            && self.can_run_more(index)
            && (!node.queued.is_empty() || node.children.iter().any(|&c| self.is_eligible(c)))
    }

    /// Starts queued queries while any can start. Root groups are independent.
    pub(super) fn start_queued(&mut self) -> Vec<QueryId> {
        let mut started = Vec::new();
        for root in self.roots.clone() {
            while let Some(query) = self.start_next(root) {
                started.push(query);
            }
        }
        started
    }

    /// Starts one queued query in the group or below it, chosen by the group's policy.
    fn start_next(&mut self, index: usize) -> Option<QueryId> {
        if !self.can_run_more(index) {
            return None;
        }
        let node = self.node(index);
        if !node.queued.is_empty() {
            let position = match node.limits.scheduling_policy {
                SchedulingPolicy::Fair => node.queued.iter().enumerate().min_by_key(|(_, q)| q.seq)?.0,
                _ => node.queued.iter().enumerate().max_by_key(|(_, q)| (q.priority, Reverse(q.seq)))?.0,
            };
            let node = self.node_mut(index);
            let query = node.queued.remove(position);
            node.running += 1;
            if let Some(entry) = self.queries.get_mut(&query.id) {
                entry.running = true;
            }
            return Some(query.id);
        }
        let child = self.pick_child(index)?;
        let query = self.start_next(child)?;
        self.seq += 1;
        let seq = self.seq;
        self.node_mut(child).turn = seq;
        let node = self.node_mut(index);
        node.descendant_queued = node.descendant_queued.saturating_sub(1);
        node.descendant_running += 1;
        Some(query)
    }

    /// The eligible sub-group that starts next under the group's policy.
    fn pick_child(&mut self, index: usize) -> Option<usize> {
        let node = self.node(index);
        let policy = node.limits.scheduling_policy;
        let eligible: Vec<usize> = node.children.iter().copied().filter(|&c| self.is_eligible(c)).collect();
        if eligible.is_empty() {
            return None;
        }
        if policy == SchedulingPolicy::QueryPriority {
            return eligible.into_iter().max_by_key(|&c| self.best_queued(c));
        }
        let below_soft: Vec<usize> = eligible
            .iter()
            .copied()
            .filter(|&c| {
                let child = self.node(c);
                child.total_running() < child.limits.soft_concurrency_limit
            })
            .collect();
        let candidates = if below_soft.is_empty() { eligible } else { below_soft };
        let turn = |c: usize| self.node(c).turn;
        match policy {
            SchedulingPolicy::Fair | SchedulingPolicy::QueryPriority => candidates.into_iter().min_by_key(|&c| turn(c)),
            SchedulingPolicy::WeightedFair => candidates.into_iter().min_by(|&a, &b| {
                // running(a) / weight(a) against running(b) / weight(b), without division.
                let (na, nb) = (self.node(a), self.node(b));
                let share_a = na.total_running() as u128 * u128::from(nb.limits.scheduling_weight);
                let share_b = nb.total_running() as u128 * u128::from(na.limits.scheduling_weight);
                share_a.cmp(&share_b).then(na.turn.cmp(&nb.turn))
            }),
            SchedulingPolicy::Weighted => {
                let total: i64 = candidates.iter().map(|&c| i64::from(self.node(c).limits.scheduling_weight)).sum();
                for &c in &candidates {
                    let child = self.node_mut(c);
                    child.current_weight += i64::from(child.limits.scheduling_weight);
                }
                let chosen = candidates
                    .into_iter()
                    .max_by_key(|&c| (self.node(c).current_weight, Reverse(self.node(c).turn)))?;
                self.node_mut(chosen).current_weight -= total;
                Some(chosen)
            }
        }
    }

    /// The best (priority, earliest arrival) of the queries that could start in the group.
    fn best_queued(&self, index: usize) -> Option<(i32, Reverse<u64>)> {
        let node = self.node(index);
        let own = node.queued.iter().map(|q| (q.priority, Reverse(q.seq))).max();
        let below = node.children.iter().filter(|&&c| self.is_eligible(c)).filter_map(|&c| self.best_queued(c)).max();
        own.max(below)
    }
}

#[cfg(test)]
#[path = "scheduling_tests.rs"]
mod tests;
