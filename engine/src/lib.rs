//! corelog: an embedded, thread-per-core storage engine for partitioned
//! append-only logs.
//!
//! The multi-shard runtime and the cross-thread handle arrive with the issue
//! "Engine"; today this crate re-exports the single-core storage layer.

pub use corelog_shard::*;
