//! The local fast path: a narrow handle on the shard that owns a partition,
//! for code that runs on that shard's own executor
//! ([`Handle::run_on_shard`](crate::Handle::run_on_shard)). Each call runs
//! on the shard directly, with no thread crossing; what it offers is what
//! a [`Handle`](crate::Handle) offers, nothing of the shard's internals.

use std::time::Duration;

use corelog_shard::{Offsets, Record, Shard, ShardStats, StoredRecord};

use crate::{
    error::{Error, Result},
    routing::shard_for,
};

/// The shard that owns a partition, reached from its own executor. Cheap
/// to clone; not `Send` (it lives on the shard's thread).
///
/// Its methods mean what the [`Handle`](crate::Handle) methods of the same
/// names mean, on this shard's partitions. A partition that another shard
/// owns is refused with [`Error::InvalidArgument`]: written here, it would
/// be where no [`Handle`](crate::Handle) ever looks.
#[derive(Clone)]
pub struct LocalShard {
    shard: Shard,
    /// This shard's index, and how many shards the engine runs.
    id: usize,
    shards: usize,
}

impl LocalShard {
    /// Wraps shard `id` of `shards`.
    pub(crate) fn new(shard: Shard, id: usize, shards: usize) -> Self {
        LocalShard { shard, id, shards }
    }

    /// `Ok` when this shard owns `partition`.
    fn owns(&self, partition: u64) -> Result<()> {
        let owner = shard_for(partition, self.shards);
        if owner == self.id {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "partition {partition} belongs to shard {owner}, not to shard {} where this task runs",
                self.id
            )))
        }
    }

    /// Appends `records` to `partition` with consecutive offsets, all or
    /// none; returns the first offset once the fsync policy is met.
    pub async fn append(&self, partition: u64, records: &[Record]) -> Result<u64> {
        self.owns(partition)?;
        Ok(self.shard.append(partition, records).await?)
    }

    /// Appends `records` to `partition` only if its end is `expected_end`
    /// (see [`Handle::append_at`](crate::Handle::append_at)).
    pub async fn append_at(
        &self,
        partition: u64,
        expected_end: u64,
        records: &[Record],
    ) -> Result<u64> {
        self.owns(partition)?;
        Ok(self
            .shard
            .append_at(partition, Some(expected_end), records)
            .await?)
    }

    /// Records from `offset` on, up to `max_bytes` (at least one record when
    /// `offset` is below the end).
    pub async fn read(
        &self,
        partition: u64,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.owns(partition)?;
        Ok(self.shard.read(partition, offset, max_bytes).await?)
    }

    /// Exactly the records in `[start, end)`; only the first of them when a
    /// truncate or delete-before crossed the read while it waited for the
    /// disk (what existed when it started, never a mix).
    pub async fn read_range(
        &self,
        partition: u64,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredRecord>> {
        self.owns(partition)?;
        Ok(self.shard.read_range(partition, start, end).await?)
    }

    /// Start, acknowledged end and durable end of `partition` (see
    /// [`Offsets`]); all zero for a partition never written.
    pub fn offsets(&self, partition: u64) -> Result<Offsets> {
        self.owns(partition)?;
        Ok(self.shard.offsets(partition))
    }

    /// Moves the start of `partition` to `offset`, durably.
    pub async fn delete_before(&self, partition: u64, offset: u64) -> Result<()> {
        self.owns(partition)?;
        Ok(self.shard.delete_before(partition, offset).await?)
    }

    /// Removes offsets `from` and above of `partition`, durably.
    pub async fn truncate(&self, partition: u64, from: u64) -> Result<()> {
        self.owns(partition)?;
        Ok(self.shard.truncate(partition, from).await?)
    }

    /// Empties `partition` and sets its start and end to `start`, durably
    /// (see [`Handle::reset`](crate::Handle::reset)).
    pub async fn reset(&self, partition: u64, start: u64) -> Result<()> {
        self.owns(partition)?;
        Ok(self.shard.reset(partition, start).await?)
    }

    /// Sets metadata `key` of `partition`, durably, in order with its
    /// appends (see [`Handle::put_meta`](crate::Handle::put_meta)).
    pub async fn put_meta(&self, partition: u64, key: &[u8], value: &[u8]) -> Result<()> {
        self.owns(partition)?;
        Ok(self.shard.put_meta(partition, key, value).await?)
    }

    /// Metadata `key` of `partition`, if set.
    pub fn get_meta(&self, partition: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.owns(partition)?;
        Ok(self.shard.get_meta(partition, key))
    }

    /// This shard's partitions that hold offsets or metadata.
    pub fn partitions(&self) -> Vec<(u64, Offsets)> {
        self.shard.partitions()
    }

    /// Makes everything appended to this shard so far durable.
    pub async fn flush(&self) -> Result<()> {
        Ok(self.shard.flush().await?)
    }

    /// Waits until the end of `partition` passes `offset` or `timeout`
    /// expires; returns whether it passed. Once the engine is closing it
    /// returns [`Error::Closed`] (a follower's loop on this shard then ends,
    /// and the close does not wait on it).
    pub async fn wait_for(&self, partition: u64, offset: u64, timeout: Duration) -> Result<bool> {
        self.owns(partition)?;
        if self.shard.wait_for(partition, offset, timeout).await {
            return Ok(true);
        }
        if self.shard.is_closing() {
            return Err(Error::Closed);
        }
        Ok(false)
    }

    /// The long poll of a consumer at the tail (see
    /// [`Handle::fetch`](crate::Handle::fetch)).
    pub async fn fetch(
        &self,
        partition: u64,
        offset: u64,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<StoredRecord>> {
        self.owns(partition)?;
        Ok(self
            .shard
            .fetch(partition, offset, max_bytes, timeout)
            .await?)
    }

    /// This shard's counters.
    pub fn stats(&self) -> ShardStats {
        self.shard.stats()
    }

    /// Applies the retention limits of the configuration now (it also runs
    /// by itself whenever a segment is sealed).
    pub async fn enforce_retention(&self) -> Result<()> {
        Ok(self.shard.enforce_retention().await?)
    }

    /// The last error of the retention that appends run when a segment is
    /// sealed, if any (the appends themselves succeeded).
    pub fn take_retention_error(&self) -> Option<Error> {
        self.shard.take_retention_error().map(Error::from)
    }
}
