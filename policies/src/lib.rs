//! Authorization for Quiver: what a caller may do.
//!
//! The gateway calls an [`Authorizer`] on every statement and every metadata call, with
//! Trino's operation names and resource shapes, so Trino OPA policies and `rules.json` files are
//! reused as they are. Two authorizers decide: [`opa::OpaAuthorizer`] (embedded Rego or a remote
//! OPA, with row filters and column masks) and [`rules::RulesAuthorizer`] (Trino's file-based
//! access control). Both fail closed and audit every decision ([`audit`]). Apart from the
//! remote-OPA client, decisions are pure and testable without a server. [`resource_groups`]
//! holds Trino's resource groups: the spec, selector matching and the admission state machine
//! the gateway drives.
#![forbid(unsafe_code)]

pub mod audit;
mod authorizer;
pub mod opa;
mod operation;
mod query_type;
pub mod resource_groups;
pub mod rules;

pub use audit::{Decision, DecisionEvent, DecisionObserver};
pub use authorizer::{AllowAll, Authorizer, ColumnInfo, ColumnMask, PolicyError, RowFilter};
pub use operation::{Operation, Resource, TableRef};
pub use query_type::QueryType;
