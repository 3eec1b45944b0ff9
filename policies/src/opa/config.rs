//! `[policies.opa]`: policy entry points (named as Trino names them) and the back end.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// OPA authorization. Exactly one of `embedded` and `remote` is set.
///
/// Policy paths follow Trino's `opa.policy.*` properties. With `embedded` they are rule paths
/// (`data.trino.allow`); with `remote` they are URLs of OPA's data API
/// (`http://opa:8181/v1/data/trino/allow`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpaConfig {
    /// The allow rule (Trino `opa.policy.uri`). Required.
    pub policy_uri: String,
    /// The batch rule returning allowed indices (Trino `opa.policy.batched-uri`). Without it,
    /// filters ask `policy_uri` once per item.
    #[serde(default)]
    pub batch_policy_uri: Option<String>,
    /// The row filters rule (Trino `opa.policy.row-filters-uri`). Without it, no row filters.
    #[serde(default)]
    pub row_filters_policy_uri: Option<String>,
    /// The column mask rule, asked once per column (Trino `opa.policy.column-masking-uri`).
    #[serde(default)]
    pub column_masking_policy_uri: Option<String>,
    /// The batch column mask rule (Trino `opa.policy.batch-column-masking-uri`); preferred over
    /// `column_masking_policy_uri` when both are set.
    #[serde(default)]
    pub batch_column_masking_policy_uri: Option<String>,
    /// Sent as `input.context.softwareStack.trinoVersion`.
    #[serde(default = "default_trino_version")]
    pub trino_version: String,
    /// How long a decision is reused, in milliseconds; 0 turns the cache off. Default: 2000
    /// with `remote`, 0 with `embedded`.
    #[serde(default)]
    pub decision_cache_ttl_ms: Option<u64>,
    /// Most decisions kept in the cache.
    #[serde(default = "default_cache_entries")]
    pub decision_cache_max_entries: u64,
    /// Evaluate in-process with regorus.
    #[serde(default)]
    pub embedded: Option<EmbeddedConfig>,
    /// Ask an OPA server.
    #[serde(default)]
    pub remote: Option<RemoteConfig>,
}

/// Embedded Rego.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// A `.rego` file, or a folder whose `*.rego` and `data.json` files (recursively, hidden
    /// files skipped) are loaded together; every `data.json` is merged at the root of `data`.
    pub path: PathBuf,
    /// How often, at most, the files are checked for changes (on use), in milliseconds.
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
    /// Longest one evaluation may run, in milliseconds; past it the decision fails (closed).
    #[serde(default = "default_eval_timeout_ms")]
    pub eval_timeout_ms: u64,
    /// How rules are evaluated: `interpreter` (default) uses regorus's tree-walking interpreter;
    /// `vm` compiles each entry rule to regorus's Rego VM bytecode (3-20x faster on the example
    /// policies) and falls back to the interpreter for a rule the VM compiler cannot take yet
    /// (`with`). The VM is opt-in: it is young, and it differs from OPA in at least one case
    /// (an undefined value passed to a function whose result does not depend on it; see
    /// docs/authorization.md), so a policy must be checked under it before it is used.
    #[serde(default)]
    pub engine: RegoEngine,
}

/// The evaluator of embedded Rego.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegoEngine {
    /// The interpreter for every rule.
    #[default]
    Interpreter,
    /// The Rego VM where the rule compiles to it, else the interpreter.
    Vm,
}

/// Remote OPA over HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// Timeout of one request (connect included), in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM CA certificates for an `https://` OPA; default: the platform's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_trino_version() -> String {
    concat!("quiver-", env!("CARGO_PKG_VERSION")).to_owned()
}
fn default_cache_entries() -> u64 {
    10_000
}
fn default_reload_check_ms() -> u64 {
    1_000
}
fn default_eval_timeout_ms() -> u64 {
    100
}
fn default_timeout_ms() -> u64 {
    2_000
}

impl OpaConfig {
    /// A config for embedded Rego at `path` with the allow rule `policy_uri`.
    pub fn embedded(path: impl Into<PathBuf>, policy_uri: impl Into<String>) -> Self {
        OpaConfig {
            policy_uri: policy_uri.into(),
            batch_policy_uri: None,
            row_filters_policy_uri: None,
            column_masking_policy_uri: None,
            batch_column_masking_policy_uri: None,
            trino_version: default_trino_version(),
            decision_cache_ttl_ms: None,
            decision_cache_max_entries: default_cache_entries(),
            embedded: Some(EmbeddedConfig {
                path: path.into(),
                reload_check_ms: default_reload_check_ms(),
                eval_timeout_ms: default_eval_timeout_ms(),
                engine: RegoEngine::default(),
            }),
            remote: None,
        }
    }

