#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]
//! Write path and recovery of one shard. Figures and commands are in
//! docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use corelog_bench::{bench_config, executor, records, OpenShard};
use corelog_shard::{FsyncPolicy, Shard};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // (name, policy, prezero, producers, records per append, record bytes)
    #[rustfmt::skip]
    let cases: &[(&str, FsyncPolicy, bool, u64, usize, usize)] = &[
        ("never/100B_x64/64_producers", FsyncPolicy::Never, true, 64, 64, 100),
        ("never/4KiB_x16/64_producers", FsyncPolicy::Never, true, 64, 16, 4096),
        ("always/4KiB/1_producer", FsyncPolicy::Always, true, 1, 1, 4096),
        ("always/4KiB/1_producer/fallocate_only", FsyncPolicy::Always, false, 1, 1, 4096),
        ("always/100B/1_producer", FsyncPolicy::Always, true, 1, 1, 100),
        ("always/1KiB/1_producer", FsyncPolicy::Always, true, 1, 1, 1024),
        ("always/1KiB/64_producers", FsyncPolicy::Always, true, 64, 1, 1024),
    ];
    for &(name, fsync, prezero, producers, batch, record_bytes) in cases {
        let recs = records(batch, record_bytes);
        if record_bytes >= 4096 {
            g.throughput(Throughput::Bytes((batch * record_bytes) as u64));
        } else {
            g.throughput(Throughput::Elements(batch as u64));
        }
        // Opened on first use, so benches filtered out cost nothing.
        let mut shard: Option<OpenShard> = None;
        let mut totals = corelog_shard::ShardStats::default();
        g.bench_function(BenchmarkId::new("append", name), |b| {
            b.iter_custom(|iters| {
                let shard = shard
                    .get_or_insert_with(|| OpenShard::new(fsync, |c| c.prezero_segments = prezero));
                let (elapsed, d) = shard.append(producers, &recs, iters);
                totals.appends += d.appends;
                totals.commits += d.commits;
                totals.bytes += d.bytes;
                totals.bytes_written += d.bytes_written;
                totals.fdatasyncs += d.fdatasyncs;
                elapsed
            })
        });
        if let Some(shard) = shard {
            eprintln!(
                "    {name}: {:.1} appends per commit, {:.2} disk bytes per batch byte, {:.3} fdatasyncs per append",
                totals.appends as f64 / totals.commits.max(1) as f64,
                totals.bytes_written as f64 / totals.bytes.max(1) as f64,
                totals.fdatasyncs as f64 / totals.appends.max(1) as f64,
            );
            shard.run(shard.shard.close()).expect("close");
        }
    }
    g.finish();
}

/// Recovery scan of a shard holding `SCAN_MIB` of 4 KiB records.
fn recovery(c: &mut Criterion) {
    const SCAN_MIB: u64 = 512;
    let filled = OpenShard::new(FsyncPolicy::Never, |_| {});
    let appends = SCAN_MIB * (1 << 20) / (16 * 4096);
    filled.append(4, &records(16, 4096), appends);
    // Abandoned without close: every open below scans every segment fully
    // (no clean-shutdown marker), and abandons the shard again.
    let dir = filled.abandon();
    let config = bench_config(dir.path(), FsyncPolicy::Never);
    let ex = executor();
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Bytes(SCAN_MIB << 20));
    g.bench_function("scan_512MiB", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let (shard, rec) = Shard::open(config.clone()).await.expect("open");
                    total += started.elapsed();
                    assert!(!rec.clean_shutdown);
                    assert!(rec.bytes_scanned >= SCAN_MIB << 20);
                    drop(shard);
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, append, recovery);
criterion_main!(benches);
