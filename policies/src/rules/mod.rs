//! Trino's file-based system access control (`rules.json`) as an [`Authorizer`]: catalog,
//! schema, table and query rules, column `allow`/`mask`, row `filter`; the first matching rule
//! of a section wins; the file is reloaded when it changes (a file that fails to load leaves
//! the previous rules in use, logged and reported by [`RulesAuthorizer::status`]).
//!
//! Not enforced: sections without a Quiver operation (functions, procedures, session properties,
//! impersonation, system information, authorization) are accepted and ignored; `role`
//! patterns never match (Quiver identities carry no roles).

mod file;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use quiver_auth::Identity;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{Auditor, Decision, DecisionEvent, DecisionObserver};
use crate::opa::SourceStatus;
use crate::{Authorizer, ColumnInfo, ColumnMask, Operation, PolicyError, Resource, RowFilter, TableRef};
use file::{CatalogAccess, Privilege, Rules};

/// `[policies.rules]`: a Trino `rules.json`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// The rules file.
    pub path: PathBuf,
    /// How often, at most, the file is checked for changes (on use), in milliseconds.
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
}

fn default_reload_check_ms() -> u64 {
    1_000
}

/// The file's modification time and length, for change detection.
type Stamp = (Option<SystemTime>, u64);

struct Loaded {
    rules: Rules,
    version: String,
    stamp: Stamp,
}

/// Decides with a Trino `rules.json`.
pub struct RulesAuthorizer {
    config: RulesConfig,
    current: RwLock<Arc<Loaded>>,
    checked: Mutex<(Instant, Option<Stamp>)>,
    last_error: RwLock<Option<String>>,
    audit: Auditor,
}

impl std::fmt::Debug for RulesAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesAuthorizer").field("path", &self.config.path).finish_non_exhaustive()
    }
}

fn stamp(path: &std::path::Path) -> Result<Stamp, String> {
    let m = std::fs::metadata(path).map_err(|e| format!("rules file {}: {e}", path.display()))?;
    Ok((m.modified().ok(), m.len()))
}

fn load(path: &std::path::Path) -> Result<Loaded, String> {
    let stamp = stamp(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("rules file {}: {e}", path.display()))?;
    let rules = Rules::parse(&text).map_err(|e| format!("rules file {}: {e}", path.display()))?;
    let digest = Sha256::digest(text.as_bytes());
    let version = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok(Loaded { rules, version, stamp })
}

impl RulesAuthorizer {
    /// Loads the file; at start a file that does not load is an error.
    pub fn load(config: RulesConfig) -> Result<Self, PolicyError> {
        let loaded = load(&config.path).map_err(PolicyError::Unavailable)?;
        tracing::info!(path = %config.path.display(), version = %loaded.version, "loaded access rules");
        Ok(RulesAuthorizer {
            config,
            current: RwLock::new(Arc::new(loaded)),
            checked: Mutex::new((Instant::now(), None)),
            last_error: RwLock::new(None),
            audit: Auditor::default(),
        })
    }

    /// Hands every decision to `observer` too (metrics).
    pub fn with_observer(mut self, observer: Arc<dyn DecisionObserver>) -> Self {
        self.audit = Auditor::new(Some(observer));
        self
    }

    /// The rules version in use and the last load error.
    pub fn status(&self) -> SourceStatus {
        SourceStatus {
            backend: "rules-file",
            version: self.current.read().version.clone(),
            last_error: self.last_error.read().clone(),
        }
    }

    /// The rules to decide with, reloaded first if the file changed.
    fn rules(&self) -> Arc<Loaded> {
        let failed = {
            let mut checked = self.checked.lock();
            if checked.0.elapsed() < Duration::from_millis(self.config.reload_check_ms) {
                return self.current.read().clone();
            }
            checked.0 = Instant::now();
            checked.1
        };
        let now = stamp(&self.config.path);
        let changed = match &now {
            Ok(s) => *s != self.current.read().stamp && failed != Some(*s),
            Err(_) => true,
        };
        if changed {
            match load(&self.config.path) {
                Ok(loaded) => {
                    tracing::info!(path = %self.config.path.display(), version = %loaded.version, "reloaded access rules");
                    *self.current.write() = Arc::new(loaded);
                    *self.last_error.write() = None;
                    self.checked.lock().1 = None;
                }
                Err(e) => {
                    tracing::error!(path = %self.config.path.display(), error = %e,
                        "access rules failed to load; keeping the previous version");
                    *self.last_error.write() = Some(e);
                    self.checked.lock().1 = now.ok();
                }
            }
        }
        self.current.read().clone()
    }

    fn audit(
        &self,
        id: &Identity,
        op: Operation,
        resource: String,
        decision: Decision,
        version: String,
        start: Instant,
    ) {
        self.audit.record(DecisionEvent {
            user: &id.user,
            groups: &id.groups,
            operation: op.as_str(),
            resource,
            decision,
            policy_version: version,
            backend: "rules-file",
            elapsed: start.elapsed(),
        });
    }
}

