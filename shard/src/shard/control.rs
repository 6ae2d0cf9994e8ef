//! Control operations of a shard: delete-before, truncate, reset and
//! metadata (logged as control batches), retention, the partition
//! checkpoint, and the deletion of segments nothing needs any more.

use std::cell::RefCell;

/// Metadata keys a partition holds at most.
pub const MAX_META_KEYS: usize = 64;
/// Largest metadata key, in bytes.
pub const MAX_META_KEY_BYTES: usize = 256;
/// Largest metadata value, in bytes.
pub const MAX_META_VALUE_BYTES: usize = 64 << 10;

use crate::{
    error::{Error, Result},
    format::{
        batch::{BatchInfo, Body, FLAG_CONTROL},
        checkpoint::{self, Checkpoint},
        record::Record,
    },
    partition::{Control, Offsets},
    shard::{read::out_of_range, Shard, ShardState},
    storage::Storage,
    wal::Watermark,
};

impl<S: Storage> Shard<S> {
    /// Advances the start of `partition` to `offset`, durably: earlier
    /// records are no longer readable, and segments nothing needs any more
    /// are deleted. An offset at or below the start changes nothing.
    pub async fn delete_before(&self, partition: u64, offset: u64) -> Result<()> {
        self.control(partition, offset, Control::DeleteBefore, &[], &[])
            .await?;
        self.delete_unneeded_segments(true).await
    }

    /// Removes the offsets of `partition` from `from` on, durably; the next
    /// append gets offset `from`. `from` at the end changes nothing.
    pub async fn truncate(&self, partition: u64, from: u64) -> Result<()> {
        self.control(partition, from, Control::Truncate, &[], &[])
            .await
    }

    /// Empties `partition` durably and sets its start and end to `start`
    /// (any value, also past the old end): the next append gets offset
    /// `start`. What a replicated log's follower does after installing a
    /// snapshot. Appends in flight are cut as by a truncation. Segments
    /// nothing needs any more are deleted.
    pub async fn reset(&self, partition: u64, start: u64) -> Result<()> {
        self.control(partition, start, Control::Reset, &[], &[])
            .await?;
        self.delete_unneeded_segments(true).await
    }

    /// Sets metadata `key` of `partition` to `value`, durably when this
    /// returns, in order with the partition's appends: a crash never keeps
    /// an append logged after it and loses it. Kept across segment deletion
    /// and retention (the checkpoint holds it). At most [`MAX_META_KEYS`]
    /// keys a partition, keys of at most [`MAX_META_KEY_BYTES`] and values
    /// of at most [`MAX_META_VALUE_BYTES`].
    pub async fn put_meta(&self, partition: u64, key: &[u8], value: &[u8]) -> Result<()> {
        if key.len() > MAX_META_KEY_BYTES {
            return Err(Error::RecordTooLarge {
                what: "metadata key",
                size: key.len(),
                max: MAX_META_KEY_BYTES,
            });
        }
        if value.len() > MAX_META_VALUE_BYTES {
            return Err(Error::RecordTooLarge {
                what: "metadata value",
                size: value.len(),
                max: MAX_META_VALUE_BYTES,
            });
        }
        // The offset is the partition's end, taken when the batch is logged.
        self.control(partition, 0, Control::PutMeta, key, value)
            .await
    }

    /// The metadata value of `key` in `partition`, if set.
    pub fn get_meta(&self, partition: u64, key: &[u8]) -> Option<Vec<u8>> {
        let st = self.state.borrow();
        st.partitions.get(&partition)?.meta.get(key).cloned()
    }

    /// Every partition that holds offsets or metadata, with its offsets, in
    /// partition order. Partitions only read or polled are not listed.
    pub fn partitions(&self) -> Vec<(u64, Offsets)> {
        let durable = self.wal.watermarks().1;
        let mut st = self.state.borrow_mut();
        let mut out: Vec<(u64, Offsets)> = st
            .partitions
            .iter_mut()
            .filter(|(_, part)| part.is_written())
            .map(|(&p, part)| (p, part.offsets(durable)))
            .collect();
        out.sort_unstable_by_key(|&(p, _)| p);
        out
    }

