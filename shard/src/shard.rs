//! The partition logs of one shard: offsets, the offset index, the
//! memtable, reads, delete-before and truncate, on top of the [`Wal`].
//!
//! Every partition has dense offsets from 0, an end (the next offset), a
//! start (the first readable offset) and a high-water mark (the end of what
//! an fdatasync covered). Starts and truncations are logged as control
//! batches in the WAL, in order with the data, and replayed on open on top
//! of the partition checkpoint ([`crate::checkpoint`]), which is written
//! before a segment is deleted.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, VecDeque},
    future::poll_fn,
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
    time::Duration,
};

use crate::{
    batch::{Batch, BatchInfo, FLAG_CONTROL},
    checkpoint::{self, Checkpoint},
    config::{RecoveryMode, ShardConfig},
    dma::DmaStorage,
    error::{Error, Result},
    index::{IndexEntry, OffsetIndex},
    memtable::Memtable,
    record::{Record, StoredRecord},
    recovery::{Orphan, RecoveryReport},
    stats::ShardStats,
    storage::Storage,
    wal::Wal,
};

/// Value of the record in a control batch that moves a partition's start
/// offset to the batch's base offset.
const CONTROL_DELETE_BEFORE: u8 = 1;
/// Value of the record in a control batch that removes the partition's
/// offsets from the batch's base offset on.
const CONTROL_TRUNCATE: u8 = 2;

/// Batches taken from the memtable at once by a read.
const MEMTABLE_RUN: usize = 64;
/// A cold read also fetches the partition's next batches in the same
/// segment, up to this many bytes past the first and this many batches.
const READ_AHEAD_BYTES: u64 = 256 << 10;
const READ_AHEAD_BATCHES: usize = 256;

/// The offsets of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offsets {
    /// First readable offset.
    pub start: u64,
    /// Next offset to be assigned.
    pub end: u64,
    /// End of the records an fdatasync has covered.
    pub high_watermark: u64,
}

/// One partition's state.
#[derive(Debug, Default)]
struct Partition {
    start: u64,
    end: u64,
    high_watermark: u64,
    index: OffsetIndex,
    /// Ends of appended batches not yet known durable: (commit group, end).
    pending: VecDeque<(u64, u64)>,
    /// End of the appends acknowledged so far (their policy was met).
    acked_end: u64,
    /// Tasks waiting in [`Shard::wait_for`] for `acked_end` to move.
    tail_waiters: Vec<Waker>,
}

impl Partition {
    fn offsets(&mut self, durable_group: u64) -> Offsets {
        while let Some(&(group, end)) = self.pending.front() {
            if group > durable_group {
                break;
            }
            self.high_watermark = end;
            self.pending.pop_front();
        }
        Offsets {
            start: self.start,
            end: self.end,
            high_watermark: self.high_watermark,
        }
    }

    /// Records that appends up to `end` are acknowledged, waking tail
    /// readers.
    fn acknowledge(&mut self, end: u64) {
        // An append that completes after a truncation acknowledges offsets
        // that are gone.
        let end = end.min(self.end);
        if end > self.acked_end {
            self.acked_end = end;
            for w in self.tail_waiters.drain(..) {
                w.wake();
            }
        }
    }

    fn truncate(&mut self, from: u64) {
        self.index.truncate(from);
        self.acked_end = self.acked_end.min(from);
        self.end = from;
        self.high_watermark = self.high_watermark.min(from);
        // A pending batch past the cut still carries the offsets before it:
        // when its group is durable, so are they (up to `from`).
        for (_, end) in self.pending.iter_mut() {
            *end = (*end).min(from);
        }
    }

    fn delete_before(&mut self, offset: u64) {
        self.start = self.start.max(offset);
        self.index.remove_before(self.start);
    }
}

/// The partition logs of one core: many partitions over one WAL.
///
/// Lives on one glommio executor, cheap to clone there.
pub struct Shard<S: Storage = DmaStorage> {
    wal: Wal<S>,
    state: Rc<RefCell<ShardState>>,
}

