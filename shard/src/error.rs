//! The errors of one shard. Every variant names what failed (the file, the
//! position, the partition, the limit) and says what to do about it. The
//! engine's error type (`corelog::Error`) holds each of these variants too,
//! with the engine's own (the directory lock, the shard count, the
//! runtime).

use std::{io, path::PathBuf, sync::Arc};

/// Result alias for corelog operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a shard.
///
/// I/O failures are sticky: once a write or an fdatasync has failed, the
/// shard refuses all later appends with [`Error::Failed`], which carries the
/// original failure. Close and reopen to recover what is on disk.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The caller passed a value that can never be valid (an empty batch, a
    /// zero-sized limit, ...). Nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// One record, or the whole batch once encoded, is larger than the
    /// configured maximum. Nothing was written.
    #[error("{what} of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// `"record"` or `"batch"`.
        what: &'static str,
        /// Encoded size in bytes.
        size: usize,
        /// Configured maximum in bytes.
        max: usize,
    },

    /// A conditional append ([`append_at`](crate::Shard::submit_at)) expected the partition to end
    /// elsewhere; nothing was written.
    #[error("partition {partition} ends at {end}, not at the expected {expected}")]
    OffsetMismatch {
        /// The partition.
        partition: u64,
        /// The end the caller expected.
        expected: u64,
        /// The partition's end, counting appends already accepted.
        end: u64,
    },

    /// The offset lies outside the partition's readable range
    /// `[start, end]`.
    #[error("offset {offset} of partition {partition} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The partition.
        partition: u64,
        /// The offset asked for.
        offset: u64,
        /// First readable offset.
        start: u64,
        /// End of the acknowledged records (see `Offsets::end`).
        end: u64,
    },

    /// The shard has been closed; it accepts no more work.
    #[error("the shard is closed")]
    Closed,

    /// A file system operation failed.
    #[error("{op} failed on {}{}: {source}", path.display(), at_position(position))]
    Io {
        /// The operation that failed, such as `"write"` or `"fdatasync"`.
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// Where in the file, for a read or a write.
        position: Option<u64>,
        /// The error reported by the operating system.
        #[source]
        source: Arc<io::Error>,
    },

    /// The file system is full (ENOSPC). Free space, then reopen.
    #[error("no space left on device during {op} on {}", path.display())]
    NoSpace {
        /// The operation that failed.
        op: &'static str,
        /// The file it was applied to.
        path: PathBuf,
    },

    /// A write completed with fewer bytes than asked for.
    #[error("short write on {}: {written} of {expected} bytes at position {position}", path.display())]
    ShortWrite {
        /// The file written.
        path: PathBuf,
        /// Where the write started.
        position: u64,
        /// Bytes the write should have stored.
        expected: usize,
        /// Bytes the kernel reported as stored.
        written: usize,
    },

    /// Data on disk does not match its checksum or its format.
    #[error("corrupted data in {} at position {position}: {reason}", path.display())]
    Corrupted {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage within the file.
        position: u64,
        /// What check failed.
        reason: String,
    },

    /// An earlier I/O failure left the shard unusable. The inner error is the
    /// original failure; acknowledged data up to the durable position is
    /// safe, anything after it is not promised. Close and reopen.
    #[error("the shard stopped after an earlier failure: {0}")]
    Failed(Arc<Error>),
}

impl Error {
    /// Wraps an operating-system error, mapping ENOSPC to [`Error::NoSpace`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::io_with(op, path.into(), None, source)
    }

    /// [`Error::io`] for a read or a write at `position` in the file.
    pub fn io_at(
        op: &'static str,
        path: impl Into<PathBuf>,
        position: u64,
        source: io::Error,
    ) -> Self {
        Self::io_with(op, path.into(), Some(position), source)
    }

    fn io_with(op: &'static str, path: PathBuf, position: Option<u64>, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::StorageFull {
            Error::NoSpace { op, path }
        } else {
            Error::Io {
                op,
                path,
                position,
                source: Arc::new(source),
            }
        }
    }

    /// Shorthand for a corruption report.
    pub fn corrupted(path: impl Into<PathBuf>, position: u64, reason: impl Into<String>) -> Self {
        Error::Corrupted {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}

/// " at position N" for an error that has one.
fn at_position(position: &Option<u64>) -> String {
    position.map_or_else(String::new, |p| format!(" at position {p}"))
}
