//! The read cache: extents of segment files recently read from the device,
//! so that a consumer just behind the memtable, or several consumers of
//! partitions written together, do not pay a device read per batch.
//!
//! Segments are read with O_DIRECT, which skips the page cache; this is the
//! shard's own, small and bounded in bytes. An extent is kept whole (the
//! buffer the device read filled) and found by the range it covers.
//!
//! Invariant: an extent holds only blocks that are never written again: a
//! sealed segment's, or an active segment's below the written end (a
//! commit never rewrites a block that holds written data). So a cached
//! extent is never stale while its segment exists; a removed segment's
//! extents are dropped with it.

use std::{
    collections::{BTreeMap, VecDeque},
    rc::Rc,
};

/// Recently read extents, by (segment, block-aligned start), oldest evicted
/// first, at most `budget` bytes.
pub(super) struct ReadCache<B> {
    extents: BTreeMap<(u64, u64), Rc<B>>,
    /// Insertion order, for eviction.
    order: VecDeque<(u64, u64)>,
    bytes: usize,
    budget: usize,
}

impl<B: std::ops::Deref<Target = [u8]>> ReadCache<B> {
    /// An empty cache of at most `budget` bytes (0: it keeps nothing).
    pub(super) fn new(budget: usize) -> Self {
        ReadCache {
            extents: BTreeMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// The extent of `segment` that covers `[from, to)`, with its start.
    pub(super) fn get(&self, segment: u64, from: u64, to: u64) -> Option<(u64, Rc<B>)> {
        let (&(s, start), buf) = self.extents.range(..=(segment, from)).next_back()?;
        (s == segment && start + buf.len() as u64 >= to).then(|| (start, buf.clone()))
    }

    /// Keeps `buf`, read at `start` of `segment`, evicting the oldest
    /// extents past the budget. An extent larger than the budget is not
    /// kept.
    pub(super) fn insert(&mut self, segment: u64, start: u64, buf: Rc<B>) {
        if buf.len() > self.budget {
            return;
        }
        self.bytes += buf.len();
        if let Some(old) = self.extents.insert((segment, start), buf) {
            self.bytes -= old.len();
        } else {
            self.order.push_back((segment, start));
        }
        while self.bytes > self.budget {
            let key = self.order.pop_front().expect("bytes held are in order");
            if let Some(old) = self.extents.remove(&key) {
                self.bytes -= old.len();
            }
        }
    }

    /// Drops the extent read at `start` of `segment`.
    pub(super) fn remove(&mut self, segment: u64, start: u64) {
        if let Some(old) = self.extents.remove(&(segment, start)) {
            self.bytes -= old.len();
            self.order.retain(|&key| key != (segment, start));
        }
    }

    /// Drops the extents of `segment` (removed from disk).
    pub(super) fn forget_segment(&mut self, segment: u64) {
        let doomed: Vec<_> = self
            .extents
            .range((segment, 0)..=(segment, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in doomed {
            let old = self.extents.remove(&key).expect("listed above");
            self.bytes -= old.len();
        }
        self.order.retain(|&(s, _)| s != segment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_covering_extents_and_evicts_oldest_first() {
        let mut c: ReadCache<Vec<u8>> = ReadCache::new(10_000);
        c.insert(1, 4096, Rc::new(vec![1; 8192]));
        assert_eq!(c.get(1, 4096, 4096 + 8192).map(|e| e.0), Some(4096));
        assert_eq!(c.get(1, 8192, 12288).map(|e| e.0), Some(4096));
        assert!(c.get(1, 8192, 12289).is_none(), "past the extent");
        assert!(c.get(1, 0, 4096).is_none(), "before the extent");
        assert!(c.get(2, 4096, 8192).is_none(), "another segment");
        c.insert(2, 0, Rc::new(vec![2; 4096]));
        assert!(c.get(1, 4096, 8192).is_none(), "oldest evicted past budget");
        assert!(c.get(2, 0, 4096).is_some());
        c.insert(3, 0, Rc::new(vec![3; 20_000]));
        assert!(c.get(3, 0, 4096).is_none(), "larger than the budget");
        c.insert(4, 0, Rc::new(vec![4; 4096]));
        c.remove(4, 0);
        assert!(c.get(4, 0, 4096).is_none(), "removed");
        c.forget_segment(2);
        assert!(c.get(2, 0, 4096).is_none());
        assert_eq!(c.bytes, 0);
    }
}
