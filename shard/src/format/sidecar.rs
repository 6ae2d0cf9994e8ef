//! Sidecar index files: when a segment is sealed, the location and header
//! of every batch in it go to `<sequence>.idx`, so that a restart loads the
//! sidecar instead of scanning the segment. A missing or damaged sidecar is
//! rebuilt by scanning its segment.
//!
//! Layout (little-endian), padded with zeros to a block multiple:
//!
//! ```text
//! 0   8   magic "CLIDX001"
//! 8   4   shard id
//! 12  4   reserved, 0
//! 16  8   segment sequence
//! 24  8   entry count n
//! 32  40n per batch: position u32, length u32, partition u64,
//!         base offset u64, record count u32, flags u16, reserved u16 (0),
//!         max timestamp i64
//! ..  4   CRC32C of everything before it
//! ```
//!
//! An entry holds what recovery and replay read of a batch's header, not
//! the whole header: a segment of small batches has as many entries as
//! batches, and its sidecar is written at every roll. (Version 1 kept the
//! whole 64-byte header; such a sidecar no longer validates, and its
//! segment is scanned once.)

use std::path::{Path, PathBuf};

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{
        batch::{BatchHeader, RecoveredBatch, BATCH_MAGIC, BATCH_VERSION},
        le::{put_u32, put_u64, u32_at, u64_at},
        segment::{align_up, BLOCK_SIZE},
    },
    storage::{IoBuffer, Storage, StorageFile},
};

const MAGIC: &[u8; 8] = b"CLIDX002";
const HEAD: usize = 32;
const ENTRY: usize = 40;

/// Path of the sidecar of segment `sequence`.
pub(crate) fn sidecar_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.idx"))
}

/// Writes the sidecar of segment `sequence`. It is not synced: a sidecar
/// is a cache that must validate (magic, shard, sequence, CRC) before it is
/// used, so one that a crash lost or tore costs only the scan it would have
/// spared. That keeps an fdatasync (and its journal commit) off every roll.
///
/// The file goes out in writes of [`CHUNK`] bytes at most, each from a
/// buffer of its own size: a segment of small batches has a sidecar of tens
/// of MB, which one buffer would fault in page by page on every roll.
pub(crate) async fn write<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    sequence: u64,
    batches: &[RecoveredBatch],
) -> Result<()> {
    let end = HEAD + ENTRY * batches.len();
    let len = (align_up(end as u64 + 4) as usize).max(BLOCK_SIZE as usize);
    let path = sidecar_path(&config.dir, sequence);
    let file = storage.open(&path, true).await?;
    let mut out = Chunked::new(storage, &file, len);
    let mut head = [0u8; HEAD];
    head[..8].copy_from_slice(MAGIC);
    put_u32(&mut head, 8, config.shard_id);
    put_u64(&mut head, 16, sequence);
    put_u64(&mut head, 24, batches.len() as u64);
    out.put(&head).await?;
    let mut rest = batches;
    while let Some(b) = rest.first() {
        // Entries that fit whole in the chunk are encoded in place; one
        // that straddles two chunks is copied in two parts.
        let space = out.space();
        let whole = (space.len() / ENTRY).min(rest.len());
        if whole == 0 {
            out.put(&entry(sequence, b)).await?;
            rest = &rest[1..];
            continue;
        }
        for (slot, b) in space.chunks_exact_mut(ENTRY).zip(&rest[..whole]) {
            slot.copy_from_slice(&entry(sequence, b));
        }
        out.advance(whole * ENTRY).await?;
        rest = &rest[whole..];
    }
    let crc = out.crc();
    out.put(&crc.to_le_bytes()).await?;
    out.pad().await?;
    file.close().await
}

/// The sidecar entry of `b`, a batch of segment `sequence`.
fn entry(sequence: u64, b: &RecoveredBatch) -> [u8; ENTRY] {
    // Invariant: a sidecar describes its own segment only, whose positions
    // fit in 32 bits (segment sizes are checked below 4 GiB).
    assert_eq!(b.segment, sequence);
    let h = &b.header;
    let mut e = [0u8; ENTRY];
    put_u32(
        &mut e,
        0,
        u32::try_from(b.position).expect("segment below 4 GiB"),
    );
    put_u32(&mut e, 4, h.length);
    put_u64(&mut e, 8, h.partition);
    put_u64(&mut e, 16, h.base_offset);
    put_u32(&mut e, 24, h.record_count);
    e[28..30].copy_from_slice(&h.flags.to_le_bytes());
    put_u64(&mut e, 32, h.max_timestamp as u64);
    e
}

