//! The partition logs of one shard: appends, reads, delete-before,
//! truncate and retention over one [`Wal`], with each partition's offsets,
//! offset index and the memtable ([`crate::partition`]).
//!
//! The [`Shard`] is split by concern: opening and appending here, reads and
//! long polls in [`read`], control operations, retention and segment
//! deletion in [`control`], the space a full disk needs to free itself in
//! [`reserve`].

mod control;
pub use control::{MAX_META_KEYS, MAX_META_KEY_BYTES, MAX_META_VALUE_BYTES};
mod read;
mod reserve;

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    rc::Rc,
};

use crate::{
    config::{FsyncPolicy, ShardConfig},
    error::{Error, Result},
    format::{
        batch::{BatchInfo, Body, RecoveredBatch, FLAG_CONTROL},
        checkpoint,
        record::{EncodedRecords, Record},
    },
    partition::{
        index::IndexEntry,
        memtable::Memtable,
        replay::{replay, ReplayInput},
        ControlRecord, Offsets, Partition, PartitionMap,
    },
    recovery::{decide, Action, Damage, Finding, RecoveryReport},
    stats::ShardStats,
    storage::{dma::DmaStorage, Storage},
    wal::{Wal, Watermark},
};

/// The partition logs of one core: many partitions over one WAL.
///
/// Lives on one glommio executor, cheap to clone there.
pub struct Shard<S: Storage = DmaStorage> {
    wal: Wal<S>,
    state: Rc<RefCell<ShardState>>,
    /// The last segment deletion run that ended (`ShardState::deletion_runs`
    /// counts those started).
    deletions_ended: Rc<Watermark>,
}

impl<S: Storage> Clone for Shard<S> {
    fn clone(&self) -> Self {
        Shard {
            wal: self.wal.clone(),
            state: self.state.clone(),
            deletions_ended: self.deletions_ended.clone(),
        }
    }
}

/// An append that [`Shard::submit`] put in the log, not yet acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitted {
    /// The partition appended to.
    pub partition: u64,
    /// Offset of the append's first record.
    pub base_offset: u64,
    /// The commit group that carries it ([`Shard::wait_committed`]).
    pub group: u64,
}

/// The partition state of a shard; only its thread touches it.
struct ShardState {
    partitions: PartitionMap<Partition>,
    memtable: Memtable,
    /// Newest record timestamp in each segment, for retention by age.
    segment_max_ts: BTreeMap<u64, i64>,
    /// Active segment when retention was last enforced.
    retention_checked: u64,
    /// Segment deletion is under way; a second one waits its turn (or,
    /// from retention, leaves it to the next).
    deleting: bool,
    /// Segment deletion runs started.
    deletion_runs: u64,
    /// The last failure of retention run after an append.
    retention_error: Option<Error>,
    /// Set when the shard is about to close: tail waiters return at once.
    waiters_released: bool,
    /// Id of the last tail waiter registered (see [`Shard::wait_for`]).
    last_waiter: u64,
}

impl Shard<DmaStorage> {
    /// Opens (creating if needed) the shard in `config.dir` on the real
    /// disk, recovering its partitions. Must run on a glommio executor.
    pub async fn open(config: ShardConfig) -> Result<(Self, RecoveryReport)> {
        Self::open_with(DmaStorage, config).await
    }
}

