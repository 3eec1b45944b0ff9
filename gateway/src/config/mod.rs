//! The Quiver configuration file: typed, documented, validated once at start-up.
//!
//! `load -> parse -> validate`, and every problem is reported as file, key and reason
//! (`quiver check-config` prints them all). Unknown keys are errors: a mistyped security
//! setting must fail at start-up, not be ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quiver_engine::config::{CatalogConfig, ConfigProblem, EngineConfig, default_tpch_schema, parse_bytes};
use serde::{Deserialize, Serialize};

mod auth;

pub use auth::{AuthConfig, AuthMethod, ClientAuth, TlsConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuiverConfig {
    /// Listening addresses and request limits.
    #[serde(default)]
    pub server: ServerConfig,
    /// How callers are authenticated.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Who has the admin role on the HTTP API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Access control (`[authorization]`). Unset: every authenticated caller may do anything.
    #[serde(default)]
    pub authorization: Option<AuthorizationConfig>,
    /// The result cache (`[cache]`). Unset: no caching.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// Trino resource groups (`[resource_groups]`). Unset: no admission control.
    #[serde(default)]
    pub resource_groups: Option<ResourceGroupsConfig>,
    /// Routing rules (`[routing]`).
    #[serde(default)]
    pub routing: crate::routing::RoutingConfig,
    /// Session defaults for callers that set none.
    #[serde(default)]
    pub session: SessionConfig,
    /// Worker pools, in order; the first is the default pool.
    #[serde(default)]
    pub pools: Vec<PoolConfig>,
    /// The in-process engine worker used by pools with `embedded = true`, and by
    /// `quiver engine`.
    #[serde(default)]
    pub engine: EngineConfig,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Flight SQL listening address.
    pub flight_addr: String,
    /// HTTP (health, info) listening address.
    pub http_addr: String,
    /// Largest gRPC message accepted from a client, e.g. `"16MiB"`. Larger requests are refused
    /// with RESOURCE_EXHAUSTED / OUT_OF_RANGE before they are decoded.
    pub max_request_size: String,
    /// Longest SQL text accepted, e.g. `"1MiB"`.
    pub max_sql_size: String,
    /// Deepest statement accepted: parentheses plus the longest chain of `+ - * / % || AND OR`
    /// in one expression (a chain is as deep as it is long, and everything that walks a
    /// statement recurses that deep). Deeper statements are refused with INVALID_ARGUMENT.
    /// At most 2000 (what a Quiver worker accepts).
    pub max_statement_depth: usize,
    /// File holding the secret (at least 32 bytes) that signs session tokens, tickets and
    /// prepared-statement handles. Replicas that share it accept each other's tokens and
    /// tickets. Unset: a random secret per process (fine for one gateway).
    pub secret_file: Option<PathBuf>,
    /// Secrets that signed tokens and tickets before `secret_file` was rotated. They are still
    /// accepted (never used to sign); remove them once `auth.token_ttl_secs` and
    /// `server.ticket_ttl_secs` have passed since the rotation.
    pub previous_secret_files: Vec<PathBuf>,
    /// TLS on the Flight SQL port (and mTLS when `client_ca_file` is set). Unset: plaintext.
    pub tls: Option<TlsConfig>,
    /// How long a ticket returned by GetFlightInfo stays redeemable, in seconds.
    pub ticket_ttl_secs: u64,
    /// On SIGTERM: how long running streams may go on (readiness is false and new queries
    /// are refused meanwhile) before they are cancelled and the process exits, in seconds.
    pub shutdown_grace_secs: u64,
    /// How long the gateway trusts its cached view of a pool's catalogs, in seconds.
    pub metadata_ttl_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            flight_addr: "127.0.0.1:8815".into(),
            http_addr: "127.0.0.1:8816".into(),
            max_request_size: "16MiB".into(),
            max_sql_size: "1MiB".into(),
            max_statement_depth: 1000,
            secret_file: None,
            previous_secret_files: Vec::new(),
            tls: None,
            ticket_ttl_secs: 3600,
            shutdown_grace_secs: 30,
            metadata_ttl_secs: 10,
        }
    }
}

