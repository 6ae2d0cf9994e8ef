//! Everything one corelog core owns: its partitions, their offset index and
//! memtable, the WAL segments, the commit path that writes them with
//! O_DIRECT through io_uring, and recovery. The embedding crate (`corelog`)
//! runs one [`Shard`] per core; nothing here is meant to be used directly.
//!
//! The modules, from the bytes up (docs/ARCHITECTURE.md has the picture):
//!
//! - `format`: bytes on disk (records, batches, segments, sidecars, the
//!   checkpoint, the clean-shutdown marker);
//! - `storage`: the seam all file I/O goes through, the real disk over
//!   glommio's `DmaFile`, and (feature `sim`) a simulated, faulty disk;
//! - `recovery`: the scan of the segments on open and the table of what it
//!   does with damage under each [`RecoveryMode`];
//! - `wal`: one write-ahead log, its commit task, rolls and spare segments;
//! - `partition`: offsets, the offset index, the memtable, and replay;
//! - `shard`: the partition logs over one WAL.
//!
//! Features: `internals` exposes the write protocol and the components for
//! benchmarks and tests ([`internals`]); `sim` exposes the simulated disk
//! ([`sim`]).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod config;
mod error;
mod format;
mod partition;
mod recovery;
mod shard;
mod stats;
mod storage;
mod wal;

pub use config::{FsyncPolicy, RecoveryMode, ShardConfig};
pub use error::{Error, Result};
pub use format::{
    batch::BATCH_HEADER_LEN,
    limits::check_batch,
    record::{EncodedRecords, Record},
    stored_record::StoredRecord,
};
pub use partition::Offsets;
pub use recovery::{Damage, Orphan, RecoveryReport};
pub use shard::{Shard, Submitted, MAX_META_KEYS, MAX_META_KEY_BYTES, MAX_META_VALUE_BYTES};
pub use stats::ShardStats;
#[cfg(feature = "sim")]
pub use storage::sim;
pub use storage::{IoBuffer, Storage, StorageFile};

/// The internal write protocol and components, for benchmarks and tests:
/// the WAL with its low-level append, the batch codec, the offset index and
/// the memtable. Using these bypasses the partition layer's checks (offsets,
/// control batches), so they are not part of the supported API.
#[cfg(feature = "internals")]
pub mod internals {
    pub use crate::format::{
        batch::Body,
        batch::{
            decode_batch, encode_batch, encoded_batch_len, peek_header, Batch, BatchHeader,
            BatchInfo, DecodeError, RecoveredBatch, BATCH_HEADER_LEN, BATCH_MAGIC, BATCH_VERSION,
        },
        record::RecordView,
        segment::{crc_seed, segment_path},
    };
    pub use crate::partition::{
        index::{IndexEntry, OffsetIndex},
        memtable::Memtable,
    };
    pub use crate::storage::dma::{DmaStorage, DmaStorageFile};
    pub use crate::wal::{Appended, Recovery, Wal};
}