impl<S: Storage> Shard<S> {
    /// Opens the shard on the given storage: recovers the WAL, then replays
    /// the partitions from the checkpoint and the surviving batches.
    pub async fn open_with(storage: S, config: ShardConfig) -> Result<(Self, RecoveryReport)> {
        let memtable_bytes = config.memtable_bytes;
        let mode = config.recovery;
        // Nothing on disk changes until replay accepted what recovery found.
        let (wal, mut recovery) = Wal::recover_with(storage, config).await?;
        // A checkpoint that does not decode is refused, or under salvage
        // skipped: the partitions are replayed from the log alone, and a
        // fresh checkpoint is written once they are (below).
        let mut checkpoint_damaged = false;
        let checkpoint = match checkpoint::load(wal.storage(), wal.config()).await {
            Err(Error::Corrupted {
                path,
                position,
                reason,
            }) if decide(Finding::DamagedCheckpoint, mode) == Action::Skip => {
                recovery.report.skipped.push(Damage {
                    path,
                    position,
                    bytes: 0,
                    reason: format!(
                        "{reason}; opened without it: partition starts, truncations and metadata only it held are lost"
                    ),
                });
                checkpoint_damaged = true;
                checkpoint::Checkpoint::default()
            }
            loaded => loaded?,
        };
        let controls = read_controls(&wal, &recovery.batches, checkpoint.log_end).await;
        let replayed = replay(ReplayInput {
            dir: &wal.config().dir,
            mode,
            checkpoint,
            log_end: wal.log_end(),
            active_segment: wal.active_segment(),
            batches: &recovery.batches,
            controls: &controls,
        })?;
        wal.finish_open().await?;
        recovery.report.skipped.extend(replayed.skipped);
        recovery.report.orphaned.extend(replayed.orphaned);
        let shard = Shard {
            wal,
            state: Rc::new(RefCell::new(ShardState {
                partitions: replayed.partitions,
                memtable: Memtable::new(memtable_bytes),
                segment_max_ts: replayed.segment_max_ts,
                retention_checked: 0,
                deleting: false,
                deletion_runs: 0,
                retention_error: None,
                waiters_released: false,
                last_waiter: 0,
            })),
            deletions_ended: Rc::default(),
        };
        // The reserve before the spare: on a nearly full disk the reserve
        // is what lets the shard free space.
        shard.ensure_reserve().await;
        shard.wal.start_spare().await?;
        if !recovery.report.orphaned.is_empty() || checkpoint_damaged {
            // Orphans stay in the log. A checkpoint past them accounts for
            // them, so later opens, when their segment is no longer the
            // active one, do not take them for damage. A damaged checkpoint
            // is replaced by what salvage replayed, which later opens, in
            // any mode, then start from.
            shard.write_checkpoint().await?;
        }
        Ok((shard, recovery.report))
    }

    /// Stops the shard as an I/O failure would: every later and waiting
    /// operation fails, nothing more is written or synced. For the engine,
    /// when a panic left the shard's state in memory untrusted.
    pub fn abandon(&self) {
        self.wal.fail(Error::Closed);
    }

    /// The write-ahead log underneath: its internal write protocol, for
    /// benchmarks and tests only.
    #[cfg(feature = "internals")]
    pub fn wal(&self) -> &Wal<S> {
        &self.wal
    }

    /// The configuration the shard was opened with.
    pub fn config(&self) -> &ShardConfig {
        self.wal.config()
    }

    /// Appends `records` to `partition` with consecutive offsets, atomically,
    /// and returns the first offset once the fsync policy is met: the three
    /// steps [`Shard::submit`], [`Shard::wait_committed`] and
    /// [`Shard::acknowledge`] in one call.
    pub async fn append(&self, partition: u64, records: &[Record]) -> Result<u64> {
        self.append_at(partition, None, records).await
    }

    /// [`Shard::append`], conditional on the partition's end as in
    /// [`Shard::submit_at`].
    pub async fn append_at(
        &self,
        partition: u64,
        expected_end: Option<u64>,
        records: &[Record],
    ) -> Result<u64> {
        let submitted = self.submit_at(partition, expected_end, records).await?;
        self.wait_committed(submitted.group).await?;
        self.acknowledge(&submitted);
        self.after_commit().await;
        Ok(submitted.base_offset)
    }

    /// Checks `records` for `partition` against the limits (not empty, no
    /// record or batch too large) and returns the bytes their batch takes
    /// in the log. [`Shard::submit_at`] checks the same.
    pub fn check_batch(&self, partition: u64, records: &[Record]) -> Result<usize> {
        self.wal.check_batch(partition, records)
    }

    /// The first step of an append: checks `records`, waits for room in the
    /// commit buffer, assigns offsets and encodes the batch into the open
    /// commit group. Batches enter the log, and get their offsets, in the
    /// order these calls complete; concurrent calls complete in the order
    /// they were made. Nothing is acknowledged yet: the caller waits for
    /// [`Shard::wait_committed`] on the returned group, then calls
    /// [`Shard::acknowledge`].
    pub async fn submit(&self, partition: u64, records: &[Record]) -> Result<Submitted> {
        self.submit_at(partition, None, records).await
    }

