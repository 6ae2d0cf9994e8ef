//! The partition checkpoint: every partition's start and end offsets and
//! metadata as of a position in the log, written before a segment is
//! deleted, so that what the deleted segment held (its batches, and the
//! control batches that moved start offsets or set metadata) is not needed
//! to rebuild the partitions.
//!
//! Layout (little-endian), padded with zeros to a block multiple:
//!
//! ```text
//! 0   8   magic "CLCKPT03"
//! 8   8   log end: segment sequence
//! 16  8   log end: byte position in that segment
//! 24  8   partition count n
//! 32  24n (partition u64, start u64, end u64) per partition
//! ..  8   metadata entry count m
//! ..      per entry: partition u64, key length u16, value length u32,
//!         key, value
//! ..  4   CRC32C of everything before it
//! ```
//!
//! A "CLCKPT02" checkpoint (no metadata section) is read as one with no
//! metadata.
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

const MAGIC: &[u8; 8] = b"CLCKPT03";
/// The previous version: no metadata section.
const MAGIC_V2: &[u8; 8] = b"CLCKPT02";
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
    /// Partition -> metadata key -> value.
    pub meta: BTreeMap<u64, BTreeMap<Vec<u8>, Vec<u8>>>,
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
    let checkpoint = parse(&bytes).map_err(corrupt)?;
    drop(bytes);
    file.close().await?;
    Ok(checkpoint)
}

/// The checkpoint in `bytes`, or what is wrong with them.
fn parse(bytes: &[u8]) -> std::result::Result<Checkpoint, &'static str> {
    let v3 = bytes.len() >= HEAD && &bytes[..8] == MAGIC;
    if bytes.len() < HEAD + 4 || !(v3 || &bytes[..8] == MAGIC_V2) {
        return Err("bad magic");
    }
    let count = u64_at(bytes, 24);
    let mut at = count
        .checked_mul(24)
        .and_then(|n| n.checked_add(HEAD as u64))
        .filter(|&e| e < bytes.len() as u64 && bytes.len() as u64 - e >= 4)
        .ok_or("bad partition count")? as usize;
    let mut partitions = BTreeMap::new();
    for i in 0..count as usize {
        let at = HEAD + 24 * i;
        let (partition, start, end) = (
            u64_at(bytes, at),
            u64_at(bytes, at + 8),
            u64_at(bytes, at + 16),
        );
        // Invariant: written from a map, in increasing partition order,
        // each range with its start at or before its end. A checksum
        // that matches bytes breaking it means a writer's defect, which
        // must not become a partition whose end is before its start.
        if partitions
            .last_key_value()
            .is_some_and(|(&p, _)| p >= partition)
        {
            return Err("partitions out of order");
        }
        if start > end {
            return Err("a partition starts after its end");
        }
        partitions.insert(partition, (start, end));
    }
    let mut checkpoint = Checkpoint {
        log_end: (u64_at(bytes, 8), u64_at(bytes, 16)),
        partitions,
        meta: BTreeMap::new(),
    };
    if v3 {
        let fits = |at: usize, n: usize| at.checked_add(n).is_some_and(|e| e + 4 <= bytes.len());
        if !fits(at, 8) {
            return Err("bad metadata count");
        }
        let entries = u64_at(bytes, at);
        at += 8;
        for _ in 0..entries {
            if !fits(at, 14) {
                return Err("bad metadata entry");
            }
            let partition = u64_at(bytes, at);
            let key_len = usize::from(u16::from_le_bytes([bytes[at + 8], bytes[at + 9]]));
            let value_len = u32_at(bytes, at + 10) as usize;
            at += 14;
            if !fits(at, key_len.saturating_add(value_len)) {
                return Err("bad metadata entry");
            }
            let key = bytes[at..at + key_len].to_vec();
            let value = bytes[at + key_len..at + key_len + value_len].to_vec();
            at += key_len + value_len;
            checkpoint
                .meta
                .entry(partition)
                .or_default()
                .insert(key, value);
        }
    }
    if crc32c::crc32c(&bytes[..at]) != u32_at(bytes, at) {
        return Err("checksum mismatch");
    }
    Ok(checkpoint)
}

/// The encoded size of `checkpoint`, checksum excluded.
fn encoded_len(checkpoint: &Checkpoint) -> usize {
    let meta: usize = checkpoint
        .meta
        .values()
        .flat_map(|m| m.iter())
        .map(|(k, v)| 14 + k.len() + v.len())
        .sum();
    HEAD + 24 * checkpoint.partitions.len() + 8 + meta
}

/// Writes `checkpoint` to the temporary file and syncs it. A failure here
/// leaves the checkpoint in place untouched.
pub(crate) async fn write_temp<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    checkpoint: &Checkpoint,
) -> Result<()> {
    let end = encoded_len(checkpoint);
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
    let mut at = HEAD + 24 * checkpoint.partitions.len();
    let entries = checkpoint.meta.values().map(BTreeMap::len).sum::<usize>();
    put_u64(bytes, at, entries as u64);
    at += 8;
    for (&partition, meta) in &checkpoint.meta {
        for (key, value) in meta {
            put_u64(bytes, at, partition);
            let key_len = u16::try_from(key.len()).expect("metadata keys are bounded");
            bytes[at + 8..at + 10].copy_from_slice(&key_len.to_le_bytes());
            let value_len = u32::try_from(value.len()).expect("metadata values are bounded");
            put_u32(bytes, at + 10, value_len);
            at += 14;
            bytes[at..at + key.len()].copy_from_slice(key);
            at += key.len();
            bytes[at..at + value.len()].copy_from_slice(value);
            at += value.len();
        }
    }
    // Invariant: the layout above fills exactly what `encoded_len` counted.
    assert_eq!(at, end, "checkpoint encoding");
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

    /// Writes and installs `checkpoint` in `/c` of a fresh simulated disk,
    /// then loads it back.
    fn written_and_loaded(checkpoint: &Checkpoint) -> Result<Checkpoint> {
        let disk = SimDisk::new(1, Faults::default());
        let config = ShardConfig::new("/c");
        futures_lite::future::block_on(async {
            disk.prepare_dir(&config.dir).await.unwrap();
            write_temp(&disk, &config, checkpoint).await.unwrap();
            install(&disk, &config).await.unwrap();
            load(&disk, &config).await
        })
    }

    /// A checkpoint whose checksum matches but whose ranges cannot be
    /// (a start past its end) is refused as corrupt, naming the file.
    #[test]
    fn a_range_starting_after_its_end_is_refused() {
        let checkpoint = Checkpoint {
            log_end: (3, 8192),
            partitions: BTreeMap::from([(1, (0, 4)), (2, (9, 5))]),
            meta: BTreeMap::new(),
        };
        match written_and_loaded(&checkpoint) {
            Err(Error::Corrupted { path, reason, .. }) => {
                assert_eq!(path, ShardConfig::new("/c").dir.join(FILE));
                assert!(reason.contains("starts after its end"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn offsets_and_metadata_round_trip() {
        let checkpoint = Checkpoint {
            log_end: (3, 8192),
            partitions: BTreeMap::from([(1, (0, 4)), (9, (7, 7))]),
            meta: BTreeMap::from([(
                9,
                BTreeMap::from([(b"vote".to_vec(), vec![1, 2, 3]), (b"e".to_vec(), vec![])]),
            )]),
        };
        assert_eq!(written_and_loaded(&checkpoint).unwrap(), checkpoint);
    }
}
