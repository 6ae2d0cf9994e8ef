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
//! 32  72n per batch: position u64, then its 64-byte batch header
//! ..  4   CRC32C of everything before it
//! ```

use std::path::{Path, PathBuf};

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{
        batch::{BatchHeader, RecoveredBatch, BATCH_HEADER_LEN},
        le::{put_u32, put_u64, u32_at, u64_at},
        segment::{align_up, BLOCK_SIZE},
    },
    storage::{IoBuffer, Storage, StorageFile},
};

const MAGIC: &[u8; 8] = b"CLIDX001";
const HEAD: usize = 32;
const ENTRY: usize = 8 + BATCH_HEADER_LEN;

/// Path of the sidecar of segment `sequence`.
pub(crate) fn sidecar_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("{sequence:020}.idx"))
}

/// Writes the sidecar of segment `sequence`. It is not synced: a sidecar
/// is a cache that must validate (magic, shard, sequence, CRC) before it is
/// used, so one that a crash lost or tore costs only the scan it would have
/// spared. That keeps an fdatasync (and its journal commit) off every roll.
pub(crate) async fn write<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    sequence: u64,
    batches: &[RecoveredBatch],
) -> Result<()> {
    let end = HEAD + ENTRY * batches.len();
    let len = (align_up(end as u64 + 4) as usize).max(BLOCK_SIZE as usize);
    let mut buf = storage.alloc(len);
    let bytes = buf.as_mut_slice();
    // Every byte is written below: the head, the entries, the CRC and the
    // padding (a buffer is not zeroed, and zeroing all of a large one would
    // fault in its pages twice).
    bytes[end..].fill(0);
    bytes[..8].copy_from_slice(MAGIC);
    put_u32(bytes, 8, config.shard_id);
    put_u32(bytes, 12, 0);
    put_u64(bytes, 16, sequence);
    put_u64(bytes, 24, batches.len() as u64);
    for (i, b) in batches.iter().enumerate() {
        // Invariant: a sidecar describes its own segment only.
        assert_eq!(b.segment, sequence);
        let at = HEAD + ENTRY * i;
        put_u64(bytes, at, b.position);
        bytes[at + 8..at + ENTRY].copy_from_slice(bytemuck::bytes_of(&b.header));
    }
    let crc = crc32c::crc32c(&bytes[..end]);
    put_u32(bytes, end, crc);
    let path = sidecar_path(&config.dir, sequence);
    let file = storage.open(&path, true).await?;
    let written = file.write_at(buf, 0).await?;
    if written != len {
        return Err(Error::ShortWrite {
            path,
            position: 0,
            expected: len,
            written,
        });
    }
    file.close().await
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
    let file = storage.open(&path, false).await?;
    let size = file.size().await?;
    let bytes = file.read_at(0, align_up(size) as usize).await?;
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
                    .map(|i| {
                        let at = HEAD + ENTRY * i;
                        RecoveredBatch {
                            segment: sequence,
                            position: u64_at(&bytes, at),
                            header: bytemuck::pod_read_unaligned::<BatchHeader>(
                                &bytes[at + 8..at + ENTRY],
                            ),
                        }
                    })
                    .collect()
            })
        }
        _ => None,
    };
    drop(bytes);
    file.close().await?;
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::{Faults, SimDisk};
    use proptest::prelude::*;

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
