//! The memtable's arena: where batches just encoded are copied to be kept,
//! in large chunks that are reused once their batches are gone.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::format::batch::{peek_header, Batch};

/// Where batches encoded here are copied to be kept: large chunks filled
/// one batch after another, each batch a shared slice of its chunk.
///
/// Filled chunks are kept, oldest first, and refilled once no batch (or
/// record read from one) shares them any more: the memtable evicts in
/// insertion order, so the oldest chunk is the first to come free, and a
/// steady stream of appends reuses the same memory instead of allocating
/// (and faulting in) a fresh chunk every 256 KiB. While the oldest is
/// still shared (its batches are still held, or a reader holds a record),
/// a fresh chunk is allocated and the oldest stays first in line; once
/// more than `kept` chunks are filed, the oldest shared ones are let go,
/// their memory freed with their last slice.
pub(crate) struct BatchArena {
    /// The unfilled rest of the current chunk, once there is one.
    free: Option<BytesMut>,
    /// Filled chunks (each handle the empty rest of its chunk), oldest first.
    filled: VecDeque<BytesMut>,
    /// Most filled chunks kept.
    kept: usize,
    /// Chunks allocated so far.
    #[cfg(test)]
    allocated: usize,
}

/// Bytes of an arena chunk.
const ARENA_CHUNK: usize = 256 << 10;
/// A batch larger than this gets an allocation of its own: a chunk holds
/// at least four, so the memory the memtable's batches hold stays close to
/// what it counts.
const ARENA_LARGEST: usize = ARENA_CHUNK / 4;

impl BatchArena {
    /// An arena that keeps chunks for `budget` bytes of batches.
    ///
    /// Invariant: `kept` covers the chunks `budget` bytes of live batches
    /// can span. A batch that does not fit the rest of a chunk starts the
    /// next one, so a filled chunk holds at least `ARENA_CHUNK -
    /// ARENA_LARGEST` bytes of batches; counting whole chunks instead (as
    /// this once did) let go of the oldest chunk while it was still shared,
    /// every time, so a steady stream faulted in a fresh chunk every 256
    /// KiB (the page faults of a run halved with this bound).
    pub(crate) fn new(budget: usize) -> Self {
        BatchArena {
            free: None,
            filled: VecDeque::new(),
            kept: budget.div_ceil(ARENA_CHUNK - ARENA_LARGEST) + 1,
            #[cfg(test)]
            allocated: 0,
        }
    }

    /// Copies `bytes`, a batch this process just encoded with
    /// [`encode_batch`], into the arena.
    pub(crate) fn keep(&mut self, bytes: &[u8]) -> Batch {
        let header = peek_header(bytes).expect("an encoded batch has a header");
        debug_assert_eq!(header.length as usize, bytes.len());
        if bytes.len() > ARENA_LARGEST {
            return Batch::from_encoded(header, Bytes::copy_from_slice(bytes));
        }
        if self
            .free
            .as_ref()
            .is_none_or(|f| f.capacity() < bytes.len())
        {
            self.next_chunk();
        }
        let Some(free) = self.free.as_mut() else {
            unreachable!("next_chunk sets the current chunk")
        };
        free.extend_from_slice(bytes);
        Batch::from_encoded(header, free.split().freeze())
    }

