//! Reads of a shard: by offset and by range, from the memtable or from
//! disk with read-ahead, and the long polls of consumers at the tail.

use std::{future::poll_fn, task::Poll, time::Duration};

use crate::{
    error::{Error, Result},
    format::{batch::Batch, stored_record::StoredRecord},
    partition::{index::IndexEntry, Offsets},
    shard::Shard,
    storage::Storage,
};

/// A cold read also fetches the partition's next batches up to its end,
/// found by offset in the index (in whatever segments they lie), up to
/// this many bytes read (the gaps a merged read spans included) and this
/// many batches, with every device read in flight at once.
const READ_AHEAD_BYTES: u64 = 1 << 20;
const READ_AHEAD_BATCHES: usize = 256;

/// Slack on a long poll's timeout check: the timer adds the timeout to a
/// later `now` than the check's.
const FOREVER_MARGIN: Duration = Duration::from_secs(24 * 3600);
/// Batches of one cold read at most this far apart in their segment share
/// a device read (the bytes between are read and dropped): cheaper than
/// another read on this kind of disk.
const MERGE_GAP: u64 = 32 << 10;

/// A wait in [`Shard::wait_for`]: when it ends, however it ends (the end
/// passed, the timeout, the caller dropped it), its waker leaves the
/// partition, and a partition that only the wait named is forgotten.
struct TailWaiter<'a, S: Storage> {
    shard: &'a Shard<S>,
    partition: u64,
    id: u64,
}

impl<S: Storage> Drop for TailWaiter<'_, S> {
    fn drop(&mut self) {
        // Not borrowed elsewhere unless a panic unwinds through a borrow;
        // then the shard stops anyway.
        let Ok(mut st) = self.shard.state.try_borrow_mut() else {
            return;
        };
        let Some(part) = st.partitions.get_mut(&self.partition) else {
            return;
        };
        part.tail_waiters.retain(|(id, _)| *id != self.id);
        if part.is_untouched() {
            st.partitions.remove(&self.partition);
        }
    }
}

