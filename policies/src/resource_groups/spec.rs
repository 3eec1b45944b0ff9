//! Trino's `resource-groups.json`, parsed as is and validated once, with errors that name the
//! JSON path of what is wrong (`rootGroups[1].subGroups[0].hardConcurrencyLimit: must be >= 0`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::selector::{SelectedGroup, SelectionContext, Selector};
use super::template::NameTemplate;
use super::units::{MemoryLimit, parse_data_size, parse_duration};

/// Why a resource-groups file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A key or value is wrong; `path` is its JSON path (`selectors[2].group`).
    #[error("{path}: {message}")]
    Invalid {
        /// JSON path of the offending key (`.` for the document).
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file could not be read, or is not valid: `error` says why.
    #[error("resource groups file {file}: {error}")]
    File {
        /// The file name.
        file: String,
        /// What went wrong.
        error: Box<SpecError>,
    },
    /// The file could not be read at all.
    #[error("{0}")]
    Io(String),
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid { path: path.into(), message: message.into() }
}

/// How a group picks which queued query (or which sub-group) starts next. Serialized with
/// Trino's names (`FAIR`, `WEIGHTED`, `WEIGHTED_FAIR`, `QUERY_PRIORITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchedulingPolicy {
    /// Queries first in, first out; sub-groups with queued queries take turns (round robin).
    Fair,
    /// Sub-groups start queries in proportion to their `schedulingWeight`; queries by priority.
    Weighted,
    /// The sub-group running the fewest queries relative to its weight share starts next.
    WeightedFair,
    /// Strictly by query priority (highest first, FIFO among equals), across all sub-groups.
    QueryPriority,
}

impl SchedulingPolicy {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "fair" => Some(Self::Fair),
            "weighted" => Some(Self::Weighted),
            "weighted_fair" => Some(Self::WeightedFair),
            "query_priority" => Some(Self::QueryPriority),
            _ => None,
        }
    }
}

/// One group of the validated spec (a template: `${USER}` groups become one concrete group per user).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// The name, possibly a template.
    pub name: NameTemplate,
    /// `softMemoryLimit`: sent to the worker as the memory limit of the group's queries.
    pub soft_memory_limit: MemoryLimit,
    /// `maxQueued`: queued queries (here and below) past which new queries are refused.
    pub max_queued: usize,
    /// `softConcurrencyLimit` (defaults to the hard limit): past it the group yields to peers below theirs.
    pub soft_concurrency_limit: usize,
    /// `hardConcurrencyLimit` (or Trino's older `maxRunning`): running queries here and below.
    pub hard_concurrency_limit: usize,
    /// The effective policy: as written, inherited from a `query_priority` parent, or `fair`.
    pub scheduling_policy: SchedulingPolicy,
    /// `schedulingWeight` (default 1), used by the parent's `weighted` / `weighted_fair` policy.
    pub scheduling_weight: u32,
    /// `softCpuLimit`: CPU time per `cpuQuotaPeriod` past which concurrency is cut back.
    pub soft_cpu_limit: Option<Duration>,
    /// `hardCpuLimit`: CPU time per `cpuQuotaPeriod` past which no query starts.
    pub hard_cpu_limit: Option<Duration>,
    /// `softPhysicalDataScanLimit`, accepted and shown; Quiver does not enforce it yet.
    pub soft_physical_data_scan_limit: Option<u64>,
    /// `subGroups`. A group with sub-groups takes no queries itself.
    pub sub_groups: Vec<GroupSpec>,
}

/// A validated resource-groups configuration: the group tree, the ordered selectors and
/// `cpuQuotaPeriod`.
#[derive(Debug, Clone)]
pub struct ResourceGroupsSpec {
    root_groups: Vec<GroupSpec>,
    selectors: Vec<Selector>,
    cpu_quota_period: Option<Duration>,
}

impl ResourceGroupsSpec {
    /// Parses and validates the text of a `resource-groups.json`.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let raw: RawManagerSpec = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            invalid(path, e.into_inner().to_string())
        })?;
        raw.validate()
    }

    /// Reads, parses and validates a `resource-groups.json` file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, SpecError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError::File { file: file.clone(), error: Box::new(SpecError::Io(e.to_string())) })?;
        Self::from_json(&text).map_err(|e| SpecError::File { file, error: Box::new(e) })
    }

    /// The root groups, in file order.
    pub fn root_groups(&self) -> &[GroupSpec] {
        &self.root_groups
    }

    /// `cpuQuotaPeriod`, if set.
    pub fn cpu_quota_period(&self) -> Option<Duration> {
        self.cpu_quota_period
    }

    /// The group of the first selector that matches `context`, with its templates expanded.
    pub fn select(&self, context: &SelectionContext) -> Option<SelectedGroup> {
        self.selectors.iter().find_map(|s| s.select(context))
    }

    /// The group spec at a path of (template) names, if the spec has it.
    pub(crate) fn find(&self, template_path: &[NameTemplate]) -> Option<&GroupSpec> {
        let (first, rest) = template_path.split_first()?;
        let mut group = self.root_groups.iter().find(|g| &g.name == first)?;
        for name in rest {
            group = group.sub_groups.iter().find(|g| &g.name == name)?;
        }
        Some(group)
    }
}

