//! Raft appends through the openraft log store (`corelog::raft`), one
//! group and sixteen groups on one engine, beside the same appends through
//! `Handle`: entries/s and the latency of one append (a leader's append of
//! one entry, acknowledged when durable).
//!
//! `cargo bench -p corelog-bench --bench raft`

use std::{
    io::Cursor,
    time::{Duration, Instant},
};

use corelog::{raft::LogStore, Config, Engine, Record};
use hdrhistogram::Histogram;
use openraft::{storage::RaftLogStorageExt, testing::log_id, Entry, EntryPayload};

openraft::declare_raft_types!(
    /// Strings in, strings out.
    pub TypeConfig
);

/// Payload bytes of an entry.
const PAYLOAD: usize = 256;
/// Appends per group.
const APPENDS: u64 = 2_000;

#[derive(Clone, Copy)]
enum Path {
    Raft,
    Handle,
}

fn main() {
    println!("| path | groups | entries/s | append p50 | append p99 |");
    println!("|---|---|---|---|---|");
    for groups in [1u64, 16] {
        for path in [Path::Raft, Path::Handle] {
            let (rate, h) = run(path, groups);
            println!(
                "| {} | {groups} | {:.0} | {:.0} µs | {:.0} µs |",
                match path {
                    Path::Raft => "raft::LogStore::append",
                    Path::Handle => "Handle::append",
                },
                rate,
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
            );
        }
    }
}

/// `groups` tasks, each appending `APPENDS` single entries one after
/// another to its own partition; returns entries/s and the latencies (ns).
fn run(path: Path, groups: u64) -> (f64, Histogram<u64>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let engine = Engine::open(Config::new(dir.path())).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (elapsed, latencies) = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..groups)
            .map(|g| {
                let log = engine.handle();
                tokio::spawn(async move {
                    let mut h = Histogram::<u64>::new(3).expect("histogram");
                    let mut store = LogStore::<TypeConfig>::new(log.clone(), g).expect("Always");
                    for i in 0..APPENDS {
                        let t = Instant::now();
                        match path {
                            Path::Raft => {
                                let entry = Entry {
                                    log_id: log_id(1, 1, i),
                                    payload: EntryPayload::Normal("x".repeat(PAYLOAD)),
                                };
                                store.blocking_append([entry]).await.expect("raft append");
                            }
                            Path::Handle => {
                                let record = Record::new(vec![b'x'; PAYLOAD]);
                                log.append(g, vec![record]).await.expect("append");
                            }
                        }
                        h.record(t.elapsed().as_nanos() as u64).expect("record");
                    }
                    h
                })
            })
            .collect();
        let mut all = Histogram::<u64>::new(3).expect("histogram");
        for t in tasks {
            all.add(t.await.expect("task")).expect("add");
        }
        (start.elapsed(), all)
    });
    engine.close().expect("close");
    let rate = (groups * APPENDS) as f64 / elapsed.max(Duration::from_nanos(1)).as_secs_f64();
    (rate, latencies)
}
