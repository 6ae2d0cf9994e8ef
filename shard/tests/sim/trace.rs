//! Tracing for debugging a seed, printed only when `CORELOG_SIM_TRACE` is
//! set: the steps of a run and the batch headers on the disk at a crash.

use std::path::Path;

use corelog_shard::sim::SimDisk;

use crate::model::DIR;

/// Prints every batch header in the disk's segments (for debugging).
pub(crate) fn dump(disk: &SimDisk) {
    use corelog_shard::Storage;
    if std::env::var_os("CORELOG_SIM_TRACE").is_none() {
        return;
    }
    let dir = Path::new(DIR);
    let mut names = futures_lite::future::block_on(disk.list(dir)).unwrap();
    names.sort();
    for n in names {
        let bytes = disk.contents(&dir.join(&n)).unwrap();
        eprintln!("file {n}: {} bytes", bytes.len());
        if !n.ends_with(".wal") {
            continue;
        }
        let mut pos = 4096;
        while pos + 64 <= bytes.len() {
            match corelog_shard::internals::peek_header(&bytes[pos..]) {
                Some(h) if h.length >= 64 => {
                    eprintln!(
                        "  @{pos} p{} base {} n {} flags {} floor {}",
                        { h.partition },
                        { h.base_offset },
                        { h.record_count },
                        { h.flags },
                        { h.floor_block }
                    );
                    pos += h.length as usize;
                }
                _ => pos = (pos / 4096 + 1) * 4096,
            }
        }
    }
}

/// Prints a step of the run when `CORELOG_SIM_TRACE` is set.
pub(crate) fn note(msg: impl FnOnce() -> String) {
    if std::env::var_os("CORELOG_SIM_TRACE").is_some() {
        eprintln!("{}", msg());
    }
}
