//! The write-ahead log of one shard: open (with recovery), append a batch,
//! flush, read a batch back, close. The commit loop that turns appends into
//! writes and fdatasyncs lives in [`committer`], segment rolls and spare
//! preparation in [`roll`]. Offsets are the caller's business: the
//! partition layer ([`crate::Shard`]) assigns them.

mod close;
mod committer;
mod open;
mod read;
mod read_cache;
mod roll;
mod state;
mod watermark;

pub(crate) use watermark::Watermark;

use std::{path::PathBuf, rc::Rc};

use crate::{
    config::{FsyncPolicy, ShardConfig},
    error::{Error, Result},
    format::{
        batch::{encode_body, BatchInfo, Body, RecoveredBatch, FLAG_CONTROL},
        limits::check_body,
        record::{now_ms, Record},
        segment::{align_up, crc_seed, BLOCK_SIZE},
        sidecar,
    },
    recovery::RecoveryReport,
    stats::{bump, ShardStats},
    storage::{dma::DmaStorage, IoBuffer, Storage, StorageFile},
    wal::state::{Inner, State},
};

/// Where an acknowledged batch lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the first record of the batch.
    pub base_offset: u64,
    /// Number of records.
    pub record_count: u32,
    /// Segment sequence holding the batch.
    pub segment: u64,
    /// Byte position of the batch in the segment.
    pub position: u64,
    /// Encoded length of the batch in bytes.
    pub length: u32,
    /// Commit group that carries the batch (see [`Wal::watermarks`]).
    pub group: u64,
    /// Largest record timestamp in the batch.
    pub max_timestamp: i64,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// Figures and damage.
    pub report: RecoveryReport,
    /// Every surviving batch, in log order.
    pub batches: Vec<RecoveredBatch>,
}

/// One core's write-ahead log: a sequence of segment files written with
/// O_DIRECT, with group commit under the configured fsync policy.
///
/// A `Wal` lives on one glommio executor and is cheap to clone there; all
/// clones share the same log.
///
/// Dropping the last handle without [`Wal::close`] abandons the shard as
/// a crash would: its tasks stop, nothing more is written or synced.
pub struct Wal<S: Storage = DmaStorage> {
    inner: Rc<Inner<S>>,
    _owner: Rc<Owner<S>>,
}

impl<S: Storage> Clone for Wal<S> {
    fn clone(&self) -> Self {
        Wal {
            inner: self.inner.clone(),
            _owner: self._owner.clone(),
        }
    }
}

/// Held only by [`Wal`] handles: when the last one goes, the background
/// tasks (which hold `Inner` themselves) are cancelled.
struct Owner<S: Storage>(Rc<Inner<S>>);

impl<S: Storage> Drop for Owner<S> {
    fn drop(&mut self) {
        let mut st = self.0.state.borrow_mut();
        st.closing = true;
        if let Some(task) = st.committer.take() {
            task.cancel();
        }
        if let Some(task) = st.spare.take() {
            task.cancel();
        }
        drop(st);
        self.0.written.stop();
        self.0.durable.stop();
    }
}

impl Wal<DmaStorage> {
    /// Opens (creating if needed) the shard in `config.dir` on the real disk,
    /// recovering what is there. Must run on a glommio executor.
    #[cfg(any(test, feature = "internals"))]
    pub async fn open(config: ShardConfig) -> Result<(Self, Recovery)> {
        Self::open_with(DmaStorage, config).await
    }
}

impl<S: Storage> Wal<S> {
    /// Opens the shard on the given storage: recovers it, then finishes
    /// the open at once (see [`Wal::finish_open`]).
    #[cfg(any(test, feature = "internals"))]
    pub async fn open_with(storage: S, config: ShardConfig) -> Result<(Self, Recovery)> {
        let (wal, recovery) = Self::recover_with(storage, config).await?;
        wal.finish_open().await?;
        wal.start_spare().await?;
        Ok((wal, recovery))
    }

    /// The storage the WAL runs on.
    pub fn storage(&self) -> &S {
        &self.inner.storage
    }