impl<S: Storage> Shard<S> {
    /// Waits until an acknowledged append takes the end of `partition` past
    /// `offset`, or until `timeout` passes. Returns whether the end passed
    /// `offset`. This is the long poll of a consumer following the tail; it
    /// parks, it does not spin. Once the shard is closing (see
    /// [`Shard::release_waiters`]) it returns at once: false then means
    /// closing, not a timeout.
    pub async fn wait_for(&self, partition: u64, offset: u64, timeout: Duration) -> bool {
        let waiter = {
            let mut st = self.state.borrow_mut();
            st.last_waiter += 1;
            TailWaiter {
                shard: self,
                partition,
                id: st.last_waiter,
            }
        };
        let passed = poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            let released = st.waiters_released;
            let part = st.partitions.entry(partition).or_default();
            if part.acked_end > offset {
                Poll::Ready(true)
            } else if released {
                Poll::Ready(false)
            } else {
                let waker = cx.waker();
                match part
                    .tail_waiters
                    .iter_mut()
                    .find(|(id, _)| *id == waiter.id)
                {
                    Some((_, w)) if w.will_wake(waker) => {}
                    Some((_, w)) => w.clone_from(waker),
                    None => part.tail_waiters.push((waiter.id, waker.clone())),
                }
                Poll::Pending
            }
        });
        let expired = async {
            // A timeout the clock cannot add to now (`Duration::MAX`, or
            // centuries) means no timeout: the timer would overflow.
            if std::time::Instant::now()
                .checked_add(timeout.saturating_add(FOREVER_MARGIN))
                .is_some()
            {
                glommio::timer::sleep(timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
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
        // A follower may wait for offsets already accepted and not yet
        // acknowledged: they will be readable once their commit completes.
        let o = self.offsets(partition);
        let accepted = self
            .state
            .borrow()
            .partitions
            .get(&partition)
            .map_or(0, |p| p.end);
        if offset < o.start || offset > accepted.max(o.end) {
            return Err(out_of_range(partition, offset, o));
        }
        if !self.wait_for(partition, offset, timeout).await {
            // The shard may have failed, or begun to close, meanwhile.
            self.wal.usable()?;
            if self.is_closing() {
                return Err(Error::Closed);
            }
            return Ok(Vec::new());
        }
        // A truncation may have moved the end while this waited.
        let o = self.check_offset(partition, offset)?;
        self.collect(partition, offset, o.end, max_bytes).await
    }

    /// Acknowledged records of `partition` from `offset` on, up to
    /// `max_bytes` of keys, values and headers, but always at least one
    /// record when `offset` is below the end. Reading at the end returns
    /// nothing; past it, [`Error::OffsetOutOfRange`] (the end is the
    /// acknowledged end: see [`Offsets`]).
    pub async fn read(
        &self,
        partition: u64,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        let o = self.check_offset(partition, offset)?;
        self.collect(partition, offset, o.end, max_bytes).await
    }

    /// Exactly the records of `partition` in `[start, end)`, all
    /// acknowledged (an `end` past the acknowledged end is refused); only the first
    /// of them when a truncate or delete-before crossed the read while it
    /// waited for the disk (what existed when it started, never a mix).
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
        // Room for a typical read; a long one grows the vector.
        let mut out = Vec::with_capacity((stop - from).min(128) as usize);
        let mut bytes = 0usize;
        let mut next = from;
        let started = self.truncations(partition);
        while next < stop && (out.is_empty() || bytes < max_bytes) {
            if next > from {
                // Other operations ran while this read waited for the disk.
                // After a truncation, or a delete-before past `next`, what is
                // left is not what existed when the read started: it ends
                // with what it has (never empty: the first step returns the
                // batch holding `from`).
                let o = self.offsets(partition);
                if self.truncations(partition) != started || next < o.start || next >= o.end {
                    debug_assert!(!out.is_empty(), "the first step returned a record");
                    return Ok(out);
                }
            }
            let (at, want) = (next, max_bytes.saturating_sub(bytes) as u64);
            // The records of one batch, up to `stop` and `max_bytes`;
            // false once the read is complete.
            let mut take = |batch: &Batch, batch_end: u64| {
                let end = batch_end.min(stop);
                for v in batch
                    .records()
                    .filter(|r| r.offset() >= next && r.offset() < end)
                {
                    let r = StoredRecord::new(batch, &v);
                    if !out.is_empty() && bytes.saturating_add(r.payload_len()) > max_bytes {
                        return false;
                    }
                    bytes += r.payload_len();
                    out.push(r);
                }
                next = batch_end;
                next < stop
            };
            match self.walk_cached(partition, at, &mut take) {
                Walked::Done => return Ok(out),
                Walked::More => continue,
                Walked::NotCached => {}
            }
            for (batch, batch_end) in self.read_batches_at(partition, at, stop, want).await? {
                if !take(&batch, batch_end) {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Truncations applied to `partition` so far.
    fn truncations(&self, partition: u64) -> u64 {
        let st = self.state.borrow();
        st.partitions.get(&partition).map_or(0, |p| p.truncations)
    }

    /// Checks that `offset` can be read in `partition`; returns its offsets.
    fn check_offset(&self, partition: u64, offset: u64) -> Result<Offsets> {
        let o = self.offsets(partition);
        if offset < o.start || offset > o.end {
            return Err(out_of_range(partition, offset, o));
        }
        Ok(o)
    }

    /// Shows `take` the batch of `partition` holding `offset` and the
    /// batches that follow it in the memtable, with where each one's
    /// records end for the partition (before the batch's own end when a
    /// truncation cut it short), until `take` returns false.
    fn walk_cached(
        &self,
        partition: u64,
        offset: u64,
        take: &mut impl FnMut(&Batch, u64) -> bool,
    ) -> Walked {
        let st = self.state.borrow();
        let Some(part) = st.partitions.get(&partition) else {
            return Walked::NotCached;
        };
        // The index, from the batch holding `offset`, says where each
        // batch's records end; it runs beside the memtable's batches,
        // which the walk gives from the one holding `offset` without a gap
        // (a batch evicted between two held ones ends the walk: nothing is
        // skipped).
        let mut entries = part.index.from_offset(offset).iter();
        let mut walked = Walked::NotCached;
        st.memtable.walk(partition, offset, |b| {
            let base = b.header().base_offset;
            let Some(e) = entries.find(|e| e.base_offset >= base) else {
                return false;
            };
            if e.base_offset != base {
                return false;
            }
            if take(b, e.end_offset()) {
                walked = Walked::More;
                true
            } else {
                walked = Walked::Done;
                false
            }
        });
        walked
    }

    /// The batch of `partition` holding `offset`, read from disk and
    /// verified, with the partition's next batches before `stop` (read
    /// ahead, their device reads in flight together, about `want_bytes` in
    /// all); each with where its records end for the partition.
    async fn read_batches_at(
        &self,
        partition: u64,
        offset: u64,
        stop: u64,
        want_bytes: u64,
    ) -> Result<Vec<(Batch, u64)>> {
        let written = self.wal.written_at();
        let limit = READ_AHEAD_BYTES.min(want_bytes);
        // Read ahead by offset: the batch holding `offset` and the
        // partition's next batches, wherever they lie (interleaved with
        // other partitions' batches), but only written ones (a batch
        // encoded into a group not written yet is in the index already)
        // and only before `stop`. One device read per extent of batches
        // close together in a segment; the bytes read, gaps included, stay
        // within `limit` past the first batch.
        let mut entries: Vec<IndexEntry> = Vec::new();
        let mut extents: Vec<(u64, Vec<(u64, u32)>)> = Vec::new();
        {
            let st = self.state.borrow();
            let index = st
                .partitions
                .get(&partition)
                .map_or(&[][..], |p| p.index.from_offset(offset));
            let (mut bytes, mut extent_end) = (0, 0);
            for e in index.iter().take(READ_AHEAD_BATCHES) {
                let (segment, position, length) =
                    (u64::from(e.segment), u64::from(e.position), e.length);
                let end = position + u64::from(length);
                let merge = extents
                    .last()
                    .is_some_and(|(s, _)| *s == segment && position <= extent_end + MERGE_GAP);
                let cost = if merge {
                    end - extent_end
                } else {
                    u64::from(length)
                };
                if !entries.is_empty()
                    && (e.base_offset >= stop || (segment, end) > written || bytes + cost > limit)
                {
                    break;
                }
                bytes += cost;
                extent_end = end;
                match extents.last_mut() {
                    Some((_, spans)) if merge => spans.push((position, length)),
                    _ => extents.push((segment, vec![(position, length)])),
                }
                entries.push(*e);
            }
        }
        if entries.is_empty() {
            return Err(Error::corrupted(
                self.config().dir.clone(),
                0,
                format!("partition {partition} offset {offset} is in no batch"),
            ));
        }
        let batches = if let [(segment, spans)] = &extents[..] {
            self.wal.read_batches(*segment, spans).await?
        } else {
            let reads = extents
                .iter()
                .map(|(segment, spans)| self.wal.read_batches_exact(*segment, spans));
            let mut batches = Vec::with_capacity(entries.len());
            for read in futures_util::future::join_all(reads).await {
                batches.extend(read?);
            }
            batches
        };
        let mut out = Vec::with_capacity(batches.len());
        for (batch, e) in batches.into_iter().zip(&entries) {
            let h = batch.header();
            if h.partition != partition || h.base_offset != e.base_offset {
                return Err(Error::corrupted(
                    self.wal.segment_path(u64::from(e.segment)),
                    u64::from(e.position),
                    format!(
                        "index points partition {partition} offset {} at another batch",
                        e.base_offset
                    ),
                ));
            }
            out.push((batch, e.end_offset()));
        }
        Ok(out)
    }
}

/// How far [`Shard::walk_cached`] went.
enum Walked {
    /// The memtable does not hold the batch asked for.
    NotCached,
    /// Batches were taken and the read wants more.
    More,
    /// The read is complete.
    Done,
}

/// The error for `offset` outside `o`.
pub(super) fn out_of_range(partition: u64, offset: u64, o: Offsets) -> Error {
    Error::OffsetOutOfRange {
        partition,
        offset,
        start: o.start,
        end: o.end,
    }
}
