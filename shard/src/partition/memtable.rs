//! The memtable: the most recent batches of every partition, in memory, so
//! reads at the tail need no I/O.
//!
//! Each partition's batches sit in a ring (a `VecDeque`) in offset order:
//! a partition is appended at its end, cut at its end by a truncation and
//! at its front by a delete-before or eviction, so a ring does in O(1)
//! what a sorted map does in O(log n), finds a batch by binary search, and
//! walks batches as a slice. Only the shard's thread touches it, so it
//! needs no concurrent structure (the skip list it replaced paid for
//! lock-freedom it never used: docs/ARCHITECTURE.md).
//!
//! The memtable is bounded by a byte budget. Batches leave oldest first
//! across partitions, and only once their commit group has been written, so
//! a batch is always readable from memory or from disk. It is a cache:
//! every batch is also in the WAL.
//!
//! The budget counts batch bytes. Appended batches share arena chunks
//! (`BatchArena`); a chunk is freed once none of its batches is held here
//! or by a record a reader keeps, so a reader holding one record of an
//! evicted batch keeps its chunk (256 KiB at most) in memory.

use std::collections::VecDeque;

use crate::{
    format::{arena::BatchArena, batch::Batch},
    partition::PartitionMap,
};

/// A batch held, with the commit group that carries it.
struct Held {
    /// Unique per insertion: what `order` names it by. A batch truncated
    /// and logged again at the same offset, even in the same group, is
    /// another entry.
    seq: u64,
    group: u64,
    batch: Batch,
}

impl Held {
    fn base(&self) -> u64 {
        self.batch.header().base_offset
    }
}

/// Recent batches, by partition, in offset order.
///
/// Invariant: in each partition's ring, base offsets and `seq` strictly
/// increase.
pub struct Memtable {
    partitions: PartitionMap<VecDeque<Held>>,
    /// Insertion order across partitions, for eviction: partition, `seq`.
    /// An entry whose batch a truncation or delete-before removed stays
    /// until eviction or compaction skips it.
    order: VecDeque<(u64, u64)>,
    /// The next insertion's `seq`.
    next_seq: u64,
    /// Where batches appended here are copied to.
    arena: BatchArena,
    /// Batches held (the live entries of `order`).
    held: usize,
    bytes: usize,
    budget: usize,
}

impl Memtable {
    /// An empty memtable holding at most `budget` bytes of written batches.
    pub fn new(budget: usize) -> Self {
        Memtable {
            partitions: PartitionMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
            arena: BatchArena::new(budget),
            held: 0,
            bytes: 0,
            budget,
        }
    }

    /// Bytes of batches held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Copies `bytes`, a batch just encoded, to be inserted: batches
    /// appended together share an allocation (see `BatchArena`).
    pub fn keep(&mut self, bytes: &[u8]) -> Batch {
        self.arena.keep(bytes)
    }

    /// Adds a batch carried by commit group `group`. It must start past
    /// every batch of its partition held (an offset is logged once until a
    /// truncation, which removes its batch from here first).
    pub fn insert(&mut self, batch: Batch, group: u64) {
        let (partition, base) = (batch.header().partition, batch.header().base_offset);
        let ring = self.partitions.entry(partition).or_default();
        // Invariant: base offsets increase along a partition's ring.
        debug_assert!(
            ring.back().is_none_or(|h| h.base() < base),
            "partition {partition} batch at {base} cached out of order"
        );
        self.bytes += batch.as_bytes().len();
        let seq = self.next_seq;
        self.next_seq += 1;
        ring.push_back(Held { seq, group, batch });
        self.held += 1;
        self.order.push_back((partition, seq));
    }

