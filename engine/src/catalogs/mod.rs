//! Catalogs built from the `[[engine.catalogs]]` configuration.
//!
//! Three kinds, one module each:
//! - `tpch`: the eight TPC-H tables generated in memory at a scale factor;
//! - `files`: a directory tree of Parquet / CSV / NDJSON files (Hive partitions pruned);
//! - `memory`: empty in-memory schemas for `CREATE TABLE` / `INSERT INTO`.
//!
//! [`build_catalog`] is the one entry point; the caller registers the returned provider
//! under the configured name. Schema and table names are lowercased so unquoted SQL finds
//! them.

mod files;
mod memory;
mod tpch;

use std::sync::Arc;

use datafusion::catalog::CatalogProvider;
use datafusion::execution::session_state::SessionState;

use crate::config::CatalogConfig;
use crate::error::EngineError;

/// Builds the catalog `config` describes. `state` is used to infer file schemas (object
/// stores, format defaults); TPC-H generation runs on blocking threads.
pub async fn build_catalog(
    config: &CatalogConfig,
    state: &SessionState,
) -> Result<Arc<dyn CatalogProvider>, EngineError> {
    match config {
        CatalogConfig::Tpch { name, scale_factor, schema } => tpch::build(name, *scale_factor, schema.as_deref()).await,
        CatalogConfig::Files { name, path } => files::build(name, path, state).await,
        CatalogConfig::Memory { name, schemas } => memory::build(name, schemas),
    }
}

/// The error for a catalog that failed to load.
fn catalog_error(catalog: &str, reason: impl Into<String>) -> EngineError {
    EngineError::Catalog { catalog: catalog.to_string(), reason: reason.into() }
}
