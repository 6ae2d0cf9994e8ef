//! The engine seen from callers' threads: what crossing to a shard costs,
//! throughput from one shard to two, and how fast `wait_for` wakes.
//!
//! Run: `cargo bench -p corelog-bench --bench engine`. Prints its figures;
//! docs/BENCHMARKS.md records them.

use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use corelog::{Config, Engine, FsyncPolicy, Record};
use corelog_bench::bench_dir;
use futures::{
    executor::block_on,
    stream::{FuturesUnordered, StreamExt},
};
use hdrhistogram::Histogram;

fn engine(shards: usize, dir: &std::path::Path) -> Engine {
    Engine::open(
        Config::new(dir)
            .shards(shards)
            .fsync(FsyncPolicy::Never)
            .segment_bytes(256 << 20),
    )
    .expect("open engine")
}

/// Round trips of a request that does no I/O (`offsets`), from a plain
/// thread through the shard's queue and back, against the same call made
/// on the shard's own executor.
fn routing_cost() {
    const N: u32 = 100_000;
    let dir = bench_dir();
    let e = engine(1, dir.path());
    let log = e.handle();
    block_on(log.append(1, vec![Record::new(vec![1u8; 100])])).unwrap();
    let started = Instant::now();
    for _ in 0..N {
        block_on(log.offsets(1)).unwrap();
    }
    let cross = started.elapsed() / N;
    // The same requests, 1,024 in flight from one thread: the amortised
    // cost of crossing, without a thread wake-up per request.
    let started = Instant::now();
    block_on(async {
        let mut in_flight = FuturesUnordered::new();
        for _ in 0..N {
            if in_flight.len() == 1024 {
                let done: Option<corelog::Result<corelog::Offsets>> = in_flight.next().await;
                done.unwrap().unwrap();
            }
            in_flight.push(log.offsets(1));
        }
        while let Some(r) = in_flight.next().await {
            r.unwrap();
        }
    });
    let pipelined = started.elapsed() / N;
    println!("request cost with 1,024 in flight from one thread: {pipelined:?}");
    // The local fast path: code sent once to the shard calls it directly.
    let on_shard = block_on(log.run_on_shard(1, |shard| async move {
        let started = Instant::now();
        for _ in 0..N {
            let _ = std::hint::black_box(shard.offsets(1));
        }
        started.elapsed() / N
    }))
    .unwrap();
    println!("request round trip (offsets, no I/O): cross-thread {cross:?}, local fast path {on_shard:?}");
    e.close().unwrap();
}

/// Appends of 64 × 100 B from 8 threads, each keeping 64 appends in
/// flight: 1 shard, then 2.
fn shard_scaling() {
    for shards in [1, 2] {
        let dir = bench_dir();
        let e = engine(shards, dir.path());
        let appends_per_thread = 4_000u64;
        let threads = 8u64;
        let barrier = Arc::new(Barrier::new(threads as usize + 1));
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (log, barrier) = (e.handle(), barrier.clone());
                std::thread::spawn(move || {
                    let recs: Vec<Record> = (0..64).map(|_| Record::new(vec![7u8; 100])).collect();
                    barrier.wait();
                    block_on(async {
                        let mut in_flight = FuturesUnordered::new();
                        for i in 0..appends_per_thread {
                            if in_flight.len() == 64 {
                                let done: Option<corelog::Result<u64>> = in_flight.next().await;
                                done.unwrap().unwrap();
                            }
                            in_flight.push(log.append(t * 1000 + i % 16, recs.clone()));
                        }
                        while let Some(r) = in_flight.next().await {
                            r.unwrap();
                        }
                    });
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        for w in workers {
            w.join().unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        let records = (threads * appends_per_thread * 64) as f64;
        println!(
            "{shards} shard(s), 8 threads × 64 appends in flight, batches of 64 × 100 B, Never: {:.2} M records/s",
            records / secs / 1e6
        );
        e.close().unwrap();
    }
}

/// From an acknowledged append on one thread to the wake-up of a
/// `wait_for` on another.
fn wait_for_latency() {
    let dir = bench_dir();
    let e = engine(2, dir.path());
    let log = e.handle();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for i in 0..2_000u64 {
        let waiter = {
            let log = log.clone();
            std::thread::spawn(move || {
                block_on(log.wait_for(5, i, Duration::from_secs(5))).unwrap();
                Instant::now()
            })
        };
        std::thread::sleep(Duration::from_micros(200));
        let sent = Instant::now();
        block_on(log.append(5, vec![Record::new(vec![1u8; 100])])).unwrap();
        let woke = waiter.join().unwrap();
        h.record(woke.saturating_duration_since(sent).as_nanos() as u64)
            .unwrap();
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "append sent to wait_for woken (Never): p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        us(0.5),
        us(0.99),
        us(1.0)
    );
    e.close().unwrap();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    routing_cost();
    shard_scaling();
    wait_for_latency();
}
