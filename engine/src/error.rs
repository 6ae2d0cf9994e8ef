//! The engine's errors are corelog's one error type, defined with the shard
//! (`corelog_shard::Error`) so that nothing is lost in translation.

pub use corelog_shard::{Error, Result};