impl<S: Storage> Clone for Shard<S> {
    fn clone(&self) -> Self {
        Shard {
            wal: self.wal.clone(),
            state: self.state.clone(),
        }
    }
}

struct ShardState {
    partitions: HashMap<u64, Partition>,
    memtable: Memtable,
    /// Newest record timestamp in each segment, for retention by age.
    segment_max_ts: BTreeMap<u64, i64>,
    /// Active segment when retention was last enforced.
    retention_checked: u64,
    /// Segment deletion is under way; a second one waits its turn.
    deleting: bool,
    /// The last failure of retention run after an append.
    retention_error: Option<Error>,
    /// Set when the shard is about to close: tail waiters return at once.
    waiters_released: bool,
}

impl Shard<DmaStorage> {
    /// Opens (creating if needed) the shard in `config.dir` on the real
    /// disk, recovering its partitions. Must run on a glommio executor.
    pub async fn open(config: ShardConfig) -> Result<(Self, RecoveryReport)> {
        Self::open_with(DmaStorage, config).await
    }
}

impl<S: Storage> Shard<S> {
    /// Opens the shard on the given storage.
    pub async fn open_with(storage: S, config: ShardConfig) -> Result<(Self, RecoveryReport)> {
        let memtable_bytes = config.memtable_bytes;
        let mode = config.recovery;
        let (wal, mut recovery) = Wal::open_with(storage, config).await?;
        let checkpoint = checkpoint::load(wal.storage(), wal.config()).await?;
        // Everything before the checkpoint's log end was durable when it was
        // written: a recovered log ending before it lost synced data (a
        // tail cut for damage no later batch could prove).
        if wal.log_end() < checkpoint.log_end {
            let (segment, position) = checkpoint.log_end;
            let reason = format!(
                "the log ends at segment {} position {} but the partition checkpoint accounts for it up to segment {segment} position {position}",
                wal.log_end().0,
                wal.log_end().1
            );
            let path = wal.segment_path(segment);
            if mode != RecoveryMode::TolerateAnyCorruption {
                return Err(Error::corrupted(path, position, reason));
            }
            recovery.report.skipped.push(crate::recovery::Damage {
                path,
                position,
                bytes: 0,
                reason,
            });
        }
        let mut partitions: HashMap<u64, Partition> = checkpoint
            .partitions
            .into_iter()
            .map(|(p, (start, end))| {
                let part = Partition {
                    start,
                    end,
                    high_watermark: end,
                    ..Partition::default()
                };
                (p, part)
            })
            .collect();
        // Writes in flight at a crash are all in the active segment.
        let active = wal.stats().active_segment;
        for b in &recovery.batches {
            let h = &b.header;
            let part = partitions.entry(h.partition).or_default();
            let entry = IndexEntry::new(
                h.base_offset,
                b.segment,
                b.position,
                h.length,
                h.record_count,
            );
            if (b.segment, b.position) < checkpoint.log_end {
                // The checkpoint's offsets account for this batch: it only
                // rebuilds the index. A later batch at the same offsets
                // replaces it (a truncation came in between).
                if h.flags & FLAG_CONTROL == 0
                    && h.base_offset < part.end
                    && h.end_offset() > part.start
                {
                    part.index.truncate(h.base_offset);
                    part.index.push(entry);
                }
                continue;
            }
            // Invariant: a partition's offsets are dense. Writes in flight
            // complete in any order, so a crash can keep a batch and lose
            // an earlier one of its partition; the survivor was never
            // acknowledged as durable (the lost one was not) and is
            // dropped. Anywhere else a gap is damage: refused, or under
            // tolerate-any kept, where reading inside the gap reports it.
            if h.base_offset > part.end {
                let orphan = Orphan {
                    partition: h.partition,
                    base_offset: h.base_offset,
                    partition_end: part.end,
                    segment: b.segment,
                    position: b.position,
                };
                match mode {
                    RecoveryMode::TolerateAnyCorruption => {}
                    RecoveryMode::TolerateTornTail if b.segment == active => {
                        recovery.report.orphaned.push(orphan);
                        continue;
                    }
                    _ => {
                        return Err(Error::corrupted(
                            wal.segment_path(b.segment),
                            b.position,
                            format!(
                                "partition {} batch at offset {} follows the partition's end {}: an earlier batch is missing",
                                h.partition, h.base_offset, part.end
                            ),
                        ))
                    }
                }
            }
            if h.flags & FLAG_CONTROL != 0 {
                let batch = wal.read_batch(b.segment, b.position, h.length).await?;
                match batch.records().next().map(|r| r.value().first().copied()) {
                    Some(Some(CONTROL_DELETE_BEFORE)) => part.delete_before(h.base_offset),
                    Some(Some(CONTROL_TRUNCATE)) => part.truncate(h.base_offset),
                    other => {
                        return Err(Error::corrupted(
                            wal.segment_path(b.segment),
                            b.position,
                            format!("unknown control batch {other:?}"),
                        ))
                    }
                }
                continue;
            }
            part.end = part.end.max(h.end_offset());
            if h.end_offset() > part.start {
                // After a replayed truncation the index may hold batches
                // at or past this one from before it; they were dropped.
                part.index.truncate(h.base_offset);
                part.index.push(entry);
            }
        }
        for part in partitions.values_mut() {
            // An accounted batch may straddle the end a truncation set, or
            // end below a start a skipped control batch set.
            part.index.truncate(part.end);
            part.index.remove_before(part.start);
            part.high_watermark = part.end;
            part.acked_end = part.end;
        }
        let mut segment_max_ts = BTreeMap::new();
        for b in recovery
            .batches
            .iter()
            .filter(|b| b.header.flags & FLAG_CONTROL == 0)
        {
            let ts = segment_max_ts.entry(b.segment).or_insert(i64::MIN);
            *ts = (*ts).max(b.header.max_timestamp);
        }
        let shard = Shard {
            wal,
            state: Rc::new(RefCell::new(ShardState {
                partitions,
                memtable: Memtable::new(memtable_bytes),
                segment_max_ts,
                retention_checked: 0,
                deleting: false,
                retention_error: None,
                waiters_released: false,
            })),
        };
        if !recovery.report.orphaned.is_empty() {
            // Orphans stay in the log. A checkpoint past them accounts for
            // them, so later opens, when their segment is no longer the
            // active one, do not take them for damage.
            shard.write_checkpoint().await?;
        }
        Ok((shard, recovery.report))
    }