/// `[admin]`: who may see and kill every query, read pool state and drain workers.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// User names with the admin role. `"*"` gives it to everyone (the embedded default on
    /// loopback only; refused with any method but `open`).
    pub users: Vec<String>,
    /// Groups whose members have the admin role.
    pub groups: Vec<String>,
}

impl AdminConfig {
    /// Whether `user` (in `groups`) has the admin role.
    pub fn is_admin(&self, user: &str, groups: &[String]) -> bool {
        self.users.iter().any(|u| u == "*" || u == user) || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// `[resource_groups]`: Trino's `resource-groups.json`, as is.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceGroupsConfig {
    /// The JSON file (`rootGroups`, `selectors`, `cpuQuotaPeriod`); re-read when it changes.
    pub config_file: PathBuf,
    /// How often CPU quota is regenerated and the file checked for changes, in milliseconds.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// The memory that `softMemoryLimit` percentages are taken of (e.g. `"64GiB"`, the memory
    /// of one worker). Unset: percentage limits are not sent to workers; sizes always are.
    #[serde(default)]
    pub cluster_memory: Option<String>,
}

fn default_tick_ms() -> u64 {
    1000
}

/// `[session]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Catalog for unqualified names. Unset: the first catalog of the embedded engine.
    pub default_catalog: Option<String>,
    /// Schema for unqualified names. Unset: the first schema of that catalog.
    pub default_schema: Option<String>,
}

/// `[authorization]`: exactly one authorizer, OPA (`[authorization.opa]`, Trino's OPA plugin
/// settings) or a Trino `rules.json` (`[authorization.rules]`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// OPA policies, embedded (regorus) or on an OPA server.
    #[serde(default)]
    pub opa: Option<quiver_policies::opa::OpaConfig>,
    /// Trino file-based access control.
    #[serde(default)]
    pub rules: Option<quiver_policies::rules::RulesConfig>,
}

/// `[cache]`: results of read-only, deterministic statements kept as the FlightData frames
/// that were streamed.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Total size of stored results (`1GiB`, `512MiB`, ...).
    pub max_size: String,
    /// Results larger than this are streamed but not kept.
    pub max_entry_size: String,
    /// How long an entry lives, in seconds.
    pub ttl_secs: u64,
    /// Lifetimes for results reading these catalogs, in seconds. The shortest of the
    /// catalogs read applies, and `ttl_secs` too unless every catalog read has an override.
    pub catalog_ttl_secs: std::collections::BTreeMap<String, u64>,
    /// Catalogs whose data changes behind the gateway's back: results reading them are never
    /// kept.
    pub volatile_catalogs: Vec<String>,
    /// Compress stored frames (`none` or `zstd`).
    pub compression: CacheCompression,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size: "1GiB".into(),
            max_entry_size: "64MiB".into(),
            ttl_secs: 300,
            catalog_ttl_secs: Default::default(),
            volatile_catalogs: Vec::new(),
            compression: CacheCompression::None,
        }
    }
}

/// Compression of stored frames.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheCompression {
    /// Keep frames as streamed.
    #[default]
    None,
    /// zstd (level 3) on frame bodies that shrink.
    Zstd,
}

/// `[[pools]]`: a named set of engine workers.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Pool name, used by routing and in messages.
    pub name: String,
    /// Include the in-process engine (the `[engine]` table) as a worker.
    #[serde(default)]
    pub embedded: bool,
    /// Remote workers: `grpc://host:port` or `grpc+tls://host:port`.
    #[serde(default)]
    pub workers: Vec<String>,
    /// Most calls in flight on one worker; past it the pool answers RESOURCE_EXHAUSTED.
    /// Unset: no cap.
    #[serde(default)]
    pub max_concurrent_per_worker: Option<usize>,
    /// Health checks and ejection (`[pools.health]`).
    #[serde(default)]
    pub health: PoolHealthConfig,
    /// The workers are Quiver engines, which evaluate row filters as a barrier
    /// (`quiver_policy_filter`): nothing the user wrote runs on a row a filter hides. Set to
    /// false for other Flight SQL engines; their own optimizer then decides the order.
    #[serde(default = "default_true")]
    pub policy_barrier: bool,
}

fn default_true() -> bool {
    true
}

