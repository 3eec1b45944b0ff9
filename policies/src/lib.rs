//! Authorization for Quiver: what a caller may do.
//!
//! The gateway calls an [`Authorizer`] on every statement and every metadata call, with
//! Trino's operation names and resource shapes (so Trino OPA policies can be reused as they
//! are). This crate holds pure decisions: it does no network I/O of its own, which keeps every
//! rule testable without a server. Today it holds the seam and [`AllowAll`]; OPA, row filters
//! and column masks build on the same types. [`resource_groups`] holds Trino's resource groups:
//! the spec, selector matching and the admission state machine the gateway drives.
#![forbid(unsafe_code)]

mod authorizer;
mod operation;
mod query_type;
pub mod resource_groups;

pub use authorizer::{AllowAll, Authorizer, PolicyError};
pub use operation::{Operation, Resource, TableRef};
pub use query_type::QueryType;
