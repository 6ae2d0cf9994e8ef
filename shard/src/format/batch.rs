//! The record batch: the unit of append, checksum and recovery.
//!
//! A batch is a 64-byte little-endian [`BatchHeader`] followed by its encoded
//! records (see [`crate::format::record`]). The CRC32C covers every byte after the CRC
//! field, and its seed is the identity of the segment the batch is written to
//! ([`crate::format::segment::crc_seed`]), so a batch copied into another segment or
//! left over from an earlier use of a file never validates.

use bytes::Bytes;

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::format::record::{
    encode_record, parse_record, read_checked_record, EncodedRecords, Record, RecordView,
    RECORD_OVERHEAD,
};

/// First four bytes of every batch: `"CLB1"`. Never zero, so zeroed space
/// cannot be mistaken for a batch.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"CLB1");
/// Batch format version. 1: the initial format (never released). 2: the
/// header holds the batch's own position (bytes 56..60, reserved before).
/// Batches of another version do not decode: a directory written by
/// another version is refused, never misread.
pub const BATCH_VERSION: u16 = 2;
/// `flags` bit of a control batch: its single record describes an operation
/// on the partition (see [`crate::partition`]) rather than data.
pub const FLAG_CONTROL: u16 = 1;
/// Size of [`BatchHeader`] on disk.
pub const BATCH_HEADER_LEN: usize = std::mem::size_of::<BatchHeader>();

/// Byte position of the CRC field; the checksum covers everything after it.
const CRC_OFFSET: usize = 8;
const CRC_END: usize = CRC_OFFSET + std::mem::size_of::<u32>();
const _: () = assert!(BATCH_HEADER_LEN == 64);

/// Fixed header at the start of every batch. All fields little-endian.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct BatchHeader {
    /// [`BATCH_MAGIC`].
    pub magic: u32,
    /// Total bytes of the batch, header included.
    pub length: u32,
    /// CRC32C of bytes `[12, length)`, seeded with the segment identity.
    pub crc: u32,
    /// [`BATCH_VERSION`].
    pub version: u16,
    /// [`FLAG_CONTROL`] or zero; other bits reserved.
    pub flags: u16,
    /// Partition the records belong to.
    pub partition: u64,
    /// Offset of the first record; the others follow densely.
    pub base_offset: u64,
    /// Number of records; at least one.
    pub record_count: u32,
    /// Block index in the segment below which an fdatasync had covered
    /// everything when the batch was appended. Writes are issued in order
    /// but several may be in flight; a later batch whose floor lies past a
    /// damaged position proves that position was durable before, so the
    /// damage is corruption, not a write torn by a crash.
    pub floor_block: u32,
    /// Timestamp of the first record, ms since the Unix epoch.
    pub first_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Byte position of the batch in its segment. With the checksum it
    /// exposes a write the device put at the wrong place.
    pub position: u32,
    /// Reserved; zero.
    pub reserved1: u32,
}

impl BatchHeader {
    /// Offset one past the last record of the batch.
    pub fn end_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    /// Checks that this valid batch, found at `position` in its segment,
    /// was written there: a batch whose write the device misdirected is
    /// intact but in the wrong place.
    pub fn check_position(&self, position: u64) -> Result<(), String> {
        if u64::from(self.position) == position {
            Ok(())
        } else {
            Err(format!(
                "batch written for position {} found at {position}: a misdirected write",
                { self.position }
            ))
        }
    }
}

/// A batch header and where the batch lives in the log: what recovery
/// hands back for every surviving batch, and what a sidecar stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredBatch {
    /// Sequence of the segment holding the batch.
    pub segment: u64,
    /// Byte position of the batch in its segment.
    pub position: u64,
    /// The batch header (partition, offsets, record count, length).
    pub header: BatchHeader,
}