    /// Evicts the oldest batches while over budget, as far as commit group
    /// `written` (the last group whose write completed).
    pub fn evict(&mut self, written: u64) {
        while let Some(&(partition, seq)) = self.order.front() {
            let ring = self.partitions.get_mut(&partition);
            // A partition's oldest live entry in `order` is its ring's front:
            // both follow insertion order, and removals take a ring's ends.
            let front = ring.as_ref().and_then(|r| r.front());
            if let Some(group) = front.filter(|h| h.seq == seq).map(|h| h.group) {
                if self.bytes <= self.budget || group > written {
                    return;
                }
                let ring = ring.expect("live above");
                let h = ring.pop_front().expect("live above");
                self.bytes -= h.batch.as_bytes().len();
                self.held -= 1;
                if ring.is_empty() {
                    self.partitions.remove(&partition);
                }
            }
            self.order.pop_front();
        }
    }

    /// The batch of `partition` holding `offset`, if it is here.
    #[cfg(any(test, feature = "internals"))]
    pub fn get(&self, partition: u64, offset: u64) -> Option<Batch> {
        let ring = self.partitions.get(&partition)?;
        ring.get(holding(ring, offset)?).map(|h| h.batch.clone())
    }

    /// Shows `visit` the consecutive batches of `partition` from the one
    /// holding `from` on, in offset order, up to the first gap or until
    /// `visit` returns false.
    pub fn walk(&self, partition: u64, from: u64, mut visit: impl FnMut(&Batch) -> bool) {
        let Some(ring) = self.partitions.get(&partition) else {
            return;
        };
        let Some(first) = holding(ring, from) else {
            return;
        };
        let mut next = from;
        for h in ring.range(first..) {
            let header = h.batch.header();
            if header.base_offset > next || !visit(&h.batch) {
                return;
            }
            next = header.end_offset();
        }
    }

    /// Drops the batches of `partition` that end at or before `offset`.
    pub fn remove_before(&mut self, partition: u64, offset: u64) {
        let Some(ring) = self.partitions.get_mut(&partition) else {
            return;
        };
        while ring
            .front()
            .is_some_and(|h| h.batch.header().end_offset() <= offset)
        {
            let h = ring.pop_front().expect("checked above");
            self.bytes -= h.batch.as_bytes().len();
            self.held -= 1;
        }
        self.forget_if_empty(partition);
    }

    /// Drops the batches of `partition` that start at or after `from`.
    pub fn remove_from(&mut self, partition: u64, from: u64) {
        let Some(ring) = self.partitions.get_mut(&partition) else {
            return;
        };
        while ring.back().is_some_and(|h| h.base() >= from) {
            let h = ring.pop_back().expect("checked above");
            self.bytes -= h.batch.as_bytes().len();
            self.held -= 1;
        }
        self.forget_if_empty(partition);
    }

    /// Drops an emptied partition's ring, and the entries of `order` whose
    /// batches are gone once they outnumber the live ones: a partition
    /// truncated and rewritten again and again never fills the budget, so
    /// eviction alone would not bound `order`.
    fn forget_if_empty(&mut self, partition: u64) {
        if self
            .partitions
            .get(&partition)
            .is_some_and(VecDeque::is_empty)
        {
            self.partitions.remove(&partition);
        }
        if self.order.len() > 2 * self.held + 1024 {
            let partitions = &self.partitions;
            self.order.retain(|&(p, seq)| {
                partitions.get(&p).is_some_and(|ring| {
                    let i = ring.partition_point(|h| h.seq < seq);
                    ring.get(i).is_some_and(|h| h.seq == seq)
                })
            });
        }
    }
}

