//! Resource groups, as Trino defines them in `resource-groups.json`: which group a query runs
//! in (selectors), and whether it runs now, waits in a queue, or is refused (admission).
//!
//! Operators bring their Trino file unchanged. Everything here is pure and deterministic — no
//! clock, no threads, no network — so the gateway wraps a [`ResourceGroupManager`] in a lock,
//! feeds it events (submit, finish, CPU time, elapsed time, a reloaded file) and acts on what it
//! returns.
//!
//! Where Quiver differs from Trino:
//! - `weighted` is deterministic (smooth weighted round robin over sub-groups, priority order
//!   within a group) instead of random draws with the same proportions;
//! - `softConcurrencyLimit` applies to `fair`, `weighted` and `weighted_fair` as Trino's docs
//!   describe it;
//! - `selectorResourceEstimate` is refused (no estimates exist before a query runs);
//!   `softPhysicalDataScanLimit` and `jmxExport` are accepted and not enforced;
//! - `originalUser` and `authenticatedUser` match the user name (Quiver has no impersonation);
//! - a selector whose group template expands to an empty name does not match (the next
//!   selector is tried) instead of failing the query;
//! - regexes use Rust's `regex` syntax (no look-around or back-references), full match as Trino.

mod manager;
mod scheduling;
mod selector;
mod spec;
mod state;
mod template;
mod tree;
mod units;

pub use manager::{Admission, QueryId, ResourceGroupManager};
pub use selector::{SelectedGroup, SelectionContext};
pub use spec::{GroupSpec, ResourceGroupsSpec, SchedulingPolicy, SpecError};
pub use state::{GroupState, ResourceGroupInfo};
pub use template::{GroupId, NameTemplate};
pub use units::MemoryLimit;
