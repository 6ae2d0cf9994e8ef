//! Partitions: each one's offsets, its offset index and the control
//! operations logged for it; the memtable of recent batches; and the
//! replay that rebuilds them all from the recovered log on open.
//!
//! Every partition has dense offsets from 0, an end (the next offset), a
//! start (the first readable offset), an acknowledged end (what reads
//! serve: appends whose policy was met) and a durable end (what an
//! fdatasync covered). Starts and truncations are logged as control
//! batches in the WAL, in order with the data, and replayed on open on top
//! of the partition checkpoint ([`crate::format::checkpoint`]).

pub(crate) mod index;
pub(crate) mod memtable;
pub(crate) mod replay;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    task::Waker,
};

use crate::partition::index::OffsetIndex;

/// A map keyed by partition id, with a cheap hash (see `rustc-hash` in
/// Cargo.toml): it is looked up several times per append.
pub(crate) type PartitionMap<V> = HashMap<u64, V, rustc_hash::FxBuildHasher>;

/// An operation on a partition, logged as a control batch: one record
/// whose value starts with the operation's byte, at the batch's base
/// offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Moves the partition's start offset up to the batch's base offset.
    DeleteBefore,
    /// Removes the partition's offsets from the batch's base offset on.
    Truncate,
    /// Empties the partition and sets its start and end to the batch's base
    /// offset (any value, also past the old end).
    Reset,
    /// Sets the metadata value of the record's key to the rest of its value
    /// (past the operation's byte). Moves no offset: the batch's base offset
    /// is the partition's end when it was logged.
    PutMeta,
}

/// A control batch's record as recovery read it back, for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ControlRecord {
    /// The operation's byte ([`Control::byte`]).
    pub byte: u8,
    /// The record's key (a metadata key), empty when it has none.
    pub key: Vec<u8>,
    /// The record's value past the operation's byte.
    pub arg: Vec<u8>,
}

impl Control {
    /// The byte the control record's value starts with.
    pub(crate) fn byte(self) -> u8 {
        match self {
            Control::DeleteBefore => 1,
            Control::Truncate => 2,
            Control::Reset => 3,
            Control::PutMeta => 4,
        }
    }

    /// The operation whose byte is `byte`, if any.
    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Control::DeleteBefore),
            2 => Some(Control::Truncate),
            3 => Some(Control::Reset),
            4 => Some(Control::PutMeta),
            _ => None,
        }
    }

    /// Applies the operation logged at `offset`, with its record's `key`
    /// and `arg`, to `part`, in memory.
    pub(crate) fn apply(self, part: &mut Partition, offset: u64, key: &[u8], arg: &[u8]) {
        match self {
            Control::DeleteBefore => part.delete_before(offset),
            Control::Truncate => part.truncate(offset),
            Control::Reset => part.reset(offset),
            Control::PutMeta => {
                part.meta.insert(key.to_vec(), arg.to_vec());
            }
        }
    }
}

/// The offsets of a partition, as readers see them.
///
/// Invariant: `start <= end` and `durable_end <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offsets {
    /// First readable offset.
    pub start: u64,
    /// End of the acknowledged records (an append is acknowledged when its
    /// future resolves `Ok`): what reads serve. Appends accepted and not
    /// yet acknowledged lie past it, unreadable: their commit may still
    /// fail, and after a crash their offsets may hold other records.
    pub end: u64,
    /// End of the acknowledged records an fdatasync has covered: what a
    /// crash keeps. Below `end` under `Never` and `Interval` until the next
    /// sync; equal to it under `Always`.
    pub durable_end: u64,
}

