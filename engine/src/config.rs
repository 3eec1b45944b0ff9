//! Engine configuration: the `[engine]` table of a Quiver config file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Configuration of one DataFusion engine worker (embedded or standalone).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Address the standalone worker's Flight SQL service binds (`quiver engine`).
    /// Ignored by the embedded engine, which binds an ephemeral loopback port.
    #[serde(default)]
    pub flight_addr: Option<String>,
    /// Catalogs this worker serves, in order.
    #[serde(default)]
    pub catalogs: Vec<CatalogConfig>,
    /// Memory the worker's queries may hold in total, e.g. `"4GiB"`. Operators that can spill
    /// (sorts, joins, aggregates) spill to disk beyond it; the others fail with
    /// RESOURCE_EXHAUSTED. Unset means unbounded.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Directory for spill files. Unset means the OS temporary directory.
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
    /// DataFusion target partitions (parallelism of one query). Unset means the number of cores.
    #[serde(default)]
    pub target_partitions: Option<usize>,
    /// Rows per record batch produced by scans and operators. Unset means DataFusion's 8192.
    #[serde(default)]
    pub batch_size: Option<usize>,
}

/// One catalog of the worker, chosen by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CatalogConfig {
    /// TPC-H data generated in memory at start-up.
    Tpch {
        /// Catalog name, e.g. `tpch`.
        name: String,
        /// TPC-H scale factor (1.0 = about 1 GB of data, 6 million lineitem rows).
        #[serde(default = "default_scale_factor")]
        scale_factor: f64,
        /// Schema holding the eight tables. Unset: `tiny` for 0.01, otherwise `sf<scale>`
        /// with `.` written as `_` (`sf1`, `sf0_1`), as Trino names them.
        #[serde(default)]
        schema: Option<String>,
    },
    /// A directory of files: each subfolder is a schema, each file or folder in it a table
    /// (Parquet, CSV with a header, or NDJSON, by extension). Folders may be Hive-style
    /// partitioned (`key=value/`), and filters on partition columns prune folders.
    Files {
        /// Catalog name.
        name: String,
        /// Root directory.
        path: PathBuf,
    },
    /// An empty in-memory catalog; tables come from `CREATE TABLE` / `INSERT`. For tests.
    Memory {
        /// Catalog name.
        name: String,
        /// Schemas to create. Default: `["default"]`.
        #[serde(default = "default_memory_schemas")]
        schemas: Vec<String>,
    },
}

impl CatalogConfig {
    /// The catalog's name, whatever its kind.
    pub fn name(&self) -> &str {
        match self {
            CatalogConfig::Tpch { name, .. }
            | CatalogConfig::Files { name, .. }
            | CatalogConfig::Memory { name, .. } => name,
        }
    }
}

fn default_scale_factor() -> f64 {
    0.01
}

fn default_memory_schemas() -> Vec<String> {
    vec!["default".to_string()]
}

/// The schema name of a TPC-H catalog at `scale_factor` when none is configured.
pub fn default_tpch_schema(scale_factor: f64) -> String {
    if (scale_factor - 0.01).abs() < f64::EPSILON {
        "tiny".to_string()
    } else {
        format!("sf{scale_factor}").replace('.', "_")
    }
}

/// One problem found while validating: the key and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted path of the offending key, e.g. `engine.catalogs[1].path`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl EngineConfig {
    /// Checks what serde cannot: sizes parse, names are unique and non-empty, paths exist.
    /// `prefix` is the dotted path of this table in the file (`engine`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut push = |key: String, reason: String| problems.push(ConfigProblem { key, reason });
        if let Some(limit) = &self.memory_limit
            && let Err(e) = parse_bytes(limit)
        {
            push(format!("{prefix}.memory_limit"), e);
        }
        if self.target_partitions == Some(0) {
            push(format!("{prefix}.target_partitions"), "must be at least 1".into());
        }
        if self.batch_size == Some(0) {
            push(format!("{prefix}.batch_size"), "must be at least 1".into());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, catalog) in self.catalogs.iter().enumerate() {
            let key = format!("{prefix}.catalogs[{i}]");
            let name = catalog.name();
            if !valid_identifier(name) {
                push(
                    format!("{key}.name"),
                    format!("`{name}` is not a valid catalog name (letters, digits, `_`, not starting with a digit)"),
                );
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                push(format!("{key}.name"), format!("catalog `{name}` is defined twice"));
            }
            match catalog {
                CatalogConfig::Tpch { scale_factor, schema, .. } => {
                    if !(*scale_factor > 0.0 && *scale_factor <= 1000.0) {
                        push(format!("{key}.scale_factor"), format!("{scale_factor} is outside (0, 1000]"));
                    }
                    if let Some(s) = schema
                        && !valid_identifier(s)
                    {
                        push(format!("{key}.schema"), format!("`{s}` is not a valid schema name"));
                    }
                }
                CatalogConfig::Files { path, .. } => {
                    if !path.is_dir() {
                        push(format!("{key}.path"), format!("{} is not a directory", path.display()));
                    }
                }
                CatalogConfig::Memory { schemas, .. } => {
                    for (j, s) in schemas.iter().enumerate() {
                        if !valid_identifier(s) {
                            push(format!("{key}.schemas[{j}]"), format!("`{s}` is not a valid schema name"));
                        }
                    }
                }
            }
        }
        problems
    }
}

/// True for names that need no quoting in SQL: ASCII letters, digits and `_`, not starting
/// with a digit. Catalog and schema names are held to this so unquoted SQL finds them.
pub fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses a byte size such as `512MiB`, `4GB`, `1.5GiB` or `1048576`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("`{s}` is not a size (expected e.g. `512MiB`, `4GB`)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => 1024.0 * 1024.0,
        "gb" => 1e9,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tb" => 1e12,
        "tib" | "t" => 1024.0_f64.powi(4),
        other => return Err(format!("unknown size unit `{other}` in `{s}`")),
    };
    let bytes = value * mult;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < usize::MAX as f64) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_bytes("1.5 GB"), Ok(1_500_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn tpch_schema_names_follow_trino() {
        assert_eq!(default_tpch_schema(0.01), "tiny");
        assert_eq!(default_tpch_schema(1.0), "sf1");
        assert_eq!(default_tpch_schema(0.1), "sf0_1");
    }

    #[test]
    fn unknown_catalog_keys_are_rejected() {
        let err = toml::from_str::<EngineConfig>("[[catalogs]]\nkind = \"tpch\"\nname = \"tpch\"\nscale_factr = 1.0\n")
            .expect_err("a misspelt key must be rejected");
        assert!(err.to_string().contains("scale_factr"), "{err}");
    }

    #[test]
    fn validation_names_each_problem() {
        let cfg = EngineConfig {
            memory_limit: Some("huge".into()),
            target_partitions: Some(0),
            catalogs: vec![
                CatalogConfig::Memory { name: "m".into(), schemas: vec!["ok".into(), "bad-name".into()] },
                CatalogConfig::Memory { name: "M".into(), schemas: vec![] },
                CatalogConfig::Files { name: "f".into(), path: "/definitely/not/here".into() },
            ],
            ..Default::default()
        };
        let keys: Vec<String> = cfg.validate("engine").into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "engine.memory_limit",
                "engine.target_partitions",
                "engine.catalogs[0].schemas[1]",
                "engine.catalogs[1].name",
                "engine.catalogs[2].path",
            ]
        );
    }
}
