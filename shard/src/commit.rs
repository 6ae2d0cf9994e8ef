//! The commit task: one per shard, the only writer of segment files.
//!
//! Appends encode their batch into the open [`Group`] and wait. The commit
//! task takes whole groups, writes each with one O_DIRECT write of the
//! group's own buffer (padded to the block size), and runs fdatasync as the
//! policy asks. Appends
//! that arrive while a write or an fdatasync is in flight gather in the next
//! group: that is group commit.
//!
//! Invariant: a group starts on a block boundary and the commit after it
//! starts on the next one, so no write ever touches a block that holds
//! acknowledged data.
//!
//! Invariant: writes are issued in log order, at most
//! [`MAX_WRITES_IN_FLIGHT`] at once, and a group is acknowledged only when
//! it and every write before it completed. A crash can therefore tear only
//! writes that were in flight together, at the end of the log; each batch
//! records in `floor_block` where the completed prefix ended when it was
//! appended, so recovery can tell such a tear from damage to completed data.

use std::{collections::VecDeque, rc::Rc, sync::Arc, time::Instant};

use futures_lite::future;
use glommio::task::JoinHandle;

use crate::{
    config::{FsyncPolicy, ShardConfig},
    error::{Error, Result},
    segment::{align_up, segment_path, spare_path, SegmentHeader, BLOCK_SIZE},
    stats::bump,
    storage::{IoBuffer, Storage, StorageFile},
    wal::{Group, Inner, State},
};

/// Name of the clean-shutdown marker in a shard directory.
const CLEAN_MARKER: &str = "clean-shutdown";
const CLEAN_MAGIC: u64 = u64::from_le_bytes(*b"CLCLEAN1");

/// Bytes queued for writing beyond which appends wait.
pub(crate) fn max_pending_bytes(config: &ShardConfig) -> usize {
    (config.max_write_bytes * 16).max(config.max_batch_bytes * 2)
}

/// Makes sure the open group can take a batch of `size` bytes: seals it when
/// its buffer is full or the batch would cross the end of its segment. An
/// empty group keeps its buffer for its successor.
pub(crate) fn make_room<F: StorageFile>(st: &mut State<F>, config: &ShardConfig, size: usize) {
    let open = &st.open;
    let end = open.start + (open.len + size) as u64;
    let crosses_segment = open.segment == 0 || end > config.segment_bytes;
    let full = open.len > 0 && open.room() < size;
    if !crosses_segment && !full {
        return;
    }
    let mut next = open.successor();
    if crosses_segment {
        next.segment = open.segment + 1;
        next.start = BLOCK_SIZE;
    }
    let mut old = std::mem::replace(&mut st.open, next);
    if old.len == 0 {
        // Nothing to write: the new group takes the old one's id and buffer.
        st.open.id = old.id;
        st.open.buf = old.buf.take();
    } else {
        st.sealed.push_back(old);
    }
}

/// Starts the commit task and the preparation of the first spare segment.
pub(crate) fn start<S: Storage>(inner: &Rc<Inner<S>>) {
    let task = glommio::spawn_local(run(inner.clone())).detach();
    let next = {
        let mut st = inner.state.borrow_mut();
        st.committer = Some(task);
        st.open.segment + 1
    };
    prepare_spare(inner, next);
}

