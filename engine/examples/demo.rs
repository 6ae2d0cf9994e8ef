//! A small end-to-end run of the engine: 64 producer threads append 1 KiB
//! records under `FsyncPolicy::Always` for a few seconds, the engine closes,
//! reopens, and every acknowledged record is checked. Run it with
//! `cargo xtask demo`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use corelog::{Config, Engine, FsyncPolicy, Record};
use futures::executor::block_on;

const PRODUCERS: u64 = 64;
const RECORD_BYTES: usize = 1024;
const RUN_FOR: Duration = Duration::from_secs(3);

fn main() -> Result<(), corelog::Error> {
    // Not tmpfs: O_DIRECT needs a real file system.
    let dir = tempfile::tempdir_in(".").expect("temporary directory");
    let config = Config::new(dir.path()).fsync(FsyncPolicy::Always);
    println!("engine directory: {}", dir.path().display());
    let engine = Engine::open(config.clone())?;
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (log, acked) = (engine.handle(), acked.clone());
            std::thread::spawn(move || {
                let value = vec![p as u8; RECORD_BYTES];
                let mut next = 0;
                while started.elapsed() < RUN_FOR {
                    let offset =
                        block_on(log.append(p, vec![Record::new(value.clone())])).expect("append");
                    assert_eq!(offset, next, "offsets are dense");
                    next += 1;
                    acked.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    let secs = started.elapsed().as_secs_f64();
    let acked = acked.load(Ordering::Relaxed);
    let stats = engine.stats()?;
    let fdatasyncs: u64 = stats.shards.iter().map(|(s, _)| s.fdatasyncs).sum();
    let commits: u64 = stats.shards.iter().map(|(s, _)| s.commits).sum();
    println!(
        "{} shards: {acked} records of {RECORD_BYTES} B from {PRODUCERS} threads under Always in {secs:.2} s: \
         {:.0} records/s, {fdatasyncs} fdatasyncs, {:.1} appends per commit",
        stats.shards.len(),
        acked as f64 / secs,
        acked as f64 / commits.max(1) as f64
    );
    engine.close()?;

    let opened = Instant::now();
    let engine = Engine::open(config)?;
    let log = engine.handle();
    let mut recovered = 0;
    for p in 0..PRODUCERS {
        let o = block_on(log.offsets(p))?;
        let records = block_on(log.read_range(p, 0, o.end))?;
        assert!(records
            .iter()
            .all(|r| r.value() == vec![p as u8; RECORD_BYTES].as_slice()));
        recovered += records.len() as u64;
    }
    println!(
        "reopened and read back in {:.1} ms: {recovered} records",
        opened.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(recovered, acked, "every acknowledged record recovered");
    engine.close()
}
