//! What recovery reports to the caller of an open: damage found and dealt
//! with, orphaned batches, and the figures of the scan.

use std::path::PathBuf;

/// Damage recovery found and dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub path: PathBuf,
    /// Byte position of the damage.
    pub position: u64,
    /// Bytes dropped because of it (cut from the tail, or skipped).
    pub bytes: u64,
    /// What check failed.
    pub reason: String,
}

/// A batch dropped on open because an earlier batch of its partition was
/// lost (see [`RecoveryReport::orphaned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orphan {
    /// Its partition.
    pub partition: u64,
    /// Its first offset.
    pub base_offset: u64,
    /// Where the partition's records ended without it.
    pub partition_end: u64,
    /// Its segment.
    pub segment: u64,
    /// Its byte position in the segment.
    pub position: u64,
}

/// What recovery did on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// Batches that survived.
    pub batches: u64,
    /// Bytes read from disk while scanning.
    pub bytes_scanned: u64,
    /// Sealed segments whose batches came from their sidecar index, unscanned.
    pub sidecars_loaded: usize,
    /// Sidecars that were missing or damaged and rebuilt by a scan.
    pub sidecars_rebuilt: usize,
    /// The previous run closed cleanly, so the tail needed no probing.
    pub clean_shutdown: bool,
    /// A torn tail cut from the last segment.
    pub torn_tail: Option<Damage>,
    /// Damage skipped under
    /// [`RecoveryMode::TolerateAnyCorruption`](crate::RecoveryMode::TolerateAnyCorruption).
    pub skipped: Vec<Damage>,
    /// Batches of the last segment found past a gap in their partition: a
    /// crash lost an earlier batch of the partition that was still in
    /// flight, while a later write of it reached the disk. They were never
    /// acknowledged as durable; they are not served, a checkpoint written
    /// on open accounts for them, and their offsets go to the next appends.
    pub orphaned: Vec<Orphan>,
    /// Wall-clock time of the scan in microseconds.
    pub duration_us: u64,
}