impl PoolConfig {
    /// A pool with default health settings.
    pub fn new(name: &str, embedded: bool, workers: Vec<String>) -> Self {
        PoolConfig {
            name: name.into(),
            embedded,
            workers,
            max_concurrent_per_worker: None,
            health: PoolHealthConfig::default(),
            policy_barrier: true,
        }
    }

    /// The pool's health policy.
    pub fn health_policy(&self) -> crate::pool::HealthPolicy {
        let h = &self.health;
        crate::pool::HealthPolicy {
            interval: std::time::Duration::from_millis(h.interval_ms),
            timeout: std::time::Duration::from_millis(h.timeout_ms),
            eject_after_failures: h.eject_after_failures,
            backoff_base: std::time::Duration::from_millis(h.backoff_base_ms),
            backoff_max: std::time::Duration::from_millis(h.backoff_max_ms),
            max_concurrent_per_worker: self.max_concurrent_per_worker,
        }
    }
}

/// `[pools.health]`: each worker gets a real Flight SQL call every `interval_ms`; after
/// `eject_after_failures` consecutive failures (probes or real calls) it takes no new calls
/// for `backoff_base_ms`, doubling per ejection in a row up to `backoff_max_ms`; a successful
/// probe re-admits it. The last usable worker of a pool is never ejected.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolHealthConfig {
    /// Time between probes of one worker, in milliseconds.
    pub interval_ms: u64,
    /// How long a probe may take, in milliseconds.
    pub timeout_ms: u64,
    /// Consecutive failures that eject a worker.
    pub eject_after_failures: u32,
    /// First ejection's length, in milliseconds.
    pub backoff_base_ms: u64,
    /// Longest ejection, in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for PoolHealthConfig {
    fn default() -> Self {
        PoolHealthConfig {
            interval_ms: 2000,
            timeout_ms: 2000,
            eject_after_failures: 3,
            backoff_base_ms: 1000,
            backoff_max_ms: 60_000,
        }
    }
}

impl QuiverConfig {
    /// The embedded default: open mode on loopback, one embedded pool with the `tpch` demo
    /// catalog at `scale_factor`.
    pub fn embedded_default(scale_factor: f64) -> Self {
        QuiverConfig {
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            admin: AdminConfig { users: vec!["*".into()], groups: vec![] },
            authorization: None,
            cache: None,
            resource_groups: None,
            routing: crate::routing::RoutingConfig::default(),
            session: SessionConfig {
                default_catalog: Some("tpch".into()),
                default_schema: Some(default_tpch_schema(scale_factor)),
            },
            pools: vec![PoolConfig::new("default", true, vec![])],
            engine: EngineConfig {
                catalogs: vec![CatalogConfig::Tpch { name: "tpch".into(), scale_factor, schema: None }],
                ..Default::default()
            },
        }
    }