    /// [`Shard::submit`], but when `expected_end` is given, only if the
    /// partition's end (counting appends already submitted) is
    /// `expected_end`; else [`Error::OffsetMismatch`] and nothing is
    /// written. The conditional append of a replicated log's leader.
    pub async fn submit_at(
        &self,
        partition: u64,
        expected_end: Option<u64>,
        records: &[Record],
    ) -> Result<Submitted> {
        self.submit_body(partition, expected_end, Body::Records(records))
            .await
    }

    /// [`Shard::submit_at`] for records the caller's thread encoded
    /// already: `runs`, one after another, make one batch. The appending
    /// threads of the engine encode their appends this way, so that the
    /// shard's work per batch is one copy, not a pass per record.
    pub async fn submit_encoded_at(
        &self,
        partition: u64,
        expected_end: Option<u64>,
        runs: &[EncodedRecords],
    ) -> Result<Submitted> {
        self.submit_body(partition, expected_end, Body::Encoded(runs))
            .await
    }

    async fn submit_body(
        &self,
        partition: u64,
        expected_end: Option<u64>,
        body: Body<'_>,
    ) -> Result<Submitted> {
        let size = self.wal.check_body(partition, body)?;
        // Both must hold at once, with no await between the check and the
        // encode: a reset or metadata batch may be logged while this waits
        // for room, and room may fill while it waits for the barrier.
        while self.behind_barrier(partition) || !self.wal.has_room(size)? {
            self.wait_for_barrier(partition).await?;
            self.wal.wait_for_room(size).await?;
        }
        // From here to the encode nothing awaits, so offsets are assigned in
        // the order batches enter the log.
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        if let Some(expected) = expected_end {
            let end = st.partitions.get(&partition).map_or(0, |p| p.end);
            if end != expected {
                return Err(Error::OffsetMismatch {
                    partition,
                    expected,
                    end,
                });
            }
        }
        let part = st.partitions.entry(partition).or_default();
        let info = BatchInfo {
            partition,
            base_offset: part.end,
            ..BatchInfo::default()
        };
        let mut kept = None;
        let memtable = &mut st.memtable;
        let a = self
            .wal
            .encode(info, body, size, |bytes| kept = Some(memtable.keep(bytes)))?;
        part.end = a.base_offset + u64::from(a.record_count);
        part.pending.push_back((a.group, part.end));
        part.unacked.push_back((a.group, part.end));
        part.index.push(IndexEntry::new(
            a.base_offset,
            a.segment,
            a.position,
            a.length,
            a.record_count,
        ));
        st.memtable
            .insert(kept.expect("encode shows the batch"), a.group);
        match st.segment_max_ts.last_entry() {
            Some(mut last) if *last.key() == a.segment => {
                *last.get_mut() = (*last.get()).max(a.max_timestamp);
            }
            _ => {
                let ts = st.segment_max_ts.entry(a.segment).or_insert(i64::MIN);
                *ts = (*ts).max(a.max_timestamp);
            }
        }
        Ok(Submitted {
            partition,
            base_offset: a.base_offset,
            group: a.group,
        })
    }

    /// Waits until the partition's last reset or metadata batch is durable
    /// (see `Partition::barrier`).
    async fn wait_for_barrier(&self, partition: u64) -> Result<()> {
        loop {
            let barrier = {
                let st = self.state.borrow();
                st.partitions.get(&partition).and_then(|p| p.barrier)
            };
            match barrier {
                Some(g) if g > self.wal.watermarks().1 => self.wal.wait_durable(g).await?,
                _ => return Ok(()),
            }
        }
    }

    /// Whether the partition's last reset or metadata batch is not durable
    /// yet.
    fn behind_barrier(&self, partition: u64) -> bool {
        let st = self.state.borrow();
        st.partitions
            .get(&partition)
            .and_then(|p| p.barrier)
            .is_some_and(|g| g > self.wal.watermarks().1)
    }

    /// Waits until commit group `group` meets the fsync policy (durable
    /// under `Always`, written otherwise); the batches it and every earlier
    /// group carry are then safe. Fails when the log failed or closed first.
    pub async fn wait_committed(&self, group: u64) -> Result<()> {
        self.wal.wait_committed(group).await
    }

