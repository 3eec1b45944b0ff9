//! The tree of concrete groups: created on demand from the spec (one `${USER}` group per user),
//! and dropped again when a templated or removed group is idle.

use std::time::Duration;

use super::manager::{QueryId, ResourceGroupManager};
use super::spec::{GroupSpec, SchedulingPolicy};
use super::template::{GroupId, NameTemplate};
use super::units::MemoryLimit;

/// The limits of one concrete group, copied from its spec (without the sub-groups).
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub(super) soft_memory_limit: MemoryLimit,
    pub(super) max_queued: usize,
    pub(super) soft_concurrency_limit: usize,
    pub(super) hard_concurrency_limit: usize,
    pub(super) scheduling_policy: SchedulingPolicy,
    pub(super) scheduling_weight: u32,
    pub(super) soft_cpu_limit: Option<Duration>,
    pub(super) hard_cpu_limit: Option<Duration>,
}

impl From<&GroupSpec> for Limits {
    fn from(spec: &GroupSpec) -> Self {
        Limits {
            soft_memory_limit: spec.soft_memory_limit,
            max_queued: spec.max_queued,
            soft_concurrency_limit: spec.soft_concurrency_limit,
            hard_concurrency_limit: spec.hard_concurrency_limit,
            scheduling_policy: spec.scheduling_policy,
            scheduling_weight: spec.scheduling_weight,
            soft_cpu_limit: spec.soft_cpu_limit,
            hard_cpu_limit: spec.hard_cpu_limit,
        }
    }
}

/// A query waiting in a group.
#[derive(Debug, Clone)]
pub(super) struct QueuedQuery {
    pub(super) id: QueryId,
    pub(super) priority: i32,
    /// Arrival order, across all groups.
    pub(super) seq: u64,
}

/// One concrete group.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) id: GroupId,
    /// The spec names this group's path was expanded from.
    pub(super) template: Vec<NameTemplate>,
    pub(super) parent: Option<usize>,
    pub(super) children: Vec<usize>,
    pub(super) limits: Limits,
    /// The current spec no longer defines this group: it keeps its last limits until its
    /// queries are done, then goes away.
    pub(super) orphaned: bool,
    /// Queries queued in this group itself.
    pub(super) queued: Vec<QueuedQuery>,
    /// Queries running in this group itself.
    pub(super) running: usize,
    pub(super) descendant_running: usize,
    pub(super) descendant_queued: usize,
    /// CPU time used and not yet paid back by the quota.
    pub(super) cpu_usage: Duration,
    /// The parent's round-robin position: set when the group gets queued work or starts a
    /// query through its parent; the lowest goes first.
    pub(super) turn: u64,
    /// Smooth weighted round robin state for a `weighted` parent.
    pub(super) current_weight: i64,
}

impl Node {
    pub(super) fn total_running(&self) -> usize {
        self.running + self.descendant_running
    }

    pub(super) fn total_queued(&self) -> usize {
        self.queued.len() + self.descendant_queued
    }

    fn is_idle(&self) -> bool {
        self.total_running() == 0 && self.total_queued() == 0 && self.children.is_empty() && self.cpu_usage.is_zero()
    }
}

impl ResourceGroupManager {
    pub(super) fn node(&self, index: usize) -> &Node {
        // Indexes come from `by_id`, `roots`, `children` and `queries`, which only hold live nodes.
        self.nodes[index].as_ref().expect("live resource group node")
    }

    pub(super) fn node_mut(&mut self, index: usize) -> &mut Node {
        self.nodes[index].as_mut().expect("live resource group node")
    }

    /// The node and its ancestors, the node first.
    pub(super) fn path_up(&self, index: usize) -> Vec<usize> {
        let mut path = vec![index];
        let mut current = index;
        while let Some(parent) = self.node(current).parent {
            path.push(parent);
            current = parent;
        }
        path
    }

