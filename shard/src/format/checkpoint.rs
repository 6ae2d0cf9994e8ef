//! The partition checkpoint: every partition's start and end offsets as of
//! a position in the log, written before a segment is deleted, so that what
//! the deleted segment held (its batches, and the control batches that moved
//! start offsets) is not needed to rebuild the partitions.
//!
//! Layout (little-endian), padded with zeros to a block multiple:
//!
//! ```text
//! 0   8   magic "CLCKPT02"
//! 8   8   log end: segment sequence
//! 16  8   log end: byte position in that segment
//! 24  8   partition count n
//! 32  24n (partition u64, start u64, end u64) per partition
//! ..  4   CRC32C of everything before it
//! ```
//!
//! Invariant: the offsets account for every batch before the log end and
//! for none after it. On open, batches before it only rebuild the offset
//! index; batches after it are replayed.
//!
//! It is replaced atomically: written to a temporary file, synced, renamed
//! over the old one, and the directory synced.

use std::collections::BTreeMap;

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{
        le::{put_u32, put_u64, u32_at, u64_at},
        segment::{align_up, BLOCK_SIZE},
    },
    storage::{IoBuffer, Storage, StorageFile},
};

const MAGIC: &[u8; 8] = b"CLCKPT02";
/// Bytes before the partition entries.
const HEAD: usize = 32;
const FILE: &str = "partitions.ckpt";
const TMP: &str = "partitions.ckpt.tmp";

/// Start and end offset of each partition, as of `log_end`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// (segment, position): the log up to here is accounted for.
    pub log_end: (u64, u64),
    /// Partition -> (start, end).
    pub partitions: BTreeMap<u64, (u64, u64)>,
}

/// Reads the checkpoint, or an empty one when there is none.
pub(crate) async fn load<S: Storage>(storage: &S, config: &ShardConfig) -> Result<Checkpoint> {
    if !storage.list(&config.dir).await?.iter().any(|n| n == FILE) {
        return Ok(Checkpoint::default());
    }
    let path = config.dir.join(FILE);
    let file = storage.open(&path, false).await?;
    let len = file.size().await?;
    let bytes = file.read_at(0, align_up(len) as usize).await?;
    let corrupt = |why: &str| Error::corrupted(&path, 0, format!("partition checkpoint: {why}"));
    if bytes.len() < HEAD + 4 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let count = u64_at(&bytes, 24);
    let end = count
        .checked_mul(24)
        .and_then(|n| n.checked_add(HEAD as u64))
        .filter(|&e| e < bytes.len() as u64 && bytes.len() as u64 - e >= 4)
        .ok_or_else(|| corrupt("bad partition count"))? as usize;
    let crc = u32_at(&bytes, end);
    if crc32c::crc32c(&bytes[..end]) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let checkpoint = Checkpoint {
        log_end: (u64_at(&bytes, 8), u64_at(&bytes, 16)),
        partitions: (0..count as usize)
            .map(|i| {
                let at = HEAD + 24 * i;
                (
                    u64_at(&bytes, at),
                    (u64_at(&bytes, at + 8), u64_at(&bytes, at + 16)),
                )
            })
            .collect(),
    };
    drop(bytes);
    file.close().await?;
    Ok(checkpoint)
}

/// Writes `checkpoint` to the temporary file and syncs it. A failure here
/// leaves the checkpoint in place untouched.
pub(crate) async fn write_temp<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    checkpoint: &Checkpoint,
) -> Result<()> {
    let end = HEAD + 24 * checkpoint.partitions.len();
    let len = align_up(end as u64 + 4) as usize;
    let mut buf = storage.alloc(len.max(BLOCK_SIZE as usize));
    let bytes = buf.as_mut_slice();
    bytes.fill(0);
    bytes[..8].copy_from_slice(MAGIC);
    put_u64(bytes, 8, checkpoint.log_end.0);
    put_u64(bytes, 16, checkpoint.log_end.1);
    put_u64(bytes, 24, checkpoint.partitions.len() as u64);
    for (i, (&partition, &(start, stop))) in checkpoint.partitions.iter().enumerate() {
        let at = HEAD + 24 * i;
        put_u64(bytes, at, partition);
        put_u64(bytes, at + 8, start);
        put_u64(bytes, at + 16, stop);
    }
    let crc = crc32c::crc32c(&bytes[..end]);
    put_u32(bytes, end, crc);
    let tmp = config.dir.join(TMP);
    let file = storage.open(&tmp, true).await?;
    let total = buf.as_slice().len();
    let written = file.write_at(buf, 0).await?;
    if written != total {
        return Err(Error::ShortWrite {
            path: tmp,
            position: 0,
            expected: total,
            written,
        });
    }
    file.fdatasync().await?;
    file.close().await
}

/// Renames the temporary file written by [`write_temp`] over the
/// checkpoint and syncs the directory. After a failure here the directory's
/// state is unknown.
pub(crate) async fn install<S: Storage>(storage: &S, config: &ShardConfig) -> Result<()> {
    storage
        .rename(&config.dir.join(TMP), &config.dir.join(FILE))
        .await?;
    storage.sync_dir(&config.dir).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::{Faults, SimDisk};
    use proptest::prelude::*;

    proptest! {
        /// Whatever the file holds, loading it returns a checkpoint or an
        /// error naming the file; it never panics.
        #[test]
        fn any_file_contents_load_or_fail_cleanly(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            count: u64,
            magic: bool,
        ) {
            let mut bytes = Vec::new();
            if magic {
                bytes.extend_from_slice(MAGIC);
                bytes.extend_from_slice(&[0; 16]);
                bytes.extend_from_slice(&count.to_le_bytes());
            }
            bytes.extend_from_slice(&tail);
            let disk = SimDisk::new(1, Faults::default());
            let config = ShardConfig::new("/c");
            disk.set_contents(&config.dir.join(FILE), &bytes);
            if let Err(e) = futures_lite::future::block_on(load(&disk, &config)) {
                prop_assert!(matches!(e, Error::Corrupted { .. }), "{e}");
            }
        }
    }
}