    /// Logs a control batch, applies it in memory before any other batch of
    /// the partition can be logged after it, and waits until it is durable.
    async fn control(
        &self,
        partition: u64,
        offset: u64,
        op: Control,
        key: &[u8],
        arg: &[u8],
    ) -> Result<()> {
        let mut value = Vec::with_capacity(1 + arg.len());
        value.push(op.byte());
        value.extend_from_slice(arg);
        let mut record = Record::new(value).with_timestamp(0);
        if !key.is_empty() {
            record = record.with_key(key.to_vec());
        }
        let records = [record];
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
                durable_end: part.durable_end,
            };
            // Nothing to log when the partition already ends at `offset`,
            // or a logged start covers it; but what set that end or start
            // may still wait for its fdatasync, and this call returns only
            // once its effect is durable: the flush below covers it.
            let noop = match op {
                Control::Truncate if offset < o.start || offset > o.end => {
                    return Err(out_of_range(partition, offset, o))
                }
                // Only acknowledged records can be deleted: a start past
                // them would hide appends that may still fail.
                Control::DeleteBefore if offset > part.acked_end.max(o.start) => {
                    let o = Offsets {
                        end: part.acked_end.max(o.start),
                        ..o
                    };
                    return Err(out_of_range(partition, offset, o));
                }
                Control::Truncate => offset == o.end,
                // A start that retention moved is not logged yet: log this
                // one, so that a crash keeps the start at `offset` at least.
                Control::DeleteBefore => offset <= part.logged_start,
                Control::PutMeta => {
                    let full = part.meta.len() >= MAX_META_KEYS && !part.meta.contains_key(key);
                    if full {
                        return Err(Error::InvalidArgument(format!(
                            "partition {partition} already holds {MAX_META_KEYS} metadata keys"
                        )));
                    }
                    false
                }
                Control::Reset => false,
            };
            // Other appends may have moved the end while this waited for
            // room: metadata goes at the end as it is now.
            let offset = if op == Control::PutMeta {
                o.end
            } else {
                offset
            };
            if !noop {
                self.log_control(st, partition, offset, op, &records, size, key, arg)?;
            }
        }
        self.wal.flush().await
    }

    /// Logs control batch `op` at `offset` of `partition` and applies it in
    /// memory, with no await in between.
    #[allow(clippy::too_many_arguments)]
    fn log_control(
        &self,
        st: &mut ShardState,
        partition: u64,
        offset: u64,
        op: Control,
        records: &[Record],
        size: usize,
        key: &[u8],
        arg: &[u8],
    ) -> Result<()> {
        let part = st.partitions.entry(partition).or_default();
        let info = BatchInfo {
            partition,
            base_offset: offset,
            flags: FLAG_CONTROL,
            ..BatchInfo::default()
        };
        let appended = self
            .wal
            .encode(info, Body::Records(records), size, |_| {})?;
        // A cached batch holding `offset` stays (it may not be written
        // yet); reads stop where its index entry ends.
        match op {
            Control::Truncate => st.memtable.remove_from(partition, offset),
            Control::DeleteBefore => {
                st.memtable.remove_before(partition, offset);
                part.logged_start = part.logged_start.max(offset);
            }
            Control::Reset => st.memtable.remove_from(partition, 0),
            Control::PutMeta => {}
        }
        let durable_end = part.durable_end;
        op.apply(part, offset, key, arg);
        if matches!(op, Control::Reset | Control::PutMeta) {
            part.barrier = Some(appended.group);
        }
        if op == Control::Reset {
            // The new ends are durable once the reset is.
            part.durable_end = durable_end.min(offset);
            part.pending.push_back((appended.group, offset));
        }
        Ok(())
    }

    /// Applies the retention limits of the configuration: drops the oldest
    /// sealed segments while the shard holds more than `retention_bytes` of
    /// segments, or while their newest record is older than
    /// `retention_age`. Partitions that had records there see their start
    /// move past them, durably. Runs by itself whenever a segment is sealed.
    pub async fn enforce_retention(&self) -> Result<()> {
        let config = self.config();
        let segments = self.wal.segments();
        let active = self.wal.active_segment();
        let oldest_kept_ms = config
            .retention_age
            .map(|age| crate::format::record::now_ms().saturating_sub(age.as_millis() as i64));
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
        // A deletion under way leaves what this freed to the next one:
        // retention runs after commits, which must not wait for it.
        self.delete_unneeded_segments(false).await
    }

    /// The last error of the retention that appends run when a segment is
    /// sealed, if any (the appends themselves succeeded).
    pub fn take_retention_error(&self) -> Option<Error> {
        self.state.borrow_mut().retention_error.take()
    }

    /// Deletes the oldest segments that hold no batch any partition needs,
    /// after recording every partition's offsets in the checkpoint. One
    /// deletion runs at a time. With `wait`, a call that finds one under
    /// way waits for it to end and then runs its own (the running one chose
    /// its segments before this call's change: a review found that
    /// returning at once left the segments it freed on disk); without, it
    /// leaves them to the next deletion.
    async fn delete_unneeded_segments(&self, wait: bool) -> Result<()> {
        let run = loop {
            let running = {
                let mut st = self.state.borrow_mut();
                if !st.deleting {
                    st.deleting = true;
                    st.deletion_runs += 1;
                    break st.deletion_runs;
                }
                st.deletion_runs
            };
            if !wait {
                return Ok(());
            }
            self.deletions_ended.wait_for(running).await;
        };
        /// Ends the run however the deletion ends, even if its future is
        /// dropped half way: clears the flag, then releases the calls
        /// waiting for their turn.
        struct Deleting<'a> {
            state: &'a RefCell<ShardState>,
            ended: &'a Watermark,
            run: u64,
        }
        impl Drop for Deleting<'_> {
            fn drop(&mut self) {
                self.state.borrow_mut().deleting = false;
                self.ended.advance(self.run);
            }
        }
        let _deleting = Deleting {
            state: &self.state,
            ended: &self.deletions_ended,
            run,
        };
        self.delete_unneeded_segments_now().await
    }

    /// Records every partition's offsets in the checkpoint, as of the end
    /// of the log, once everything logged is durable.
    pub(super) async fn write_checkpoint(&self) -> Result<()> {
        // One snapshot, with no await inside: the offsets reflect exactly
        // the batches before `log_end` (control batches are applied when
        // they are logged). The flush then makes all of them durable, so
        // no end in the checkpoint counts an append a crash could lose.
        let checkpoint = {
            let st = self.state.borrow();
            Checkpoint {
                log_end: self.wal.log_end(),
                // A partition with no offsets at all (one that long polls or
                // no-op control calls only named) has nothing to record: it
                // reads as never written without it.
                partitions: st
                    .partitions
                    .iter()
                    .filter(|(_, part)| part.is_written())
                    .map(|(&p, part)| (p, (part.start, part.end)))
                    .collect(),
                meta: st
                    .partitions
                    .iter()
                    .filter(|(_, part)| !part.meta.is_empty())
                    .map(|(&p, part)| (p, part.meta.clone()))
                    .collect(),
            }
        };
        self.wal.flush().await?;
        // A failure before the rename leaves the old checkpoint in place
        // and the shard usable; after it, the directory's state is unknown.
        let storage = self.wal.storage();
        match checkpoint::write_temp(storage, self.config(), &checkpoint).await {
            // A full disk: the reserve makes room for this checkpoint, which
            // lets the segments it accounts for be deleted.
            Err(Error::NoSpace { .. }) if self.release_reserve().await? => {
                checkpoint::write_temp(storage, self.config(), &checkpoint).await?
            }
            other => other?,
        }
        checkpoint::install(self.wal.storage(), self.config())
            .await
            .map_err(|e| self.wal.fail(e))?;
        // The starts in the checkpoint are durable now, retention's too.
        let mut st = self.state.borrow_mut();
        for (p, &(start, _)) in &checkpoint.partitions {
            if let Some(part) = st.partitions.get_mut(p) {
                part.logged_start = part.logged_start.max(start);
            }
        }
        Ok(())
    }

    async fn delete_unneeded_segments_now(&self) -> Result<()> {
        let segments = self.wal.segments();
        let active = self.wal.active_segment();
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
        self.ensure_reserve().await;
        Ok(())
    }
}
