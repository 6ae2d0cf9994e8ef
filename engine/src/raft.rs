//! A log store for [openraft](https://docs.rs/openraft/0.9) (feature
//! `openraft`): openraft 0.9's [`RaftLogStorage`] and [`RaftLogReader`] over
//! one corelog partition per Raft group, so that many groups share one
//! engine, its shards and their group commits.
//!
//! The mapping:
//! - a log entry with index `i` is the record at offset `i` of the group's
//!   partition, serialized with `postcard`;
//! - `append` is one conditional append ([`Handle::append_at`]) per chunk of
//!   entries, all queued at once in order (an empty log that refuses them
//!   is reset to the first entry's index, then they go again); it returns,
//!   and the `LogFlushed` callback runs, once every chunk is acknowledged,
//!   which under [`FsyncPolicy::Always`] (required) means durable;
//! - `truncate` is [`Handle::truncate`]; `purge` records the purged log id,
//!   then moves the partition's start with [`Handle::delete_before`], or
//!   with [`Handle::reset`] when the purge passes the end (a snapshot
//!   installed past the local log; `get_log_state` finishes such a reset
//!   that a crash interrupted);
//! - the vote, the committed log id and the last purged log id are
//!   partition metadata ([`Handle::put_meta`]): durable, and ordered with the
//!   entries in the log.

use std::{fmt::Debug, io, marker::PhantomData, ops::Bound, ops::RangeBounds};

use openraft::{
    storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage},
    AnyError, LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageError, StorageIOError, Vote,
};
use serde::{de::DeserializeOwned, Serialize};

use corelog_shard::{check_batch, BATCH_HEADER_LEN};

use crate::{engine::Handle, Error, FsyncPolicy, Record, Result};

/// Metadata key of the vote.
const VOTE: &[u8] = b"raft.vote";
/// Metadata key of the committed log id.
const COMMITTED: &[u8] = b"raft.committed";
/// Metadata key of the last purged log id.
const PURGED: &[u8] = b"raft.purged";
/// Encoded entries an append sends in one batch at most.
const CHUNK_BYTES: usize = 1 << 20;

/// The log of one Raft group: partition `partition` of an engine. Cheap to
/// clone; the clones are its log readers.
pub struct LogStore<C> {
    log: Handle,
    partition: u64,
    _config: PhantomData<fn() -> C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            log: self.log.clone(),
            partition: self.partition,
            _config: PhantomData,
        }
    }
}

impl<C> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

impl<C> LogStore<C> {
    /// The log of the Raft group kept in `partition`. The engine must run
    /// [`FsyncPolicy::Always`] (openraft counts an entry as persisted when
    /// its append is acknowledged) and no retention (it would drop entries
    /// openraft has not purged: openraft compacts its log itself).
    pub fn new(log: Handle, partition: u64) -> Result<Self> {
        if log.fsync_policy() != FsyncPolicy::Always {
            return Err(Error::InvalidArgument(
                "a Raft log store needs an engine with FsyncPolicy::Always".into(),
            ));
        }
        let limits = log.limits();
        if limits.retention_bytes.is_some() || limits.retention_age.is_some() {
            return Err(Error::InvalidArgument(
                "a Raft log store needs an engine without retention (retention_bytes, \
                 retention_age): openraft purges its own log"
                    .into(),
            ));
        }
        Ok(LogStore {
            log,
            partition,
            _config: PhantomData,
        })
    }

    /// The partition holding the group's log.
    pub fn partition(&self) -> u64 {
        self.partition
    }
}

/// Writes `value` under metadata `key`.
async fn put<T: Serialize>(log: &Handle, partition: u64, key: &[u8], value: &T) -> Result<()> {
    let bytes = postcard::to_allocvec(value)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode Raft metadata: {e}")))?;
    log.put_meta(partition, key, bytes).await
}

/// Reads metadata `key`, if set.
async fn get<T: DeserializeOwned>(log: &Handle, partition: u64, key: &[u8]) -> Result<Option<T>> {
    let Some(bytes) = log.get_meta(partition, key).await? else {
        return Ok(None);
    };
    postcard::from_bytes(&bytes).map(Some).map_err(|e| {
        Error::InvalidArgument(format!(
            "partition {partition}: Raft metadata {} does not decode: {e}",
            String::from_utf8_lossy(key)
        ))
    })
}