    /// Finds or creates the concrete groups along `id`, each from the spec group at the same
    /// template path. Errors if a level exists under another spec name (two names of the spec
    /// expanding to the same group) or the spec no longer defines it.
    pub(super) fn get_or_create(&mut self, id: &GroupId, template: &[NameTemplate]) -> Result<usize, String> {
        let mut parent: Option<usize> = None;
        let mut current_id: Option<GroupId> = None;
        for (depth, name) in id.segments().iter().enumerate() {
            let level_id = match &current_id {
                None => GroupId::new([name.clone()]).ok_or_else(|| "empty group name".to_string())?,
                Some(p) => p.child(name.clone()),
            };
            let level_template = &template[..=depth];
            let index = match self.by_id.get(&level_id) {
                Some(&existing) => {
                    let node = self.node(existing);
                    if node.template[depth] != template[depth] {
                        return Err(format!(
                            "group \"{level_id}\" is configured both as '{}' and as '{}'",
                            node.template[depth], template[depth]
                        ));
                    }
                    existing
                }
                None => {
                    let spec = self
                        .spec
                        .find(level_template)
                        .ok_or_else(|| format!("group \"{level_id}\" is no longer configured"))?;
                    let node = Node {
                        id: level_id.clone(),
                        template: level_template.to_vec(),
                        parent,
                        children: Vec::new(),
                        limits: Limits::from(spec),
                        orphaned: false,
                        queued: Vec::new(),
                        running: 0,
                        descendant_running: 0,
                        descendant_queued: 0,
                        cpu_usage: Duration::ZERO,
                        turn: 0,
                        current_weight: 0,
                    };
                    let index = match self.free.pop() {
                        Some(free) => {
                            self.nodes[free] = Some(node);
                            free
                        }
                        None => {
                            self.nodes.push(Some(node));
                            self.nodes.len() - 1
                        }
                    };
                    self.by_id.insert(level_id.clone(), index);
                    match parent {
                        Some(p) => self.node_mut(p).children.push(index),
                        None => self.roots.push(index),
                    }
                    index
                }
            };
            parent = Some(index);
            current_id = Some(level_id);
        }
        parent.ok_or_else(|| "empty group id".to_string())
    }

    /// Creates every group whose whole path is literal (no template), so they show in the state
    /// API before their first query.
    pub(super) fn create_literal_groups(&mut self) {
        // Breadth first, in file order, so groups list as the file has them.
        let mut pending: std::collections::VecDeque<Vec<NameTemplate>> =
            self.spec.root_groups().iter().map(|g| vec![g.name.clone()]).collect();
        while let Some(template) = pending.pop_front() {
            if template.iter().any(NameTemplate::is_template) {
                continue;
            }
            let Some(id) = GroupId::new(template.iter().map(|t| t.as_str().to_string())) else { continue };
            if self.get_or_create(&id, &template).is_err() {
                continue;
            }
            if let Some(spec) = self.spec.find(&template) {
                for sub in &spec.sub_groups {
                    let mut child = template.clone();
                    child.push(sub.name.clone());
                    pending.push_back(child);
                }
            }
        }
    }

    /// Removes `index` and then its ancestors while they are idle and either templated or no
    /// longer configured.
    pub(super) fn prune_from(&mut self, index: usize) {
        let mut current = Some(index);
        while let Some(i) = current {
            let node = self.node(i);
            let disposable = node.orphaned || node.template.iter().any(NameTemplate::is_template);
            if !(node.is_idle() && disposable) {
                return;
            }
            let parent = node.parent;
            let id = node.id.clone();
            match parent {
                Some(p) => self.node_mut(p).children.retain(|&c| c != i),
                None => self.roots.retain(|&r| r != i),
            }
            self.by_id.remove(&id);
            self.nodes[i] = None;
            self.free.push(i);
            current = parent;
        }
    }

    /// Prunes every disposable idle group (deepest first).
    pub(super) fn prune_all(&mut self) {
        let mut leaves: Vec<(usize, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().filter(|n| n.children.is_empty()).map(|n| (n.id.segments().len(), i)))
            .collect();
        leaves.sort_unstable_by(|a, b| b.cmp(a));
        for (_, i) in leaves {
            if self.nodes[i].is_some() {
                self.prune_from(i);
            }
        }
    }
}