/// Why bytes did not decode as a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the batch does: a torn or cut write.
    Truncated {
        /// Bytes the header claims, or the header size when it is missing.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The bytes are there but are not a valid batch.
    Invalid(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { needed, available } => {
                write!(
                    f,
                    "batch truncated: needs {needed} bytes, {available} present"
                )
            }
            DecodeError::Invalid(why) => write!(f, "{why}"),
        }
    }
}

/// Size of the batch holding `records`, and the size of its largest record.
/// `None` when a record cannot be encoded at all.
pub fn encoded_batch_len(records: &[Record]) -> Option<(usize, usize)> {
    let mut total = BATCH_HEADER_LEN;
    let mut largest = 0;
    for r in records {
        let len = r.encoded_len()?;
        largest = largest.max(len);
        total = total.checked_add(len)?;
    }
    Some((total, largest))
}

/// The records of one batch, as the shard gets them: records to encode
/// (appends made on the shard's thread), or records a caller's thread
/// encoded already, in one or more runs written one after another.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// Records to encode here.
    Records(&'a [Record]),
    /// Runs of encoded records, in order.
    Encoded(&'a [EncodedRecords]),
}

impl Body<'_> {
    /// Number of records.
    pub fn count(&self) -> usize {
        match self {
            Body::Records(records) => records.len(),
            Body::Encoded(runs) => runs.iter().map(|r| r.count() as usize).sum(),
        }
    }

    /// Size of the batch holding the records and the size of its largest
    /// record; `None` when a record cannot be encoded at all.
    pub(crate) fn sizes(&self) -> Option<(usize, usize)> {
        match self {
            Body::Records(records) => encoded_batch_len(records),
            Body::Encoded(runs) => runs.iter().try_fold((BATCH_HEADER_LEN, 0), |(t, l), r| {
                Some((t.checked_add(r.len())?, l.max(r.largest())))
            }),
        }
    }

    /// Writes the records into `out` (exactly their length), timestamping
    /// records without one at `now_ms`; returns the timestamps of the
    /// first record and of the largest.
    pub(crate) fn write(&self, out: &mut [u8], now_ms: i64) -> (i64, i64) {
        let mut at = 0;
        let mut first = None;
        let mut max = i64::MIN;
        match self {
            Body::Records(records) => {
                for r in *records {
                    let ts = r.timestamp.unwrap_or(now_ms);
                    first.get_or_insert(ts);
                    max = max.max(ts);
                    at += encode_record(r, ts, &mut out[at..]);
                }
            }
            Body::Encoded(runs) => {
                for run in runs.iter().filter(|r| !r.is_empty()) {
                    let (run_first, run_max) = run.timestamps();
                    first.get_or_insert(run_first);
                    max = max.max(run_max);
                    out[at..at + run.len()].copy_from_slice(run.as_bytes());
                    at += run.len();
                }
            }
        }
        // Invariant: the caller sized `out` with `sizes`.
        assert_eq!(at, out.len(), "batch buffer sized wrongly");
        (first.expect("a batch holds at least one record"), max)
    }
}

/// The header fields of a batch that its records do not determine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchInfo {
    /// Partition of the records.
    pub partition: u64,
    /// Offset of the first record.
    pub base_offset: u64,
    /// See [`BatchHeader::floor_block`].
    pub floor_block: u32,
    /// See [`BatchHeader::position`].
    pub position: u32,
    /// [`FLAG_CONTROL`] or zero.
    pub flags: u16,
}

/// Encodes `records` as one batch into `out`, which is exactly as long as
/// [`encoded_batch_len`] says, and returns the header.
///
/// The caller has checked sizes with [`encoded_batch_len`]; `records` is not
/// empty. Records without a timestamp take `now_ms`.
#[cfg(any(test, feature = "internals"))]
pub fn encode_batch(
    out: &mut [u8],
    seed: u32,
    info: BatchInfo,
    records: &[Record],
    now_ms: i64,
) -> BatchHeader {
    encode_body(out, seed, info, Body::Records(records), now_ms)
}