/// Creates segment `sequence` in the background, under the spare's name:
/// preallocated, its header written, and when configured the rest filled
/// with zeros (so writes into it later neither allocate blocks nor convert
/// extents), then synced. A roll then only renames it. A spare left by a
/// crash is removed on open, whatever it holds.
fn prepare_spare<S: Storage>(inner: &Rc<Inner<S>>, sequence: u64) {
    inner.counters.spare_ready.set(false);
    let inner2 = inner.clone();
    let task = glommio::spawn_local(async move {
        let (config, storage) = (&inner2.config, &inner2.storage);
        let file = storage.open(&spare_path(&config.dir), true).await?;
        file.allocate(config.segment_bytes).await?;
        let mut buf = storage.alloc(BLOCK_SIZE as usize);
        let bytes = buf.as_mut_slice();
        bytes.fill(0);
        let header = SegmentHeader::new(config.shard_id, sequence, config.segment_bytes);
        bytes[..std::mem::size_of::<SegmentHeader>()].copy_from_slice(bytemuck::bytes_of(&header));
        write_all(&file, buf, BLOCK_SIZE as usize, 0).await?;
        if config.prezero_segments && config.fsync != FsyncPolicy::Never {
            zero_range(storage, &file, BLOCK_SIZE, config.segment_bytes).await?;
        } else {
            file.fdatasync().await?;
        }
        file.close().await?;
        inner2.counters.spare_ready.set(true);
        Ok(sequence)
    })
    .detach();
    inner.state.borrow_mut().spare = Some(task);
}

/// Writes zeros over `[from, to)`, preserving the bytes before `from` in its
/// block, then syncs. Used to pre-zero segments and to erase the garbage a
/// torn write left after the recovered tail.
pub(crate) async fn zero_range<S: Storage>(
    storage: &S,
    file: &S::File,
    from: u64,
    to: u64,
) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    let mut pos = from - from % BLOCK_SIZE;
    let keep = (from - pos) as usize;
    let chunk_max: u64 = 1 << 20;
    while pos < to {
        let len = chunk_max.min(align_up(to) - pos) as usize;
        let mut buf = storage.alloc(len);
        let bytes = buf.as_mut_slice();
        bytes.fill(0);
        if keep > 0 && pos < from {
            let old = file.read_at(pos, BLOCK_SIZE as usize).await?;
            bytes[..keep].copy_from_slice(&old[..keep]);
        }
        write_all(file, buf, len, pos).await?;
        pos += len as u64;
    }
    file.fdatasync().await
}

/// Writes `buf` (of `len` bytes) at `pos` and checks the count.
async fn write_all<F: StorageFile>(file: &F, buf: F::Buffer, len: usize, pos: u64) -> Result<()> {
    let written = file.write_at(buf, pos).await?;
    if written != len {
        return Err(Error::ShortWrite {
            path: file.path().to_path_buf(),
            position: pos,
            expected: len,
            written,
        });
    }
    Ok(())
}

/// Writes handed to the kernel at once, at most. More than one keeps the
/// device queue busy between commits; recovery tells a write torn in flight
/// from damage to completed data by each batch's `floor_block`.
const MAX_WRITES_IN_FLIGHT: usize = 4;

/// A group's write, handed to the kernel and not yet reaped.
struct InFlight {
    task: JoinHandle<Result<()>>,
    group: Written,
}

/// A group whose write was issued.
struct Written {
    id: u64,
    segment: u64,
    /// Block-aligned end of the group in its segment.
    end: u64,
    appends: u64,
}

/// The commit task's own state.
struct Committer<S: Storage> {
    inner: Rc<Inner<S>>,
    /// Interval policy: when the oldest unsynced write must be synced.
    sync_due: Option<Instant>,
    /// Writes in flight, oldest first; they complete groups in log order.
    in_flight: VecDeque<InFlight>,
    /// A group for the next segment, waiting for the writes in flight to
    /// complete before the roll.
    waiting: Option<Group<<S::File as StorageFile>::Buffer>>,
    /// Id of the last group handed to the kernel.
    issued: u64,
}

/// The commit loop. Ends when the shard closes or fails.
async fn run<S: Storage>(inner: Rc<Inner<S>>) {
    let mut c = Committer {
        inner: inner.clone(),
        sync_due: None,
        in_flight: VecDeque::new(),
        waiting: None,
        issued: 0,
    };
    loop {
        match c.step().await {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                fail(&inner, e);
                break;
            }
        }
    }
}

