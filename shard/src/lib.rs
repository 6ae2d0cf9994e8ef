//! Everything one corelog core owns: its partitions, their offset index and
//! memtable, the WAL segments, the commit path that writes them with
//! O_DIRECT through io_uring, and recovery.
//!
//! A [`Shard`] lives on one glommio executor and holds any number of
//! partitions over one [`Wal`]. Appends are encoded into record batches
//! ([`batch`]), gathered into commit groups and written by a single commit
//! task under the [`FsyncPolicy`]; on open, [`recovery`] verifies every
//! batch and the shard rebuilds its partitions from the survivors.
//!
//! All file I/O goes through the [`storage`] seam; [`DmaStorage`] is the real
//! disk.

pub mod batch;
mod checkpoint;
mod commit;
mod config;
mod dma;
mod error;
pub mod index;
pub mod memtable;
pub mod record;
pub mod recovery;
pub mod segment;
mod shard;
mod sidecar;
pub mod sim;
mod stats;
pub mod storage;
mod wal;
mod watermark;

pub use batch::{Batch, BatchHeader};
pub use config::{FsyncPolicy, RecoveryMode, ShardConfig};
pub use dma::{DmaStorage, DmaStorageFile};
pub use error::{Error, Result};
pub use record::{Record, RecordView, StoredRecord};
pub use recovery::{Damage, Orphan, RecoveredBatch, RecoveryReport};
pub use shard::{Offsets, Shard};
pub use stats::ShardStats;
pub use wal::{Appended, Recovery, Wal};
