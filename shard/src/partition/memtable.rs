//! The memtable: the most recent batches of every partition, in memory, so
//! reads at the tail need no I/O.
//!
//! A lock-free skip list (`crossbeam-skiplist`) keyed by (partition, base
//! offset), bounded by a byte budget. Batches leave oldest first, and only
//! once their commit group has been written, so a batch is always readable
//! from memory or from disk. It is a cache: every batch is also in the WAL.

use std::{collections::VecDeque, ops::Bound, sync::Arc};

use crossbeam_epoch as epoch;
use crossbeam_skiplist::base::SkipList;

use crate::format::batch::Batch;

/// Recent batches, by (partition, base offset).
///
/// The skip list is used through its base API with an epoch guard per
/// operation: walking it then follows pointers without taking a reference
/// on every node (the `SkipMap` wrapper's entries cost two atomic
/// operations a step, and its `range` kept evicted batches alive).
/// Invariant: every `RefEntry` the base API hands out is released.
pub struct Memtable {
    /// Batch and the commit group that carries it.
    map: SkipList<(u64, u64), (u64, Arc<Batch>)>,
    /// Insertion order, for eviction: key and commit group.
    order: VecDeque<((u64, u64), u64)>,
    bytes: usize,
    budget: usize,
}

impl Memtable {
    /// An empty memtable holding at most `budget` bytes of written batches.
    pub fn new(budget: usize) -> Self {
        Memtable {
            map: SkipList::new(epoch::default_collector().clone()),
            order: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// Bytes of batches held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a batch carried by commit group `group`.
    pub fn insert(&mut self, batch: Batch, group: u64) {
        let key = (batch.header().partition, batch.header().base_offset);
        let guard = &epoch::pin();
        // Invariant: an offset is logged once until a truncation, which
        // removes its batch from here first.
        debug_assert!(
            !self.map.contains_key(&key, guard),
            "batch {key:?} cached twice"
        );
        self.bytes += batch.as_bytes().len();
        self.map
            .insert(key, (group, Arc::new(batch)), guard)
            .release(guard);
        self.order.push_back((key, group));
    }

    /// Evicts the oldest batches while over budget, as far as commit group
    /// `written` (the last group whose write completed).
    pub fn evict(&mut self, written: u64) {
        let guard = &epoch::pin();
        while self.bytes > self.budget {
            match self.order.front() {
                Some(&(key, group)) if group <= written => {
                    self.order.pop_front();
                    // The key may have been removed by a truncation and
                    // reused by a newer batch: evict only the one queued.
                    if let Some(e) = self.map.get(&key, guard).filter(|e| e.value().0 == group) {
                        self.bytes -= e.value().1.as_bytes().len();
                        e.remove();
                    }
                }
                _ => return,
            }
        }
    }

    /// The batch of `partition` holding `offset`, if it is here.
    #[cfg(any(test, feature = "internals"))]
    pub fn get(&self, partition: u64, offset: u64) -> Option<Arc<Batch>> {
        let guard = &epoch::pin();
        let e = self
            .map
            .upper_bound(Bound::Included(&(partition, offset)), guard)?;
        let batch = &e.value().1;
        let h = batch.header();
        (h.partition == partition && h.end_offset() > offset).then(|| batch.clone())
    }

    /// Shows `visit` the consecutive batches of `partition` from the one
    /// holding `from` on, in offset order, up to the first gap or until
    /// `visit` returns false.
    pub fn walk(&self, partition: u64, from: u64, mut visit: impl FnMut(&Arc<Batch>) -> bool) {
        let guard = &epoch::pin();
        let mut entry = self
            .map
            .upper_bound(Bound::Included(&(partition, from)), guard)
            .filter(|e| e.key().0 == partition && e.value().1.header().end_offset() > from);
        let mut next = from;
        while let Some(e) = entry {
            let b = &e.value().1;
            if b.header().base_offset > next || !visit(b) {
                return;
            }
            next = b.header().end_offset();
            entry = e.next().filter(|n| n.key().0 == partition);
        }
    }

    /// Drops the batches of `partition` that end at or before `offset`.
    pub fn remove_before(&mut self, partition: u64, offset: u64) {
        self.remove_where(partition, 0, |b| b.header().end_offset() <= offset);
    }

    /// Drops the batches of `partition` that start at or after `from`.
    pub fn remove_from(&mut self, partition: u64, from: u64) {
        self.remove_where(partition, from, |_| true);
    }

    fn remove_where(&mut self, partition: u64, from: u64, doomed: impl Fn(&Batch) -> bool) {
        let guard = &epoch::pin();
        let keys: Vec<(u64, u64)> = self
            .map
            .range((partition, from)..=(partition, u64::MAX), guard)
            .filter(|e| doomed(&e.value().1))
            .map(|e| *e.key())
            .collect();
        for key in keys {
            if let Some(e) = self.map.remove(&key, guard) {
                self.bytes -= e.value().1.as_bytes().len();
                e.release(guard);
            }
        }
    }
}
