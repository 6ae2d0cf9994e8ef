//! Shared helpers for corelog's criterion benches: a shard kept open on a
//! glommio executor across criterion samples, so samples measure appends and
//! not setup. Also the load generator's JSON report format,
//! [`load_report`].

pub mod load_report;

use std::{
    future::Future,
    path::Path,
    rc::Rc,
    time::{Duration, Instant},
};

use corelog_shard::{FsyncPolicy, Record, Shard, ShardConfig, ShardStats};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

/// A directory for bench data on the disk of the current directory (not
/// tmpfs: O_DIRECT).
pub fn bench_dir() -> tempfile::TempDir {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data");
    std::fs::create_dir_all(root).expect("bench data dir");
    tempfile::tempdir_in(root).expect("temp dir")
}

/// The configuration the write benches use.
pub fn bench_config(dir: &Path, fsync: FsyncPolicy) -> ShardConfig {
    let mut c = ShardConfig::new(dir);
    c.fsync = fsync;
    c.segment_bytes = 256 << 20;
    c
}

/// A glommio executor on the calling thread, pinned to CPU 0.
pub fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Fixed(0))
        .io_memory(8 << 20)
        .make()
        .expect("make executor")
}

/// A shard open on an executor of the bench thread.
pub struct OpenShard {
    /// The executor; `run` drives the shard's tasks.
    pub ex: LocalExecutor,
    /// The shard.
    pub shard: Shard,
    _dir: tempfile::TempDir,
}

impl OpenShard {
    /// Opens a shard with `configure` applied to the bench configuration,
    /// makes its first append (creating the first segment) and waits until
    /// the next spare segment is ready.
    pub fn new(fsync: FsyncPolicy, configure: impl FnOnce(&mut ShardConfig)) -> Self {
        let dir = bench_dir();
        let mut config = bench_config(dir.path(), fsync);
        configure(&mut config);
        let ex = executor();
        let shard = ex.run(async move {
            let (shard, _) = Shard::open(config).await.expect("open shard");
            shard
                .append(u64::MAX, &[Record::new(vec![0u8; 8])])
                .await
                .expect("first append");
            wait_spare(&shard).await;
            shard
        });
        OpenShard {
            ex,
            shard,
            _dir: dir,
        }
    }

    /// Abandons the shard without close (as a crash would) and hands back
    /// its directory.
    pub fn abandon(self) -> tempfile::TempDir {
        let OpenShard { ex, shard, _dir } = self;
        ex.run(async move { drop(shard) });
        _dir
    }

    /// Runs `f` on the executor.
    pub fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.ex.run(f)
    }

    /// Appends `iters` copies of `records` from `producers` concurrent tasks
    /// (to partitions `0..producers`); returns the time taken and the
    /// counters' change.
    pub fn append(
        &self,
        producers: u64,
        records: &Rc<Vec<Record>>,
        iters: u64,
    ) -> (Duration, ShardStats) {
        let shard = self.shard.clone();
        let records = records.clone();
        self.ex.run(async move {
            wait_spare(&shard).await;
            let before = shard.stats();
            let started = Instant::now();
            let tasks: Vec<_> = (0..producers)
                .map(|p| {
                    let shard = shard.clone();
                    let records = records.clone();
                    let n = iters / producers + u64::from(p < iters % producers);
                    glommio::spawn_local(async move {
                        for _ in 0..n {
                            shard.append(p, &records).await.expect("append");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let elapsed = started.elapsed();
            (elapsed, delta(&before, &shard.stats()))
        })
    }
}

/// Waits until the next segment is prepared, so that its zeroing does not
/// compete with a measurement.
async fn wait_spare(shard: &Shard) {
    while !shard.stats().spare_ready {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// Counter changes from `a` to `b`.
pub fn delta(a: &ShardStats, b: &ShardStats) -> ShardStats {
    ShardStats {
        appends: b.appends - a.appends,
        records: b.records - a.records,
        bytes: b.bytes - a.bytes,
        bytes_written: b.bytes_written - a.bytes_written,
        writes: b.writes - a.writes,
        fdatasyncs: b.fdatasyncs - a.fdatasyncs,
        commits: b.commits - a.commits,
        rolls: b.rolls - a.rolls,
        roll_waits: b.roll_waits - a.roll_waits,
        ..*b
    }
}

/// `count` records of `bytes` bytes each.
pub fn records(count: usize, bytes: usize) -> Rc<Vec<Record>> {
    Rc::new((0..count).map(|_| Record::new(vec![0x5A; bytes])).collect())
}