/// The document as written. Keys are Trino's; unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawManagerSpec {
    root_groups: Vec<RawGroup>,
    #[serde(default)]
    selectors: Vec<RawSelector>,
    cpu_quota_period: Option<String>,
}

/// One group as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGroup {
    name: String,
    soft_memory_limit: String,
    max_queued: i64,
    soft_concurrency_limit: Option<i64>,
    hard_concurrency_limit: Option<i64>,
    max_running: Option<i64>,
    scheduling_policy: Option<String>,
    scheduling_weight: Option<i64>,
    #[serde(default)]
    sub_groups: Vec<RawGroup>,
    /// Accepted for compatibility; Quiver exports metrics for every group anyway.
    #[allow(dead_code)]
    jmx_export: Option<bool>,
    soft_cpu_limit: Option<String>,
    hard_cpu_limit: Option<String>,
    soft_physical_data_scan_limit: Option<String>,
}

/// One selector as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RawSelector {
    pub(crate) user: Option<String>,
    pub(crate) user_group: Option<String>,
    pub(crate) original_user: Option<String>,
    pub(crate) authenticated_user: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) query_type: Option<String>,
    pub(crate) client_tags: Option<Vec<String>>,
    pub(crate) selector_resource_estimate: Option<serde_json::Value>,
    pub(crate) group: String,
}

impl RawManagerSpec {
    fn validate(self) -> Result<ResourceGroupsSpec, SpecError> {
        let cpu_quota_period = match &self.cpu_quota_period {
            None => None,
            Some(text) => {
                let period = parse_duration(text).map_err(|e| invalid("cpuQuotaPeriod", e))?;
                if period.is_zero() {
                    return Err(invalid("cpuQuotaPeriod", "must be greater than zero"));
                }
                Some(period)
            }
        };
        if self.root_groups.is_empty() {
            return Err(invalid("rootGroups", "must define at least one group"));
        }
        let root_groups = validate_siblings(&self.root_groups, "rootGroups", None, cpu_quota_period)?;
        let mut spec = ResourceGroupsSpec { root_groups, selectors: Vec::new(), cpu_quota_period };
        let mut selectors = Vec::with_capacity(self.selectors.len());
        for (index, raw) in self.selectors.iter().enumerate() {
            selectors.push(Selector::compile(raw, &format!("selectors[{index}]"), &spec)?);
        }
        spec.selectors = selectors;
        Ok(spec)
    }
}

/// Validates the sub-groups of one parent (or the root groups): each group, unique names, and
/// the rules the parent's scheduling policy puts on them.
fn validate_siblings(
    raws: &[RawGroup],
    list_path: &str,
    parent_policy: Option<(SchedulingPolicy, bool)>,
    cpu_quota_period: Option<Duration>,
) -> Result<Vec<GroupSpec>, SpecError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut groups = Vec::with_capacity(raws.len());
    for (index, raw) in raws.iter().enumerate() {
        let path = format!("{list_path}[{index}]");
        if let Some(first) = seen.insert(raw.name.as_str(), index) {
            return Err(invalid(
                format!("{path}.name"),
                format!("duplicate group name '{}' (also {list_path}[{first}])", raw.name),
            ));
        }
        groups.push(validate_group(raw, &path, parent_policy, cpu_quota_period)?);
    }
    if let Some((policy, true)) = parent_policy {
        let weighted = raws.iter().filter(|g| g.scheduling_weight.is_some()).count();
        match policy {
            SchedulingPolicy::Weighted | SchedulingPolicy::WeightedFair if weighted != 0 && weighted != raws.len() => {
                return Err(invalid(
                    list_path,
                    "give a schedulingWeight to every sub-group of a weighted or weighted_fair group, or to none",
                ));
            }
            SchedulingPolicy::Fair | SchedulingPolicy::QueryPriority if weighted != 0 => {
                return Err(invalid(
                    list_path,
                    "schedulingWeight is only used under a weighted or weighted_fair parent",
                ));
            }
            _ => {}
        }
    }
    Ok(groups)
}

