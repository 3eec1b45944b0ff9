//! Quiver's workspace integration tests: one test binary (faster to link on small machines),
//! one module per feature. Every test starts its own servers on 127.0.0.1:0.

mod authentication;
mod authorization;
mod cache;
mod common;
mod enforcement;
mod errors;
mod gateway_surface;
mod operations;
mod pools;
mod prepared;
mod tpch;
mod worker;