/// The batch an entry describes, at `at` of a sidecar of `sequence`: its
/// header has the fields the entry keeps (the others are zero, but magic,
/// version and position).
fn batch_at(bytes: &[u8], at: usize, sequence: u64) -> RecoveredBatch {
    let position = u32_at(bytes, at);
    let mut header: BatchHeader = bytemuck::Zeroable::zeroed();
    header.magic = BATCH_MAGIC;
    header.version = BATCH_VERSION;
    header.position = position;
    header.length = u32_at(bytes, at + 4);
    header.partition = u64_at(bytes, at + 8);
    header.base_offset = u64_at(bytes, at + 16);
    header.record_count = u32_at(bytes, at + 24);
    header.flags = u16::from_le_bytes([bytes[at + 28], bytes[at + 29]]);
    header.max_timestamp = u64_at(bytes, at + 32) as i64;
    RecoveredBatch {
        segment: sequence,
        position: u64::from(position),
        header,
    }
}

/// Bytes a sidecar write takes at most (a multiple of the block size).
const CHUNK: usize = 1 << 20;

/// A file written front to back in chunks, with the CRC32C of what was put.
struct Chunked<'a, S: Storage> {
    storage: &'a S,
    file: &'a S::File,
    buf: <S::File as StorageFile>::Buffer,
    /// Bytes of `buf` filled.
    at: usize,
    /// File position of `buf`.
    pos: u64,
    /// File length, a multiple of the block size.
    len: usize,
    /// CRC32C of the bytes written before `buf`.
    crc: u32,
}

impl<'a, S: Storage> Chunked<'a, S> {
    fn new(storage: &'a S, file: &'a S::File, len: usize) -> Self {
        Chunked {
            storage,
            file,
            buf: storage.alloc(len.min(CHUNK)),
            at: 0,
            pos: 0,
            len,
            crc: 0,
        }
    }

    /// Appends `bytes`, writing each chunk as it fills.
    async fn put(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let space = self.space();
            let n = space.len().min(bytes.len());
            space[..n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.advance(n).await?;
        }
        Ok(())
    }

    /// The unfilled part of the chunk, to fill and then [`Self::advance`]
    /// over.
    fn space(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut_slice()[self.at..]
    }

    /// Counts `n` bytes of [`Self::space`] as filled, writing the chunk
    /// once it is full.
    async fn advance(&mut self, n: usize) -> Result<()> {
        self.at += n;
        debug_assert!(self.at <= self.buf.as_slice().len());
        if self.at == self.buf.as_slice().len() {
            self.write_chunk().await?;
        }
        Ok(())
    }

    /// CRC32C of everything put so far.
    fn crc(&self) -> u32 {
        crc32c::crc32c_append(self.crc, &self.buf.as_slice()[..self.at])
    }

    /// Fills the rest of the file with zeros.
    async fn pad(&mut self) -> Result<()> {
        while self.pos < self.len as u64 {
            self.buf.as_mut_slice()[self.at..].fill(0);
            self.at = self.buf.as_slice().len();
            self.write_chunk().await?;
        }
        Ok(())
    }

    /// Writes the full buffer and starts the next one.
    async fn write_chunk(&mut self) -> Result<()> {
        self.crc = self.crc();
        let size = self.buf.as_slice().len();
        let rest = self.len - self.pos as usize - size;
        let next = self.storage.alloc(rest.clamp(BLOCK_SIZE as usize, CHUNK));
        let buf = std::mem::replace(&mut self.buf, next);
        let written = self.file.write_at(buf, self.pos).await?;
        if written != size {
            return Err(Error::ShortWrite {
                path: self.file.path().to_path_buf(),
                position: self.pos,
                expected: size,
                written,
            });
        }
        self.pos += size as u64;
        self.at = 0;
        Ok(())
    }
}

/// Removes the sidecar of segment `sequence`, if any, durably.
pub(crate) async fn remove<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    sequence: u64,
) -> Result<()> {
    let path = sidecar_path(&config.dir, sequence);
    if storage
        .list(&config.dir)
        .await?
        .iter()
        .any(|n| config.dir.join(n) == path)
    {
        storage.remove(&path).await?;
        storage.sync_dir(&config.dir).await?;
    }
    Ok(())
}

