//! Records read back from a partition, sharing their batch's bytes.

use bytes::Bytes;

use crate::format::{
    batch::Batch,
    record::{RecordView, HEADER_OVERHEAD},
};

/// A record read back from a partition. It shares its batch's bytes
/// (reference-counted), so reading allocates nothing per record and
/// cloning is cheap; the batch, and the arena chunk a recent batch sits
/// in, stay in memory while any of its records is held.
#[derive(Clone)]
pub struct StoredRecord {
    /// The bytes of the record's batch.
    batch: Bytes,
    offset: u64,
    timestamp: i64,
    /// Byte ranges within the batch.
    key: Option<(u32, u32)>,
    value: (u32, u32),
    headers: (u32, u32),
    header_count: u16,
}

impl StoredRecord {
    /// The record `view`, which borrows from `batch`.
    #[inline]
    pub(crate) fn new(batch: &Batch, view: &RecordView<'_>) -> Self {
        let base = batch.as_bytes().as_ptr() as usize;
        let range = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            // Invariant: the view's slices lie inside the batch (< 4 GiB).
            debug_assert!(start + s.len() <= batch.as_bytes().len());
            (start as u32, s.len() as u32)
        };
        StoredRecord {
            batch: batch.shared_bytes().clone(),
            offset: view.offset,
            timestamp: view.timestamp,
            key: view.key.map(range),
            value: range(view.value),
            headers: range(view.headers),
            header_count: view.header_count,
        }
    }

    fn slice(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.batch[start as usize..(start + len) as usize]
    }

    fn view(&self) -> RecordView<'_> {
        RecordView {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(|k| self.slice(k)),
            value: self.slice(self.value),
            header_count: self.header_count,
            headers: self.slice(self.headers),
        }
    }

    /// The record's offset in its partition.
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.map(|k| self.slice(k))
    }
    /// The value.
    pub fn value(&self) -> &[u8] {
        self.slice(self.value)
    }
    /// The headers, in the order they were written.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.view().headers()
    }
    /// Bytes of key, value and header names and values: what counts
    /// against a read's `max_bytes`.
    #[inline]
    pub(crate) fn payload_len(&self) -> usize {
        // Each header is framed by a u16 name length and a u32 value length.
        let header_bytes = self.headers.1 as usize - HEADER_OVERHEAD * self.header_count as usize;
        self.key.map_or(0, |k| k.1 as usize) + self.value.1 as usize + header_bytes
    }
}

impl PartialEq for StoredRecord {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset
            && self.timestamp == other.timestamp
            && self.key() == other.key()
            && self.value() == other.value()
            && self.headers().eq(other.headers())
    }
}

impl Eq for StoredRecord {}

impl std::fmt::Debug for StoredRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRecord")
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key())
            .field("value_len", &self.value.1)
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{
        batch::{encode_batch, encoded_batch_len, BatchInfo},
        record::Record,
    };

    /// What a read counts against `max_bytes`: key, value, header names
    /// and values, not their framing.
    #[test]
    fn payload_len_counts_key_value_and_headers() {
        let records = [Record::new(vec![1; 10])
            .with_key(vec![2; 3])
            .with_header("abc", vec![3; 5])
            .with_header("", vec![])];
        let mut bytes = vec![0; encoded_batch_len(&records).unwrap().0];
        encode_batch(&mut bytes, 0, BatchInfo::default(), &records, 0);
        let batch = Batch::decode(&bytes, 0).unwrap();
        let view = batch.records().next().unwrap();
        let stored = StoredRecord::new(&batch, &view);
        assert_eq!(stored.payload_len(), 10 + 3 + 3 + 5);
        assert_eq!(stored.key(), Some(&[2u8; 3][..]));
        assert_eq!(stored.value(), &[1u8; 10][..]);
        assert_eq!(
            stored.headers().collect::<Vec<_>>(),
            vec![("abc", &[3u8; 5][..]), ("", &[][..])]
        );
    }
}
