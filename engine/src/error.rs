//! The engine's errors: everything a caller can act on, flat.

use std::{io, path::PathBuf, sync::Arc};

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong. Each variant says what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value that can never be valid (an empty batch, zero shards...).
    /// Nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A record, or a whole batch, exceeds the configured maximum. Nothing
    /// was written.
    #[error("{what} of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// `"record"` or `"batch"`.
        what: &'static str,
        /// Encoded size.
        size: usize,
        /// Configured maximum.
        max: usize,
    },

    /// The offset lies outside `[start, end]` of the partition.
    #[error("offset {offset} of partition {partition} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// The partition.
        partition: u64,
        /// The offset asked for.
        offset: u64,
        /// First readable offset.
        start: u64,
        /// Next offset to be assigned.
        end: u64,
    },

    /// The engine is closed or closing.
    #[error("the engine is closed")]
    Closed,

    /// A file system operation failed. If it was a write or fdatasync, the
    /// shard stopped: close and reopen the engine.
    #[error("{op} failed on {}: {source}", path.display())]
    Io {
        /// The operation, such as `"write"` or `"fdatasync"`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: Arc<io::Error>,
    },

    /// The disk is full. Free space, then reopen.
    #[error("no space left on device during {op} on {}", path.display())]
    NoSpace {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
    },

    /// Data on disk failed its checks.
    #[error("corrupted data in {} at position {position}: {reason}", path.display())]
    Corrupted {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage.
        position: u64,
        /// What check failed.
        reason: String,
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
    /// than 5.8, `kernel.io_uring_disabled`, a seccomp profile) or the
    /// memlock limit too low for its I/O memory.
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

    /// An earlier I/O failure stopped the shard; the inner error is the
    /// original one. Close and reopen.
    #[error("the shard stopped after an earlier failure: {0}")]
    Failed(Arc<Error>),
}

impl From<corelog_shard::Error> for Error {
    fn from(e: corelog_shard::Error) -> Self {
        use corelog_shard::Error as S;
        match e {
            S::InvalidArgument(m) => Error::InvalidArgument(m),
            S::TooLarge { what, size, max } => Error::RecordTooLarge { what, size, max },
            S::OffsetOutOfRange {
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
            S::Closed => Error::Closed,
            S::Io { op, path, source } => Error::Io { op, path, source },
            S::NoSpace { op, path } => Error::NoSpace { op, path },
            S::ShortWrite {
                path,
                position,
                expected,
                written,
            } => Error::Io {
                op: "write",
                path,
                source: Arc::new(io::Error::other(format!(
                    "short write at {position}: {written} of {expected} bytes"
                ))),
            },
            S::Corrupted {
                path,
                position,
                reason,
            } => Error::Corrupted {
                path,
                position,
                reason,
            },
            S::Failed(inner) => Error::Failed(Arc::new(Error::from((*inner).clone()))),
            other => Error::InvalidArgument(other.to_string()),
        }
    }
}

impl Error {
    /// Wraps an operating-system error on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        corelog_shard::Error::io(op, path, source).into()
    }
}
