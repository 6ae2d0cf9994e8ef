//! The commit task: one per shard, the only writer of segment files.
//!
//! Appends encode their batch into the open [`Group`] and wait. The commit
//! task takes whole groups, writes each with one O_DIRECT write of the
//! group's own buffer (padded to the block size), and syncs as the policy
//! asks. Appends that arrive while writes are in flight gather in the next
//! group: that is group commit.
//!
//! Under `Always` every group is written with one durable write
//! ([`StorageFile::write_durable_at`]: on the real disk an io_uring write
//! to a segment opened with `O_DSYNC`), so a group is durable when its write
//! completes, and commits overlap like writes do: group N+1's write is in
//! flight while N's completes, and N+2 gathers. No separate fdatasync runs
//! on the commit path but at a roll, which seals the segment. A failure
//! stops the shard: nothing not yet durable is acknowledged.
//!
//! Invariant: writes are issued in log order, at most
//! [`MAX_WRITES_IN_FLIGHT`] at once, and a group is acknowledged only when
//! it and every write before it completed. A crash can therefore tear only
//! writes that were in flight together, at the end of the log; each batch
//! records in `floor_block` where the completed prefix ended when it was
//! appended, so recovery can tell such a tear from damage to completed data.

use std::{collections::VecDeque, rc::Rc, time::Duration};

use futures_lite::future;
use glommio::task::JoinHandle;

use crate::{
    config::FsyncPolicy,
    error::{Error, Result},
    format::segment::{align_up, BLOCK_SIZE},
    stats::bump,
    storage::{IoBuffer, Storage, StorageFile},
    wal::{
        roll::{mark_durable, roll, sync, write_all},
        state::{fail, take_group, Group, Inner},
    },
};

/// Starts the commit task. The first spare segment is prepared once the
/// open finished (`Wal::start_spare`).
pub(super) fn start<S: Storage>(inner: &Rc<Inner<S>>) {
    let task = glommio::spawn_local(run(inner.clone())).detach();
    inner.state.borrow_mut().committer = Some(task);
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

/// What the commit loop waited for.
enum Event {
    /// The oldest write in flight completed.
    Written(Option<Result<()>>),
    /// Appends arrived.
    Work,
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
    /// On the storage's clock ([`Storage::now`]).
    sync_due: Option<Duration>,
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
        if unsynced && self.sync_due.is_some_and(|t| inner.storage.now() >= t) {
            // Interval policy: the deadline of the oldest unsynced write passed.
            sync(&inner).await?;
            self.sync_due = None;
            return Ok(true);
        }
        self.issue().await?;
        let window_open = self.in_flight.len() < MAX_WRITES_IN_FLIGHT && !self.flush_waiting();
        if !self.in_flight.is_empty() {
            // New appends are written while earlier writes are in flight, up
            // to the window: a lone append does not wait for a write it is
            // not part of, and group N+1's write runs during group N's.
            let front = self.in_flight.front_mut().expect("checked above");
            let written = async { Event::Written((&mut front.task).await) };
            let work = async {
                if !window_open {
                    future::pending::<()>().await;
                }
                inner.work.wait().await;
                Event::Work
            };
            if let Event::Written(done) = future::or(written, work).await {
                let front = self.in_flight.pop_front().expect("awaited above");
                done.unwrap_or(Err(Error::Closed))?;
                self.complete(front.group);
            }
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
                let sleep = inner.storage.sleep(t.saturating_sub(inner.storage.now()));
                future::or(inner.work.wait(), sleep).await;
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
            let (file, written_at) = {
                let st = inner.state.borrow();
                (st.segments[&group.segment].clone(), st.written_at)
            };
            // Invariant: every commit starts on a block boundary, and no
            // write touches a block that holds acknowledged data: a group
            // starts at or past the block-aligned end of what was written.
            assert!(
                group.start.is_multiple_of(BLOCK_SIZE) && group.start >= BLOCK_SIZE,
                "commit group {} starts at {}, not on a block boundary past the segment header",
                group.id,
                group.start
            );
            assert!(
                group.segment > written_at.0 || group.start >= align_up(written_at.1),
                "commit group {} at segment {} position {} would rewrite written data (written to {:?})",
                group.id,
                group.segment,
                group.start,
                written_at
            );
            let total = align_up(group.len as u64) as usize;
            let mut buf = group.buf.take().expect("a group with batches has a buffer");
            buf.truncate(total);
            buf.as_mut_slice()[group.len..].fill(0);
            let pos = group.start;
            let written = Written {
                id: group.id,
                segment: group.segment,
                end: group.start + total as u64,
                appends: group.appends,
            };
            let durable = inner.config.fsync == FsyncPolicy::Always;
            let task =
                glommio::spawn_local(
                    async move { write_all(&*file, buf, total, pos, durable).await },
                )
                .detach();
            bump(&inner.counters.writes, 1);
            bump(&inner.counters.bytes_written, total as u64);
            self.issued = written.id;
            self.in_flight.push_back(InFlight {
                task,
                group: written,
            });
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

    /// A group's write completed, and so did every write before it; it is
    /// synced as the policy asks: under `Always` its write was durable.
    fn complete(&mut self, done: Written) {
        let at = (done.segment, done.end);
        let id = done.id;
        self.mark_written(done);
        let inner = &self.inner;
        match inner.config.fsync {
            FsyncPolicy::Always => {
                bump(&inner.counters.fdatasyncs, 1);
                mark_durable(inner, at, id);
            }
            FsyncPolicy::Interval(d) => {
                self.sync_due.get_or_insert_with(|| inner.storage.now() + d);
            }
            FsyncPolicy::Never => {}
        }
    }

    /// Records that a group's write completed, and so did every write
    /// before it.
    fn mark_written(&mut self, done: Written) {
        let inner = &self.inner;
        let c = &inner.counters;
        bump(&c.commits, 1);
        c.max_commit_appends
            .set(c.max_commit_appends.get().max(done.appends));
        // Invariant: groups complete in log order, one after another (an
        // empty group is never written and hands its id to the next).
        assert_eq!(
            done.id,
            inner.written.get() + 1,
            "commit group completed out of log order"
        );
        inner.state.borrow_mut().written_at = (done.segment, done.end);
        inner.written.advance(done.id);
    }
}