    /// Path of segment `segment`.
    pub fn segment_path(&self, segment: u64) -> PathBuf {
        crate::format::segment::segment_path(&self.inner.config.dir, segment)
    }

    /// The configuration the shard was opened with.
    pub fn config(&self) -> &ShardConfig {
        &self.inner.config
    }

    /// Appends `records` as one batch of `partition` whose first record has
    /// offset `base_offset`, and completes when the fsync policy says the
    /// batch is safe. Data batches pass `flags` 0 (see [`BatchInfo::flags`]).
    ///
    /// Bad input (no records, a record or batch over the limits) is refused
    /// with nothing written.
    #[cfg(any(test, feature = "internals"))]
    pub async fn append(
        &self,
        partition: u64,
        base_offset: u64,
        flags: u16,
        records: &[Record],
    ) -> Result<Appended> {
        let size = self.check_batch(partition, records)?;
        self.wait_for_room(size).await?;
        let info = BatchInfo {
            partition,
            base_offset,
            flags,
            ..BatchInfo::default()
        };
        let appended = self.encode(info, Body::Records(records), size, |_| {})?;
        self.wait_committed(appended.group).await?;
        Ok(appended)
    }

    /// Checks `records` against the limits; returns the encoded batch size.
    /// The first step of an append, with [`Wal::wait_for_room`],
    /// [`Wal::encode`] and [`Wal::wait_committed`].
    pub fn check_batch(&self, partition: u64, records: &[Record]) -> Result<usize> {
        self.check_body(partition, Body::Records(records))
    }

    /// [`Wal::check_batch`] for either kind of [`Body`].
    pub fn check_body(&self, partition: u64, body: Body<'_>) -> Result<usize> {
        check_body(&self.inner.config, partition, body)
    }

    /// Backpressure: waits while too many bytes are queued for writing.
    pub async fn wait_for_room(&self, size: usize) -> Result<()> {
        while !self.has_room(size)? {
            let next_written = self.inner.written.get() + 1;
            self.inner.written.wait_for(next_written).await;
        }
        Ok(())
    }

    /// Whether a batch of `size` bytes may be encoded now without passing
    /// the backpressure limit ([`Wal::wait_for_room`] waits until it may);
    /// an error when the log takes no appends.
    pub fn has_room(&self, size: usize) -> Result<bool> {
        let st = self.inner.state.borrow();
        self.check_usable(&st)?;
        let pending = st.pending_bytes;
        Ok(pending + size <= state::max_pending_bytes(&self.inner.config) || pending == 0)
    }

    /// Encodes a batch of `size` bytes (from [`Wal::check_batch`]) into the
    /// open commit group, without waiting: batches are logged in the order
    /// of these calls. `keep` sees the encoded batch. `info.floor_block` and
    /// `info.position` are filled in here.
    pub fn encode(
        &self,
        mut info: BatchInfo,
        body: Body<'_>,
        size: usize,
        keep: impl FnOnce(&[u8]),
    ) -> Result<Appended> {
        let config = &self.inner.config;
        if info.flags & !FLAG_CONTROL != 0 {
            return Err(Error::InvalidArgument(format!(
                "unknown batch flags {:#x}",
                info.flags
            )));
        }
        if info.base_offset.checked_add(body.count() as u64).is_none() {
            return Err(Error::InvalidArgument(format!(
                "partition {} would pass the last offset",
                info.partition
            )));
        }
        let appended = {
            let mut st = self.inner.state.borrow_mut();
            self.check_usable(&st)?;
            state::make_room(&mut st, config, size, info.flags & FLAG_CONTROL != 0);
            if st.open.room() < size {
                // Invariant: make_room left the open group empty if the
                // batch does not fit its buffer.
                assert_eq!(st.open.len, 0);
                let capacity = config.max_write_bytes.max(align_up(size as u64) as usize);
                st.open.buf = Some(self.inner.storage.alloc(capacity));
            }
            let seed = crc_seed(config.shard_id, st.open.segment);
            let position = st.open.start + st.open.len as u64;
            // The floor is what a sync covered (an fdatasync, or under
            // `Always` durable writes completed in order), not merely what
            // the kernel completed: a device cache may reorder unsynced writes.
            let floor = if st.durable_at.0 == st.open.segment {
                st.durable_at.1
            } else {
                BLOCK_SIZE
            };
            info.floor_block = u32::try_from(floor / BLOCK_SIZE).expect("segment size checked");
            info.position = u32::try_from(position).expect("segment size checked");
            let at = st.open.len;
            let buf = st.open.buf.as_mut().expect("allocated above");
            let bytes = &mut buf.as_mut_slice()[at..at + size];
            let header = encode_body(bytes, seed, info, body, now_ms());
            keep(bytes);
            let segment = st.open.segment;
            st.unsealed.push(RecoveredBatch {
                segment,
                position,
                header,
            });
            st.open.len += size;
            st.open.appends += 1;
            st.pending_bytes += size;
            Appended {
                base_offset: info.base_offset,
                record_count: header.record_count,
                segment: st.open.segment,
                position,
                length: header.length,
                group: st.open.id,
                max_timestamp: header.max_timestamp,
            }
        };
        let c = &self.inner.counters;
        bump(&c.appends, 1);
        bump(&c.records, body.count() as u64);
        bump(&c.bytes, size as u64);
        self.inner.work.notify();
        Ok(appended)
    }

