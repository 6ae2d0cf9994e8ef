//! Segment files: naming, the header block, and the checksum seed.
//!
//! A segment is a preallocated file of `segment_bytes` bytes. Block 0 holds
//! the [`SegmentHeader`]; batches start at [`BLOCK_SIZE`]. Every commit
//! starts on a block boundary and the tail of its last block is zero padding,
//! so a later commit never rewrites a block that holds acknowledged data.

use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};

use crate::{
    config::{FsyncPolicy, ShardConfig},
    error::Result,
    storage::Storage,
};

pub use crate::storage::BLOCK_SIZE;
/// First eight bytes of a segment file.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"CORELOG\0");
/// Segment format version. 1: the initial format.
pub const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header that its CRC covers.
const HEADER_CRC_COVERS: usize = 32;
const _: () = assert!(std::mem::size_of::<SegmentHeader>() == HEADER_CRC_COVERS + 8);

/// The header at position 0 of every segment file. Little-endian.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: u64,
    /// [`SEGMENT_VERSION`].
    pub version: u32,
    /// Shard that owns the segment.
    pub shard_id: u32,
    /// Sequence number of the segment within its shard, from 1.
    pub sequence: u64,
    /// File size the segment was created with.
    pub segment_bytes: u64,
    /// CRC32C of the 32 bytes above.
    pub crc: u32,
    /// Zero.
    pub reserved: u32,
}

impl SegmentHeader {
    /// A sealed header for a new segment.
    pub fn new(shard_id: u32, sequence: u64, segment_bytes: u64) -> Self {
        let mut h = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: SEGMENT_VERSION,
            shard_id,
            sequence,
            segment_bytes,
            crc: 0,
            reserved: 0,
        };
        h.crc = crc32c::crc32c(&bytemuck::bytes_of(&h)[..HEADER_CRC_COVERS]);
        h
    }

    /// Parses and checks a header from the first bytes of a file.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let Some(raw) = bytes.get(..std::mem::size_of::<SegmentHeader>()) else {
            return Err(format!("segment header cut short at {} bytes", bytes.len()));
        };
        let h: SegmentHeader = bytemuck::pod_read_unaligned(raw);
        if h.magic != SEGMENT_MAGIC {
            return Err(format!("bad segment magic {:#018x}", h.magic));
        }
        if crc32c::crc32c(&raw[..HEADER_CRC_COVERS]) != h.crc {
            return Err("segment header checksum mismatch".into());
        }
        if h.version != SEGMENT_VERSION {
            return Err(format!("unsupported segment version {}", h.version));
        }
        Ok(h)
    }

    /// The seed of every batch checksum in this segment.
    pub fn crc_seed(&self) -> u32 {
        crc_seed(self.shard_id, self.sequence)
    }
}

/// Checksum seed of the batches in segment `sequence` of shard `shard_id`.
pub fn crc_seed(shard_id: u32, sequence: u64) -> u32 {
    let mut id = [0u8; 12];
    id[..4].copy_from_slice(&shard_id.to_le_bytes());
    id[4..].copy_from_slice(&sequence.to_le_bytes());
    crc32c::crc32c(&id)
}

/// File name of segment `sequence`: 20 decimal digits, so names sort in
/// sequence order.
pub fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.wal"))
}

/// Opens the existing segment file at `path`: under `Always` for writes
/// that are durable when they complete ([`Storage::open_durable`]), since
/// every commit is then one durable write.
pub(crate) async fn open<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    path: &Path,
) -> Result<S::File> {
    match config.fsync {
        FsyncPolicy::Always => storage.open_durable(path).await,
        FsyncPolicy::Interval(_) | FsyncPolicy::Never => storage.open(path, false).await,
    }
}

/// The sequence of a segment file name, or `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Path of the segment being prepared ahead of use.
pub fn spare_path(dir: &Path) -> PathBuf {
    dir.join("spare.wal.tmp")
}

/// Rounds `pos` up to the next block boundary.
pub fn align_up(pos: u64) -> u64 {
    pos.div_ceil(BLOCK_SIZE) * BLOCK_SIZE
}