    /// Embedded Rego at `path` with the entry points Trino's OPA plugin users conventionally
    /// write: `data.trino.allow`, `data.trino.batch`, `data.trino.rowFilters` and
    /// `data.trino.batchColumnMasks` (as conf/policies does).
    pub fn embedded_trino(path: impl Into<PathBuf>) -> Self {
        OpaConfig {
            batch_policy_uri: Some("data.trino.batch".into()),
            row_filters_policy_uri: Some("data.trino.rowFilters".into()),
            batch_column_masking_policy_uri: Some("data.trino.batchColumnMasks".into()),
            ..OpaConfig::embedded(path, "data.trino.allow")
        }
    }

    /// The same config evaluated by `engine` (embedded only; a remote config is unchanged).
    pub fn with_engine(mut self, engine: RegoEngine) -> Self {
        if let Some(e) = self.embedded.as_mut() {
            e.engine = engine;
        }
        self
    }

    /// A config for a remote OPA with the allow rule at URL `policy_uri`.
    pub fn remote(policy_uri: impl Into<String>) -> Self {
        OpaConfig {
            embedded: None,
            remote: Some(RemoteConfig { timeout_ms: default_timeout_ms(), ca_file: None }),
            ..OpaConfig::embedded("", policy_uri)
        }
    }

    /// Every configured policy path, with its key name.
    pub fn paths(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![("policy_uri", self.policy_uri.as_str())];
        let optional = [
            ("batch_policy_uri", &self.batch_policy_uri),
            ("row_filters_policy_uri", &self.row_filters_policy_uri),
            ("column_masking_policy_uri", &self.column_masking_policy_uri),
            ("batch_column_masking_policy_uri", &self.batch_column_masking_policy_uri),
        ];
        v.extend(optional.into_iter().filter_map(|(k, p)| p.as_deref().map(|p| (k, p))));
        v
    }

    /// Checks the back end choice and the form of every path. The error names the key.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.embedded, &self.remote) {
            (Some(_), Some(_)) => return Err("opa: set either `embedded` or `remote`, not both".into()),
            (None, None) => return Err("opa: set `embedded` (a policy path) or `remote` (an OPA server)".into()),
            _ => {}
        }
        for (key, path) in self.paths() {
            if self.embedded.is_some() {
                let rest = path.strip_prefix("data.").unwrap_or("");
                if rest.is_empty() || rest.split('.').any(str::is_empty) {
                    return Err(format!("opa.{key}: {path:?} is not a rule path like data.trino.allow"));
                }
            } else {
                let ok = (path.starts_with("http://") || path.starts_with("https://")) && path.contains("/v1/data/");
                if !ok {
                    return Err(format!(
                        "opa.{key}: {path:?} is not an OPA data API URL like http://opa:8181/v1/data/trino/allow"
                    ));
                }
            }
        }
        if let Some(e) = &self.embedded
            && (e.eval_timeout_ms == 0 || e.path.as_os_str().is_empty())
        {
            return Err("opa.embedded: `path` must be set and `eval_timeout_ms` above 0".into());
        }
        if let Some(r) = &self.remote
            && r.timeout_ms == 0
        {
            return Err("opa.remote.timeout_ms must be above 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OpaConfig, String> {
        let c: OpaConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn accepts_embedded_and_remote() {
        let c = parse(
            r#"{"policy_uri": "data.trino.allow", "batch_policy_uri": "data.trino.batch",
            "embedded": {"path": "conf/policies"}}"#,
        );
        assert_eq!(c.map(|c| c.paths().len()), Ok(2));
        let c = parse(r#"{"policy_uri": "http://127.0.0.1:8181/v1/data/trino/allow", "remote": {}}"#);
        assert_eq!(c.map(|c| c.remote.map(|r| r.timeout_ms)), Ok(Some(2000)));
    }

    #[test]
    fn rejects_unknown_keys_missing_backend_and_bad_paths() {
        let e = parse(r#"{"policy_uri": "data.trino.allow", "embeded": {"path": "x"}}"#).expect_err("must be rejected");
        assert!(e.contains("unknown field `embeded`"), "{e}");
        let e = parse(r#"{"policy_uri": "data.trino.allow"}"#).expect_err("must be rejected");
        assert!(e.contains("set `embedded`"), "{e}");
        let e = parse(r#"{"policy_uri": "trino/allow", "embedded": {"path": "x"}}"#).expect_err("must be rejected");
        assert!(e.contains("opa.policy_uri"), "{e}");
        let e = parse(
            r#"{"policy_uri": "data.trino.allow", "row_filters_policy_uri": "data.trino.",
            "embedded": {"path": "x"}}"#,
        )
        .expect_err("must be rejected");
        assert!(e.contains("opa.row_filters_policy_uri"), "{e}");
        let e = parse(r#"{"policy_uri": "data.trino.allow", "remote": {}}"#).expect_err("must be rejected");
        assert!(e.contains("OPA data API URL"), "{e}");
    }
}
