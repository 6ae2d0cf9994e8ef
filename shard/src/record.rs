//! Records as callers build them and as reads return them.
//!
//! Encoded record layout (little-endian), repeated `record_count` times after
//! the batch header; docs/FORMAT.md has the full picture:
//!
//! ```text
//! 0   u32  length of the rest of the record (from byte 4 on)
//! 4   i64  timestamp, milliseconds since the Unix epoch
//! 12  u32  key length, or 0xFFFF_FFFF when the record has no key
//! 16  u32  value length
//! 20  u16  header count
//! 22  key bytes, value bytes, then per header:
//!          u16 name length, name (UTF-8), u32 value length, value
//! ```

use std::sync::Arc;

use crate::batch::Batch;

/// Fixed bytes of an encoded record before its key.
pub const RECORD_OVERHEAD: usize = 22;
/// Fixed bytes of an encoded header before its name and after it.
pub const HEADER_OVERHEAD: usize = 6;
/// Key length that marks a record without a key.
pub(crate) const NO_KEY: u32 = u32::MAX;

/// A record to append: a value with an optional key, headers and timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the Unix epoch; `None` takes the append time.
    pub(crate) timestamp: Option<i64>,
}

impl Record {
    /// A record holding `value`, with no key and no headers, timestamped at
    /// append time.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Record {
            value: value.into(),
            ..Record::default()
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header; names need not be unique.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the timestamp in milliseconds since the Unix epoch.
    pub fn with_timestamp(mut self, ms: i64) -> Self {
        self.timestamp = Some(ms);
        self
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The headers in the order they were added.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The timestamp set by [`Record::with_timestamp`], if any.
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    /// Size of this record once encoded, or `None` when a field does not fit
    /// its length prefix (a key or value of 4 GiB, a header name of 64 KiB).
    pub fn encoded_len(&self) -> Option<usize> {
        let mut len = RECORD_OVERHEAD + self.value.len();
        if let Some(k) = &self.key {
            if k.len() >= NO_KEY as usize {
                return None;
            }
            len += k.len();
        }
        if self.value.len() > u32::MAX as usize || self.headers.len() > u16::MAX as usize {
            return None;
        }
        for (name, value) in &self.headers {
            if name.len() > u16::MAX as usize || value.len() > u32::MAX as usize {
                return None;
            }
            len += HEADER_OVERHEAD + name.len() + value.len();
        }
        // The length prefix must hold the rest of the record.
        (len - 4 <= u32::MAX as usize).then_some(len)
    }
}

/// A record read back from the log, borrowed from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: &'a [u8],
    pub(crate) header_count: u16,
    pub(crate) headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The record's offset in its partition.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key, if any.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// The headers, in the order they were written.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        let mut rest = self.headers;
        (0..self.header_count).map(move |_| {
            // Invariant: the batch decoder checked every header's lengths and
            // UTF-8 before this view was built, so these slices are in range.
            let name_len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
            let name = std::str::from_utf8(&rest[2..2 + name_len]).expect("checked by decoder");
            let at = 2 + name_len;
            let value_len = u32::from_le_bytes(rest[at..at + 4].try_into().unwrap()) as usize;
            let value = &rest[at + 4..at + 4 + value_len];
            rest = &rest[at + 4 + value_len..];
            (name, value)
        })
    }
}

/// A record read back from a partition. It shares its batch's bytes (an
/// `Arc`), so reading allocates nothing per record and cloning is cheap;
/// the batch stays in memory while any of its records is held.
#[derive(Clone)]
pub struct StoredRecord {
    batch: Arc<Batch>,
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
    pub(crate) fn new(batch: &Arc<Batch>, view: &RecordView<'_>) -> Self {
        let base = batch.as_bytes().as_ptr() as usize;
        let range = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            // Invariant: the view's slices lie inside the batch (< 4 GiB).
            debug_assert!(start + s.len() <= batch.as_bytes().len());
            (start as u32, s.len() as u32)
        };
        StoredRecord {
            batch: batch.clone(),
            offset: view.offset,
            timestamp: view.timestamp,
            key: view.key.map(range),
            value: range(view.value),
            headers: range(view.headers),
            header_count: view.header_count,
        }
    }

    fn slice(&self, (start, len): (u32, u32)) -> &[u8] {
        &self.batch.as_bytes()[start as usize..(start + len) as usize]
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
    use crate::batch::{encode_batch, encoded_batch_len, BatchInfo};

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
        let batch = Arc::new(Batch::decode(bytes, 0).unwrap());
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
