//! The clean-shutdown marker: written last by a clean close, it names the
//! last segment and where its data ends, so the next open can skip probing
//! the tail. It speaks for one restart only: the open that reads it removes
//! it once it has accepted the log, so a crash after that open never looks
//! clean, and an open refused for damage keeps it for the next try.
//!
//! Layout (little-endian), one block:
//!
//! ```text
//! 0   8   magic "CLCLEAN1"
//! 8   8   last segment sequence
//! 16  8   block-aligned end of the data in that segment
//! 24  4   CRC32C of bytes [0, 24)
//! ```

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{
        le::{put_u32, put_u64, u32_at, u64_at},
        segment::BLOCK_SIZE,
    },
    storage::{IoBuffer, Storage, StorageFile},
};

/// Name of the marker in a shard directory.
const FILE: &str = "clean-shutdown";
/// First eight bytes of the marker.
const MAGIC: &[u8; 8] = b"CLCLEAN1";
/// Bytes the CRC covers.
const CRC_AT: usize = 24;

/// Writes the marker, syncs it and the directory: the log ends at
/// `(segment, end)`.
pub(crate) async fn write<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    (segment, end): (u64, u64),
) -> Result<()> {
    let path = config.dir.join(FILE);
    let file = storage.open(&path, true).await?;
    let mut buf = storage.alloc(BLOCK_SIZE as usize);
    let bytes = buf.as_mut_slice();
    bytes.fill(0);
    bytes[..8].copy_from_slice(MAGIC);
    put_u64(bytes, 8, segment);
    put_u64(bytes, 16, end);
    let crc = crc32c::crc32c(&bytes[..CRC_AT]);
    put_u32(bytes, CRC_AT, crc);
    let written = file.write_at(buf, 0).await?;
    if written != BLOCK_SIZE as usize {
        return Err(Error::ShortWrite {
            path,
            position: 0,
            expected: BLOCK_SIZE as usize,
            written,
        });
    }
    file.fdatasync().await?;
    file.close().await?;
    storage.sync_dir(&config.dir).await
}

/// Reads the marker without removing it: `None` when there is none, else
/// the last segment and the aligned end of its data, when it is valid.
pub(crate) async fn read<S: Storage>(
    storage: &S,
    config: &ShardConfig,
) -> Result<Option<Option<(u64, u64)>>> {
    if !storage.list(&config.dir).await?.iter().any(|n| n == FILE) {
        return Ok(None);
    }
    let path = config.dir.join(FILE);
    let file = storage.open(&path, false).await?;
    let bytes = file.read_at(0, BLOCK_SIZE as usize).await?;
    let valid = bytes.len() >= CRC_AT + 4
        && &bytes[..8] == MAGIC
        && crc32c::crc32c(&bytes[..CRC_AT]) == u32_at(&bytes, CRC_AT);
    let marker = valid.then(|| (u64_at(&bytes, 8), u64_at(&bytes, 16)));
    drop(bytes);
    file.close().await?;
    Ok(Some(marker))
}

/// Removes the marker, durably. The open that read it does so once it has
/// accepted the log: the marker speaks for one restart only, so a crash
/// after that open must not look clean.
pub(crate) async fn remove<S: Storage>(storage: &S, config: &ShardConfig) -> Result<()> {
    storage.remove(&config.dir.join(FILE)).await?;
    storage.sync_dir(&config.dir).await
}
