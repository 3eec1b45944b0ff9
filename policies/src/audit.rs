//! The audit trail: every decision becomes one structured `tracing` event (target
//! `quiver::audit`) and is handed to an optional [`DecisionObserver`] (metrics).

use std::sync::Arc;
use std::time::Duration;

/// What a decision came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied by the policy.
    Deny,
    /// A batch filter kept `allowed` of `total` items.
    Filtered {
        /// Items kept.
        allowed: usize,
        /// Items asked about.
        total: usize,
    },
    /// `n` row filters apply.
    RowFilters(usize),
    /// `n` columns are masked.
    ColumnMasks(usize),
    /// No decision could be made; the caller is refused (fail closed).
    Error(String),
}

impl Decision {
    /// A short label for logs and metric labels: `allow`, `deny`, `filter`, `row_filters`,
    /// `column_masks`, `error`.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Filtered { .. } => "filter",
            Decision::RowFilters(_) => "row_filters",
            Decision::ColumnMasks(_) => "column_masks",
            Decision::Error(_) => "error",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Filtered { allowed, total } => write!(f, "filter {allowed}/{total}"),
            Decision::RowFilters(n) => write!(f, "row_filters {n}"),
            Decision::ColumnMasks(n) => write!(f, "column_masks {n}"),
            Decision::Error(e) => write!(f, "error: {e}"),
            other => f.write_str(other.label()),
        }
    }
}

/// One decision, as audited.
#[derive(Debug, Clone)]
pub struct DecisionEvent<'a> {
    /// The caller.
    pub user: &'a str,
    /// The caller's groups.
    pub groups: &'a [String],
    /// Trino operation name.
    pub operation: &'static str,
    /// What it was asked on, human-readable.
    pub resource: String,
    /// The outcome.
    pub decision: Decision,
    /// The policy version that decided (a hash of the policy files, or the remote URL).
    pub policy_version: String,
    /// `opa-embedded`, `opa-remote` or `rules-file`.
    pub backend: &'static str,
    /// Time taken.
    pub elapsed: Duration,
}

/// Receives every decision, e.g. to count them in Prometheus. Must be cheap: it runs inline.
pub trait DecisionObserver: Send + Sync + 'static {
    /// Called once per decision, after the audit event was logged.
    fn observe(&self, event: &DecisionEvent<'_>);
}

/// Logs decisions and forwards them to the observer, if any.
#[derive(Clone, Default)]
pub(crate) struct Auditor {
    observer: Option<Arc<dyn DecisionObserver>>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor").field("observer", &self.observer.is_some()).finish()
    }
}

impl Auditor {
    pub(crate) fn new(observer: Option<Arc<dyn DecisionObserver>>) -> Self {
        Auditor { observer }
    }

    pub(crate) fn record(&self, event: DecisionEvent<'_>) {
        tracing::info!(
            target: "quiver::audit",
            user = event.user,
            groups = ?event.groups,
            operation = event.operation,
            resource = %event.resource,
            decision = %event.decision,
            policy_version = %event.policy_version,
            backend = event.backend,
            elapsed_us = event.elapsed.as_micros() as u64,
            "authorization decision"
        );
        if let Some(o) = &self.observer {
            o.observe(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Count(Mutex<Vec<String>>);
    impl DecisionObserver for Count {
        fn observe(&self, e: &DecisionEvent<'_>) {
            self.0.lock().push(format!("{} {} {}", e.user, e.operation, e.decision));
        }
    }

    #[test]
    fn observer_sees_each_decision() {
        let count = Arc::new(Count::default());
        let a = Auditor::new(Some(count.clone()));
        a.record(DecisionEvent {
            user: "alice",
            groups: &[],
            operation: "ExecuteQuery",
            resource: "-".into(),
            decision: Decision::Filtered { allowed: 1, total: 3 },
            policy_version: "v".into(),
            backend: "opa-embedded",
            elapsed: Duration::ZERO,
        });
        assert_eq!(*count.0.lock(), vec!["alice ExecuteQuery filter 1/3".to_string()]);
    }
}
