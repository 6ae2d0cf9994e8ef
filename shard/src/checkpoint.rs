//! The partition checkpoint: every partition's start and end offsets,
//! written before a segment is deleted, so that what the deleted segment
//! held (its batches, and the control batches that moved start offsets)
//! is not needed to rebuild the partitions.
//!
//! Layout (little-endian), padded with zeros to a block multiple:
//!
//! ```text
//! 0   8   magic "CLCKPT01"
//! 8   8   partition count n
//! 16  24n (partition u64, start u64, end u64) per partition
//! ..  4   CRC32C of everything before it
//! ```
//!
//! It is replaced atomically: written to a temporary file, synced, renamed
//! over the old one, and the directory synced.

use std::collections::BTreeMap;

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    segment::{align_up, BLOCK_SIZE},
    storage::{IoBuffer, Storage, StorageFile},
};

const MAGIC: &[u8; 8] = b"CLCKPT01";
const FILE: &str = "partitions.ckpt";
const TMP: &str = "partitions.ckpt.tmp";

/// Start and end offset of each partition.
pub(crate) type Checkpoint = BTreeMap<u64, (u64, u64)>;

/// Reads the checkpoint, or an empty one when there is none.
pub(crate) async fn load<S: Storage>(storage: &S, config: &ShardConfig) -> Result<Checkpoint> {
    if !storage.list(&config.dir)?.iter().any(|n| n == FILE) {
        return Ok(Checkpoint::new());
    }
    let path = config.dir.join(FILE);
    let file = storage.open(&path, false).await?;
    let len = file.size().await?;
    let bytes = file.read_at(0, align_up(len) as usize).await?;
    let corrupt = |why: &str| Error::corrupted(&path, 0, format!("partition checkpoint: {why}"));
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let count = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let end = count
        .checked_mul(24)
        .and_then(|n| n.checked_add(16))
        .filter(|&e| e < bytes.len() as u64 && bytes.len() as u64 - e >= 4)
        .ok_or_else(|| corrupt("bad partition count"))? as usize;
    let crc = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap());
    if crc32c::crc32c(&bytes[..end]) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
    let checkpoint = (0..count as usize)
        .map(|i| {
            let at = 16 + 24 * i;
            (u64_at(at), (u64_at(at + 8), u64_at(at + 16)))
        })
        .collect();
    drop(bytes);
    file.close().await?;
    Ok(checkpoint)
}

/// Replaces the checkpoint with `checkpoint`, durably.
pub(crate) async fn store<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    checkpoint: &Checkpoint,
) -> Result<()> {
    let end = 16 + 24 * checkpoint.len();
    let len = align_up(end as u64 + 4) as usize;
    let mut buf = storage.alloc(len.max(BLOCK_SIZE as usize));
    let bytes = buf.as_mut_slice();
    bytes.fill(0);
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..16].copy_from_slice(&(checkpoint.len() as u64).to_le_bytes());
    for (i, (partition, (start, stop))) in checkpoint.iter().enumerate() {
        let at = 16 + 24 * i;
        bytes[at..at + 8].copy_from_slice(&partition.to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&start.to_le_bytes());
        bytes[at + 16..at + 24].copy_from_slice(&stop.to_le_bytes());
    }
    let crc = crc32c::crc32c(&bytes[..end]);
    bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
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
    file.close().await?;
    storage.rename(&tmp, &config.dir.join(FILE)).await?;
    storage.sync_dir(&config.dir).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Faults, SimDisk};
    use proptest::prelude::*;

    /// Whatever the file holds, loading it returns a checkpoint or an
    /// error naming the file; it never panics.
    #[test]
    fn any_file_contents_load_or_fail_cleanly() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let mut runner = proptest::test_runner::TestRunner::default();
                let strategy = (
                    proptest::collection::vec(any::<u8>(), 0..200),
                    any::<u64>(),
                    any::<bool>(),
                );
                runner
                    .run(&strategy, |(tail, count, magic)| {
                        let mut bytes = Vec::new();
                        if magic {
                            bytes.extend_from_slice(MAGIC);
                            bytes.extend_from_slice(&count.to_le_bytes());
                        }
                        bytes.extend_from_slice(&tail);
                        let disk = SimDisk::new(1, Faults::default());
                        let config = ShardConfig::new("/c");
                        let result = futures_lite::future::block_on(async {
                            let f = disk.open(&config.dir.join(FILE), true).await.unwrap();
                            let mut buf = disk.alloc(align_up(bytes.len() as u64).max(1) as usize);
                            buf.as_mut_slice()[..bytes.len()].copy_from_slice(&bytes);
                            buf.truncate(align_up(bytes.len() as u64) as usize);
                            f.write_at(buf, 0).await.unwrap();
                            load(&disk, &config).await
                        });
                        if let Err(e) = result {
                            prop_assert!(matches!(e, Error::Corrupted { .. }), "{e}");
                        }
                        Ok(())
                    })
                    .unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