    /// Files the current chunk as filled and makes the oldest filled chunk,
    /// if it came free, or else a new one, the current chunk.
    fn next_chunk(&mut self) {
        if let Some(filled) = self.free.take() {
            self.filled.push_back(filled);
        }
        while let Some(mut oldest) = self.filled.pop_front() {
            // Takes back the whole chunk if no slice of it is alive.
            if oldest.try_reclaim(ARENA_CHUNK) {
                self.free = Some(oldest);
                return;
            }
            if self.filled.len() < self.kept {
                self.filled.push_front(oldest);
                break;
            }
        }
        self.free = Some(BytesMut::with_capacity(ARENA_CHUNK));
        #[cfg(test)]
        {
            self.allocated += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        batch::{encode_batch, encoded_batch_len, BatchInfo},
        record::Record,
    };

    /// Batches kept by an arena read back as encoded, whether they share a
    /// chunk, start a new one, or are larger than a chunk; dropping the
    /// arena leaves the batches it handed out intact.
    #[test]
    fn an_arena_keeps_batches_intact_across_chunks() {
        let mut arena = BatchArena::new(1 << 20);
        let mut kept = Vec::new();
        for (i, size) in [
            10,
            3_000,
            100,
            ARENA_CHUNK / 8,
            ARENA_LARGEST + 1,
            ARENA_CHUNK + 5,
            7,
        ]
        .into_iter()
        .cycle()
        .take(60)
        .enumerate()
        {
            let records = [Record::new(vec![i as u8; size])];
            let (len, _) = encoded_batch_len(&records).unwrap();
            let mut out = vec![0; len];
            let info = BatchInfo {
                base_offset: i as u64,
                ..BatchInfo::default()
            };
            encode_batch(&mut out, 9, info, &records, 1);
            kept.push((arena.keep(&out), out));
        }
        drop(arena);
        for (batch, out) in &kept {
            assert_eq!(batch.as_bytes(), &out[..]);
            assert_eq!(Batch::decode(batch.as_bytes(), 9).as_ref(), Ok(batch));
        }
    }

    /// A filled chunk is refilled once every batch in it is dropped, and
    /// never while one is held: a held batch keeps its bytes.
    #[test]
    fn an_arena_reuses_a_chunk_only_once_its_batches_are_dropped() {
        let batch = |i: u8| {
            let records = [Record::new(vec![i; ARENA_CHUNK / 5])];
            let (len, _) = encoded_batch_len(&records).unwrap();
            let mut out = vec![0; len];
            encode_batch(&mut out, 9, BatchInfo::default(), &records, 1);
            out
        };
        let mut arena = BatchArena::new(1 << 20);
        // Four batches fill the first chunk; the fifth starts a second.
        let first: Vec<Batch> = (0..4).map(|i| arena.keep(&batch(i))).collect();
        let start = first[0].as_bytes().as_ptr();
        let held = arena.keep(&batch(4));
        let held_start = held.as_bytes().as_ptr();
        assert_ne!(held_start, start, "a new chunk while the first is shared");
        drop(first);
        // The second chunk fills; the third is the first, reclaimed.
        let second: Vec<Batch> = (5..8).map(|i| arena.keep(&batch(i))).collect();
        let reused = arena.keep(&batch(8));
        assert_eq!(
            reused.as_bytes().as_ptr(),
            start,
            "the free chunk is reused"
        );
        assert_eq!(reused.as_bytes(), &batch(8)[..]);
        // The second chunk is still shared: the next is fresh, and every
        // held batch keeps its bytes.
        let more: Vec<Batch> = (9..12).map(|i| arena.keep(&batch(i))).collect();
        let fresh = arena.keep(&batch(12));
        assert_ne!(fresh.as_bytes().as_ptr(), held_start);
        assert_eq!(held.as_bytes(), &batch(4)[..]);
        for (i, b) in (5..8).zip(&second).chain((9..12).zip(&more)) {
            assert_eq!(b.as_bytes(), &batch(i)[..]);
        }
    }

    /// A memtable that keeps the newest `budget` bytes of batches, each
    /// too large to share a chunk evenly (a chunk's tail stays empty),
    /// reuses the arena's chunks in steady state: no fresh chunk after the
    /// first `budget` bytes.
    #[test]
    fn a_steady_stream_reuses_chunks_that_batches_leave_part_empty() {
        // Four batches fill a chunk and leave a fifth of it empty.
        let budget = 8 << 20;
        let records = [Record::new(vec![7; ARENA_CHUNK / 5 + 1024])];
        let (len, _) = encoded_batch_len(&records).unwrap();
        let mut out = vec![0; len];
        encode_batch(&mut out, 9, BatchInfo::default(), &records, 1);
        let mut arena = BatchArena::new(budget);
        let mut memtable = VecDeque::new();
        let mut held = 0;
        let mut keep = |arena: &mut BatchArena| {
            memtable.push_back(arena.keep(&out));
            held += len;
            while held > budget {
                memtable.pop_front();
                held -= len;
            }
        };
        for _ in 0..4 * budget / len {
            keep(&mut arena);
        }
        let warm = arena.allocated;
        for _ in 0..4 * budget / len {
            keep(&mut arena);
        }
        assert_eq!(
            arena.allocated, warm,
            "chunks were allocated in steady state"
        );
    }
}
