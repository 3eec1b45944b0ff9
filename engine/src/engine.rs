//! The DataFusion session the worker runs every statement in.

use std::sync::Arc;

use datafusion::catalog::CatalogProvider;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::SessionConfig;

use crate::barrier::with_policy_barrier;
use crate::catalogs::build_catalog;
use crate::config::{EngineConfig, parse_bytes};
use crate::error::EngineError;

/// One DataFusion worker: the shared catalogs plus the settings every statement runs with.
#[derive(Debug)]
pub struct Engine {
    base: SessionState,
    default_catalog: String,
    default_schema: String,
    executed: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// Statements executed so far (each DoGet of a statement counts once). Exposed to the
    /// gateway and to tests through the `quiver.stats` Flight action.
    pub fn statements_executed(&self) -> u64 {
        self.executed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_execution(&self) {
        self.executed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Builds the runtime (memory limit, spill directory) and loads every configured catalog.
    pub async fn start(config: &EngineConfig) -> Result<Arc<Engine>, EngineError> {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = &config.memory_limit {
            let bytes = parse_bytes(limit).map_err(EngineError::InvalidRequest)?;
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let mode = match &config.spill_dir {
            Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
            None => DiskManagerMode::OsTmpDirectory,
        };
        runtime = runtime.with_disk_manager_builder(DiskManagerBuilder::default().with_mode(mode));
        let runtime = runtime.build_arc()?;

        let mut session = SessionConfig::new()
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(config.catalogs.is_empty());
        // Plain Utf8 strings on the wire: JDBC, ODBC and older ADBC drivers do not read Utf8View.
        session.options_mut().sql_parser.map_string_types_to_utf8view = false;
        session.options_mut().execution.parquet.schema_force_view_types = false;
        if let Some(n) = config.target_partitions {
            session = session.with_target_partitions(n);
        }
        if let Some(n) = config.batch_size {
            session = session.with_batch_size(n);
        }
        // Row filters written as `quiver_policy_filter(...)` are evaluation barriers (see
        // `crate::barrier`); per-statement sessions are clones of this one and keep them.
        let mut state = with_policy_barrier(
            SessionStateBuilder::new().with_config(session).with_runtime_env(runtime).with_default_features(),
        )
        .build();

        let mut first: Option<(String, Arc<dyn CatalogProvider>)> = None;
        for catalog in &config.catalogs {
            let started = std::time::Instant::now();
            let provider = build_catalog(catalog, &state).await?;
            tracing::info!(
                catalog = catalog.name(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "catalog loaded"
            );
            state.catalog_list().register_catalog(catalog.name().to_string(), provider.clone());
            if first.is_none() {
                first = Some((catalog.name().to_string(), provider));
            }
        }
        let (default_catalog, default_schema) = match first {
            Some((name, provider)) => {
                let mut schemas: Vec<String> =
                    provider.schema_names().into_iter().filter(|s| s != "information_schema").collect();
                schemas.sort();
                (name, schemas.into_iter().next().unwrap_or_else(|| "default".to_string()))
            }
            None => ("datafusion".to_string(), "public".to_string()),
        };
        let options = state.config_mut().options_mut();
        options.catalog.default_catalog = default_catalog.clone();
        options.catalog.default_schema = default_schema.clone();
        Ok(Arc::new(Engine { base: state, default_catalog, default_schema, executed: Default::default() }))
    }

    /// The catalog unqualified names resolve to when a statement names none.
    pub fn default_catalog(&self) -> &str {
        &self.default_catalog
    }

    /// The schema unqualified names resolve to when a statement names none.
    pub fn default_schema(&self) -> &str {
        &self.default_schema
    }

    /// A session for one statement, with the caller's default catalog and schema. Catalogs
    /// are shared, so tables created in one statement are seen by the next.
    pub fn session(&self, catalog: Option<&str>, schema: Option<&str>) -> SessionState {
        let mut state = self.base.clone();
        let options = state.config_mut().options_mut();
        if let Some(c) = catalog.filter(|c| !c.is_empty()) {
            options.catalog.default_catalog = c.to_string();
        }
        if let Some(s) = schema.filter(|s| !s.is_empty()) {
            options.catalog.default_schema = s.to_string();
        }
        state
    }

    /// Names of the catalogs this worker serves, sorted.
    pub fn catalog_names(&self) -> Vec<String> {
        let mut names = self.base.catalog_list().catalog_names();
        names.sort();
        names
    }

    /// The shared session, for metadata listing.
    pub(crate) fn base(&self) -> &SessionState {
        &self.base
    }
}