    /// Waits until commit group `group` is safe under the fsync policy:
    /// durable under `Always`, written otherwise.
    pub async fn wait_committed(&self, group: u64) -> Result<()> {
        let watermark = match self.inner.config.fsync {
            FsyncPolicy::Always => &self.inner.durable,
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => &self.inner.written,
        };
        if watermark.wait_for(group).await {
            Ok(())
        } else {
            Err(self.stopped_error())
        }
    }

    /// Waits until commit group `group` is durable, whatever the policy
    /// (someone must have asked for the sync: a flush, or `Always`).
    pub(crate) async fn wait_durable(&self, group: u64) -> Result<()> {
        if self.inner.durable.wait_for(group).await {
            Ok(())
        } else {
            Err(self.stopped_error())
        }
    }

    /// Writes everything appended so far and makes it durable.
    pub async fn flush(&self) -> Result<()> {
        let target = {
            let mut st = self.inner.state.borrow_mut();
            if let Some(e) = &st.failed {
                return Err(Error::Failed(e.clone()));
            }
            let target = if st.open.len == 0 {
                st.open.id - 1
            } else {
                st.open.id
            };
            st.sync_target = st.sync_target.max(target);
            target
        };
        self.inner.work.notify();
        if self.inner.durable.wait_for(target).await {
            Ok(())
        } else {
            Err(self.stopped_error())
        }
    }

    /// Id of the last commit group whose write completed, and of the last
    /// one made durable. An [`Appended`] batch is written (durable) once the
    /// first (second) reaches its `group`.
    pub fn watermarks(&self) -> (u64, u64) {
        (self.inner.written.get(), self.inner.durable.get())
    }

    /// A snapshot of the shard's counters and positions.
    pub fn stats(&self) -> ShardStats {
        let c = &self.inner.counters;
        let st = self.inner.state.borrow();
        ShardStats {
            appends: c.appends.get(),
            records: c.records.get(),
            bytes: c.bytes.get(),
            bytes_written: c.bytes_written.get(),
            writes: c.writes.get(),
            fdatasyncs: c.fdatasyncs.get(),
            commits: c.commits.get(),
            max_commit_appends: c.max_commit_appends.get(),
            rolls: c.rolls.get(),
            roll_waits: c.roll_waits.get(),
            zeroing_cut: c.zeroing_cut.get(),
            zeroed_bytes: c.zeroed_bytes.get(),
            batch_reads: c.batch_reads.get(),
            cache_hits: c.cache_hits.get(),
            sidecar_failures: c.sidecar_failures.get(),
            spare_ready: c.spare_ready.get(),
            memtable_bytes: 0,
            segments: st.segments.len() as u64,
            active_segment: st.written_at.0,
            written_position: st.written_at.1,
            durable_segment: st.durable_at.0,
            durable_position: st.durable_at.1,
        }
    }