impl<S: Storage> Committer<S> {
    /// One round of the commit loop; returns false when the loop should end.
    async fn step(&mut self) -> Result<bool> {
        let inner = self.inner.clone();
        if inner.state.borrow().failed.is_some() {
            // Failed outside the commit path (see `Wal::fail`).
            return Ok(false);
        }
        let unsynced = inner.durable.get() < inner.written.get();
        if unsynced && self.sync_due.is_some_and(|t| Instant::now() >= t) {
            // Interval policy: the deadline of the oldest unsynced write passed.
            sync(&inner).await?;
            self.sync_due = None;
            return Ok(true);
        }
        self.issue().await?;
        let window_open = self.in_flight.len() < MAX_WRITES_IN_FLIGHT && !self.flush_waiting();
        if let Some(front) = self.in_flight.front_mut() {
            // Without an fdatasync per completion (`Never`, `Interval`), new
            // appends are written while earlier writes are in flight, up to
            // the window: a lone append does not wait for a write it is not
            // part of. Under `Always` they gather for the next group, which
            // shares the next fdatasync.
            let pipelined = inner.config.fsync != FsyncPolicy::Always && window_open;
            let done = if pipelined {
                future::or(async { Some((&mut front.task).await) }, async {
                    inner.work.wait().await;
                    None
                })
                .await
            } else {
                Some((&mut front.task).await)
            };
            let Some(done) = done else {
                return Ok(true);
            };
            let front = self.in_flight.pop_front().expect("awaited above");
            done.unwrap_or(Err(Error::Closed))?;
            self.complete(front.group).await?;
            return Ok(true);
        }
        let (closing, flush_wanted) = {
            let st = inner.state.borrow();
            (st.closing, st.sync_target > inner.durable.get())
        };
        if unsynced && (closing || flush_wanted) {
            sync(&inner).await?;
            self.sync_due = None;
            return Ok(true);
        }
        if closing {
            return Ok(false);
        }
        match self.sync_due {
            Some(t) => {
                let sleep = glommio::timer::Timer::new(t.saturating_duration_since(Instant::now()));
                future::or(inner.work.wait(), async {
                    sleep.await;
                })
                .await;
            }
            None => inner.work.wait().await,
        }
        Ok(true)
    }

    /// Hands group writes to the kernel until the window is full or nothing
    /// is pending. A group for the next segment waits until every write to
    /// the current one completed, then rolls.
    async fn issue(&mut self) -> Result<()> {
        let inner = self.inner.clone();
        while self.in_flight.len() < MAX_WRITES_IN_FLIGHT && !self.flush_waiting() {
            let Some(mut group) = self.waiting.take().or_else(|| take_group(&inner)) else {
                return Ok(());
            };
            let active = inner.state.borrow().written_at.0;
            if group.segment != active {
                if !self.in_flight.is_empty() {
                    self.waiting = Some(group);
                    return Ok(());
                }
                // Invariant: groups arrive in log order, one segment after another.
                assert_eq!(group.segment, active + 1, "groups skipped a segment");
                roll(&inner, group.segment).await?;
            }
            let file = inner.state.borrow().segments[&group.segment].clone();
            let total = align_up(group.len as u64) as usize;
            let mut buf = group.buf.take().expect("a group with batches has a buffer");
            buf.truncate(total);
            buf.as_mut_slice()[group.len..].fill(0);
            let pos = group.start;
            let task =
                glommio::spawn_local(async move { write_all(&*file, buf, total, pos).await })
                    .detach();
            bump(&inner.counters.writes, 1);
            bump(&inner.counters.bytes_written, total as u64);
            let group = Written {
                id: group.id,
                segment: group.segment,
                end: group.start + total as u64,
                appends: group.appends,
            };
            self.issued = group.id;
            self.in_flight.push_back(InFlight { task, group });
        }
        Ok(())
    }

    /// A flush (or a close) waits for groups already issued: issue no more
    /// until they are written and synced, or a steady stream of appends
    /// would keep the writes in flight, and the flush waiting, for ever.
    fn flush_waiting(&self) -> bool {
        let target = self.inner.state.borrow().sync_target;
        target > self.inner.durable.get() && self.issued >= target
    }

