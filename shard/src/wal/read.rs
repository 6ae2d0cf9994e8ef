//! Reading batches back from the WAL's segments: one aligned read for a
//! run of batches, or none when the read cache holds them, each verified
//! (checksum, and position against the header) before it is returned.

use std::{path::Path, rc::Rc};

use crate::{
    error::{Error, Result},
    format::{
        batch::Batch,
        segment::{align_up, crc_seed, BLOCK_SIZE},
    },
    stats::bump,
    storage::{Storage, StorageFile},
    wal::Wal,
};

impl<S: Storage> Wal<S> {
    /// Reads the batch of `length` bytes at `position` in `segment` and
    /// verifies it. Only batches whose write completed can be read.
    pub async fn read_batch(&self, segment: u64, position: u64, length: u32) -> Result<Batch> {
        let mut batches = self.read_batches(segment, &[(position, length)]).await?;
        Ok(batches.pop().expect("one batch asked, one read"))
    }

    /// Reads the batches at `spans` (position, length; in position order)
    /// of `segment` with one read covering them all, and verifies each. The
    /// device read goes on past them into the read cache (see
    /// [`READ_AHEAD`]).
    pub async fn read_batches(&self, segment: u64, spans: &[(u64, u32)]) -> Result<Vec<Batch>> {
        self.read_spans(segment, spans, true).await
    }

    /// [`Wal::read_batches`], with the device read ending at the last
    /// batch: for a reader that issues its own reads ahead, several at once.
    pub async fn read_batches_exact(
        &self,
        segment: u64,
        spans: &[(u64, u32)],
    ) -> Result<Vec<Batch>> {
        self.read_spans(segment, spans, false).await
    }

    async fn read_spans(
        &self,
        segment: u64,
        spans: &[(u64, u32)],
        ahead: bool,
    ) -> Result<Vec<Batch>> {
        let (Some(&(first, _)), Some(&(last, last_len))) = (spans.first(), spans.last()) else {
            return Ok(Vec::new());
        };
        let (file, written) = {
            let st = self.inner.state.borrow();
            let file = st.segments.get(&segment).cloned();
            (file, st.written_at)
        };
        let end = last + u64::from(last_len);
        if (segment, end) > written {
            return Err(Error::InvalidArgument(format!(
                "segment {segment} position {last}: not written yet"
            )));
        }
        let Some(file) = file else {
            return Err(Error::InvalidArgument(format!(
                "segment {segment} does not exist"
            )));
        };
        let from = first - first % BLOCK_SIZE;
        bump(&self.inner.counters.batch_reads, spans.len() as u64);
        let cached = (self.inner.read_cache.borrow()).get(segment, from, align_up(end));
        if let Some((start, buf)) = cached {
            match self.verify(file.path(), segment, start, &buf, spans) {
                Ok(batches) => {
                    bump(&self.inner.counters.cache_hits, spans.len() as u64);
                    return Ok(batches);
                }
                // The extent's read-ahead part was never verified: a read
                // the device damaged is dropped and read again, never
                // served twice.
                Err(_) => (self.inner.read_cache.borrow_mut()).remove(segment, start),
            }
        }
        let to = if ahead {
            self.read_ahead_end(segment, align_up(end), written)
        } else {
            align_up(end)
        };
        let buf = Rc::new(file.read_at(from, (to - from) as usize).await?);
        let batches = self.verify(file.path(), segment, from, &buf, spans)?;
        // Kept only when what was asked verified, and only while the
        // segment exists: retention may have removed it during the read.
        if self.inner.state.borrow().segments.contains_key(&segment) {
            (self.inner.read_cache.borrow_mut()).insert(segment, from, buf);
        }
        Ok(batches)
    }

    /// Decodes the batches at `spans` of `segment` from `buf`, read at
    /// `from`, checking each one's checksum and its position.
    fn verify(
        &self,
        path: &Path,
        segment: u64,
        from: u64,
        buf: &[u8],
        spans: &[(u64, u32)],
    ) -> Result<Vec<Batch>> {
        let seed = crc_seed(self.inner.config.shard_id, segment);
        spans
            .iter()
            .map(|&(position, length)| {
                let skip = (position - from) as usize;
                let bytes = buf.get(skip..skip + length as usize).ok_or_else(|| {
                    Error::corrupted(path, position, "segment ends inside the batch")
                })?;
                let batch = Batch::decode(bytes, seed)
                    .map_err(|e| Error::corrupted(path, position, e.to_string()))?;
                batch
                    .header()
                    .check_position(position)
                    .map_err(|why| Error::corrupted(path, position, why))?;
                Ok(batch)
            })
            .collect()
    }

    /// Where a device read that must reach `end` of `segment` stops: with
    /// the read cache on, [`READ_AHEAD`] further (the next batches of a
    /// segment are what a reader behind the memtable asks for next), but
    /// never into blocks not written yet (see `read_cache`'s invariant).
    fn read_ahead_end(&self, segment: u64, end: u64, written: (u64, u64)) -> u64 {
        if self.inner.config.read_cache_bytes == 0 {
            return end;
        }
        let limit = if segment == written.0 {
            align_up(written.1)
        } else {
            self.inner.config.segment_bytes
        };
        // Invariant: the caller reads only written batches.
        debug_assert!(end <= limit, "read past the written end");
        (end + READ_AHEAD).min(limit).max(end)
    }
}

/// Bytes a device read takes past what it was asked for, into the read
/// cache.
const READ_AHEAD: u64 = 64 << 10;
