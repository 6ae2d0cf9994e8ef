//! The shard's files as the tests see them, independent of the recovery
//! code under test: its segments, the batches found in each by walking
//! headers, bytes overwritten in place, and files cut short.

use std::{
    fs::OpenOptions,
    io::{Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use corelog_shard::internals::peek_header;

/// A batch found in a segment file: its position, partition, offsets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Located {
    pub(crate) position: u64,
    pub(crate) length: u64,
    pub(crate) partition: u64,
    pub(crate) base: u64,
    pub(crate) end: u64,
}

pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// The batches in a segment file, found by walking headers (independent
/// of the recovery code under test).
pub(crate) fn batches_in(path: &Path) -> Vec<Located> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 4096;
    while pos + 64 <= bytes.len() {
        match peek_header(&bytes[pos..]) {
            Some(h) if h.length >= 64 && h.flags == 0 => {
                out.push(Located {
                    position: pos as u64,
                    length: u64::from(h.length),
                    partition: h.partition,
                    base: h.base_offset,
                    end: h.end_offset(),
                });
                pos += h.length as usize;
            }
            _ => pos = (pos / 4096 + 1) * 4096,
        }
    }
    out
}

/// All batches of the shard in log order.
pub(crate) fn all_batches(dir: &Path) -> Vec<Located> {
    segments(dir).iter().flat_map(|s| batches_in(s)).collect()
}

/// Batches of the segments before `last`.
pub(crate) fn segments_before(dir: &Path, last: &Path) -> Vec<Located> {
    segments(dir)
        .iter()
        .filter(|s| s.as_path() < last)
        .flat_map(|s| batches_in(s))
        .collect()
}

pub(crate) fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// Cuts the file at `path` to `len` bytes, durably.
pub(crate) fn cut(path: &Path, len: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
    f.sync_all().unwrap();
}
