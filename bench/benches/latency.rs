//! Latency of a single appender under `FsyncPolicy::Always`, on the shard
//! and through `Handle` from a plain thread, against two floors of the same
//! I/O (a 4 KiB O_DIRECT write at a pre-written position, then
//! fdatasync): a plain blocking loop of `pwrite` + `fdatasync`, and
//! glommio's `DmaFile`. Measured in alternating rounds in one process, so
//! all see the same disk.
//!
//! Run: `cargo bench -p corelog-bench --bench latency`.

use std::{
    fs::OpenOptions as StdOpen,
    os::unix::fs::{FileExt, OpenOptionsExt},
    time::{Duration, Instant},
};

use corelog::{Config, Engine, Record};
use corelog_bench::{records, OpenShard};
use corelog_shard::FsyncPolicy;
use futures::executor::block_on;
use glommio::io::OpenOptions;
use hdrhistogram::Histogram;

const ROUNDS: usize = 6;
const PER_ROUND: usize = 1500;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let record_bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4096);
    let shard = OpenShard::new(FsyncPolicy::Always, |_| {});
    let recs = records(1, record_bytes);
    let raw_path = shard.shard.config().dir.join("raw-floor");
    let raw = shard.run(async {
        std::fs::write(&raw_path, vec![0u8; 16 << 20]).expect("raw file");
        OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&raw_path)
            .await
            .expect("open raw")
    });
    // The plain floor: a blocking loop on this thread, as a program without
    // io_uring would write.
    let plain_path = shard.shard.config().dir.join("plain-floor");
    std::fs::write(&plain_path, vec![0u8; 16 << 20]).expect("plain file");
    let plain = StdOpen::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&plain_path)
        .expect("open plain");
    let mut block = glommio::allocate_dma_buffer_global(4096);
    block.as_bytes_mut().fill(7);
    // The same appends through `Handle`: one shard, its own directory.
    let engine_dir = shard.shard.config().dir.join("engine");
    let engine = Engine::open(
        Config::new(&engine_dir)
            .shards(1)
            .fsync(FsyncPolicy::Always),
    )
    .expect("open engine");
    let log = engine.handle();
    let value = recs[0].value().to_vec();
    let mut h_plain = Histogram::<u64>::new(3).unwrap();
    let mut h_raw = Histogram::<u64>::new(3).unwrap();
    let mut h_shard = Histogram::<u64>::new(3).unwrap();
    let mut h_handle = Histogram::<u64>::new(3).unwrap();
    for _ in 0..ROUNDS {
        let mut pos = 0u64;
        for _ in 0..PER_ROUND {
            let started = Instant::now();
            plain.write_at(block.as_bytes(), pos).expect("pwrite");
            plain.sync_data().expect("fdatasync");
            h_plain.record(started.elapsed().as_nanos() as u64).unwrap();
            pos = (pos + 4096) % (16 << 20);
        }
        for _ in 0..PER_ROUND {
            let started = Instant::now();
            block_on(log.append(0, vec![Record::new(value.clone())])).expect("append");
            h_handle
                .record(started.elapsed().as_nanos() as u64)
                .unwrap();
        }
        shard.run(async {
            let mut pos = 0u64;
            for _ in 0..PER_ROUND {
                let started = Instant::now();
                let mut buf = raw.alloc_dma_buffer(4096);
                buf.as_bytes_mut().fill(7);
                raw.write_at(buf, pos).await.expect("write");
                raw.fdatasync().await.expect("fdatasync");
                h_raw.record(started.elapsed().as_nanos() as u64).unwrap();
                pos = (pos + 4096) % (16 << 20);
            }
            for _ in 0..PER_ROUND {
                let started = Instant::now();
                shard.shard.append(0, &recs).await.expect("append");
                h_shard.record(started.elapsed().as_nanos() as u64).unwrap();
            }
        });
    }
    let us = |h: &Histogram<u64>, q: f64| {
        Duration::from_nanos(h.value_at_quantile(q)).as_secs_f64() * 1e6
    };
    println!(
        "single appender, Always, {record_bytes} B records, {} operations each",
        ROUNDS * PER_ROUND
    );
    for (name, h) in [
        ("plain pwrite+fdatasync", &h_plain),
        ("glommio DmaFile write+fdatasync", &h_raw),
        ("shard append", &h_shard),
        ("Handle append, plain thread", &h_handle),
    ] {
        println!(
            "  {name:34} p50 {:7.1} us  p90 {:7.1} us  p99 {:7.1} us  ({:.0}/s)",
            us(h, 0.5),
            us(h, 0.9),
            us(h, 0.99),
            1e6 / h.mean() * 1e3
        );
    }
    for (name, h) in [("shard", &h_shard), ("Handle", &h_handle)] {
        println!(
            "  {name} / plain pwrite+fdatasync: p50 {:.2}x, p99 {:.2}x",
            us(h, 0.5) / us(&h_plain, 0.5),
            us(h, 0.99) / us(&h_plain, 0.99)
        );
    }
    engine.close().expect("close engine");
    shard.run(async move { raw.close().await.expect("close raw") });
}
