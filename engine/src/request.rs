//! Requests other than appends ([`crate::append`]) that travel from a
//! [`crate::Handle`] to a shard's thread, each with the channel its reply
//! goes back on.

use std::time::Duration;
use std::{any::Any, future::Future, pin::Pin};

use corelog_shard::{Offsets, RecoveryReport, ShardStats, StoredRecord};
use futures_channel::oneshot;

use crate::{error::Result, local::LocalShard};

/// Where a reply goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// One operation on a shard.
pub(crate) enum Request {
    Read {
        partition: u64,
        offset: u64,
        max_bytes: usize,
        reply: Reply<Vec<StoredRecord>>,
    },
    ReadRange {
        partition: u64,
        start: u64,
        end: u64,
        reply: Reply<Vec<StoredRecord>>,
    },
    Offsets {
        partition: u64,
        reply: Reply<Offsets>,
    },
    DeleteBefore {
        partition: u64,
        offset: u64,
        reply: Reply<()>,
    },
    Truncate {
        partition: u64,
        from: u64,
        reply: Reply<()>,
    },
    Reset {
        partition: u64,
        start: u64,
        reply: Reply<()>,
    },
    PutMeta {
        partition: u64,
        key: Vec<u8>,
        value: Vec<u8>,
        reply: Reply<()>,
    },
    GetMeta {
        partition: u64,
        key: Vec<u8>,
        reply: Reply<Option<Vec<u8>>>,
    },
    Partitions {
        reply: Reply<Vec<(u64, Offsets)>>,
    },
    WaitFor {
        partition: u64,
        offset: u64,
        timeout: Duration,
        reply: Reply<bool>,
    },
    Fetch {
        partition: u64,
        offset: u64,
        max_bytes: usize,
        timeout: Duration,
        reply: Reply<Vec<StoredRecord>>,
    },
    Stats {
        reply: Reply<(ShardStats, RecoveryReport)>,
    },
    /// Runs caller code on the shard's executor, with a [`LocalShard`];
    /// its output goes back boxed.
    Run {
        task: LocalTask,
        reply: Reply<Box<dyn Any + Send>>,
    },
}

/// Caller code sent to a shard: it builds a future on the shard's thread.
/// Its output comes back boxed.
pub(crate) type LocalTask =
    Box<dyn FnOnce(LocalShard) -> Pin<Box<dyn Future<Output = Box<dyn Any + Send>>>> + Send>;
