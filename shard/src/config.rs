//! Shard configuration: where the files live, how big they get, and what
//! durability an acknowledged append promises.

use std::{path::PathBuf, time::Duration};

use crate::{
    error::{Error, Result},
    storage::BLOCK_SIZE,
};

/// When an acknowledged append is durable.
///
/// Every policy uses group commit: appends that arrive while writes are in
/// flight join the next group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// An append completes only once it is durable: each commit group is
    /// one durable write (`O_DSYNC`), and an append completes when its
    /// group's write and every write before it completed.
    Always,
    /// An append completes after its write; an fdatasync follows within the
    /// given duration.
    Interval(Duration),
    /// fdatasync only when a segment is sealed, on explicit flush, and on close.
    Never,
}

/// What recovery does with damaged batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Cut a torn or damaged tail of the last segment at the last good batch;
    /// damage anywhere else is an error.
    #[default]
    TolerateTornTail,
    /// Any damaged batch, even at the tail, is an error naming file and
    /// position.
    AbsoluteConsistency,
    /// Skip every damaged batch, report each one, and serve the rest.
    TolerateAnyCorruption,
}

/// Configuration of one shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Directory that holds this shard's files (created if missing).
    pub dir: PathBuf,
    /// Identity of the shard; part of every checksum seed.
    pub shard_id: u32,
    /// Durability promise of an acknowledged append.
    pub fsync: FsyncPolicy,
    /// Size of a segment file in bytes; a multiple of 4096, below 4 GiB.
    pub segment_bytes: u64,
    /// Largest encoded record accepted, in bytes.
    pub max_record_bytes: usize,
    /// Largest encoded batch accepted, in bytes.
    pub max_batch_bytes: usize,
    /// Size of a commit group's I/O buffer, and so of the largest write a
    /// group makes (a single batch larger than this gets a buffer of its
    /// own size). Appends beyond it start the next group.
    pub max_write_bytes: usize,
    /// What recovery does with damaged batches.
    pub recovery: RecoveryMode,
    /// Byte budget of the memtable of recent batches.
    pub memtable_bytes: usize,
    /// Byte budget of the read cache: extents of segment files recently
    /// read from the device (segments are read with O_DIRECT, past the page
    /// cache). 0 turns it off.
    pub read_cache_bytes: usize,
    /// Keep at most this many bytes of segments; the oldest go first, and
    /// partitions' start offsets move past what they held. The segment
    /// being written always stays.
    pub retention_bytes: Option<u64>,
    /// Drop sealed segments whose newest record is older than this.
    pub retention_age: Option<std::time::Duration>,
    /// Fill each new segment with zeros ahead of use so that steady-state
    /// writes overwrite written blocks and fdatasync does not journal extent
    /// changes. Ignored under [`FsyncPolicy::Never`], where no append waits
    /// for an fdatasync and zeroing would only halve the write bandwidth.
    pub prezero_segments: bool,
}

impl ShardConfig {
    /// A configuration with defaults suited to a server: `Always`, 64 MiB
    /// segments, 1 MiB records, 4 MiB batches, a 64 MiB memtable, an 8 MiB
    /// read cache.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ShardConfig {
            dir: dir.into(),
            shard_id: 0,
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            max_record_bytes: 1 << 20,
            max_batch_bytes: 4 << 20,
            max_write_bytes: 1 << 20,
            recovery: RecoveryMode::default(),
            memtable_bytes: 64 << 20,
            read_cache_bytes: 8 << 20,
            retention_bytes: None,
            retention_age: None,
            prezero_segments: true,
        }
    }

    /// Checks that the values fit together; returns the reason when not.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if !self.segment_bytes.is_multiple_of(BLOCK_SIZE) || self.segment_bytes < 4 * BLOCK_SIZE {
            return bad(format!(
                "segment_bytes {} must be a multiple of {BLOCK_SIZE} and at least {}",
                self.segment_bytes,
                4 * BLOCK_SIZE
            ));
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return bad(format!("segment_bytes {} is too large", self.segment_bytes));
        }
        if self.max_record_bytes == 0 || self.max_batch_bytes == 0 {
            return bad("max_record_bytes and max_batch_bytes must be positive".into());
        }
        // A batch must fit in a segment after the segment header block.
        if self.max_batch_bytes as u64 > self.segment_bytes - BLOCK_SIZE {
            return bad(format!(
                "max_batch_bytes {} does not fit in a segment of {} bytes",
                self.max_batch_bytes, self.segment_bytes
            ));
        }
        if self.max_batch_bytes > u32::MAX as usize / 2 {
            return bad(format!(
                "max_batch_bytes {} is too large",
                self.max_batch_bytes
            ));
        }
        if !(self.max_write_bytes as u64).is_multiple_of(BLOCK_SIZE) || self.max_write_bytes == 0 {
            return bad(format!(
                "max_write_bytes {} must be a positive multiple of {BLOCK_SIZE}",
                self.max_write_bytes
            ));
        }
        if let FsyncPolicy::Interval(d) = self.fsync {
            if d.is_zero() {
                return bad("FsyncPolicy::Interval needs a non-zero duration".into());
            }
        }
        Ok(())
    }
}
