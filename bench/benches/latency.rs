//! Latency of a single appender under `FsyncPolicy::Always`, against the
//! floor of the same I/O done with glommio's `DmaFile` directly (a 4 KiB
//! O_DIRECT write at a pre-written position, then fdatasync), measured in
//! alternating rounds in one process so both see the same disk.
//!
//! Run: `cargo bench -p corelog-bench --bench latency`.

use std::time::{Duration, Instant};

use corelog_bench::{records, OpenShard};
use corelog_shard::FsyncPolicy;
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
    let mut h_raw = Histogram::<u64>::new(3).unwrap();
    let mut h_shard = Histogram::<u64>::new(3).unwrap();
    for _ in 0..ROUNDS {
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
        ("glommio DmaFile write+fdatasync", &h_raw),
        ("shard append", &h_shard),
    ] {
        println!(
            "  {name:34} p50 {:7.1} us  p90 {:7.1} us  p99 {:7.1} us  ({:.0}/s)",
            us(h, 0.5),
            us(h, 0.9),
            us(h, 0.99),
            1e6 / h.mean() * 1e3
        );
    }
    println!(
        "  shard p50 / raw p50 = {:.2}",
        us(&h_shard, 0.5) / us(&h_raw, 0.5)
    );
    shard.run(async move { raw.close().await.expect("close raw") });
}
