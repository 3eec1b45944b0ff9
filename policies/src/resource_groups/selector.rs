//! Selectors: which group a query runs in. The first selector whose every rule matches wins;
//! its `group` template is expanded with `${USER}`, `${SOURCE}` and the named capture groups
//! of its `user` and `source` regexes.

use std::collections::HashMap;

use regex::Regex;

use super::spec::{RawSelector, ResourceGroupsSpec, SpecError};
use super::template::{GroupId, NameTemplate, is_variable_name};
use crate::QueryType;

/// What selectors look at, taken from the caller's identity and session.
#[derive(Debug, Clone, Copy, Default)]
pub struct SelectionContext<'a> {
    /// The user name (after any user mapping).
    pub user: &'a str,
    /// The user's groups.
    pub groups: &'a [String],
    /// The client's source (`x-quiver-source` or the session option), if it sent one.
    pub source: Option<&'a str>,
    /// The statement's type, if known.
    pub query_type: Option<QueryType>,
    /// The client's tags (`x-quiver-client-tags` or the session option).
    pub client_tags: &'a [String],
}

/// The group a selector chose: the concrete id, and the spec path it was expanded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedGroup {
    id: GroupId,
    template: Vec<NameTemplate>,
}

impl SelectedGroup {
    /// The concrete group id (`global.adhoc.alice`).
    pub fn id(&self) -> &GroupId {
        &self.id
    }

    /// The path of spec names it came from (`global`, `adhoc`, `${USER}`).
    pub(crate) fn template(&self) -> &[NameTemplate] {
        &self.template
    }

    /// A group whose names are all literal (`root.a`), as a selector would return it.
    #[cfg(test)]
    pub(crate) fn literal(dotted: &str) -> Self {
        let template = dotted.split('.').map(|n| NameTemplate::parse(n).expect("literal name")).collect();
        SelectedGroup { id: GroupId::from_dotted(dotted).expect("dotted id"), template }
    }
}

/// Query types Trino knows that Quiver never produces: a selector may name them (the file stays
/// valid) but never matches.
const TRINO_ONLY_QUERY_TYPES: [&str; 1] = ["ALTER_TABLE_EXECUTE"];

/// One compiled selector.
#[derive(Debug, Clone)]
pub(crate) struct Selector {
    /// `user`, `originalUser`, `authenticatedUser`: all matched against the user name, as
    /// Quiver has no impersonation (the three are the same person).
    user_patterns: Vec<Regex>,
    user_group: Option<Regex>,
    source: Option<Regex>,
    query_type: Option<String>,
    client_tags: Vec<String>,
    group: Vec<NameTemplate>,
}

impl Selector {
    /// Compiles and checks one selector against the group tree of `spec`.
    pub(crate) fn compile(raw: &RawSelector, path: &str, spec: &ResourceGroupsSpec) -> Result<Self, SpecError> {
        let invalid = |key: &str, message: String| SpecError::Invalid { path: format!("{path}.{key}"), message };
        if raw.selector_resource_estimate.is_some() {
            return Err(invalid(
                "selectorResourceEstimate",
                "is not supported: Quiver has no resource estimates before a query runs".into(),
            ));
        }
        let mut variables = vec!["USER".to_string(), "SOURCE".to_string()];
        let mut compile = |key: &str, pattern: &Option<String>, capture: bool| -> Result<Option<Regex>, SpecError> {
            let Some(pattern) = pattern else { return Ok(None) };
            let regex = Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| invalid(key, format!("invalid regular expression: {e}")))?;
            if capture {
                for name in regex.capture_names().flatten().filter(|n| is_variable_name(n)) {
                    if variables.iter().any(|v| v == name) {
                        return Err(invalid(key, format!("variable ${{{name}}} is defined more than once")));
                    }
                    variables.push(name.to_string());
                }
            }
            Ok(Some(regex))
        };
        let user_patterns =
            [("user", &raw.user), ("originalUser", &raw.original_user), ("authenticatedUser", &raw.authenticated_user)]
                .into_iter()
                .map(|(key, pattern)| compile(key, pattern, true))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
        let source = compile("source", &raw.source, true)?;
        let user_group = compile("userGroup", &raw.user_group, false)?;
        let query_type = match &raw.query_type {
            None => None,
            Some(text) => {
                let upper = text.to_ascii_uppercase();
                if QueryType::from_trino_name(&upper).is_none() && !TRINO_ONLY_QUERY_TYPES.contains(&upper.as_str()) {
                    return Err(invalid(
                        "queryType",
                        format!(
                            "unknown query type '{text}' (use SELECT, EXPLAIN, DESCRIBE, INSERT, UPDATE, MERGE, DELETE, ANALYZE, DATA_DEFINITION or ALTER_TABLE_EXECUTE)"
                        ),
                    ));
                }
                Some(upper)
            }
        };
        let group = raw
            .group
            .split('.')
            .map(NameTemplate::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("group", e))?;
        for name in group.iter().flat_map(NameTemplate::variables) {
            if !variables.iter().any(|v| v == name) {
                return Err(invalid(
                    "group",
                    format!("unknown variable ${{{name}}} (available: {})", variables.join(", ")),
                ));
            }
        }
        match spec.find(&group) {
            None => {
                return Err(invalid("group", format!("'{}' is not a group defined in rootGroups", raw.group)));
            }
            Some(g) if !g.sub_groups.is_empty() => {
                return Err(invalid(
                    "group",
                    format!("'{}' has sub-groups; queries can only run in a group without sub-groups", raw.group),
                ));
            }
            Some(_) => {}
        }
        Ok(Selector {
            user_patterns,
            user_group,
            source,
            query_type,
            client_tags: raw.client_tags.clone().unwrap_or_default(),
            group,
        })
    }

    /// The expanded group if every rule of this selector matches `context`.
    pub(crate) fn select(&self, context: &SelectionContext) -> Option<SelectedGroup> {
        let mut variables = HashMap::new();
        for pattern in &self.user_patterns {
            capture(pattern, context.user, &mut variables)?;
        }
        if let Some(pattern) = &self.source {
            capture(pattern, context.source?, &mut variables)?;
        }
        if let Some(pattern) = &self.user_group
            && !context.groups.iter().any(|g| pattern.is_match(g))
        {
            return None;
        }
        if let Some(wanted) = &self.query_type
            && context.query_type.map(|t| t.as_str()) != Some(wanted.as_str())
        {
            return None;
        }
        if !self.client_tags.iter().all(|tag| context.client_tags.contains(tag)) {
            return None;
        }
        variables.entry("USER".to_string()).or_insert_with(|| context.user.to_string());
        variables.entry("SOURCE".to_string()).or_insert_with(|| context.source.unwrap_or_default().to_string());
        // A template that expands to an empty name (say `${SOURCE}` without a source) cannot
        // name a group: this selector does not apply and the next one is tried.
        let segments = self.group.iter().map(|t| t.expand(&variables)).collect::<Option<Vec<_>>>()?;
        Some(SelectedGroup { id: GroupId::new(segments)?, template: self.group.clone() })
    }
}

/// Matches `value` in full and records the named captures that are variables.
fn capture(pattern: &Regex, value: &str, variables: &mut HashMap<String, String>) -> Option<()> {
    let captures = pattern.captures(value)?;
    for name in pattern.capture_names().flatten().filter(|n| is_variable_name(n)) {
        if let Some(m) = captures.name(name) {
            variables.insert(name.to_string(), m.as_str().to_string());
        }
    }
    Some(())
}

#[cfg(test)]
#[path = "selector_tests.rs"]
mod tests;
