//! The state of one group in the shape of Trino's `GET /v1/resourceGroupState/{id}`.

use serde::Serialize;

use super::manager::ResourceGroupManager;
use super::spec::SchedulingPolicy;
use super::template::GroupId;
use super::units::{MemoryLimit, format_data_size, format_duration};

/// Whether a group can take another query, as Trino reports it (the group alone, not its
/// ancestors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GroupState {
    /// Under its concurrency limit: a query would run.
    CanRun,
    /// At its concurrency limit but under `maxQueued`: a query would queue.
    CanQueue,
    /// Both full: a query would be refused.
    Full,
}

/// One group's limits and load; Trino's `ResourceGroupInfo` JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroupInfo {
    /// The group's path of names.
    pub id: GroupId,
    /// Whether it can run or queue another query.
    pub state: GroupState,
    /// Its scheduling policy.
    pub scheduling_policy: SchedulingPolicy,
    /// Its scheduling weight.
    pub scheduling_weight: u32,
    /// `softMemoryLimit` in bytes (`0B` for a percentage before the cluster memory is known).
    pub soft_memory_limit: String,
    /// `softConcurrencyLimit`.
    pub soft_concurrency_limit: usize,
    /// `hardConcurrencyLimit`, after any CPU penalty.
    pub hard_concurrency_limit: usize,
    /// `maxQueued`.
    pub max_queued_queries: usize,
    /// Memory in use (Quiver does not track it yet: always `0B`).
    pub memory_usage: String,
    /// CPU time charged and not yet paid back by the quota.
    pub cpu_usage: String,
    /// Queued queries in the group and below.
    pub num_queued_queries: usize,
    /// Running queries in the group and below.
    pub num_running_queries: usize,
    /// Sub-groups that could start a queued query now.
    pub num_eligible_sub_groups: usize,
    /// Summaries of the sub-groups (present on the requested group only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_groups: Option<Vec<ResourceGroupInfo>>,
}

impl ResourceGroupManager {
    /// The state of a concrete group, with its sub-groups summarized; `None` if it does not
    /// exist (a templated group exists while it has queries or unpaid CPU time).
    pub fn state(&self, group: &GroupId) -> Option<ResourceGroupInfo> {
        let &index = self.by_id.get(group)?;
        let mut info = self.summary(index);
        info.sub_groups = Some(self.node(index).children.iter().map(|&c| self.summary(c)).collect());
        Some(info)
    }

    fn summary(&self, index: usize) -> ResourceGroupInfo {
        let node = self.node(index);
        let state = if self.can_run_more(index) {
            GroupState::CanRun
        } else if self.can_queue_more(index) {
            GroupState::CanQueue
        } else {
            GroupState::Full
        };
        let soft_memory_limit = match node.limits.soft_memory_limit {
            MemoryLimit::Bytes(bytes) => bytes,
            limit => limit.resolve(self.cluster_memory_bytes),
        };
        ResourceGroupInfo {
            id: node.id.clone(),
            state,
            scheduling_policy: node.limits.scheduling_policy,
            scheduling_weight: node.limits.scheduling_weight,
            soft_memory_limit: format_data_size(soft_memory_limit),
            soft_concurrency_limit: node.limits.soft_concurrency_limit,
            hard_concurrency_limit: self.effective_hard_limit(index),
            max_queued_queries: node.limits.max_queued,
            memory_usage: format_data_size(0),
            cpu_usage: format_duration(node.cpu_usage),
            num_queued_queries: node.total_queued(),
            num_running_queries: node.total_running(),
            num_eligible_sub_groups: node.children.iter().filter(|&&c| self.is_eligible(c)).count(),
            sub_groups: None,
        }
    }
}