/// [`encode_batch`] for either kind of [`Body`], sized by [`check_body`].
pub(crate) fn encode_body(
    out: &mut [u8],
    seed: u32,
    info: BatchInfo,
    body: Body<'_>,
    now_ms: i64,
) -> BatchHeader {
    let (first_timestamp, max_timestamp) = body.write(&mut out[BATCH_HEADER_LEN..], now_ms);
    let mut header = BatchHeader {
        magic: BATCH_MAGIC,
        length: u32::try_from(out.len()).expect("batch size checked by the caller"),
        crc: 0,
        version: BATCH_VERSION,
        flags: info.flags,
        partition: info.partition,
        base_offset: info.base_offset,
        record_count: u32::try_from(body.count()).expect("batch size checked by the caller"),
        floor_block: info.floor_block,
        first_timestamp,
        max_timestamp,
        position: info.position,
        reserved1: 0,
    };
    out[..BATCH_HEADER_LEN].copy_from_slice(bytemuck::bytes_of(&header));
    header.crc = crc32c::crc32c_append(seed, &out[CRC_END..]);
    out[CRC_OFFSET..CRC_END].copy_from_slice(&header.crc.to_le_bytes());
    header
}

/// Reads the header at the start of `bytes` without validating it, or `None`
/// when fewer than [`BATCH_HEADER_LEN`] bytes are there.
pub fn peek_header(bytes: &[u8]) -> Option<BatchHeader> {
    bytes
        .get(..BATCH_HEADER_LEN)
        .map(bytemuck::pod_read_unaligned::<BatchHeader>)
}

/// Validates the batch at the start of `bytes`: header fields, CRC with
/// `seed`, and the structure of every record. Returns the header; the batch
/// occupies `header.length` bytes.
pub fn decode_batch(bytes: &[u8], seed: u32) -> Result<BatchHeader, DecodeError> {
    let header = peek_header(bytes).ok_or(DecodeError::Truncated {
        needed: BATCH_HEADER_LEN,
        available: bytes.len(),
    })?;
    let invalid = |why: String| Err(DecodeError::Invalid(why));
    if header.magic != BATCH_MAGIC {
        return invalid(format!("bad batch magic {:#010x}", header.magic));
    }
    let length = header.length as usize;
    if length < BATCH_HEADER_LEN + RECORD_OVERHEAD {
        return invalid(format!("batch length {length} is too small"));
    }
    if bytes.len() < length {
        return Err(DecodeError::Truncated {
            needed: length,
            available: bytes.len(),
        });
    }
    let crc = crc32c::crc32c_append(seed, &bytes[CRC_END..length]);
    if crc != header.crc {
        return invalid(format!(
            "batch checksum mismatch: stored {:#010x}, computed {crc:#010x}",
            header.crc
        ));
    }
    // The checksum matched; what follows catches encoder bugs and foreign
    // writers rather than media damage.
    if header.version != BATCH_VERSION || header.flags & !FLAG_CONTROL != 0 {
        return invalid(format!(
            "unsupported batch version {} flags {:#x}",
            header.version, header.flags
        ));
    }
    if header.record_count == 0
        || header
            .base_offset
            .checked_add(header.record_count as u64)
            .is_none()
    {
        return invalid("batch has no records or overflows the offset space".into());
    }
    let mut body = &bytes[BATCH_HEADER_LEN..length];
    for i in 0..header.record_count {
        let (_, len) =
            parse_record(body, header.base_offset + u64::from(i)).map_err(DecodeError::Invalid)?;
        body = &body[len..];
    }
    if !body.is_empty() {
        return invalid(format!("{} bytes after the last record", body.len()));
    }
    Ok(header)
}

/// A validated batch held in memory. Its bytes are shared: a clone, and
/// every record read from it ([`crate::StoredRecord`]), only counts a
/// reference. A batch read from disk is one allocation; batches appended
/// here share the chunks of the memtable's arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    header: BatchHeader,
    bytes: Bytes,
}

