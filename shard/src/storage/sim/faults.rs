//! What the simulated disk may do wrong, and how often it did.

/// How unreliable the simulated disk is. Probabilities are per operation.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// A write fails with EIO (and stores nothing).
    pub write_eio: f64,
    /// An fdatasync fails with EIO (and makes nothing durable).
    pub sync_eio: f64,
    /// A write fails with ENOSPC (and stores nothing).
    pub write_enospc: f64,
    /// A write lands up to 4 blocks away from where it was aimed, and
    /// reports success.
    pub misdirect: f64,
    /// A write stores its data with one bit flipped.
    pub stored_flip: f64,
    /// A read returns its data with one bit flipped (the stored data is
    /// intact).
    pub read_flip: f64,
    /// Each operation yields to other tasks up to this many times before it
    /// completes.
    pub max_delay: u32,
    /// Bytes the files may hold in all; a write or allocation past it fails
    /// with ENOSPC.
    pub capacity: Option<u64>,
}

/// How many faults of each kind the disk injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Writes failed with EIO.
    pub write_eio: u64,
    /// fdatasyncs failed with EIO.
    pub sync_eio: u64,
    /// Writes and allocations failed with ENOSPC (injected or capacity).
    pub enospc: u64,
    /// Writes stored at the wrong position.
    pub misdirected: u64,
    /// Writes stored with a flipped bit.
    pub stored_flips: u64,
    /// Reads returned with a flipped bit.
    pub read_flips: u64,
    /// Pending sectors that survived a crash (torn writes).
    pub torn_sectors: u64,
    /// Pending sectors lost in a crash.
    pub lost_sectors: u64,
}