    /// A group's write completed, and so did every write before it.
    async fn complete(&mut self, done: Written) -> Result<()> {
        let inner = &self.inner;
        let c = &inner.counters;
        bump(&c.commits, 1);
        c.max_commit_appends
            .set(c.max_commit_appends.get().max(done.appends));
        inner.state.borrow_mut().written_at = (done.segment, done.end);
        inner.written.advance(done.id);
        match inner.config.fsync {
            FsyncPolicy::Always => sync(inner).await?,
            FsyncPolicy::Interval(d) => {
                self.sync_due.get_or_insert_with(|| Instant::now() + d);
            }
            FsyncPolicy::Never => {}
        }
        Ok(())
    }
}

/// Takes the oldest group waiting to be written: a sealed one, or the open
/// one if it holds anything.
fn take_group<S: Storage>(inner: &Inner<S>) -> Option<Group<<S::File as StorageFile>::Buffer>> {
    let mut st = inner.state.borrow_mut();
    let group = match st.sealed.pop_front() {
        Some(g) => Some(g),
        None if st.open.len > 0 => {
            let next = st.open.successor();
            Some(std::mem::replace(&mut st.open, next))
        }
        None => None,
    };
    if let Some(g) = &group {
        st.pending_bytes -= g.len;
    }
    group
}

/// fdatasync of the active segment; everything written becomes durable.
async fn sync<S: Storage>(inner: &Rc<Inner<S>>) -> Result<()> {
    let (file, written_at) = {
        let st = inner.state.borrow();
        (st.segments.get(&st.written_at.0).cloned(), st.written_at)
    };
    let id = inner.written.get();
    if let Some(file) = file {
        file.fdatasync().await?;
        bump(&inner.counters.fdatasyncs, 1);
    }
    inner.state.borrow_mut().durable_at = written_at;
    inner.durable.advance(id);
    Ok(())
}

/// Seals the active segment (fdatasync) and makes segment `sequence` active
/// from the prepared spare file.
async fn roll<S: Storage>(inner: &Rc<Inner<S>>, sequence: u64) -> Result<()> {
    let config = &inner.config;
    // Invariant: a roll never reuses a sequence; the rename below would
    // replace a segment holding data.
    assert!(
        inner.state.borrow().segments.keys().all(|&s| s < sequence),
        "roll to segment {sequence}, which is not past every existing segment"
    );
    sync(inner).await?;
    write_sidecar(inner, sequence - 1).await?;
    let spare = inner.state.borrow_mut().spare.take();
    let mut spare = spare.expect("a spare is always being prepared");
    let ready = match future::poll_once(&mut spare).await {
        Some(ready) => ready,
        None => {
            // Slow path: the segment is needed before it was ready.
            bump(&inner.counters.roll_waits, 1);
            spare.await
        }
    };
    let prepared = ready.unwrap_or(Err(Error::Closed))?;
    // Invariant: the spare was made for the segment that follows the active one.
    assert_eq!(
        prepared, sequence,
        "the spare holds the wrong segment header"
    );
    let path = segment_path(&config.dir, sequence);
    inner
        .storage
        .rename(&spare_path(&config.dir), &path)
        .await?;
    let file = inner.storage.open(&path, false).await?;
    inner.storage.sync_dir(&config.dir).await?;
    bump(&inner.counters.rolls, 1);
    {
        let mut st = inner.state.borrow_mut();
        st.segments.insert(sequence, Rc::new(file));
        st.written_at = (sequence, BLOCK_SIZE);
        st.durable_at = (sequence, BLOCK_SIZE);
    }
    prepare_spare(inner, sequence + 1);
    Ok(())
}

/// Writes the sidecar of sealed segment `segment` from the batches logged
/// in it (nothing for segment 0, which does not exist).
async fn write_sidecar<S: Storage>(inner: &Rc<Inner<S>>, segment: u64) -> Result<()> {
    if segment == 0 {
        return Ok(());
    }
    let batches: Vec<_> = {
        let mut st = inner.state.borrow_mut();
        let split = st.unsealed.partition_point(|b| b.segment <= segment);
        st.unsealed.drain(..split).collect()
    };
    crate::sidecar::write(&inner.storage, &inner.config, segment, &batches).await
}

