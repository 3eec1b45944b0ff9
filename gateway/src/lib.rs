//! The Quiver gateway: the Flight SQL front door.
//!
//! It authenticates every caller (a tower layer over the Flight service), asks the
//! authorizer about every statement and metadata call, routes each statement to a worker pool
//! that serves the catalogs it reads, and streams the worker's FlightData frames back without
//! decoding them. Tickets and prepared-statement handles are sealed (signed and
//! self-contained), so any replica can serve any of them. The `quiver` binary in `main.rs` is
//! the only place that wires concrete types together.
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth_layer;
pub mod authz;
pub mod cache;
pub mod config;
pub mod error;
pub mod flight;
pub mod http;
pub mod metrics;
pub mod pool;
pub mod queries;
pub mod router;
pub mod routing;
pub mod server;
pub mod session;
mod sql_info;
pub mod tickets;
mod xdbc;

pub use config::QuiverConfig;
pub use server::{RunningGateway, start, start_engine};
