//! Counters of one shard's write path.

use std::cell::Cell;

/// A snapshot of a shard's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Appends acknowledged or in flight.
    pub appends: u64,
    /// Records appended.
    pub records: u64,
    /// Encoded batch bytes appended (headers included, padding excluded).
    pub bytes: u64,
    /// Bytes handed to the kernel by commit writes, padding included.
    pub bytes_written: u64,
    /// Write system calls issued by commits.
    pub writes: u64,
    /// Syncs of segment data: fdatasync calls, and under `Always` each
    /// commit's durable write (through an `O_DSYNC` descriptor: the kernel
    /// flushes the device's cache when it completes).
    pub fdatasyncs: u64,
    /// Commit groups written.
    pub commits: u64,
    /// Largest number of appends in one commit group.
    pub max_commit_appends: u64,
    /// Segments created by rolling.
    pub rolls: u64,
    /// Rolls that had to wait for the spare segment's file and header.
    pub roll_waits: u64,
    /// Rolls that took the spare before its zero-filling finished (the
    /// rest of that segment syncs more slowly; no roll waits for zeros).
    pub zeroing_cut: u64,
    /// Bytes of zeros written ahead into spare segments: the device
    /// bandwidth segment preparation takes.
    pub zeroed_bytes: u64,
    /// Batches read back from segment files (memtable misses).
    pub batch_reads: u64,
    /// Of those, batches the read cache served without a device read.
    pub cache_hits: u64,
    /// Sidecar indexes that could not be written (a full disk, an I/O
    /// error). A sidecar is a cache: the segment is scanned on open instead.
    pub sidecar_failures: u64,
    /// The next segment file is prepared and a roll will not wait for it.
    pub spare_ready: bool,
    /// Bytes of batches held in the memtable.
    pub memtable_bytes: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Segment currently written.
    pub active_segment: u64,
    /// Position up to which the active segment is written.
    pub written_position: u64,
    /// Segment and position up to which data is durable (covered by the last
    /// fdatasync).
    pub durable_segment: u64,
    /// See [`ShardStats::durable_segment`].
    pub durable_position: u64,
}

impl ShardStats {
    /// Mean appends per commit group.
    pub fn mean_commit_appends(&self) -> f64 {
        if self.commits == 0 {
            0.0
        } else {
            self.appends as f64 / self.commits as f64
        }
    }
}

/// The live counters, updated by the shard's single thread.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub appends: Cell<u64>,
    pub records: Cell<u64>,
    pub bytes: Cell<u64>,
    pub bytes_written: Cell<u64>,
    pub writes: Cell<u64>,
    pub fdatasyncs: Cell<u64>,
    pub commits: Cell<u64>,
    pub max_commit_appends: Cell<u64>,
    pub rolls: Cell<u64>,
    pub roll_waits: Cell<u64>,
    pub zeroing_cut: Cell<u64>,
    pub zeroed_bytes: Cell<u64>,
    pub batch_reads: Cell<u64>,
    pub cache_hits: Cell<u64>,
    pub sidecar_failures: Cell<u64>,
    pub spare_ready: Cell<bool>,
}

/// Adds `n` to a counter.
pub(crate) fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}