    /// The configuration the shard was opened with.
    pub fn config(&self) -> &ShardConfig {
        self.wal.config()
    }

    /// The write-ahead log underneath.
    pub fn wal(&self) -> &Wal<S> {
        &self.wal
    }

    /// Appends `records` to `partition` with consecutive offsets, atomically,
    /// and returns the first offset once the fsync policy is met.
    pub async fn append(&self, partition: u64, records: &[Record]) -> Result<u64> {
        let size = self.wal.check_batch(partition, records)?;
        self.wal.wait_for_room(size).await?;
        // From here to the encode nothing awaits, so offsets are assigned in
        // the order batches enter the log.
        let appended = {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let part = st.partitions.entry(partition).or_default();
            let info = BatchInfo {
                partition,
                base_offset: part.end,
                ..BatchInfo::default()
            };
            let mut kept = None;
            let a = self
                .wal
                .encode(info, records, size, |bytes| kept = Some(bytes.to_vec()))?;
            part.end = a.base_offset + u64::from(a.record_count);
            part.pending.push_back((a.group, part.end));
            part.index.push(IndexEntry::new(
                a.base_offset,
                a.segment,
                a.position,
                a.length,
                a.record_count,
            ));
            st.memtable.insert(
                Batch::encoded(kept.expect("encode shows the batch")),
                a.group,
            );
            let ts = st.segment_max_ts.entry(a.segment).or_insert(i64::MIN);
            *ts = (*ts).max(a.max_timestamp);
            a
        };
        self.wal.wait_committed(appended.group).await?;
        let written = self.wal.watermarks().0;
        let rolled = {
            let mut st = self.state.borrow_mut();
            st.memtable.evict(written);
            if let Some(part) = st.partitions.get_mut(&partition) {
                part.acknowledge(appended.base_offset + u64::from(appended.record_count));
            }
            let active = self.wal.stats().active_segment;
            std::mem::replace(&mut st.retention_checked, active) != active
        };
        let config = self.config();
        if rolled && (config.retention_bytes.is_some() || config.retention_age.is_some()) {
            // The append itself succeeded; a failure to apply retention is
            // kept for `take_retention_error`, not reported as the append's.
            if let Err(e) = self.enforce_retention().await {
                self.state.borrow_mut().retention_error = Some(e);
            }
        }
        Ok(appended.base_offset)
    }

