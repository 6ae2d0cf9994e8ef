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

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{
    error::{Error, Result},
    format::le::{i64_at, u16_at, u32_at},
};

/// Fixed bytes of an encoded record before its key.
pub const RECORD_OVERHEAD: usize = 22;
/// Fixed bytes of an encoded header before its name and after it.
pub const HEADER_OVERHEAD: usize = 6;
/// Key length that marks a record without a key.
const NO_KEY: u32 = u32::MAX;

/// Byte positions of a record's fixed fields (the table above).
mod at {
    pub const LENGTH: usize = 0;
    pub const TIMESTAMP: usize = 4;
    pub const KEY_LEN: usize = 12;
    pub const VALUE_LEN: usize = 16;
    pub const HEADER_COUNT: usize = 20;
}
const _: () = assert!(at::HEADER_COUNT + 2 == RECORD_OVERHEAD);

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
    /// append time (read from the kernel's coarse clock: to within one
    /// clock tick, 1 to 4 ms; [`Record::with_timestamp`] sets an exact one).
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
    #[cfg(any(test, feature = "internals"))]
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The key, if any.
    #[cfg(any(test, feature = "internals"))]
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
            // Invariant: `parse_record` checked every header of this record
            // before the view was handed out.
            let (name, value, next) = split_header(rest).expect("headers checked by the decoder");
            rest = next;
            (name, value)
        })
    }
}

/// Writes `r` at the start of `out`, timestamped `timestamp`, and returns
/// its encoded length. The caller sized `out` with [`Record::encoded_len`].
pub(crate) fn encode_record(r: &Record, timestamp: i64, out: &mut [u8]) -> usize {
    let mut pos = 0;
    let len = write_record(r, timestamp, |bytes| {
        out[pos..pos + bytes.len()].copy_from_slice(bytes);
        pos += bytes.len();
    });
    // Invariant: encoded_len and this encoder agree on the layout.
    debug_assert_eq!(pos, len, "record encoder and encoded_len disagree");
    len
}

/// Hands `r`'s encoding, timestamped `timestamp`, to `put` piece by piece
/// (the one place the layout is written) and returns its encoded length.
fn write_record(r: &Record, timestamp: i64, mut put: impl FnMut(&[u8])) -> usize {
    let len = r.encoded_len().expect("record size checked by the caller");
    put(&((len - 4) as u32).to_le_bytes());
    put(&timestamp.to_le_bytes());
    put(&r
        .key
        .as_ref()
        .map_or(NO_KEY, |k| k.len() as u32)
        .to_le_bytes());
    put(&(r.value.len() as u32).to_le_bytes());
    put(&(r.headers.len() as u16).to_le_bytes());
    if let Some(k) = &r.key {
        put(k);
    }
    put(&r.value);
    for (name, value) in &r.headers {
        put(&(name.len() as u16).to_le_bytes());
        put(name.as_bytes());
        put(&(value.len() as u32).to_le_bytes());
        put(value);
    }
    len
}

/// Records encoded ahead of their batch, on the appending thread: the
/// bytes that follow a batch header, and what the header needs to know of
/// them. A shard writes them into a batch with one copy
/// ([`crate::format::batch::Body::Encoded`]), so the per-record work of an
/// append (encoding, and freeing the caller's buffers) stays on the
/// caller's thread instead of the shard's.
#[derive(Debug)]
pub struct EncodedRecords {
    bytes: Vec<u8>,
    count: u32,
    first_timestamp: i64,
    max_timestamp: i64,
    /// Encoded length of the largest record, to check against the limit.
    largest: usize,
}

impl Default for EncodedRecords {
    fn default() -> Self {
        Self::from_buffer(Vec::new())
    }
}

impl EncodedRecords {
    /// Empty, with room for `bytes` of encoded records.
    pub fn with_capacity(bytes: usize) -> Self {
        Self::from_buffer(Vec::with_capacity(bytes))
    }

    /// Empty, in `buffer`'s memory (its contents are dropped).
    pub fn from_buffer(mut buffer: Vec<u8>) -> Self {
        buffer.clear();
        EncodedRecords {
            bytes: buffer,
            count: 0,
            first_timestamp: 0,
            max_timestamp: i64::MIN,
            largest: 0,
        }
    }

    /// The memory of the encoded records, to reuse.
    pub fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }

    /// Encodes `records` after those already here; records without a
    /// timestamp take the current time (the coarse clock of
    /// [`now_ms`]). A record the format cannot hold (a key,
    /// value or header past its length fields), or more records than a
    /// batch counts, is refused with nothing added. Batch limits are the
    /// caller's to check ([`crate::format::batch::check_batch`]); a shard
    /// checks them again when it writes the records.
    pub fn push(&mut self, records: &[Record]) -> Result<()> {
        let fits = records.iter().all(|r| r.encoded_len().is_some());
        let count = u32::try_from(records.len())
            .ok()
            .and_then(|n| self.count.checked_add(n));
        let Some(count) = count.filter(|_| fits) else {
            return Err(Error::InvalidArgument(
                "a record or the batch is larger than the format can hold".into(),
            ));
        };
        let now = if records.iter().any(|r| r.timestamp.is_none()) {
            now_ms()
        } else {
            0
        };
        if let Some(first) = records.first().filter(|_| self.is_empty()) {
            self.first_timestamp = first.timestamp.unwrap_or(now);
        }
        for r in records {
            let ts = r.timestamp.unwrap_or(now);
            self.max_timestamp = self.max_timestamp.max(ts);
            let at = self.bytes.len();
            let len = write_record(r, ts, |bytes| self.bytes.extend_from_slice(bytes));
            // Invariant: encoded_len and this encoder agree on the layout.
            debug_assert_eq!(self.bytes.len() - at, len);
            self.largest = self.largest.max(len);
        }
        self.count = count;
        Ok(())
    }

    /// Number of records.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Encoded bytes of the records.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no record is here.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded records.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Timestamps of the first record and the largest one.
    pub(crate) fn timestamps(&self) -> (i64, i64) {
        (self.first_timestamp, self.max_timestamp)
    }

    /// Encoded length of the largest record.
    pub(crate) fn largest(&self) -> usize {
        self.largest
    }
}

