//! The OPA authorizer: Trino's input document and policy entry points (allow, batch, row
//! filters, column masks, batch column masks) over embedded Rego or a remote OPA.
//!
//! Fail closed: an error, a timeout, an undefined allow or batch result, or a result of the
//! wrong type is [`PolicyError::Unavailable`]. An undefined row-filter or column-mask result
//! means "none", as in Trino (`columnMask := {...} if {...}` is undefined for unmasked
//! columns); embedded Rego checks at load time that each configured rule exists.

mod config;
mod embedded;
pub mod input;
mod remote;
mod source;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use quiver_auth::Identity;
use serde_json::Value;

pub use config::{EmbeddedConfig, OpaConfig, RegoEngine, RemoteConfig};
pub use embedded::EmbeddedRego;
pub use remote::RemoteOpa;
pub use source::{CachedSource, DecisionSource, SourceStatus};

use crate::audit::{Auditor, Decision, DecisionEvent, DecisionObserver};
use crate::{Authorizer, ColumnInfo, ColumnMask, Operation, PolicyError, Resource, RowFilter, TableRef};
use input::InputContext;

/// Decides with OPA policies written for Trino.
pub struct OpaAuthorizer {
    source: Arc<dyn DecisionSource>,
    config: OpaConfig,
    audit: Auditor,
}

impl std::fmt::Debug for OpaAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpaAuthorizer").field("backend", &self.source.backend()).finish_non_exhaustive()
    }
}

impl OpaAuthorizer {
    /// Validates `config`, loads the policy (embedded) or builds the client (remote), and puts
    /// the decision cache in front when its TTL is above zero.
    pub fn from_config(config: OpaConfig) -> Result<Self, PolicyError> {
        config.validate().map_err(PolicyError::Unavailable)?;
        let (source, default_ttl): (Arc<dyn DecisionSource>, u64) = match (&config.embedded, &config.remote) {
            (Some(e), _) => {
                let rules = config.paths().into_iter().map(|(_, p)| p.to_owned()).collect();
                (Arc::new(EmbeddedRego::load(e.clone(), rules)?), 0)
            }
            (None, Some(r)) => (Arc::new(RemoteOpa::new(r, &config.policy_uri)?), 2_000),
            (None, None) => return Err(PolicyError::Unavailable("opa: no back end configured".into())),
        };
        let ttl = config.decision_cache_ttl_ms.unwrap_or(default_ttl);
        let source: Arc<dyn DecisionSource> = if ttl > 0 {
            Arc::new(CachedSource::new(source, Duration::from_millis(ttl), config.decision_cache_max_entries))
        } else {
            source
        };
        Ok(Self::new(source, config))
    }

    /// An authorizer over any source; `config` supplies the policy paths and Trino version.
    pub fn new(source: Arc<dyn DecisionSource>, config: OpaConfig) -> Self {
        OpaAuthorizer { source, config, audit: Auditor::default() }
    }

