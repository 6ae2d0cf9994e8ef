#![allow(missing_docs, reason = "criterion_group! generates undocumented items")]
//! The rows of the seed's benchmark table (StreamBus milestone 1.1), one
//! bench each, doing the same work per iteration as the seed's. Figures
//! side by side are in docs/BENCHMARKS.md.

use std::{
    collections::VecDeque,
    rc::Rc,
    time::{Duration, Instant},
};

use corelog_bench::OpenShard;
use corelog_shard::{
    internals::{
        encode_batch, encoded_batch_len, Batch, BatchInfo, Body, IndexEntry, Memtable, OffsetIndex,
    },
    FsyncPolicy, Record, Shard, Submitted,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures::stream::{FuturesUnordered, StreamExt};
use std::hint::black_box;

fn entry(i: u64) -> IndexEntry {
    IndexEntry {
        base_offset: i,
        segment: 1,
        position: (i * 128) as u32,
        length: 128,
        record_count: 1,
    }
}

/// Index Add: one entry appended to a partition's index.
/// Index Lookup: one offset looked up in an index of 10,000 batches.
fn index(c: &mut Criterion) {
    c.bench_function("index/add", |b| {
        b.iter_batched_ref(
            || (OffsetIndex::default(), 0u64),
            |(ix, next)| {
                ix.push(entry(*next));
                *next += 1;
            },
            BatchSize::LargeInput,
        )
    });
    let mut ix = OffsetIndex::default();
    for i in 0..10_000 {
        ix.push(entry(i));
    }
    let mut i = 0u64;
    c.bench_function("index/lookup", |b| {
        b.iter(|| {
            i = (i + 7919) & 8191;
            black_box(ix.find(black_box(i)));
        })
    });
}

/// A one-record batch of `partition` at `offset` with a 100-byte value.
fn batch(partition: u64, offset: u64) -> Batch {
    let recs = [Record::new(vec![7u8; 100]).with_key(format!("key-{offset}"))];
    let mut bytes = vec![0; encoded_batch_len(&recs).unwrap().0];
    let info = BatchInfo {
        partition,
        base_offset: offset,
        ..BatchInfo::default()
    };
    encode_batch(&mut bytes, 0, info, &recs, 0);
    Batch::decode(&bytes, 0).unwrap()
}

/// MemTable Put: one batch inserted (into a memtable growing to 200,000).
/// Get: one batch found by offset. Iterator: 1,000 batches walked in order.
fn memtable(c: &mut Criterion) {
    let prepared: Vec<Batch> = (0..200_000).map(|i| batch(i % 8, i / 8)).collect();
    c.bench_function("memtable/put", |b| {
        b.iter_custom(|iters| {
            let batches: Vec<Batch> = prepared
                .iter()
                .cycle()
                .take(iters as usize)
                .cloned()
                .collect();
            let mut mt = Memtable::new(usize::MAX);
            // Full memtables are set aside and dropped after the clock
            // stops: a put does not pay for tearing the table down.
            let mut full = Vec::new();
            let started = Instant::now();
            for (i, batch) in batches.into_iter().enumerate() {
                if i > 0 && i % prepared.len() == 0 {
                    full.push(std::mem::replace(&mut mt, Memtable::new(usize::MAX)));
                }
                mt.insert(batch, 0);
            }
            let elapsed = started.elapsed();
            drop((full, mt));
            elapsed
        })
    });
    // Get and Iterator on a memtable of 1,000 batches, as the seed's
    // iterator row states (its get row does not say; the same size is used).
    let mut mt = Memtable::new(usize::MAX);
    for b in (0..1_000).map(|i| batch(0, i)) {
        mt.insert(b, 0);
    }
    let mut i = 0u64;
    c.bench_function("memtable/get", |b| {
        b.iter(|| {
            i = (i + 7919) % 1_000;
            black_box(mt.get(0, black_box(i)));
        })
    });
    c.bench_function("memtable/iterator_1000", |b| {
        b.iter(|| {
            let mut n = 0;
            mt.walk(0, 0, |b| {
                n += b.header().record_count;
                true
            });
            assert_eq!(n, 1_000);
        })
    });
}

/// `iters` appends of `records` through the WAL with explicit offsets. With
/// `pipelined`, one producer hands batches to the log without waiting for
/// each (the seed's append returns once its record is in a buffer) and
/// waits once, at the end, until all are written; otherwise one producer
/// waits for every append.
fn wal_appends(shard: &OpenShard, pipelined: bool, recs: &Rc<Vec<Record>>, iters: u64) -> Duration {
    let wal = shard.shard.wal().clone();
    let recs = recs.clone();
    shard.run(async move {
        let started = Instant::now();
        let mut last = 0;
        for i in 0..iters {
            if pipelined {
                let size = wal.check_batch(1000, &recs).expect("valid batch");
                wal.wait_for_room(size).await.expect("room");
                let info = BatchInfo {
                    partition: 1000,
                    base_offset: i * recs.len() as u64,
                    ..BatchInfo::default()
                };
                last = wal
                    .encode(info, Body::Records(&recs), size, |_| {})
                    .expect("encode")
                    .group;
            } else {
                wal.append(1000, i * recs.len() as u64, 0, &recs)
                    .await
                    .expect("append");
            }
        }
        wal.wait_committed(last).await.expect("written");
        started.elapsed()
    })
}

/// WAL Append: one 100-byte record appended, `Never`, pipelined (see
/// `wal_appends`); the time includes waiting until every write completed.
/// WAL Append+Sync: the same under `Always`, one appender.
/// WAL Read: one batch read back from the segment file by its location,
/// checksum verified: `read` when it was read recently (from the shard's
/// read cache), `read_cold` with the cache off (O_DIRECT: from the device,
/// no page cache).
fn wal(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_component");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    // The seed's WAL rows append this message.
    let one = Rc::new(vec![Record::new(
        b"this is a test message for benchmarking".to_vec(),
    )]);
    let never = OpenShard::new(FsyncPolicy::Never, |_| {});
    g.bench_function("append", |b| {
        b.iter_custom(|iters| wal_appends(&never, true, &one, iters))
    });
    let always = OpenShard::new(FsyncPolicy::Always, |_| {});
    g.bench_function("append_sync", |b| {
        b.iter_custom(|iters| wal_appends(&always, false, &one, iters))
    });
    let cold = OpenShard::new(FsyncPolicy::Never, |c| c.read_cache_bytes = 0);
    for (name, shard) in [("read", &never), ("read_cold", &cold)] {
        let appended = shard
            .run(shard.shard.wal().append(7, 0, 0, &one))
            .expect("append");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let wal = shard.shard.wal().clone();
                shard.run(async move {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let batch = wal
                            .read_batch(appended.segment, appended.position, appended.length)
                            .await
                            .expect("read");
                        black_box(batch);
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
    for s in [never, always, cold] {
        s.run(s.shard.close()).expect("close");
    }
}

/// Log Append: one record through the shard (offsets, index, memtable,
/// WAL, acknowledgement), `Never`, from one task that does not wait for
/// each append (the seed's append returns once its record is in a buffer):
/// it submits appends as the log takes them (the log's backpressure bounds
/// what is in flight), acknowledges those whose commit group was written
/// as it goes, and waits once at the end until every one is, as the WAL
/// Append row does. Log AppendBatch: five records.
/// `append_futures`: through [`Shard::append`], one future per append,
/// 1,024 in flight in a `FuturesUnordered`.
fn log(c: &mut Criterion) {
    const WINDOW: usize = 1024;
    let mut g = c.benchmark_group("log");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let shard = OpenShard::new(FsyncPolicy::Never, |_| {});
    for (name, n) in [("append", 1), ("append_batch_5", 5)] {
        let recs = seed_messages(n);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (s, recs) = (shard.shard.clone(), recs.clone());
                shard.run(async move {
                    let started = Instant::now();
                    let mut in_flight = VecDeque::new();
                    for _ in 0..iters {
                        in_flight.push_back(s.submit(0, &recs).await.expect("append"));
                        acknowledge_committed(&s, &mut in_flight).await;
                    }
                    if let Some(last) = in_flight.back() {
                        s.wait_committed(last.group).await.expect("commit");
                    }
                    acknowledge_committed(&s, &mut in_flight).await;
                    assert!(in_flight.is_empty());
                    started.elapsed()
                })
            })
        });
    }
    let recs = seed_messages(1);
    g.bench_function("append_futures", |b| {
        b.iter_custom(|iters| {
            let (s, recs) = (shard.shard.clone(), recs.clone());
            shard.run(async move {
                let started = Instant::now();
                let mut in_flight = FuturesUnordered::new();
                for _ in 0..iters {
                    if in_flight.len() == WINDOW {
                        let done: Option<corelog_shard::Result<u64>> = in_flight.next().await;
                        done.expect("in flight").expect("append");
                    }
                    in_flight.push(s.append(0, &recs));
                }
                while let Some(r) = in_flight.next().await {
                    r.expect("append");
                }
                started.elapsed()
            })
        })
    });
    // Log Read, as the seed's: 1,000 one-message appends to a partition,
    // then reads of up to 1,024 bytes (128 messages) from offset i % 1,000,
    // about 120 messages on average (fewer near the end).
    let s = shard.shard.clone();
    shard.run(async move {
        for _ in 0..1_000 {
            s.append(1, &seed_messages(1)).await.expect("fill");
        }
    });
    g.bench_function("read_120", |b| {
        b.iter_custom(|iters| {
            let s = shard.shard.clone();
            shard.run(async move {
                let started = Instant::now();
                for i in 0..iters {
                    let got = s.read(1, i % 1_000, 1024).await.expect("read");
                    assert_eq!(got.len() as u64, 128.min(1_000 - i % 1_000));
                }
                started.elapsed()
            })
        })
    });
    g.finish();
    shard.run(shard.shard.close()).expect("close");
}

/// The seed's Log Append messages: `n` records, key "key1" and value
/// "value1" and so on; key "key" and value "value" when `n` is 1.
fn seed_messages(n: usize) -> Rc<Vec<Record>> {
    let name = |what: &str, i: usize| match n {
        1 => what.to_string(),
        _ => format!("{what}{}", i + 1),
    };
    Rc::new(
        (0..n)
            .map(|i| Record::new(name("value", i).into_bytes()).with_key(name("key", i)))
            .collect(),
    )
}

/// Acknowledges the appends in flight whose commit group was written, and
/// tidies after them (memtable eviction) when there were any.
async fn acknowledge_committed(s: &Shard, in_flight: &mut VecDeque<Submitted>) {
    let committed = s.committed_group();
    if in_flight.front().is_none_or(|a| a.group > committed) {
        return;
    }
    while let Some(a) = in_flight.pop_front_if(|a| a.group <= committed) {
        s.acknowledge(&a);
    }
    s.after_commit().await;
}

criterion_group!(benches, index, memtable, wal, log);
criterion_main!(benches);