    /// The last commit group that met the fsync policy: every batch
    /// submitted in it or before may be acknowledged.
    pub fn committed_group(&self) -> u64 {
        let (written, durable) = self.wal.watermarks();
        match self.config().fsync {
            FsyncPolicy::Always => durable,
            _ => written,
        }
    }

    /// Records that `submitted`'s commit group met the policy: readers and
    /// tail waiters now see its records. Call once its group is committed.
    pub fn acknowledge(&self, submitted: &Submitted) {
        // Invariant: only committed groups are acknowledged.
        debug_assert!(submitted.group <= self.committed_group());
        if let Some(part) = self
            .state
            .borrow_mut()
            .partitions
            .get_mut(&submitted.partition)
        {
            part.acknowledge(submitted.group);
        }
    }

    /// Housekeeping after a round of acknowledgements: drops written
    /// batches from the memtable past its budget, and applies retention
    /// once per segment roll. A retention failure is kept for
    /// [`Shard::take_retention_error`], not reported here.
    pub async fn after_commit(&self) {
        let written = self.wal.watermarks().0;
        let rolled = {
            let mut st = self.state.borrow_mut();
            st.memtable.evict(written);
            let active = self.wal.active_segment();
            std::mem::replace(&mut st.retention_checked, active) != active
        };
        let config = self.config();
        if rolled && (config.retention_bytes.is_some() || config.retention_age.is_some()) {
            if let Err(e) = self.enforce_retention().await {
                self.state.borrow_mut().retention_error = Some(e);
            }
        }
    }

    /// The offsets of `partition`; a partition never written has all zero.
    pub fn offsets(&self, partition: u64) -> Offsets {
        let durable = self.wal.watermarks().1;
        let mut st = self.state.borrow_mut();
        st.partitions
            .get_mut(&partition)
            .map_or_else(Offsets::default, |p| p.offsets(durable))
    }

    /// Makes everything appended so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.wal.flush().await
    }

    /// Counters of the WAL, with the memtable's size.
    pub fn stats(&self) -> ShardStats {
        ShardStats {
            memtable_bytes: self.state.borrow().memtable.bytes() as u64,
            ..self.wal.stats()
        }
    }

    /// Closes the shard (see [`Wal::close`]).
    pub async fn close(&self) -> Result<()> {
        self.release_waiters();
        self.wal.close().await
    }

    /// Whether [`Shard::release_waiters`] ran: the shard is about to close.
    pub fn is_closing(&self) -> bool {
        self.state.borrow().waiters_released
    }

    /// Releases every task parked in [`Shard::wait_for`] or
    /// [`Shard::fetch`], and makes later ones return at once (`wait_for`
    /// with false, `fetch` with `Closed`), so that closing the shard does
    /// not wait for their timeouts. Called on the way to a close.
    pub fn release_waiters(&self) {
        let mut st = self.state.borrow_mut();
        st.waiters_released = true;
        for part in st.partitions.values_mut() {
            for (_, w) in part.tail_waiters.drain(..) {
                w.wake();
            }
        }
    }
}

/// The record of every control batch at or past `replay_from` (the
/// checkpoint's log end), by (segment, position), or why it could not be
/// read: what replay needs to apply them, read before it so that it does no
/// I/O. A batch replay drops or refuses is never applied, so its read error
/// is kept for replay to raise only if it applies it.
async fn read_controls<S: Storage>(
    wal: &Wal<S>,
    batches: &[RecoveredBatch],
    replay_from: (u64, u64),
) -> HashMap<(u64, u64), Result<Option<ControlRecord>>> {
    let mut controls = HashMap::new();
    for b in batches
        .iter()
        .filter(|b| b.header.flags & FLAG_CONTROL != 0 && (b.segment, b.position) >= replay_from)
    {
        let record = wal
            .read_batch(b.segment, b.position, b.header.length)
            .await
            .map(|batch| {
                let r = batch.records().next()?;
                let (&byte, arg) = r.value().split_first()?;
                Some(ControlRecord {
                    byte,
                    key: r.key.unwrap_or_default().to_vec(),
                    arg: arg.to_vec(),
                })
            });
        controls.insert((b.segment, b.position), record);
    }
    controls
}