    /// Hands every decision to `observer` too (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn DecisionObserver>) -> Self {
        self.audit = Auditor::new(Some(observer));
        self
    }

    /// The back end's health, policy version and last load error.
    pub fn status(&self) -> SourceStatus {
        self.source.status()
    }

    fn context<'a>(&'a self, identity: &'a Identity) -> InputContext<'a> {
        InputContext { identity, trino_version: &self.config.trino_version, query_id: None }
    }

    fn audit(&self, identity: &Identity, operation: Operation, resource: String, decision: Decision, start: Instant) {
        self.audit.record(DecisionEvent {
            user: &identity.user,
            groups: &identity.groups,
            operation: operation.as_str(),
            resource,
            decision,
            policy_version: self.source.version(),
            backend: self.source.backend(),
            elapsed: start.elapsed(),
        });
    }

    /// Evaluates the allow rule for one resource.
    async fn allowed(
        &self,
        identity: &Identity,
        operation: Operation,
        resource: &Resource,
    ) -> Result<bool, PolicyError> {
        let doc = input::single(&self.context(identity), operation, resource);
        let path = &self.config.policy_uri;
        match self.source.evaluate(path, &doc).await? {
            Some(Value::Bool(b)) => Ok(b),
            None => Err(PolicyError::Unavailable(format!("{path} is undefined for {}", operation.as_str()))),
            Some(other) => Err(wrong_type(path, "true or false", &other)),
        }
    }

    /// Evaluates the batch rule: allowed indices into `items`.
    async fn batch(
        &self,
        path: &str,
        identity: &Identity,
        operation: Operation,
        items: Vec<Value>,
        len: usize,
    ) -> Result<Vec<usize>, PolicyError> {
        let doc = input::batch(&self.context(identity), operation, items);
        let result = self.source.evaluate(path, &doc).await?;
        let Some(Value::Array(indices)) = result else {
            return Err(match result {
                None => PolicyError::Unavailable(format!("{path} is undefined for {}", operation.as_str())),
                Some(other) => wrong_type(path, "an array of indices", &other),
            });
        };
        let mut out = Vec::with_capacity(indices.len());
        for i in &indices {
            match i.as_u64().and_then(|i| usize::try_from(i).ok()) {
                Some(i) if i < len => out.push(i),
                _ => return Err(wrong_type(path, &format!("indices below {len}"), i)),
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Per-item fallback of a filter: the allow rule once per resource.
    async fn filter_each(
        &self,
        identity: &Identity,
        operation: Operation,
        resources: &[Resource],
    ) -> Result<Vec<usize>, PolicyError> {
        let checks = resources.iter().map(|r| self.allowed(identity, operation, r));
        let answers = futures::future::try_join_all(checks).await?;
        Ok(answers.into_iter().enumerate().filter_map(|(i, ok)| ok.then_some(i)).collect())
    }

    async fn decide_filter(
        &self,
        identity: &Identity,
        operation: Operation,
        resources: &[Resource],
    ) -> Result<Vec<usize>, PolicyError> {
        match &self.config.batch_policy_uri {
            Some(path) => {
                let items = resources.iter().map(|r| input::resource_json(r).unwrap_or(Value::Null)).collect();
                self.batch(path, identity, operation, items, resources.len()).await
            }
            None => self.filter_each(identity, operation, resources).await,
        }
    }

    async fn decide_masks(
        &self,
        identity: &Identity,
        table: &TableRef,
        columns: &[ColumnInfo],
    ) -> Result<BTreeMap<String, ColumnMask>, PolicyError> {
        let resource = |c: &ColumnInfo| Resource::Column {
            table: table.clone(),
            column: c.name.clone(),
            column_type: c.column_type.clone(),
        };
        let op = Operation::GetColumnMask;
        let mut masks = BTreeMap::new();
        if let Some(path) = &self.config.batch_column_masking_policy_uri {
            let items = columns.iter().filter_map(|c| input::resource_json(&resource(c))).collect();
            let doc = input::batch(&self.context(identity), op, items);
            let items = match self.source.evaluate(path, &doc).await? {
                None | Some(Value::Null) => return Ok(masks),
                Some(Value::Array(items)) => items,
                Some(other) => return Err(wrong_type(path, "an array of {index, viewExpression}", &other)),
            };
            for item in items {
                let index = item.get("index").and_then(Value::as_u64).and_then(|i| usize::try_from(i).ok());
                let (Some(column), Some(view)) = (index.and_then(|i| columns.get(i)), item.get("viewExpression"))
                else {
                    return Err(wrong_type(path, "{index, viewExpression} with an index in range", &item));
                };
                let mask = view_expression::<ColumnMask>(path, view.clone())?;
                masks.insert(column.name.clone(), mask);
            }
        } else if let Some(path) = &self.config.column_masking_policy_uri {
            let asks = columns.iter().map(|c| {
                let doc = input::single(&self.context(identity), op, &resource(c));
                async move { self.source.evaluate(path, &doc).await }
            });
            let answers = futures::future::try_join_all(asks).await?;
            for (column, answer) in columns.iter().zip(answers) {
                match answer {
                    None | Some(Value::Null) => {}
                    Some(v) => {
                        masks.insert(column.name.clone(), view_expression::<ColumnMask>(path, v)?);
                    }
                }
            }
        }
        Ok(masks)
    }

    async fn decide_row_filters(&self, identity: &Identity, table: &TableRef) -> Result<Vec<RowFilter>, PolicyError> {
        let Some(path) = &self.config.row_filters_policy_uri else {
            return Ok(Vec::new());
        };
        let resource = Resource::Table { table: table.clone(), columns: vec![] };
        let doc = input::single(&self.context(identity), Operation::GetRowFilters, &resource);
        match self.source.evaluate(path, &doc).await? {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items.into_iter().map(|v| view_expression::<RowFilter>(path, v)).collect(),
            Some(other) => Err(wrong_type(path, "an array of {expression}", &other)),
        }
    }
}

/// Parses `{"expression": "...", "identity": "..."?}`.
fn view_expression<T: serde::de::DeserializeOwned>(path: &str, v: Value) -> Result<T, PolicyError> {
    serde_json::from_value::<T>(v.clone()).map_err(|_| wrong_type(path, "{\"expression\": string}", &v))
}

fn wrong_type(path: &str, expected: &str, got: &Value) -> PolicyError {
    let mut shown = got.to_string();
    if shown.len() > 200 {
        let cut = (0..=200).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
        shown.truncate(cut);
        shown.push_str("...");
    }
    PolicyError::Unavailable(format!("{path} returned {shown}, expected {expected}"))
}

fn summary(resources: &[Resource]) -> String {
    match resources {
        [] => "nothing".into(),
        [one] => one.to_string(),
        [first, ..] => format!("{} resources ({first}, ...)", resources.len()),
    }
}

#[async_trait]
impl Authorizer for OpaAuthorizer {
    async fn check(&self, identity: &Identity, operation: Operation, resource: &Resource) -> Result<(), PolicyError> {
        let start = Instant::now();
        let result = self.allowed(identity, operation, resource).await;
        let decision = match &result {
            Ok(true) => Decision::Allow,
            Ok(false) => Decision::Deny,
            Err(e) => Decision::Error(e.to_string()),
        };
        self.audit(identity, operation, resource.to_string(), decision, start);
        match result? {
            true => Ok(()),
            false => Err(PolicyError::denied(identity, operation, resource)),
        }
    }

    async fn filter(
        &self,
        identity: &Identity,
        operation: Operation,
        resources: &[Resource],
    ) -> Result<Vec<usize>, PolicyError> {
        let start = Instant::now();
        let result = self.decide_filter(identity, operation, resources).await;
        let decision = match &result {
            Ok(kept) => Decision::Filtered { allowed: kept.len(), total: resources.len() },
            Err(e) => Decision::Error(e.to_string()),
        };
        self.audit(identity, operation, summary(resources), decision, start);
        result
    }

    async fn filter_columns(
        &self,
        identity: &Identity,
        table: &TableRef,
        columns: &[String],
    ) -> Result<Vec<usize>, PolicyError> {
        let start = Instant::now();
        let op = Operation::FilterColumns;
        // Trino sends one table with all its columns; the indices refer to the columns.
        let result = match &self.config.batch_policy_uri {
            Some(path) => {
                let item = input::table_json(table, columns);
                self.batch(path, identity, op, vec![item], columns.len()).await
            }
            None => {
                let each: Vec<Resource> = columns
                    .iter()
                    .map(|c| Resource::Table { table: table.clone(), columns: vec![c.clone()] })
                    .collect();
                self.filter_each(identity, op, &each).await
            }
        };
        let decision = match &result {
            Ok(kept) => Decision::Filtered { allowed: kept.len(), total: columns.len() },
            Err(e) => Decision::Error(e.to_string()),
        };
        let resource = Resource::Table { table: table.clone(), columns: columns.to_vec() };
        self.audit(identity, op, resource.to_string(), decision, start);
        result
    }

    async fn row_filters(&self, identity: &Identity, table: &TableRef) -> Result<Vec<RowFilter>, PolicyError> {
        let start = Instant::now();
        let result = self.decide_row_filters(identity, table).await;
        let decision = match &result {
            Ok(f) => Decision::RowFilters(f.len()),
            Err(e) => Decision::Error(e.to_string()),
        };
        self.audit(identity, Operation::GetRowFilters, format!("table {table}"), decision, start);
        result
    }

    async fn column_masks(
        &self,
        identity: &Identity,
        table: &TableRef,
        columns: &[ColumnInfo],
    ) -> Result<BTreeMap<String, ColumnMask>, PolicyError> {
        let start = Instant::now();
        let result = self.decide_masks(identity, table, columns).await;
        let decision = match &result {
            Ok(m) => Decision::ColumnMasks(m.len()),
            Err(e) => Decision::Error(e.to_string()),
        };
        self.audit(identity, Operation::GetColumnMask, format!("table {table}"), decision, start);
        result
    }
}
