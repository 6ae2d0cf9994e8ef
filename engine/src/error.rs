//! corelog's error type: every failure of a shard (bad input, I/O, damage
//! on disk, a stopped shard), and those of the engine itself (the data
//! directory's lock and layout, the shard runtime). Every variant names what
//! failed (the file, the position, the partition, the limit) and says what
//! to do about it.

use std::{io, path::PathBuf, sync::Arc};

use corelog_shard::Error as ShardError;

/// Result alias for corelog operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in corelog.
///
/// I/O failures are sticky: once a write or an fdatasync has failed, the
/// shard refuses all later appends with [`Error::Failed`], which carries the
/// original failure. Close and reopen to recover what is on disk.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
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

    /// A conditional append ([`append_at`](crate::Handle::append_at)) expected the partition to end
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

    /// The engine (or the shard) has been closed; it accepts no more work.
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

    /// A shard's thread panicked: a bug in corelog, or in code the caller
    /// ran on the shard with [`crate::Handle::run_on_shard`]. The shard
    /// stopped without a clean shutdown; its partitions are unavailable
    /// until the engine is reopened, which recovers them as after a crash.
    #[error("shard {shard} stopped after a panic on its thread (a bug in corelog, or in code run there with run_on_shard; reopen to recover): {message}")]
    ShardPanicked {
        /// The shard.
        shard: usize,
        /// The panic's message.
        message: String,
    },

    /// Another process holds the data directory.
    #[error("{} is locked by another process; stop it or use another directory", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The directory was created with another shard count. Partitions live
    /// in the shard their hash chose, so the count cannot change: open with
    /// `Config::shards(found)`.
    #[error("{} holds {found} shards but {configured} were configured; open it with .shards({found})", dir.display())]
    ShardCountMismatch {
        /// The data directory.
        dir: PathBuf,
        /// Shards on disk.
        found: usize,
        /// Shards configured.
        configured: usize,
    },

    /// A shard's runtime could not start: io_uring unavailable (kernel older
    /// than 5.8, `kernel.io_uring_disabled`, a seccomp profile).
    #[error("shard {shard} could not start its io_uring executor: {reason}. Check that io_uring is enabled (sysctl kernel.io_uring_disabled=0, no seccomp filter blocking io_uring_setup) and that `ulimit -l` allows the configured io_memory")]
    Runtime {
        /// The shard.
        shard: usize,
        /// What the runtime reported.
        reason: String,
    },

    /// The memlock limit is below the I/O memory the shards register with
    /// io_uring.
    #[error("the memlock limit ({limit} bytes) is below the {needed} bytes of io_uring I/O memory the shards need; raise it (ulimit -l, LimitMEMLOCK= in a systemd unit, or CAP_IPC_LOCK) or lower Config::io_memory")]
    MemlockTooLow {
        /// The soft RLIMIT_MEMLOCK, bytes.
        limit: u64,
        /// Shards times their configured I/O memory, bytes.
        needed: u64,
    },
}

impl Error {
    /// Wraps an operating-system error, mapping ENOSPC to [`Error::NoSpace`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ShardError::io(op, path, source).into()
    }
}

/// A shard's error, variant for variant.
impl From<ShardError> for Error {
    fn from(e: ShardError) -> Self {
        match e {
            ShardError::InvalidArgument(why) => Error::InvalidArgument(why),
            ShardError::RecordTooLarge { what, size, max } => {
                Error::RecordTooLarge { what, size, max }
            }
            ShardError::OffsetOutOfRange {
                partition,
                offset,
                start,
                end,
            } => Error::OffsetOutOfRange {
                partition,
                offset,
                start,
                end,
            },
            ShardError::OffsetMismatch {
                partition,
                expected,
                end,
            } => Error::OffsetMismatch {
                partition,
                expected,
                end,
            },
            ShardError::Closed => Error::Closed,
            ShardError::Io {
                op,
                path,
                position,
                source,
            } => Error::Io {
                op,
                path,
                position,
                source,
            },
            ShardError::NoSpace { op, path } => Error::NoSpace { op, path },
            ShardError::ShortWrite {
                path,
                position,
                expected,
                written,
            } => Error::ShortWrite {
                path,
                position,
                expected,
                written,
            },
            ShardError::Corrupted {
                path,
                position,
                reason,
            } => Error::Corrupted {
                path,
                position,
                reason,
            },
            ShardError::Failed(first) => Error::Failed(Arc::new(Error::from((*first).clone()))),
            // The shard's error is non-exhaustive to its users, not to this
            // crate: a variant added there fails this match at compile time.
        }
    }
}

/// " at position N" for an error that has one.
fn at_position(position: &Option<u64>) -> String {
    position.map_or_else(String::new, |p| format!(" at position {p}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sticky failure keeps its original cause through the conversion.
    #[test]
    fn a_failed_shard_keeps_its_first_error() {
        let first = ShardError::io(
            "fdatasync",
            "/d/1.wal",
            io::Error::from_raw_os_error(5), // EIO
        );
        let e = Error::from(ShardError::Failed(Arc::new(first)));
        let Error::Failed(inner) = &e else {
            panic!("{e:?}")
        };
        assert!(
            matches!(&**inner, Error::Io { op: "fdatasync", path, .. } if path.ends_with("1.wal"))
        );
        assert!(e.to_string().contains("fdatasync failed on /d/1.wal"));
    }
}