impl Batch {
    /// Validates `bytes` (exactly one batch) against `seed`, and copies it.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<Self, DecodeError> {
        let header = decode_batch(bytes, seed)?;
        if header.length as usize != bytes.len() {
            return Err(DecodeError::Invalid(format!(
                "{} bytes after the batch",
                bytes.len() - header.length as usize
            )));
        }
        Ok(Batch {
            header,
            bytes: Bytes::copy_from_slice(bytes),
        })
    }

    /// Copies a batch this process just encoded with [`encode_batch`],
    /// into an allocation of its own.
    #[cfg(test)]
    pub(crate) fn encoded(bytes: &[u8]) -> Self {
        let header = peek_header(bytes).expect("an encoded batch has a header");
        Batch::from_encoded(header, Bytes::copy_from_slice(bytes))
    }

    /// A batch this process just encoded with [`encode_batch`], whose
    /// header is `header`, held in `bytes`.
    pub(crate) fn from_encoded(header: BatchHeader, bytes: Bytes) -> Self {
        debug_assert_eq!(header.length as usize, bytes.len());
        Batch { header, bytes }
    }

    /// The encoded batch, shared.
    pub(crate) fn shared_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The batch header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The encoded batch, header included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The records, in offset order.
    pub fn records(&self) -> impl Iterator<Item = RecordView<'_>> {
        ValidRecords {
            rest: &self.bytes[BATCH_HEADER_LEN..],
            next_offset: self.header.base_offset,
            remaining: self.header.record_count,
        }
    }
}

/// The records of a batch that [`decode_batch`] (or the encoder) already
/// walked: every length is known good, so none is checked again.
struct ValidRecords<'a> {
    rest: &'a [u8],
    next_offset: u64,
    remaining: u32,
}

impl<'a> Iterator for ValidRecords<'a> {
    type Item = RecordView<'a>;

    fn next(&mut self) -> Option<RecordView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let (view, len) = read_checked_record(self.rest, self.next_offset);
        self.rest = &self.rest[len..];
        self.next_offset += 1;
        Some(view)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(
                ("[a-z]{0,6}", proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(key, value, headers, timestamp)| Record {
                key,
                value,
                headers,
                timestamp,
            })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(records in proptest::collection::vec(arb_record(), 1..8),
                                    partition: u64, base in 0u64..1 << 60, seed: u32) {
            let (len, _) = encoded_batch_len(&records).unwrap();
            let mut out = vec![0; len];
            let header = encode_batch(&mut out, seed, BatchInfo { partition, base_offset: base, floor_block: 3, position: 4096, flags: 0 }, &records, 77);
            let batch = Batch::decode(&out, seed).unwrap();
            prop_assert_eq!(batch.header(), &header);
            for (i, (view, rec)) in batch.records().zip(&records).enumerate() {
                prop_assert_eq!(view.offset(), base + i as u64);
                prop_assert_eq!(view.key(), rec.key());
                prop_assert_eq!(view.value(), rec.value());
                prop_assert_eq!(view.timestamp(), rec.timestamp().unwrap_or(77));
                prop_assert!(view.headers().eq(rec.headers()));
            }
            // Another segment's seed never validates the same bytes.
            prop_assert!(decode_batch(&out, seed ^ 1).is_err());
        }

        /// Records encoded ahead on the caller's thread, in any split into
        /// runs, make the same batch as the records encoded by the shard.
        #[test]
        fn encoded_runs_make_the_same_batch(records in proptest::collection::vec(
                                                arb_record().prop_map(|r| { let ts = r.timestamp.unwrap_or(5); r.with_timestamp(ts) }), 1..12),
                                            splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
                                            seed: u32) {
            let mut cuts: Vec<usize> = splits.iter().map(|i| i.index(records.len() + 1)).collect();
            cuts.extend([0, records.len()]);
            cuts.sort_unstable();
            let runs: Vec<EncodedRecords> = cuts.windows(2).map(|w| {
                let mut run = EncodedRecords::default();
                run.push(&records[w[0]..w[1]]).unwrap();
                run
            }).collect();
            let info = BatchInfo { partition: 3, base_offset: 9, floor_block: 1, position: 8192, flags: 0 };
            let sizes = Body::Encoded(&runs).sizes().unwrap();
            prop_assert_eq!(sizes, encoded_batch_len(&records).unwrap());
            let size = sizes.0;
            let mut expected = vec![0; size];
            let mut actual = vec![0; size];
            let a = encode_batch(&mut expected, seed, info, &records, 0);
            let b = encode_body(&mut actual, seed, info, Body::Encoded(&runs), 0);
            prop_assert_eq!(a, b);
            prop_assert_eq!(expected, actual);
        }

        /// A record the format cannot hold is refused with a typed error
        /// and leaves what was encoded before untouched.
        #[test]
        fn unencodable_records_are_refused_whole(records in proptest::collection::vec(arb_record(), 1..4)) {
            let mut run = EncodedRecords::default();
            run.push(&records).unwrap();
            let (count, len) = (run.count(), run.len());
            let too_long = Record::new(vec![1]).with_header("h".repeat(70_000), vec![]);
            let refused = run.push(&[Record::new(vec![2]), too_long]);
            prop_assert!(matches!(refused, Err(crate::error::Error::InvalidArgument(_))));
            prop_assert_eq!((run.count(), run.len()), (count, len));
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), seed: u32) {
            let _ = decode_batch(&bytes, seed);
        }