    /// The segment being written (the last one a write completed in).
    pub fn active_segment(&self) -> u64 {
        self.inner.state.borrow().written_at.0
    }

    /// Where completed writes end: (segment, position). Only batches
    /// before it can be read.
    pub fn written_at(&self) -> (u64, u64) {
        self.inner.state.borrow().written_at
    }

    /// Removes sealed segment `segment` from disk (its batches are no longer
    /// needed). The segment being written is never removed.
    pub async fn remove_segment(&self, segment: u64) -> Result<()> {
        let file = {
            let mut st = self.inner.state.borrow_mut();
            if segment >= st.written_at.0 {
                return Err(Error::InvalidArgument(format!(
                    "segment {segment} is being written and cannot be removed"
                )));
            }
            // Invariant: segments are removed oldest first, so the ones on
            // disk stay contiguous (recovery refuses a hole).
            assert!(
                st.segments
                    .keys()
                    .next()
                    .is_none_or(|&oldest| segment <= oldest),
                "segment {segment} removed before older segment {:?}",
                st.segments.keys().next()
            );
            self.inner.read_cache.borrow_mut().forget_segment(segment);
            st.segments.remove(&segment)
        };
        let Some(file) = file else {
            return Ok(());
        };
        let path = file.path().to_path_buf();
        if let Ok(file) = Rc::try_unwrap(file) {
            file.close().await?;
        }
        // The sidecar first: a segment without one is simply scanned.
        let sidecar = sidecar::sidecar_path(&self.inner.config.dir, segment);
        if self
            .inner
            .storage
            .list(&self.inner.config.dir)
            .await?
            .iter()
            .any(|n| sidecar.ends_with(n))
        {
            self.inner.storage.remove(&sidecar).await?;
        }
        self.inner.storage.remove(&path).await?;
        self.inner.storage.sync_dir(&self.inner.config.dir).await
    }

    /// Sequences of the segments on disk, oldest first.
    pub fn segments(&self) -> Vec<u64> {
        self.inner.state.borrow().segments.keys().copied().collect()
    }

    /// Stops accepting appends, writes and syncs what is pending, records a
    /// clean shutdown and closes the files. Later calls on any clone get
    /// [`Error::Closed`].
    pub async fn close(&self) -> Result<()> {
        let committer = {
            let mut st = self.inner.state.borrow_mut();
            if st.closing {
                return Err(Error::Closed);
            }
            st.closing = true;
            st.committer.take()
        };
        self.inner.work.notify();
        if let Some(task) = committer {
            task.await;
        }
        close::finish_close(&self.inner).await
    }

    /// Where the next batch will be logged: (segment, position). Every
    /// batch encoded so far lies before it.
    pub(crate) fn log_end(&self) -> (u64, u64) {
        let st = self.inner.state.borrow();
        (st.open.segment, st.open.start + st.open.len as u64)
    }

    /// Stops the shard after a write or sync failure outside the commit
    /// path (the partition checkpoint, a segment removal): like a failed
    /// commit, it is sticky, since the disk's state is no longer known.
    /// Returns the error for the caller to report.
    pub(crate) fn fail(&self, error: Error) -> Error {
        state::fail(&self.inner, error.clone());
        self.inner.work.notify();
        error
    }

    /// `Ok` while the log takes appends; else why not (failed, or closing).
    pub(crate) fn usable(&self) -> Result<()> {
        self.check_usable(&self.inner.state.borrow())
    }

    fn check_usable(&self, st: &State<S::File>) -> Result<()> {
        if let Some(e) = &st.failed {
            return Err(Error::Failed(e.clone()));
        }
        if st.closing {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The error for a waiter released without its commit: the failure, or
    /// the close.
    fn stopped_error(&self) -> Error {
        match &self.inner.state.borrow().failed {
            Some(e) => Error::Failed(e.clone()),
            None => Error::Closed,
        }
    }
}