fn read_err<NID: openraft::NodeId>(e: Error) -> StorageError<NID> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err<NID: openraft::NodeId>(e: Error) -> StorageError<NID> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// The entries with indexes in `[start, end)` that the log holds.
    ///
    /// The log may change between finding its bounds and reading them (a
    /// truncate, purge or append by the store while a clone reads): a read
    /// that finds the range gone is bounded again and retried, so a reader
    /// gets what the log holds, not an error.
    async fn entries(&self, start: u64, end: u64) -> Result<Vec<C::Entry>> {
        const ATTEMPTS: usize = 8;
        let mut attempt = 1;
        let records = loop {
            let o = self.log.offsets(self.partition).await?;
            let (start, end) = (start.max(o.start), end.min(o.end));
            if start >= end {
                return Ok(Vec::new());
            }
            match self.log.read_range(self.partition, start, end).await {
                Err(Error::OffsetOutOfRange { .. }) if attempt < ATTEMPTS => attempt += 1,
                read => break read?,
            }
        };
        records
            .iter()
            .map(|r| {
                postcard::from_bytes(r.value()).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "partition {} offset {}: not a Raft entry: {e}",
                        self.partition,
                        r.offset()
                    ))
                })
            })
            .collect()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Appends `entries` (contiguous) as conditional appends of batches
    /// of at most `CHUNK_BYTES` (and the engine's largest batch) each, each
    /// expecting the end the one before leaves: all queued at once, in
    /// order; returns once all are acknowledged.
    async fn send(&self, entries: &[C::Entry]) -> Result<()> {
        let limits = self.log.limits();
        let max = CHUNK_BYTES.min(limits.max_batch_bytes);
        let mut appends = Vec::new();
        let mut chunk: Vec<Record> = Vec::new();
        let (mut chunk_bytes, mut chunk_start) = (BATCH_HEADER_LEN, 0);
        for entry in entries {
            let index = entry.get_log_id().index;
            let bytes = postcard::to_allocvec(entry).map_err(|e| {
                Error::InvalidArgument(format!(
                    "partition {}: cannot encode Raft entry {index}: {e}",
                    self.partition
                ))
            })?;
            let record = Record::new(bytes);
            // The record's bytes in a batch (an entry over the engine's
            // record limit is refused here).
            let size = check_batch(limits, self.partition, std::slice::from_ref(&record))?
                - BATCH_HEADER_LEN;
            if chunk.is_empty() {
                chunk_start = index;
            } else if chunk_bytes + size > max {
                let records = std::mem::take(&mut chunk);
                appends.push(self.log.append_at(self.partition, chunk_start, records));
                chunk_start = index;
                chunk_bytes = BATCH_HEADER_LEN;
            }
            chunk_bytes += size;
            chunk.push(record);
        }
        if !chunk.is_empty() {
            appends.push(self.log.append_at(self.partition, chunk_start, chunk));
        }
        let mut failure = None;
        for append in appends {
            if let Err(e) = append.await {
                failure.get_or_insert(e);
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> std::result::Result<Vec<C::Entry>, StorageError<C::NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        self.entries(start, end).await.map_err(read_err)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> std::result::Result<LogState<C>, StorageError<C::NodeId>> {
        let purged: Option<LogId<C::NodeId>> = get(&self.log, self.partition, PURGED)
            .await
            .map_err(read_err)?;
        let mut o = self.log.offsets(self.partition).await.map_err(read_err)?;
        if let Some(purged) = purged.as_ref().filter(|p| p.index >= o.end) {
            // A purge past the end that a crash interrupted after it wrote
            // the purged id: the entries before it go now, as they would
            // have, so the last log id is not older than the purged one.
            self.log
                .reset(self.partition, purged.index + 1)
                .await
                .map_err(write_err)?;
            o = self.log.offsets(self.partition).await.map_err(read_err)?;
        }
        let last = if o.end > o.start {
            let last = self.entries(o.end - 1, o.end).await.map_err(read_err)?;
            last.first().map(|e| e.get_log_id().clone())
        } else {
            None
        };
        Ok(LogState {
            last_log_id: last.or_else(|| purged.clone()),
            last_purged_log_id: purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(
        &mut self,
        vote: &Vote<C::NodeId>,
    ) -> std::result::Result<(), StorageError<C::NodeId>> {
        put(&self.log, self.partition, VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(
        &mut self,
    ) -> std::result::Result<Option<Vote<C::NodeId>>, StorageError<C::NodeId>> {
        get(&self.log, self.partition, VOTE)
            .await
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> std::result::Result<(), StorageError<C::NodeId>> {
        put(&self.log, self.partition, COMMITTED, &committed)
            .await
            .map_err(write_err)
    }

    async fn read_committed(
        &mut self,
    ) -> std::result::Result<Option<LogId<C::NodeId>>, StorageError<C::NodeId>> {
        let committed: Option<Option<LogId<C::NodeId>>> = get(&self.log, self.partition, COMMITTED)
            .await
            .map_err(read_err)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> std::result::Result<(), StorageError<C::NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.get_log_id().index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let mut result = self.send(&entries).await;
        if let Err(Error::OffsetMismatch { .. }) = result {
            // An empty log starts wherever its first entry says (after a
            // purge, or a log that never began at 0): checked only when the
            // conditional append refused, not on every append.
            let o = self.log.offsets(self.partition).await.map_err(write_err)?;
            if o.start == o.end && first != o.end {
                self.log
                    .reset(self.partition, first)
                    .await
                    .map_err(write_err)?;
                result = self.send(&entries).await;
            }
        }
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(
        &mut self,
        log_id: LogId<C::NodeId>,
    ) -> std::result::Result<(), StorageError<C::NodeId>> {
        let o = self.log.offsets(self.partition).await.map_err(write_err)?;
        if log_id.index >= o.end {
            return Ok(());
        }
        self.log
            .truncate(self.partition, log_id.index)
            .await
            .map_err(write_err)
    }

    async fn purge(
        &mut self,
        log_id: LogId<C::NodeId>,
    ) -> std::result::Result<(), StorageError<C::NodeId>> {
        // The purged id first: a crash after it and before the entries go
        // leaves entries before it, never a hole after it.
        put(&self.log, self.partition, PURGED, &log_id)
            .await
            .map_err(write_err)?;
        let o = self.log.offsets(self.partition).await.map_err(write_err)?;
        let start = log_id.index + 1;
        if start <= o.end {
            self.log.delete_before(self.partition, start).await
        } else {
            self.log.reset(self.partition, start).await
        }
        .map_err(write_err)
    }
}
