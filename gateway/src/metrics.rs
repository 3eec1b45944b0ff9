//! Prometheus metrics, served in the text format at `GET /metrics`.
//!
//! One registry per gateway; components get the handles they update. Label values are
//! bounded sets (method names, reason labels), never user input.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of `quiver_auth_attempts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// The method that decided: `password-file`, `ldap`, `jwt`, `kerberos`, `certificate`,
    /// `token` (a gateway session token), `open`, or `chain` when no method took the call.
    pub method: String,
    /// `success` or `failure`.
    pub result: &'static str,
    /// Why it failed (`invalid_credentials`, `denied`, `invalid_token`, `unsupported`,
    /// `unavailable`); empty on success.
    pub reason: &'static str,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    auth_attempts: Family<AuthLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("quiver");
        let auth_attempts = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_attempts",
            "Authentications by method and result (session-token calls count as method `token`)",
            auth_attempts.clone(),
        );
        Metrics { registry, auth_attempts }
    }

    /// Counts a successful authentication by `method`.
    pub fn auth_success(&self, method: &str) {
        self.auth_attempts.get_or_create(&AuthLabels { method: method.into(), result: "success", reason: "" }).inc();
    }

    /// Counts a failed authentication.
    pub fn auth_failure(&self, method: &str, reason: &'static str) {
        self.auth_attempts.get_or_create(&AuthLabels { method: method.into(), result: "failure", reason }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_counters_are_exposed_by_method_and_reason() {
        let metrics = Metrics::new();
        metrics.auth_success("ldap");
        metrics.auth_failure("ldap", "denied");
        metrics.auth_failure("ldap", "denied");
        let text = metrics.encode();
        assert!(
            text.contains(r#"quiver_auth_attempts_total{method="ldap",result="failure",reason="denied"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"quiver_auth_attempts_total{method="ldap",result="success",reason=""} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