        /// Garbage behind a valid header and checksum (a buggy or hostile
        /// writer) exercises the record parser: an error or a batch whose
        /// records all iterate, never a panic.
        #[test]
        fn decoder_survives_garbage_under_a_valid_checksum(
            records in proptest::collection::vec(arb_record(), 1..6),
            edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
            count in 1u32..10,
        ) {
            let mut out = vec![0; encoded_batch_len(&records).unwrap().0];
            encode_batch(&mut out, 5, BatchInfo::default(), &records, 0);
            for (at, byte) in edits {
                let at = BATCH_HEADER_LEN + at.index(out.len() - BATCH_HEADER_LEN);
                out[at] = byte;
            }
            out[32..36].copy_from_slice(&count.to_le_bytes());
            let crc = crc32c::crc32c_append(5, &out[CRC_END..]);
            out[CRC_OFFSET..CRC_END].copy_from_slice(&crc.to_le_bytes());
            if let Ok(batch) = Batch::decode(&out, 5) {
                for r in batch.records() {
                    let _ = (r.key(), r.value(), r.headers().count(), r.timestamp());
                }
            }
        }

        #[test]
        fn any_flipped_bit_is_detected(records in proptest::collection::vec(arb_record(), 1..4),
                                       bit in any::<proptest::sample::Index>()) {
            let mut out = vec![0; encoded_batch_len(&records).unwrap().0];
            encode_batch(&mut out, 9, BatchInfo { partition: 1, floor_block: 1, ..BatchInfo::default() }, &records, 0);
            let bit = bit.index(out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_batch(&out, 9).is_err());
        }
    }

    /// If this changes, the on-disk format changed: bump BATCH_VERSION.
    #[test]
    fn checksum_is_stable() {
        let r = [Record::new(b"value".to_vec())
            .with_key(b"k".to_vec())
            .with_timestamp(1)];
        let mut out = vec![0; encoded_batch_len(&r).unwrap().0];
        let h = encode_batch(
            &mut out,
            crc32c::crc32c(b"seed"),
            BatchInfo {
                partition: 7,
                base_offset: 42,
                floor_block: 3,
                position: 8_192,
                ..BatchInfo::default()
            },
            &r,
            0,
        );
        assert_eq!(out.len(), 64 + 22 + 6);
        assert_eq!(h.crc, STABLE_CRC);
    }
    const STABLE_CRC: u32 = 2_052_747_426;
}