    /// Reads and parses `path`; on failure the message names the file, the key and the reason.
    pub fn load(path: &Path) -> Result<Self, Vec<String>> {
        let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
        Self::parse(&text).map_err(|e| vec![format!("{}: {e}", path.display())])
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| {
            let what = e.message().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: {what}")
                }
                None => what,
            }
        })
    }

    /// Every problem serde could not see.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        macro_rules! push {
            ($key:expr, $reason:expr) => {
                problems.push(ConfigProblem { key: String::from($key), reason: $reason })
            };
        }
        let flight = self.server.flight_addr.parse::<SocketAddr>();
        if let Err(e) = &flight {
            push!("server.flight_addr", format!("`{}` is not an address (ip:port): {e}", self.server.flight_addr));
        }
        if let Err(e) = self.server.http_addr.parse::<SocketAddr>() {
            push!("server.http_addr", format!("`{}` is not an address (ip:port): {e}", self.server.http_addr));
        }
        for (key, value) in [
            ("server.max_request_size", &self.server.max_request_size),
            ("server.max_sql_size", &self.server.max_sql_size),
        ] {
            if let Err(e) = parse_bytes(value) {
                push!(key, e);
            }
        }
        if self.server.max_statement_depth == 0
            || self.server.max_statement_depth > quiver_engine::sql::MAX_STATEMENT_DEPTH
        {
            push!(
                "server.max_statement_depth",
                format!(
                    "must be between 1 and {} (what a Quiver worker accepts)",
                    quiver_engine::sql::MAX_STATEMENT_DEPTH
                )
            );
        }
        let previous = self.server.previous_secret_files.iter().enumerate();
        let secrets = self.server.secret_file.iter().map(|p| ("server.secret_file".to_string(), p));
        for (key, path) in secrets.chain(previous.map(|(i, p)| (format!("server.previous_secret_files[{i}]"), p))) {
            match std::fs::read(path) {
                Ok(bytes) if bytes.trim_ascii().len() < 32 => {
                    push!(key.as_str(), format!("{} holds fewer than 32 bytes", path.display()))
                }
                Ok(_) => {}
                Err(e) => push!(key.as_str(), format!("{}: {e}", path.display())),
            }
        }
        if !self.server.previous_secret_files.is_empty() && self.server.secret_file.is_none() {
            push!("server.previous_secret_files", String::from("needs server.secret_file (the current secret)"));
        }
        if let Some(tls) = &self.server.tls {
            problems.extend(tls.validate("server.tls"));
        }
        if self.server.ticket_ttl_secs == 0 {
            push!("server.ticket_ttl_secs", String::from("must be at least 1"));
        }
        problems.extend(self.auth.validate(&self.server));
        if let Some(rg) = &self.resource_groups {
            if let Err(e) = quiver_policies::resource_groups::ResourceGroupsSpec::from_file(&rg.config_file) {
                push!("resource_groups.config_file", e.to_string());
            }
            if let Some(Err(e)) = rg.cluster_memory.as_deref().map(parse_bytes) {
                push!("resource_groups.cluster_memory", e);
            }
            if rg.tick_ms == 0 {
                push!("resource_groups.tick_ms", String::from("must be at least 1"));
            }
        }
        if let Some(a) = &self.authorization {
            match (&a.opa, &a.rules) {
                (Some(_), Some(_)) => push!("authorization", String::from("set either `opa` or `rules`, not both")),
                (None, None) => push!("authorization", String::from("set `opa` or `rules`")),
                (Some(opa), None) => {
                    if let Err(e) = quiver_policies::opa::OpaAuthorizer::from_config(opa.clone()) {
                        push!("authorization.opa", e.to_string());
                    }
                }
                (None, Some(rules)) => {
                    if let Err(e) = quiver_policies::rules::RulesAuthorizer::load(rules.clone()) {
                        push!("authorization.rules", e.to_string());
                    }
                }
            }
        }
        if let Some(c) = &self.cache {
            for (key, value) in [("cache.max_size", &c.max_size), ("cache.max_entry_size", &c.max_entry_size)] {
                if let Err(e) = parse_bytes(value) {
                    push!(key, e);
                }
            }
            if c.ttl_secs == 0 {
                push!("cache.ttl_secs", String::from("must be at least 1"));
            }
        }
        let pool_names: Vec<String> = self.pools.iter().map(|p| p.name.clone()).collect();
        for (key, reason) in self.routing.validate(&pool_names) {
            push!(key, reason);
        }
        if self.admin.users.iter().any(|u| u == "*") && self.auth.methods != [AuthMethod::Open] {
            push!("admin.users", String::from("`*` (everyone is admin) is only allowed with `open` authentication"));
        }
        if self.pools.is_empty() {
            push!("pools", String::from("at least one pool is required"));
        }
        let mut names = std::collections::HashSet::new();
        let mut embedded = false;
        for (i, pool) in self.pools.iter().enumerate() {
            if pool.name.trim().is_empty() {
                push!(format!("pools[{i}].name"), String::from("must not be empty"));
            }
            if !names.insert(pool.name.clone()) {
                push!(format!("pools[{i}].name"), format!("pool `{}` is defined twice", pool.name));
            }
            if !pool.embedded && pool.workers.is_empty() {
                push!(format!("pools[{i}].workers"), String::from("a pool needs workers or `embedded = true`"));
            }
            embedded |= pool.embedded;
            let h = &pool.health;
            if h.interval_ms == 0 || h.timeout_ms == 0 || h.eject_after_failures == 0 || h.backoff_base_ms == 0 {
                push!(format!("pools[{i}].health"), String::from("intervals, timeouts and counts must be at least 1"));
            }
            if h.backoff_max_ms < h.backoff_base_ms {
                push!(format!("pools[{i}].health.backoff_max_ms"), String::from("must be at least backoff_base_ms"));
            }
            if pool.max_concurrent_per_worker == Some(0) {
                push!(format!("pools[{i}].max_concurrent_per_worker"), String::from("must be at least 1"));
            }
            for (j, uri) in pool.workers.iter().enumerate() {
                if let Err(e) = crate::pool::worker_endpoint_uri(uri) {
                    push!(format!("pools[{i}].workers[{j}]"), e);
                }
            }
        }
        if embedded && self.engine.catalogs.is_empty() {
            push!("engine.catalogs", String::from("an embedded pool needs at least one catalog"));
        }
        for p in self.engine.validate("engine") {
            problems.push(p);
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        assert_eq!(QuiverConfig::embedded_default(0.01).validate(), vec![]);
    }

    #[test]
    fn example_config_in_conf_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/quiver.toml");
        let cfg = QuiverConfig::load(&path).expect("conf/quiver.toml parses");
        assert_eq!(cfg.validate(), vec![]);
    }

    /// Every ```toml block in the docs parses (unknown keys are errors), so the docs cannot
    /// drift from the config structs.
    #[test]
    fn toml_examples_in_the_docs_parse() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let mut checked = 0;
        for doc in [
            "authentication.md",
            "authorization.md",
            "cache.md",
            "configuration.md",
            "routing.md",
            "resource-groups.md",
        ] {
            let text = std::fs::read_to_string(docs.join(doc)).expect("doc");
            for (i, block) in text.split("```toml\n").skip(1).enumerate() {
                let block = block.split("```").next().unwrap_or_default();
                if let Err(e) = QuiverConfig::parse(block) {
                    panic!("{doc}: toml block {}: {e}\n{block}", i + 1);
                }
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} blocks found");
    }

    #[test]
    fn each_method_table_reports_problems_under_its_own_key() {
        let cfg = QuiverConfig::parse(
            r#"
[auth]
methods = ["ldap", "jwt"]
[auth.ldap]
url = "ldap://ldap.example.com"
[auth.jwt]
jwks_url = "https://idp.example.com/jwks"
[[pools]]
name = "p"
embedded = true
"#,
        )
        .expect("parses");
        let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
        assert!(keys.iter().any(|k| k == "auth.ldap.url"), "plain ldap:// must be refused: {keys:?}");
        assert!(keys.iter().any(|k| k.starts_with("auth.jwt.required_")), "issuer/audience required: {keys:?}");
        let err = QuiverConfig::parse("[auth.ldap]\nurll = \"x\"\n").expect_err("an error");
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn unknown_keys_name_the_line_and_key() {
        let err =
            QuiverConfig::parse("[server]\nflight_addr = \"127.0.0.1:1\"\nflite_addr = \"x\"\n").expect_err("an error");
        assert!(err.contains("line 3") && err.contains("flite_addr"), "{err}");
        let err = QuiverConfig::parse("[auth]\nmethods = [\"ldapp\"]\n").expect_err("an error");
        assert!(err.contains("ldapp"), "{err}");
    }

    #[test]
    fn open_mode_is_refused_off_loopback() {
        let mut cfg = QuiverConfig::embedded_default(0.01);
        cfg.server.flight_addr = "0.0.0.0:8815".into();
        let problems = cfg.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "auth.methods");
        assert!(problems[0].reason.contains("0.0.0.0:8815"));
    }

    #[test]
    fn each_rejection_names_its_key() {
        let cfg = QuiverConfig::parse(
            r#"
[server]
flight_addr = "nowhere"
max_sql_size = "big"
[auth]
methods = ["password-file"]
[[pools]]
name = "a"
[[pools]]
name = "a"
workers = ["http://x:1"]
"#,
        )
        .expect("parses");
        let keys: Vec<String> = cfg.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "server.flight_addr",
                "server.max_sql_size",
                "auth.password_file",
                "pools[0].workers",
                "pools[1].name",
                "pools[1].workers[0]",
            ]
        );
    }
}
