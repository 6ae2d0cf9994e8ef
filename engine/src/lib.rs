//! corelog: an embedded, thread-per-core storage engine for partitioned
//! append-only logs (Kafka-style partitions, Raft logs, event streams).
//!
//! [`Engine::open`] starts one shard per core: a glommio executor pinned to
//! the core that alone owns its write-ahead log, offset index and memtable.
//! Partitions go to shards by a stable hash of their id ([`shard_for`]).
//! Any thread holds a cheap, cloneable [`Handle`] whose async methods run
//! on any executor (plain threads with `futures::executor::block_on`,
//! tokio, glommio).
//!
//! ```no_run
//! # fn main() -> Result<(), corelog::Error> {
//! let engine = corelog::Engine::open(corelog::Config::new("/var/lib/mylog"))?;
//! let log = engine.handle();
//! let offset = futures_lite::future::block_on(
//!     log.append(7, vec![corelog::Record::new(b"hello".to_vec())]),
//! )?;
//! engine.close()?;
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod append;
mod buffers;
mod bundle;
mod config;
mod engine;
mod error;
mod io_memory;
mod layout;
mod local;
mod pipeline;
#[cfg(feature = "openraft")]
pub mod raft;
mod request;
mod routing;
mod runtime;
mod staging;
mod stop;

pub use append::Append;
pub use config::Config;
pub use corelog_shard::{
    FsyncPolicy, Offsets, Record, RecoveryMode, RecoveryReport, ShardStats, StoredRecord,
    MAX_META_KEYS, MAX_META_KEY_BYTES, MAX_META_VALUE_BYTES,
};
pub use engine::{Engine, EngineStats, Handle};
pub use error::{Error, Result};
pub use local::LocalShard;
pub use routing::shard_for;