/// One partition's state.
#[derive(Debug, Default)]
pub(crate) struct Partition {
    /// First readable offset.
    pub(crate) start: u64,
    /// The start as far as the log (a delete-before's control batch) or the
    /// checkpoint records it. Retention moves `start` past it in memory
    /// only, until the next checkpoint. Invariant: `logged_start <= start`.
    pub(crate) logged_start: u64,
    /// Next offset to be assigned.
    pub(crate) end: u64,
    /// End of the records an fdatasync has covered; may pass `acked_end`
    /// until the appends of the synced group are acknowledged.
    pub(crate) durable_end: u64,
    /// Where each batch of the partition lives.
    pub(crate) index: OffsetIndex,
    /// Ends of appended batches not yet known durable: (commit group, end).
    pub(crate) pending: VecDeque<(u64, u64)>,
    /// Ends of appended batches not yet acknowledged: (commit group, end),
    /// in log order. A truncation clamps them, so an append cut by one
    /// acknowledges only what is left of its offsets, never offsets that a
    /// later append took over and that may still wait for their commit.
    pub(crate) unacked: VecDeque<(u64, u64)>,
    /// End of the appends acknowledged so far (their policy was met).
    pub(crate) acked_end: u64,
    /// Truncations applied so far: a read that a truncation crossed ends
    /// with what it read before it.
    pub(crate) truncations: u64,
    /// Tasks waiting in `Shard::wait_for` for `acked_end` to move, each
    /// under its wait's id. Invariant: a wait takes its waker out when it
    /// ends, however it ends (a timeout, a dropped future), so waits that
    /// time out on a quiet partition do not pile up.
    pub(crate) tail_waiters: Vec<(u64, Waker)>,
    /// Small values kept with the partition (a Raft vote, a commit index),
    /// logged in order with its appends and kept by the checkpoint.
    pub(crate) meta: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Commit group of the partition's last reset or metadata batch, until
    /// it is durable. Invariant: no data batch of the partition is logged
    /// after it before then, so a crash cannot keep a later append and lose
    /// the reset or metadata before it (their batches take no offset a gap
    /// would show).
    pub(crate) barrier: Option<u64>,
}

impl Partition {
    /// The offsets readers see, with the durable end moved up to the
    /// batches whose commit group `durable_group` covered.
    pub(crate) fn offsets(&mut self, durable_group: u64) -> Offsets {
        while let Some(&(group, end)) = self.pending.front() {
            if group > durable_group {
                break;
            }
            self.durable_end = end;
            self.pending.pop_front();
        }
        // Retention may move the start past appends of a sealed segment
        // that are not acknowledged yet: nothing is readable then.
        let end = self.acked_end.max(self.start);
        Offsets {
            start: self.start,
            end,
            durable_end: self.durable_end.min(end),
        }
    }

    /// Records that commit group `group` met the fsync policy: the appends
    /// it and every earlier group carried are acknowledged. Wakes tail
    /// readers.
    pub(crate) fn acknowledge(&mut self, group: u64) {
        let mut end = self.acked_end;
        while let Some(&(g, e)) = self.unacked.front() {
            if g > group {
                break;
            }
            end = end.max(e);
            self.unacked.pop_front();
        }
        // Invariant: only offsets that exist are acknowledged.
        debug_assert!(end <= self.end, "acknowledged past the end");
        if end > self.acked_end {
            self.acked_end = end;
            for (_, w) in self.tail_waiters.drain(..) {
                w.wake();
            }
        }
    }

    /// Removes the offsets from `from` on.
    pub(crate) fn truncate(&mut self, from: u64) {
        self.truncations += 1;
        self.index.truncate(from);
        self.acked_end = self.acked_end.min(from);
        self.end = from;
        self.durable_end = self.durable_end.min(from);
        // A pending batch past the cut still carries the offsets before it:
        // when its group is durable, so are they (up to `from`).
        for (_, end) in self.pending.iter_mut().chain(self.unacked.iter_mut()) {
            *end = (*end).min(from);
        }
    }

    /// Empties the partition: start and end become `offset` (any value),
    /// nothing before it is readable. Appends in flight are cut as by a
    /// truncation: their commit acknowledges no offset.
    pub(crate) fn reset(&mut self, offset: u64) {
        self.truncations += 1;
        self.index = OffsetIndex::default();
        self.start = offset;
        self.logged_start = offset;
        self.end = offset;
        self.acked_end = offset;
        self.durable_end = offset;
        for (_, end) in self.pending.iter_mut().chain(self.unacked.iter_mut()) {
            *end = (*end).min(offset);
        }
        for (_, w) in self.tail_waiters.drain(..) {
            w.wake();
        }
    }

    /// Whether the partition holds anything worth keeping: offsets, or
    /// metadata. One that long polls or reads only named is not.
    pub(crate) fn is_written(&self) -> bool {
        self.end > 0 || !self.meta.is_empty()
    }

    /// Whether the partition is as if never named: nothing written, read
    /// in flight, waited for or reset. Such an entry can be forgotten.
    pub(crate) fn is_untouched(&self) -> bool {
        !self.is_written()
            && self.start == 0
            && self.truncations == 0
            && self.tail_waiters.is_empty()
            && self.barrier.is_none()
            && self.pending.is_empty()
            && self.unacked.is_empty()
    }

    /// Moves the start up to `offset` (never down).
    pub(crate) fn delete_before(&mut self, offset: u64) {
        self.start = self.start.max(offset);
        self.index.remove_before(self.start);
    }
}