/// Loads the sidecar of segment `sequence`; `None` when it is missing or
/// does not validate (the caller then scans the segment).
pub(crate) async fn load<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    sequence: u64,
    names: &[String],
) -> Result<Option<Vec<RecoveredBatch>>> {
    let path = sidecar_path(&config.dir, sequence);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !names.iter().any(|n| n == name) {
        return Ok(None);
    }
    // A sidecar is a cache: one that cannot be read is as good as missing
    // (the segment is scanned instead, and anything wrong with the disk
    // shows there, named by the segment).
    let Ok(bytes) = read_whole(storage, &path).await else {
        return Ok(None);
    };
    let valid = bytes.len() >= HEAD + 4
        && &bytes[..8] == MAGIC
        && u32_at(&bytes, 8) == config.shard_id
        && u64_at(&bytes, 16) == sequence;
    let count = if valid { u64_at(&bytes, 24) } else { 0 };
    let end = count
        .checked_mul(ENTRY as u64)
        .and_then(|n| n.checked_add(HEAD as u64))
        .filter(|&e| e < bytes.len() as u64 && bytes.len() as u64 - e >= 4);
    let batches = match end {
        Some(end) if valid => {
            let end = end as usize;
            let crc = u32_at(&bytes, end);
            (crc32c::crc32c(&bytes[..end]) == crc).then(|| {
                (0..count as usize)
                    .map(|i| batch_at(&bytes, HEAD + ENTRY * i, sequence))
                    .collect()
            })
        }
        _ => None,
    };
    Ok(batches)
}

/// The whole file at `path`, read from its start to the end of its last
/// block.
async fn read_whole<S: Storage>(
    storage: &S,
    path: &Path,
) -> Result<<S::File as StorageFile>::ReadBuf> {
    let file = storage.open(path, false).await?;
    let size = file.size().await?;
    let bytes = file.read_at(0, align_up(size) as usize).await?;
    file.close().await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::{Faults, SimDisk};
    use proptest::prelude::*;

    /// A sidecar of several chunks (and one of a few entries) loads back
    /// exactly as written.
    #[test]
    fn sidecars_spanning_chunks_load_back() {
        for count in [0usize, 3, 2 * CHUNK / ENTRY + 5] {
            let disk = SimDisk::new(1, Faults::default());
            let config = ShardConfig::new("/s");
            let batches: Vec<RecoveredBatch> = (0..count as u64)
                .map(|i| RecoveredBatch {
                    segment: 3,
                    position: 4096 + i * 128,
                    header: BatchHeader {
                        magic: BATCH_MAGIC,
                        version: BATCH_VERSION,
                        position: 4096 + i as u32 * 128,
                        base_offset: i,
                        partition: i % 7,
                        length: 128,
                        record_count: 1 + i as u32 % 3,
                        flags: (i % 2) as u16,
                        max_timestamp: -(i as i64),
                        ..bytemuck::Zeroable::zeroed()
                    },
                })
                .collect();
            futures_lite::future::block_on(async {
                write(&disk, &config, 3, &batches).await.unwrap();
                let names = disk.list(&config.dir).await.unwrap();
                let loaded = load(&disk, &config, 3, &names).await.unwrap();
                assert_eq!(loaded.as_deref(), Some(&batches[..]), "{count} entries");
            });
        }
    }

    proptest! {
        /// Whatever the sidecar holds, loading it returns its entries or
        /// `None` (scan the segment instead); it never panics.
        #[test]
        fn any_file_contents_load_or_are_rejected(
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            count: u64,
            magic: bool,
        ) {
            let mut bytes = Vec::new();
            if magic {
                bytes.extend_from_slice(MAGIC);
                bytes.extend_from_slice(&[0; 8]);
                bytes.extend_from_slice(&3u64.to_le_bytes());
                bytes.extend_from_slice(&count.to_le_bytes());
            }
            bytes.extend_from_slice(&tail);
            let disk = SimDisk::new(1, Faults::default());
            let config = ShardConfig::new("/s");
            let path = sidecar_path(&config.dir, 3);
            let names = vec![path.file_name().unwrap().to_str().unwrap().to_string()];
            disk.set_contents(&path, &bytes);
            prop_assert!(futures_lite::future::block_on(load(&disk, &config, 3, &names)).is_ok());
        }
    }
}