/// The fixed fields at the start of an encoded record.
struct Fixed {
    /// Bytes of the whole record, its length prefix included.
    total: usize,
    timestamp: i64,
    key_len: u32,
    value_len: usize,
    header_count: u16,
}

impl Fixed {
    /// Reads the fixed fields; `b` holds at least [`RECORD_OVERHEAD`] bytes.
    #[inline]
    fn read(b: &[u8]) -> Self {
        Fixed {
            // Saturating: a length near 4 GiB must fail the caller's bounds
            // check, not overflow where usize is 32 bits.
            total: (u32_at(b, at::LENGTH) as usize).saturating_add(4),
            timestamp: i64_at(b, at::TIMESTAMP),
            key_len: u32_at(b, at::KEY_LEN),
            value_len: u32_at(b, at::VALUE_LEN) as usize,
            header_count: u16_at(b, at::HEADER_COUNT),
        }
    }

    /// Bytes of the key (none when the record has no key).
    #[inline]
    fn key_bytes(&self) -> usize {
        if self.key_len == NO_KEY {
            0
        } else {
            self.key_len as usize
        }
    }

    /// The view of the record whose fields are `self` and whose bytes after
    /// the fixed fields are `rec`, which holds key and value at least.
    #[inline]
    fn view<'a>(&self, offset: u64, rec: &'a [u8]) -> RecordView<'a> {
        let key_bytes = self.key_bytes();
        RecordView {
            offset,
            timestamp: self.timestamp,
            key: (self.key_len != NO_KEY).then(|| &rec[..key_bytes]),
            value: &rec[key_bytes..key_bytes + self.value_len],
            header_count: self.header_count,
            headers: &rec[key_bytes + self.value_len..],
        }
    }
}

/// Splits the header at the start of `h` into name, value and the bytes
/// after it; `None` when its lengths overrun `h` or its name is not UTF-8.
fn split_header(h: &[u8]) -> Option<(&str, &[u8], &[u8])> {
    let name_len = u16_at(h.get(..2)?, 0) as usize;
    let value_at = 2 + name_len + 4;
    let name = std::str::from_utf8(h.get(2..2 + name_len)?).ok()?;
    let value_len = u32_at(h.get(..value_at)?, value_at - 4) as usize;
    let value = h.get(value_at..value_at.checked_add(value_len)?)?;
    Some((name, value, &h[value_at + value_len..]))
}

/// Parses and checks the record at the start of `b`, whose offset is
/// `offset`: every length, every header, the UTF-8 of header names.
/// Returns the record and its encoded length.
pub(crate) fn parse_record(b: &[u8], offset: u64) -> Result<(RecordView<'_>, usize), String> {
    if b.len() < RECORD_OVERHEAD {
        return Err(format!("record at offset {offset} is cut short"));
    }
    let fixed = Fixed::read(b);
    if fixed.total > b.len() || fixed.total < RECORD_OVERHEAD {
        return Err(format!("record at offset {offset} has a bad length"));
    }
    let rec = &b[RECORD_OVERHEAD..fixed.total];
    if fixed.key_bytes() + fixed.value_len > rec.len() {
        return Err(format!("record at offset {offset} overruns its length"));
    }
    let view = fixed.view(offset, rec);
    let mut h = view.headers;
    for _ in 0..fixed.header_count {
        let Some((_, _, rest)) = split_header(h) else {
            return Err(format!("record at offset {offset} has a bad header"));
        };
        h = rest;
    }
    if !h.is_empty() {
        return Err(format!("record at offset {offset} has trailing bytes"));
    }
    Ok((view, fixed.total))
}

/// Reads the record at the start of `b` that [`parse_record`] (or the
/// encoder) already checked: no length is checked again. Slicing still
/// bounds-checks, so a broken invariant panics, never reads wrongly.
#[inline]
pub(crate) fn read_checked_record(b: &[u8], offset: u64) -> (RecordView<'_>, usize) {
    let fixed = Fixed::read(b);
    (
        fixed.view(offset, &b[RECORD_OVERHEAD..fixed.total]),
        fixed.total,
    )
}

/// Milliseconds since the Unix epoch: the default timestamp of a record.
///
/// Read from the kernel's coarse clock, which moves once a tick (1 to 4
/// ms): it costs a few nanoseconds where the precise clock costs tens, on
/// every append.
pub(crate) fn now_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc != 0 {
        return SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
    }
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}