/// Index in `ring` of the batch holding `offset`, if any.
fn holding(ring: &VecDeque<Held>, offset: u64) -> Option<usize> {
    // The last batch starting at or before `offset`.
    let i = ring
        .partition_point(|h| h.base() <= offset)
        .checked_sub(1)?;
    (ring[i].batch.header().end_offset() > offset).then_some(i)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::format::{
        batch::{encode_batch, encoded_batch_len, BatchInfo},
        record::Record,
    };

    /// A batch of `count` 10-byte records of `partition` from `base`.
    fn batch(partition: u64, base: u64, count: usize) -> Batch {
        let records = vec![Record::new(vec![1; 10]); count];
        let mut bytes = vec![0; encoded_batch_len(&records).unwrap().0];
        let info = BatchInfo {
            partition,
            base_offset: base,
            ..BatchInfo::default()
        };
        encode_batch(&mut bytes, 0, info, &records, 0);
        Batch::encoded(&bytes)
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Partition, records, whether in a new commit group.
        Append(u64, usize, bool),
        Evict,
        RemoveBefore(u64, u64),
        RemoveFrom(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3u64, 1..4usize, any::<bool>()).prop_map(|(p, n, g)| Op::Append(p, n, g)),
            1 => Just(Op::Evict),
            1 => (0..3u64, 0..40u64).prop_map(|(p, o)| Op::RemoveBefore(p, o)),
            1 => (0..3u64, 0..40u64).prop_map(|(p, o)| Op::RemoveFrom(p, o)),
        ]
    }

    proptest! {
        /// Against a model (every batch held, by partition and base
        /// offset): lookups and walks agree, the byte count is right, and
        /// eviction takes the oldest batches first (by insertion, also
        /// among batches of one commit group and a batch truncated and
        /// logged again in it), only written ones, only while over budget.
        #[test]
        fn memtable_matches_a_model(ops in proptest::collection::vec(op(), 1..200)) {
            let budget = 200;
            let mut mt = Memtable::new(budget);
            // (partition, base) -> (insertion, group, end, bytes)
            let mut model: BTreeMap<(u64, u64), (u64, u64, u64, usize)> = BTreeMap::new();
            let mut inserted = 0;
            let mut ends = [0u64; 3];
            let mut group = 0;
            for op in ops {
                match op {
                    Op::Append(p, n, new_group) => {
                        group += u64::from(new_group);
                        inserted += 1;
                        let b = batch(p, ends[p as usize], n);
                        model.insert((p, ends[p as usize]), (inserted, group, ends[p as usize] + n as u64, b.as_bytes().len()));
                        ends[p as usize] += n as u64;
                        mt.insert(b, group);
                    }
                    Op::Evict => {
                        // The three newest groups are not written yet.
                        let written = group.saturating_sub(3);
                        mt.evict(written);
                        loop {
                            let bytes: usize = model.values().map(|v| v.3).sum();
                            let oldest = model.iter().min_by_key(|(_, v)| v.0).map(|(k, v)| (*k, v.1));
                            match oldest {
                                Some((k, g)) if bytes > budget && g <= written => { model.remove(&k); }
                                _ => break,
                            }
                        }
                    }
                    Op::RemoveBefore(p, o) => {
                        mt.remove_before(p, o);
                        // From the front: after a truncation inside a batch,
                        // that batch overlaps the next and still leads.
                        while let Some(k) = model
                            .range((p, 0)..=(p, u64::MAX))
                            .next()
                            .filter(|(_, v)| v.2 <= o)
                            .map(|(k, _)| *k)
                        {
                            model.remove(&k);
                        }
                    }
                    Op::RemoveFrom(p, o) => {
                        mt.remove_from(p, o);
                        model.retain(|&(q, base), _| q != p || base < o);
                        ends[p as usize] = ends[p as usize].min(o);
                    }
                }
                prop_assert_eq!(mt.bytes(), model.values().map(|v| v.3).sum::<usize>());
                for p in 0..3u64 {
                    for o in 0..ends[p as usize] + 1 {
                        let want = model.range(..=(p, o)).next_back()
                            .filter(|(k, v)| k.0 == p && v.2 > o).map(|(k, _)| k.1);
                        let got = mt.get(p, o).map(|b| b.header().base_offset);
                        prop_assert_eq!(got, want);
                        let mut walked = Vec::new();
                        mt.walk(p, o, |b| { walked.push(b.header().base_offset); true });
                        let mut expect = Vec::new();
                        let mut next = o;
                        if let Some(first) = want {
                            for (k, v) in model.range((p, first)..=(p, u64::MAX)) {
                                if k.1 > next { break; }
                                expect.push(k.1);
                                next = v.2;
                            }
                        }
                        prop_assert_eq!(walked, expect);
                    }
                }
            }
        }
    }
}