/// Records the first failure and releases every waiter with it.
pub(crate) fn fail<S: Storage>(inner: &Rc<Inner<S>>, error: Error) {
    inner
        .state
        .borrow_mut()
        .failed
        .get_or_insert(Arc::new(error));
    inner.written.stop();
    inner.durable.stop();
}

/// After the commit task ended on close: record a clean shutdown (if no
/// failure), close the files, release any waiter.
pub(crate) async fn finish_close<S: Storage>(inner: &Rc<Inner<S>>) -> Result<()> {
    let (failed, segments, spare, written_at, damaged_tail) = {
        let mut st = inner.state.borrow_mut();
        (
            st.failed.clone(),
            std::mem::take(&mut st.segments),
            st.spare.take(),
            st.written_at,
            st.damaged_tail,
        )
    };
    inner.written.stop();
    inner.durable.stop();
    if let Some(spare) = spare {
        // A half-prepared spare is removed on the next open.
        let _ = spare.await;
    }
    let result = match failed {
        Some(e) => Err(Error::Failed(e)),
        // With the last segment's sidecar and the marker, the next open
        // scans nothing.
        None if written_at.0 > 0 && damaged_tail != Some(written_at.0) => {
            match write_sidecar(inner, written_at.0).await {
                Ok(()) => write_clean_marker(inner, written_at).await,
                Err(e) => Err(e),
            }
        }
        None => Ok(()),
    };
    // Close the files whatever happened: a file only dropped is closed
    // later by the executor, which may be gone by then (a leaked
    // descriptor keeps the file system busy).
    for (_, file) in segments {
        if let Ok(file) = Rc::try_unwrap(file) {
            let closed = file.close().await;
            if result.is_ok() {
                closed?;
            }
        }
    }
    result
}

/// Writes the clean-shutdown marker: the last segment and where its data
/// ends, so the next open can skip probing the tail.
async fn write_clean_marker<S: Storage>(
    inner: &Rc<Inner<S>>,
    (segment, end): (u64, u64),
) -> Result<()> {
    let path = inner.config.dir.join(CLEAN_MARKER);
    let file = inner.storage.open(&path, true).await?;
    let mut buf = inner.storage.alloc(BLOCK_SIZE as usize);
    let bytes = buf.as_mut_slice();
    bytes.fill(0);
    bytes[0..8].copy_from_slice(&CLEAN_MAGIC.to_le_bytes());
    bytes[8..16].copy_from_slice(&segment.to_le_bytes());
    bytes[16..24].copy_from_slice(&end.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    write_all(&file, buf, BLOCK_SIZE as usize, 0).await?;
    file.fdatasync().await?;
    file.close().await?;
    inner.storage.sync_dir(&inner.config.dir).await
}

/// Reads and removes the clean-shutdown marker. Returns the last segment and
/// the aligned end of its data when the marker is valid.
pub(crate) async fn take_clean_marker<S: Storage>(
    storage: &S,
    config: &ShardConfig,
) -> Result<Option<(u64, u64)>> {
    let path = config.dir.join(CLEAN_MARKER);
    if !storage.list(&config.dir)?.iter().any(|n| n == CLEAN_MARKER) {
        return Ok(None);
    }
    let file = storage.open(&path, false).await?;
    let bytes = file.read_at(0, BLOCK_SIZE as usize).await?;
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
    let valid = bytes.len() >= 28
        && u64_at(0) == CLEAN_MAGIC
        && crc32c::crc32c(&bytes[..24]).to_le_bytes() == bytes[24..28];
    let marker = valid.then(|| (u64_at(8), u64_at(16)));
    drop(bytes);
    file.close().await?;
    // The marker speaks for one restart only: a crash after this open must
    // not look clean.
    storage.remove(&path).await?;
    storage.sync_dir(&config.dir).await?;
    Ok(marker)
}