    /// The offsets of `partition`; a partition never written has all zero.
    pub fn offsets(&self, partition: u64) -> Offsets {
        let durable = self.wal.watermarks().1;
        let mut st = self.state.borrow_mut();
        st.partitions
            .get_mut(&partition)
            .map_or_else(Offsets::default, |p| p.offsets(durable))
    }

    /// Waits until an acknowledged append takes the end of `partition` past
    /// `offset`, or until `timeout` passes. Returns whether the end passed
    /// `offset`. This is the long poll of a consumer following the tail; it
    /// parks, it does not spin. Once the shard is closing (see
    /// [`Shard::release_waiters`]) it returns at once: false then means
    /// closing, not a timeout.
    pub async fn wait_for(&self, partition: u64, offset: u64, timeout: Duration) -> bool {
        let passed = poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let released = st.waiters_released;
            let part = st.partitions.entry(partition).or_default();
            if part.acked_end > offset {
                Poll::Ready(true)
            } else if released {
                Poll::Ready(false)
            } else {
                // A waiter that timed out leaves its waker behind until the
                // next append; do not let a polling loop pile them up.
                if !part.tail_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    part.tail_waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        });
        let expired = async {
            glommio::timer::sleep(timeout).await;
            false
        };
        futures_lite::future::or(passed, expired).await
    }

    /// The long poll of a consumer at the tail: waits (as [`Shard::wait_for`])
    /// until an acknowledged append takes the end of `partition` past
    /// `offset`, then returns records from `offset` on as [`Shard::read`]
    /// does, but only acknowledged ones (a follower never receives a record
    /// whose commit may still fail); returns nothing when `timeout` passes
    /// first. One call per step of a follower, where `wait_for` then `read`
    /// take two. A shard that failed or is closing answers with its error.
    pub async fn fetch(
        &self,
        partition: u64,
        offset: u64,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<StoredRecord>> {
        self.wal.usable()?;
        self.check_offset(partition, offset)?;
        if !self.wait_for(partition, offset, timeout).await {
            // The shard may have failed, or begun to close, meanwhile.
            self.wal.usable()?;
            if self.state.borrow().waiters_released {
                return Err(Error::Closed);
            }
            return Ok(Vec::new());
        }
        // A truncation may have moved the end while this waited.
        let o = self.check_offset(partition, offset)?;
        let acked = self
            .state
            .borrow()
            .partitions
            .get(&partition)
            .map_or(0, |p| p.acked_end);
        self.collect(partition, offset, acked.min(o.end), max_bytes)
            .await
    }

    /// Records of `partition` from `offset` on, up to `max_bytes` of keys,
    /// values and headers, but always at least one record when `offset` is
    /// below the end. Reading at the end returns nothing.
    pub async fn read(
        &self,
        partition: u64,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let o = self.check_offset(partition, offset)?;
        self.collect(partition, offset, o.end, max_bytes).await
    }

    /// Exactly the records of `partition` in `[start, end)`.
    pub async fn read_range(
        &self,
        partition: u64,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredRecord>> {
        let o = self.check_offset(partition, start)?;
        if end < start || end > o.end {
            return Err(out_of_range(partition, end, o));
        }
        self.collect(partition, start, end, usize::MAX).await
    }

    /// The records of `partition` in `[from, stop)`, stopping early before
    /// a record that would take the payload past `max_bytes` (the first
    /// record always comes back).
    async fn collect(
        &self,
        partition: u64,
        from: u64,
        stop: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let mut out = Vec::with_capacity((stop - from).min(4096) as usize);
        let mut bytes = 0usize;
        let mut next = from;
        while next < stop && (out.is_empty() || bytes < max_bytes) {
            let want = max_bytes.saturating_sub(bytes) as u64;
            for (batch, batch_end) in self.batches_at(partition, next, want).await? {
                let end = batch_end.min(stop);
                for v in batch
                    .records()
                    .filter(|r| r.offset() >= next && r.offset() < end)
                {
                    let r = StoredRecord::new(&batch, &v);
                    if !out.is_empty() && bytes.saturating_add(r.payload_len()) > max_bytes {
                        return Ok(out);
                    }
                    bytes += r.payload_len();
                    out.push(r);
                }
                next = batch_end;
                if next >= stop {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Advances the start of `partition` to `offset`, durably: earlier
    /// records are no longer readable, and segments nothing needs any more
    /// are deleted. An offset at or below the start changes nothing.
    pub async fn delete_before(&self, partition: u64, offset: u64) -> Result<()> {
        self.control(partition, offset, CONTROL_DELETE_BEFORE)
            .await?;
        self.delete_unneeded_segments().await
    }

    /// Removes the offsets of `partition` from `from` on, durably; the next
    /// append gets offset `from`. `from` at the end changes nothing.
    pub async fn truncate(&self, partition: u64, from: u64) -> Result<()> {
        self.control(partition, from, CONTROL_TRUNCATE).await
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

    /// Releases every task parked in [`Shard::wait_for`] or
    /// [`Shard::fetch`], and makes later ones return at once (`wait_for`
    /// with false, `fetch` with `Closed`), so that closing the shard does
    /// not wait for their timeouts. Called on the way to a close.
    pub fn release_waiters(&self) {
        let mut st = self.state.borrow_mut();
        st.waiters_released = true;
        for part in st.partitions.values_mut() {
            for w in part.tail_waiters.drain(..) {
                w.wake();
            }
        }
    }

    /// Logs a control batch, applies it in memory before any other batch of
    /// the partition can be logged after it, and waits until it is durable.
    async fn control(&self, partition: u64, offset: u64, op: u8) -> Result<()> {
        let records = [Record::new(vec![op]).with_timestamp(0)];
        let size = self.wal.check_batch(partition, &records)?;
        self.wal.wait_for_room(size).await?;
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            let part = st.partitions.entry(partition).or_default();
            // Check again: other operations ran while we waited for room.
            let o = Offsets {
                start: part.start,
                end: part.end,
                high_watermark: part.high_watermark,
            };
            match op {
                CONTROL_TRUNCATE if offset < o.start || offset > o.end => {
                    return Err(out_of_range(partition, offset, o))
                }
                CONTROL_DELETE_BEFORE if offset > o.end => {
                    return Err(out_of_range(partition, offset, o))
                }
                CONTROL_TRUNCATE if offset == o.end => return Ok(()),
                CONTROL_DELETE_BEFORE if offset <= o.start => return Ok(()),
                _ => {}
            }
            let info = BatchInfo {
                partition,
                base_offset: offset,
                flags: FLAG_CONTROL,
                ..BatchInfo::default()
            };
            self.wal.encode(info, &records, size, |_| {})?;
            // A cached batch holding `offset` stays (it may not be written
            // yet); reads stop where its index entry ends.
            if op == CONTROL_TRUNCATE {
                st.memtable.remove_from(partition, offset);
                part.truncate(offset);
            } else {
                st.memtable.remove_before(partition, offset);
                part.delete_before(offset);
            }
        }
        self.wal.flush().await
    }

    /// Applies the retention limits of the configuration: drops the oldest
    /// sealed segments while the shard holds more than `retention_bytes` of
    /// segments, or while their newest record is older than
    /// `retention_age`. Partitions that had records there see their start
    /// move past them, durably. Runs by itself whenever a segment is sealed.
    pub async fn enforce_retention(&self) -> Result<()> {
        let config = self.config();
        let segments = self.wal.segments();
        let active = self.wal.stats().active_segment;
        let oldest_kept_ms = config
            .retention_age
            .map(|age| crate::wal::now_ms().saturating_sub(age.as_millis() as i64));
        let mut total = segments.len() as u64 * config.segment_bytes;
        {
            let mut st = self.state.borrow_mut();
            let st = &mut *st;
            for s in segments.into_iter().take_while(|&s| s < active) {
                let too_big = config.retention_bytes.is_some_and(|max| total > max);
                let newest = st.segment_max_ts.get(&s).copied().unwrap_or(i64::MIN);
                let too_old = oldest_kept_ms.is_some_and(|oldest| newest < oldest);
                if !(too_big || too_old) {
                    break;
                }
                total -= config.segment_bytes;
                let s32 = u32::try_from(s).expect("segment sequence fits u32");
                for (&p, part) in st.partitions.iter_mut() {
                    if let Some(end) = part.index.end_through_segment(s32) {
                        part.delete_before(end);
                        st.memtable.remove_before(p, end);
                    }
                }
            }
        }
        self.delete_unneeded_segments().await
    }

    /// The last error of the retention that appends run when a segment is
    /// sealed, if any (the appends themselves succeeded).
    pub fn take_retention_error(&self) -> Option<Error> {
        self.state.borrow_mut().retention_error.take()
    }

    /// Deletes the oldest segments that hold no batch any partition needs,
    /// after recording every partition's offsets in the checkpoint.
    async fn delete_unneeded_segments(&self) -> Result<()> {
        if std::mem::replace(&mut self.state.borrow_mut().deleting, true) {
            return Ok(());
        }
        /// Clears the flag however the deletion ends, even if its future is
        /// dropped half way.
        struct Deleting<'a>(&'a RefCell<ShardState>);
        impl Drop for Deleting<'_> {
            fn drop(&mut self) {
                self.0.borrow_mut().deleting = false;
            }
        }
        let _deleting = Deleting(&self.state);
        self.delete_unneeded_segments_now().await
    }

    /// Records every partition's offsets in the checkpoint, as of the end
    /// of the log, once everything logged is durable.
    async fn write_checkpoint(&self) -> Result<()> {
        // One snapshot, with no await inside: the offsets reflect exactly
        // the batches before `log_end` (control batches are applied when
        // they are logged). The flush then makes all of them durable, so
        // no end in the checkpoint counts an append a crash could lose.
        let checkpoint = {
            let st = self.state.borrow();
            Checkpoint {
                log_end: self.wal.log_end(),
                partitions: st
                    .partitions
                    .iter()
                    .map(|(&p, part)| (p, (part.start, part.end)))
                    .collect(),
            }
        };
        self.wal.flush().await?;
        // A failure before the rename leaves the old checkpoint in place
        // and the shard usable; after it, the directory's state is unknown.
        checkpoint::write_temp(self.wal.storage(), self.config(), &checkpoint).await?;
        checkpoint::install(self.wal.storage(), self.config())
            .await
            .map_err(|e| self.wal.fail(e))
    }

    async fn delete_unneeded_segments_now(&self) -> Result<()> {
        let segments = self.wal.segments();
        let active = self.wal.stats().active_segment;
        let needed = {
            let st = self.state.borrow();
            st.partitions
                .values()
                .filter_map(|p| p.index.first_segment())
                .map(u64::from)
                .min()
                .unwrap_or(active)
        };
        let doomed: Vec<u64> = segments
            .into_iter()
            .take_while(|&s| s < needed && s < active)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        self.write_checkpoint().await?;
        for s in doomed {
            self.wal
                .remove_segment(s)
                .await
                .map_err(|e| self.wal.fail(e))?;
            self.state.borrow_mut().segment_max_ts.remove(&s);
        }
        Ok(())
    }

    /// Checks that `offset` can be read in `partition`; returns its offsets.
    fn check_offset(&self, partition: u64, offset: u64) -> Result<Offsets> {
        let o = self.offsets(partition);
        if offset < o.start || offset > o.end {
            return Err(out_of_range(partition, offset, o));
        }
        Ok(o)
    }

    /// The batch of `partition` holding `offset` and, when it is in the
    /// memtable, the batches that follow it there: from memory, or one batch
    /// read from disk and verified.
    ///
    /// With each batch comes where its records end for the partition:
    /// before the batch's own end when a truncation cut it short.
    /// `want_bytes` bounds the read-ahead.
    async fn batches_at(
        &self,
        partition: u64,
        offset: u64,
        want_bytes: u64,
    ) -> Result<Vec<(Arc<Batch>, u64)>> {
        let entry = {
            let st = self.state.borrow();
            let mut cached = Vec::new();
            let mut next = offset;
            let index = st.partitions.get(&partition).map(|p| &p.index);
            st.memtable.walk(partition, offset, |b| {
                let h = b.header();
                // The index says where the batch's records end for the
                // partition (a truncation may have cut it short).
                let end = index
                    .and_then(|ix| ix.find(h.base_offset))
                    .filter(|e| e.base_offset == h.base_offset)
                    .map(|e| e.end_offset());
                match end {
                    Some(end) if h.base_offset <= next && end > next => {
                        next = end;
                        cached.push((b.clone(), end));
                        cached.len() < MEMTABLE_RUN
                    }
                    _ => false,
                }
            });
            if !cached.is_empty() {
                return Ok(cached);
            }
            // Read ahead: the batch holding `offset` and the partition's
            // next batches in the same segment, within one read.
            let entries = st
                .partitions
                .get(&partition)
                .map_or(&[][..], |p| p.index.from_offset(offset));
            let first = entries.first().copied();
            let limit = READ_AHEAD_BYTES.min(want_bytes);
            let run: Vec<IndexEntry> = entries
                .iter()
                .take(READ_AHEAD_BATCHES)
                .enumerate()
                .take_while(|&(i, e)| {
                    first.is_some_and(|f| {
                        i == 0
                            || (e.segment == f.segment
                                && u64::from(e.position) + u64::from(e.length)
                                    <= u64::from(f.position) + limit)
                    })
                })
                .map(|(_, e)| *e)
                .collect();
            run
        };
        let Some(first) = entry.first().copied() else {
            return Err(Error::corrupted(
                self.config().dir.clone(),
                0,
                format!("partition {partition} offset {offset} is in no batch"),
            ));
        };
        let segment = u64::from(first.segment);
        let spans: Vec<(u64, u32)> = entry
            .iter()
            .map(|e| (u64::from(e.position), e.length))
            .collect();
        let batches = self.wal.read_batches(segment, &spans).await?;
        let mut out = Vec::with_capacity(batches.len());
        for (batch, e) in batches.into_iter().zip(&entry) {
            let h = batch.header();
            if h.partition != partition || h.base_offset != e.base_offset {
                return Err(Error::corrupted(
                    self.wal.segment_path(segment),
                    u64::from(e.position),
                    format!(
                        "index points partition {partition} offset {} at another batch",
                        e.base_offset
                    ),
                ));
            }
            out.push((Arc::new(batch), e.end_offset()));
        }
        Ok(out)
    }
}

fn out_of_range(partition: u64, offset: u64, o: Offsets) -> Error {
    Error::OffsetOutOfRange {
        partition,
        offset,
        start: o.start,
        end: o.end,
    }
}