/// `parent_policy` is the parent's effective policy and whether the file states it.
fn validate_group(
    raw: &RawGroup,
    path: &str,
    parent_policy: Option<(SchedulingPolicy, bool)>,
    cpu_quota_period: Option<Duration>,
) -> Result<GroupSpec, SpecError> {
    let field = |key: &str| format!("{path}.{key}");
    let name = NameTemplate::parse(&raw.name).map_err(|e| invalid(field("name"), e))?;
    let soft_memory_limit =
        MemoryLimit::parse(&raw.soft_memory_limit).map_err(|e| invalid(field("softMemoryLimit"), e))?;
    let max_queued = count(raw.max_queued, &field("maxQueued"))?;
    let hard_concurrency_limit = match (raw.hard_concurrency_limit, raw.max_running) {
        (Some(hard), None) => count(hard, &field("hardConcurrencyLimit"))?,
        (None, Some(max_running)) => count(max_running, &field("maxRunning"))?,
        (None, None) => return Err(invalid(path, "missing field `hardConcurrencyLimit`")),
        (Some(_), Some(_)) => {
            return Err(invalid(field("maxRunning"), "is the old name of hardConcurrencyLimit; give only one"));
        }
    };
    let soft_concurrency_limit = match raw.soft_concurrency_limit {
        None => hard_concurrency_limit,
        Some(soft) => {
            let soft = count(soft, &field("softConcurrencyLimit"))?;
            if soft > hard_concurrency_limit {
                return Err(invalid(
                    field("softConcurrencyLimit"),
                    format!("must be <= hardConcurrencyLimit ({hard_concurrency_limit})"),
                ));
            }
            soft
        }
    };
    let explicit_policy = match &raw.scheduling_policy {
        None => None,
        Some(text) => Some(SchedulingPolicy::parse(text).ok_or_else(|| {
            invalid(
                field("schedulingPolicy"),
                format!("unknown policy '{text}' (use fair, weighted, weighted_fair or query_priority)"),
            )
        })?),
    };
    let scheduling_policy = match (parent_policy, explicit_policy) {
        (Some((SchedulingPolicy::QueryPriority, _)), Some(own)) if own != SchedulingPolicy::QueryPriority => {
            return Err(invalid(
                field("schedulingPolicy"),
                "the parent uses query_priority, so its sub-groups must use query_priority too",
            ));
        }
        (Some((SchedulingPolicy::QueryPriority, _)), _) => SchedulingPolicy::QueryPriority,
        (_, Some(own)) => own,
        (_, None) => SchedulingPolicy::Fair,
    };
    let scheduling_weight = match raw.scheduling_weight {
        None => 1,
        Some(w) if w >= 1 && w <= i64::from(u32::MAX) => w as u32,
        Some(_) => return Err(invalid(field("schedulingWeight"), format!("must be between 1 and {}", u32::MAX))),
    };
    let cpu = |key: &str, text: &Option<String>| -> Result<Option<Duration>, SpecError> {
        text.as_deref().map(|t| parse_duration(t).map_err(|e| invalid(field(key), e))).transpose()
    };
    let soft_cpu_limit = cpu("softCpuLimit", &raw.soft_cpu_limit)?;
    let hard_cpu_limit = cpu("hardCpuLimit", &raw.hard_cpu_limit)?;
    if (soft_cpu_limit.is_some() || hard_cpu_limit.is_some()) && cpu_quota_period.is_none() {
        let key = if soft_cpu_limit.is_some() { "softCpuLimit" } else { "hardCpuLimit" };
        return Err(invalid(field(key), "CPU limits need cpuQuotaPeriod at the top of the file"));
    }
    match (soft_cpu_limit, hard_cpu_limit) {
        (Some(_), None) => return Err(invalid(field("softCpuLimit"), "needs hardCpuLimit as well")),
        (Some(soft), Some(hard)) if soft > hard => {
            return Err(invalid(field("softCpuLimit"), "must be <= hardCpuLimit"));
        }
        _ => {}
    }
    let soft_physical_data_scan_limit = raw
        .soft_physical_data_scan_limit
        .as_deref()
        .map(|t| parse_data_size(t).map_err(|e| invalid(field("softPhysicalDataScanLimit"), e)))
        .transpose()?;
    let sub_groups = validate_siblings(
        &raw.sub_groups,
        &field("subGroups"),
        Some((scheduling_policy, explicit_policy.is_some())),
        cpu_quota_period,
    )?;
    Ok(GroupSpec {
        name,
        soft_memory_limit,
        max_queued,
        soft_concurrency_limit,
        hard_concurrency_limit,
        scheduling_policy,
        scheduling_weight,
        soft_cpu_limit,
        hard_cpu_limit,
        soft_physical_data_scan_limit,
        sub_groups,
    })
}

/// A non-negative count.
fn count(value: i64, path: &str) -> Result<usize, SpecError> {
    if value < 0 {
        return Err(invalid(path, "must be >= 0"));
    }
    usize::try_from(value).map_err(|_| invalid(path, "is too large"))
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
