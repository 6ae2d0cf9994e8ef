//! A small end-to-end run of one shard: concurrent producers append under
//! `FsyncPolicy::Always` for a few seconds, the shard closes, reopens and
//! reports what recovery found. Run it with `cargo xtask demo`.

use std::{
    cell::Cell,
    rc::Rc,
    time::{Duration, Instant},
};

use corelog::{FsyncPolicy, Record, Shard, ShardConfig};
use glommio::{LocalExecutorBuilder, Placement};

const PRODUCERS: u64 = 64;
const RECORD_BYTES: usize = 1024;
const RUN_FOR: Duration = Duration::from_secs(3);

fn main() {
    // Not tmpfs: O_DIRECT needs a real file system.
    let dir = tempfile::tempdir_in(".").expect("temporary directory");
    let path = dir.path().to_path_buf();
    println!("shard directory: {}", path.display());
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let mut config = ShardConfig::new(&path);
            config.fsync = FsyncPolicy::Always;
            let (shard, _) = Shard::open(config.clone()).await.expect("open");
            let acked = Rc::new(Cell::new(0u64));
            let started = Instant::now();
            let tasks: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let shard = shard.clone();
                    let acked = acked.clone();
                    glommio::spawn_local(async move {
                        let value = vec![p as u8; RECORD_BYTES];
                        while started.elapsed() < RUN_FOR {
                            shard.append(p, &[Record::new(value.clone())]).await.expect("append");
                            acked.set(acked.get() + 1);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            let secs = started.elapsed().as_secs_f64();
            let s = shard.stats();
            println!(
                "appended {} records of {RECORD_BYTES} B from {PRODUCERS} producers under Always in {secs:.2} s: \
                 {:.0} records/s, {} fdatasyncs, {:.1} appends per commit",
                acked.get(),
                acked.get() as f64 / secs,
                s.fdatasyncs,
                s.mean_commit_appends()
            );
            shard.close().await.expect("close");
            let opened = Instant::now();
            let (shard, recovery) = Shard::open(config).await.expect("reopen");
            println!(
                "reopened in {:.1} ms: {} batches in {} segments, clean shutdown: {}",
                opened.elapsed().as_secs_f64() * 1e3,
                recovery.batches,
                recovery.segments,
                recovery.clean_shutdown
            );
            let recovered: u64 = (0..PRODUCERS).map(|p| shard.offsets(p).end).sum();
            assert_eq!(recovered, acked.get(), "every acknowledged record recovered");
            shard.close().await.expect("close");
        })
        .expect("executor")
        .join()
        .expect("demo");
}
