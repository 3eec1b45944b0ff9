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

pub mod catalogs;
pub mod config;
mod engine;
pub mod error;
pub mod handle;
mod metadata;
mod service;
pub mod sql;

pub use engine::Engine;
pub use service::{EngineService, nodelay_incoming, serve};

/// Request header naming the default catalog of a statement (set by the gateway from the
/// client's session).
pub const CATALOG_HEADER: &str = "x-quiver-catalog";
/// Request header with a per-query memory limit in bytes (the resource group's
/// `softMemoryLimit`): the query runs in a memory pool of that size instead of the worker's.
pub const MEMORY_LIMIT_HEADER: &str = "x-quiver-memory-limit";
/// Request header naming the default schema of a statement.
pub const SCHEMA_HEADER: &str = "x-quiver-schema";
