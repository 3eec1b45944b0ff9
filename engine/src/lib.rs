//! The Quiver engine worker: Apache DataFusion with catalogs from config, served over
//! Flight SQL.
//!
//! A worker is stateless between calls: statement and prepared-statement handles are
//! self-contained (SQL, default catalog and schema, bound parameters), so any worker of a pool
//! can serve any ticket and the gateway can route freely. The gateway embeds one in-process
//! worker for the single-binary default; larger deployments run `quiver engine` processes.
//! It is a separate crate so it can be swapped for any other Flight SQL engine: the gateway
//! only speaks Flight SQL to it.
#![forbid(unsafe_code)]

pub mod authorized;
pub mod barrier;
pub mod catalogs;
pub mod config;
mod engine;
pub mod error;
pub mod handle;
mod metadata;
pub mod reads;
mod service;
pub mod sql;

pub use barrier::{POLICY_FILTER_FUNCTION, policy_filter_udf, with_policy_barrier};
pub use engine::Engine;
pub use service::{EngineService, STATS_ACTION, flight_schema, nodelay_incoming, serve};

/// Request header naming the default catalog of a statement (set by the gateway from the
/// client's session).
pub const CATALOG_HEADER: &str = "x-quiver-catalog";
/// Request header with a per-query memory limit in bytes (the resource group's
/// `softMemoryLimit`): the query runs in a memory pool of that size instead of the worker's.
pub const MEMORY_LIMIT_HEADER: &str = "x-quiver-memory-limit";
/// Request header asking a DoGet to end with one extra, metadata-only FlightData message
/// whose `app_metadata` is [`QueryStats`] JSON (the gateway consumes it; clients never see it).
pub const REPORT_STATS_HEADER: &str = "x-quiver-report-stats";

/// What a worker reports about a finished query when asked with [`REPORT_STATS_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueryStats {
    /// CPU time the query's operators spent computing (DataFusion's `elapsed_compute`,
    /// summed over the plan), in nanoseconds.
    pub quiver_cpu_nanos: u64,
}

impl QueryStats {
    /// The stats carried by a metadata-only frame, if `app_metadata` is one.
    pub fn from_app_metadata(app_metadata: &[u8]) -> Option<QueryStats> {
        if !app_metadata.starts_with(b"{\"quiver_cpu_nanos\"") {
            return None;
        }
        serde_json::from_slice(app_metadata).ok()
    }
}
/// Request header naming the default schema of a statement.
pub const SCHEMA_HEADER: &str = "x-quiver-schema";