/// The pure decision for one operation on one resource.
fn allows(rules: &Rules, id: &Identity, op: Operation, resource: &Resource) -> bool {
    let (user, groups) = (id.user.as_str(), id.groups.as_slice());
    let catalog_ok = |c: &str| {
        let access = rules.catalog_access(user, groups, c);
        access == CatalogAccess::All || (access == CatalogAccess::ReadOnly && !op.is_write())
    };
    match (op, resource) {
        (Operation::ExecuteQuery, _) => rules.may_execute(user, groups),
        (Operation::AccessCatalog | Operation::FilterCatalogs | Operation::ShowSchemas, Resource::Catalog(c)) => {
            catalog_ok(c)
        }
        (
            Operation::AccessCatalog | Operation::ShowSchemas | Operation::FilterSchemas | Operation::ShowTables,
            Resource::Schema { catalog, schema },
        ) => catalog_ok(catalog) && rules.schema_visible(user, groups, catalog, schema),
        (_, Resource::Table { table, columns }) => {
            if !catalog_ok(&table.catalog) {
                return false;
            }
            let rule = match rules.table_rule(user, groups, &table.catalog, &table.schema, &table.table) {
                Ok(None) => return true,
                Ok(Some(rule)) => rule,
                Err(()) => return false,
            };
            let need = match op {
                Operation::SelectFromColumns => Some(Privilege::Select),
                Operation::InsertIntoTable => Some(Privilege::Insert),
                Operation::DeleteFromTable => Some(Privilege::Delete),
                Operation::UpdateTableColumns => Some(Privilege::Update),
                Operation::CreateTable | Operation::DropTable | Operation::CreateView | Operation::DropView => {
                    Some(Privilege::Ownership)
                }
                Operation::FilterTables | Operation::ShowColumns | Operation::FilterColumns => None,
                _ => return false,
            };
            let granted = match need {
                Some(p) => rule.grants(p),
                None => !rule.privileges.is_empty(),
            };
            // Denied columns (`"allow": false`) may not be read, updated or listed.
            let columns_matter = matches!(
                op,
                Operation::SelectFromColumns
                    | Operation::UpdateTableColumns
                    | Operation::FilterColumns
                    | Operation::ShowColumns
            );
            granted && (!columns_matter || rule.columns_allowed(columns))
        }
        _ => false,
    }
}

#[async_trait]
impl Authorizer for RulesAuthorizer {
    async fn check(&self, identity: &Identity, operation: Operation, resource: &Resource) -> Result<(), PolicyError> {
        let start = Instant::now();
        let loaded = self.rules();
        let ok = allows(&loaded.rules, identity, operation, resource);
        let decision = if ok { Decision::Allow } else { Decision::Deny };
        self.audit(identity, operation, resource.to_string(), decision, loaded.version.clone(), start);
        if ok { Ok(()) } else { Err(PolicyError::denied(identity, operation, resource)) }
    }

    async fn filter(
        &self,
        identity: &Identity,
        operation: Operation,
        resources: &[Resource],
    ) -> Result<Vec<usize>, PolicyError> {
        let start = Instant::now();
        let loaded = self.rules();
        let kept: Vec<usize> = resources
            .iter()
            .enumerate()
            .filter(|(_, r)| allows(&loaded.rules, identity, operation, r))
            .map(|(i, _)| i)
            .collect();
        let decision = Decision::Filtered { allowed: kept.len(), total: resources.len() };
        let summary = format!("{} resources", resources.len());
        self.audit(identity, operation, summary, decision, loaded.version.clone(), start);
        Ok(kept)
    }

    async fn row_filters(&self, identity: &Identity, table: &TableRef) -> Result<Vec<RowFilter>, PolicyError> {
        let start = Instant::now();
        let loaded = self.rules();
        let rule =
            loaded.rules.table_rule(&identity.user, &identity.groups, &table.catalog, &table.schema, &table.table);
        let filters: Vec<RowFilter> = match rule {
            Ok(Some(rule)) => rule
                .filter
                .iter()
                .map(|f| RowFilter { expression: f.clone(), identity: rule.filter_identity() })
                .collect(),
            _ => Vec::new(),
        };
        let decision = Decision::RowFilters(filters.len());
        self.audit(
            identity,
            Operation::GetRowFilters,
            format!("table {table}"),
            decision,
            loaded.version.clone(),
            start,
        );
        Ok(filters)
    }

    async fn column_masks(
        &self,
        identity: &Identity,
        table: &TableRef,
        columns: &[ColumnInfo],
    ) -> Result<BTreeMap<String, ColumnMask>, PolicyError> {
        let start = Instant::now();
        let loaded = self.rules();
        let rule =
            loaded.rules.table_rule(&identity.user, &identity.groups, &table.catalog, &table.schema, &table.table);
        let mut masks = BTreeMap::new();
        if let Ok(Some(rule)) = rule {
            for c in columns {
                if let Some(r) = rule.columns.iter().find(|r| r.name == c.name)
                    && let Some(mask) = &r.mask
                {
                    masks.insert(c.name.clone(), ColumnMask { expression: mask.clone(), identity: r.mask_identity() });
                }
            }
        }
        let decision = Decision::ColumnMasks(masks.len());
        self.audit(
            identity,
            Operation::GetColumnMask,
            format!("table {table}"),
            decision,
            loaded.version.clone(),
            start,
        );
        Ok(masks)
    }
}
