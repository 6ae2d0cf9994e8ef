//! Helpers shared by the shard's integration tests.
#![allow(dead_code)]

use std::{future::Future, path::Path};

use std::{cell::RefCell, collections::HashMap};

use corelog_shard::{
    internals::{Appended, Batch, Wal},
    FsyncPolicy, Record, ShardConfig, Storage,
};
use glommio::{LocalExecutorBuilder, Placement};

/// Runs `f` on a fresh glommio executor. Tests run on parallel threads and
/// every executor registers its I/O memory, so keep the pool small.
pub fn run<F, T>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor panicked")
}

/// A temporary directory on the project's disk (not tmpfs: O_DIRECT).
pub fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

/// A small-segment configuration so tests roll often.
pub fn small_config(dir: &Path, fsync: FsyncPolicy) -> ShardConfig {
    let mut c = ShardConfig::new(dir);
    c.fsync = fsync;
    c.segment_bytes = 64 << 10;
    c.max_record_bytes = 8 << 10;
    c.max_batch_bytes = 16 << 10;
    c.max_write_bytes = 32 << 10;
    c
}

/// Deterministic records for batch `i`: 1 to 4 records of varied sizes, some
/// with keys and headers.
pub fn records_for(i: u64) -> Vec<Record> {
    let n = 1 + (i % 4) as usize;
    (0..n)
        .map(|j| {
            let len = ((i * 37 + j as u64 * 11) % 300) as usize;
            let value: Vec<u8> = (0..len).map(|b| (b as u64 ^ i) as u8).collect();
            let mut r = Record::new(value).with_timestamp(1_000 + i as i64);
            if i.is_multiple_of(3) {
                r = r.with_key(format!("key-{i}-{j}"));
            }
            if i.is_multiple_of(5) {
                r = r.with_header("h", vec![j as u8; 3]);
            }
            r
        })
        .collect()
}

/// Checks that `batch` holds exactly `records` from `base`.
pub fn assert_batch_holds(batch: &Batch, base: u64, records: &[Record]) {
    let got: Vec<_> = batch.records().collect();
    assert_eq!(got.len(), records.len());
    for (i, (v, r)) in got.iter().zip(records).enumerate() {
        assert_eq!(v.offset(), base + i as u64);
        assert_eq!(v.value(), r.value());
        assert_eq!(v.key(), r.key());
        assert_eq!(Some(v.timestamp()), r.timestamp());
        assert!(v.headers().eq(r.headers()));
    }
}

thread_local! {
    /// Next offset per partition for tests that drive the WAL directly.
    static NEXT: RefCell<HashMap<u64, u64>> = RefCell::new(HashMap::new());
}

/// Appends a data batch to the WAL with the next offsets of `partition`
/// (counted per test thread).
pub async fn append<S: Storage>(
    wal: &Wal<S>,
    partition: u64,
    records: &[Record],
) -> corelog_shard::Result<Appended> {
    let base = NEXT.with(|n| *n.borrow().get(&partition).unwrap_or(&0));
    let a = wal.append(partition, base, 0, records).await?;
    NEXT.with(|n| {
        n.borrow_mut()
            .insert(partition, base + records.len() as u64)
    });
    Ok(a)
}
