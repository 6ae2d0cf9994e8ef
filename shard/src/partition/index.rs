//! The offset index of one partition: where each batch lives.
//!
//! Entries are kept in offset order in a `Vec`; a lookup is a binary search
//! with no allocation. Each entry takes 24 bytes.

use bytemuck::{Pod, Zeroable};

/// Where one batch of a partition lives.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct IndexEntry {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Sequence of the segment holding the batch.
    pub segment: u32,
    /// Byte position of the batch in the segment.
    pub position: u32,
    /// Encoded length of the batch.
    pub length: u32,
    /// Records in the batch.
    pub record_count: u32,
}

const _: () = assert!(std::mem::size_of::<IndexEntry>() == 24);

impl IndexEntry {
    /// The entry of a batch of `record_count` records from `base_offset`,
    /// `length` bytes at `position` in segment `segment`.
    pub fn new(
        base_offset: u64,
        segment: u64,
        position: u64,
        length: u32,
        record_count: u32,
    ) -> Self {
        IndexEntry {
            base_offset,
            // Invariant: config validation keeps segments under 4 GiB, and
            // 2^32 segments of at least 16 KiB exceed any disk.
            segment: u32::try_from(segment).expect("segment sequence fits u32"),
            position: u32::try_from(position).expect("segment size checked"),
            length,
            record_count,
        }
    }

    /// Offset one past the batch's last record.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// The batches of one partition, in offset order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<IndexEntry>,
}

impl OffsetIndex {
    /// Adds the batch that follows every indexed one.
    pub fn push(&mut self, entry: IndexEntry) {
        // Invariant: batches of a partition are indexed in offset order
        // without overlap.
        if let Some(last) = self.entries.last() {
            assert!(
                entry.base_offset >= last.end_offset(),
                "index entries overlap"
            );
        }
        self.entries.push(entry);
    }

    /// The batch holding `offset`, if any.
    ///
    /// Offsets are dense and batches usually alike, so the first probe
    /// guesses the position by interpolation; a binary search settles the
    /// rest.
    pub fn find(&self, offset: u64) -> Option<&IndexEntry> {
        let (first, last) = (self.entries.first()?, self.entries.last()?);
        if offset < first.base_offset || offset >= last.end_offset() {
            return None;
        }
        let span = last.end_offset() - first.base_offset;
        let guess = ((offset - first.base_offset) as u128 * self.entries.len() as u128
            / span as u128) as usize;
        let e = &self.entries[guess.min(self.entries.len() - 1)];
        if e.base_offset <= offset && offset < e.end_offset() {
            return Some(e);
        }
        let i = self.entries.partition_point(|e| e.end_offset() <= offset);
        self.entries.get(i).filter(|e| e.base_offset <= offset)
    }

    /// The batch holding `offset` and every later one, in offset order.
    pub fn from_offset(&self, offset: u64) -> &[IndexEntry] {
        match self.find(offset) {
            Some(e) => {
                let i = self
                    .entries
                    .partition_point(|x| x.base_offset < e.base_offset);
                &self.entries[i..]
            }
            None => &[],
        }
    }

    /// Drops every offset from `from` on: batches that start there or later
    /// go, and a batch holding `from` is cut short (its later records stay on
    /// disk but are no longer part of the partition).
    pub fn truncate(&mut self, from: u64) {
        let keep = self.entries.partition_point(|e| e.base_offset < from);
        self.entries.truncate(keep);
        if let Some(last) = self.entries.last_mut() {
            if last.end_offset() > from {
                last.record_count = (from - last.base_offset) as u32;
            }
        }
    }

    /// Drops every batch that ends at or before `offset`.
    pub fn remove_before(&mut self, offset: u64) {
        let drop = self.entries.partition_point(|e| e.end_offset() <= offset);
        self.entries.drain(..drop);
    }

    /// End offset of the last batch held in segment `segment` or older.
    pub fn end_through_segment(&self, segment: u32) -> Option<u64> {
        let n = self.entries.partition_point(|e| e.segment <= segment);
        n.checked_sub(1).map(|i| self.entries[i].end_offset())
    }

    /// The oldest segment holding an indexed batch.
    pub fn first_segment(&self) -> Option<u32> {
        self.entries.first().map(|e| e.segment)
    }

    /// Checks that every offset in `[start, end)` lies in exactly one
    /// indexed batch, and no batch lies wholly outside it; the reason when
    /// not.
    pub fn check_covers(&self, start: u64, end: u64) -> Result<(), String> {
        let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) else {
            return if start == end {
                Ok(())
            } else {
                Err(format!("no batch indexed for offsets [{start}, {end})"))
            };
        };
        if first.base_offset > start || first.end_offset() <= start || last.end_offset() != end {
            return Err(format!(
                "batches cover [{}, {}), offsets are [{start}, {end})",
                first.base_offset,
                last.end_offset()
            ));
        }
        match self
            .entries
            .windows(2)
            .find(|w| w[1].base_offset != w[0].end_offset())
        {
            Some(w) => Err(format!(
                "offsets [{}, {}) are in no batch",
                w[0].end_offset(),
                w[1].base_offset
            )),
            None => Ok(()),
        }
    }

    /// Number of indexed batches.
    #[cfg(any(test, feature = "internals"))]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no batch is indexed.
    #[cfg(any(test, feature = "internals"))]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base: u64, count: u32) -> IndexEntry {
        IndexEntry {
            base_offset: base,
            segment: 1,
            position: base as u32 * 100,
            length: 100,
            record_count: count,
        }
    }

    #[test]
    fn find_truncate_and_remove() {
        let mut ix = OffsetIndex::default();
        for (base, n) in [(0, 3), (3, 1), (4, 5), (20, 2)] {
            ix.push(entry(base, n));
        }
        assert_eq!(ix.find(0).unwrap().base_offset, 0);
        assert_eq!(ix.find(2).unwrap().base_offset, 0);
        assert_eq!(ix.find(3).unwrap().base_offset, 3);
        assert_eq!(ix.find(8).unwrap().base_offset, 4);
        assert_eq!(ix.find(9), None, "a gap left by a truncation");
        assert_eq!(ix.find(21).unwrap().base_offset, 20);
        assert_eq!(ix.find(22), None);
        ix.truncate(6);
        assert_eq!(ix.len(), 3);
        assert_eq!(
            ix.find(5).unwrap().end_offset(),
            6,
            "the batch holding 6 is cut short"
        );
        assert_eq!(ix.find(6), None);
        ix.push(entry(6, 1));
        ix.truncate(4);
        assert_eq!(ix.len(), 2);
        ix.remove_before(3);
        assert_eq!(ix.find(3).unwrap().base_offset, 3);
        assert_eq!(ix.len(), 1);
    }
}
