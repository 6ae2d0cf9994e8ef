//! The cost of waking a parked shard: a request from a plain thread to an
//! idle shard and its reply (`Handle::offsets`, which does no I/O), paced so
//! that the shard parks between requests, against the same round trip
//! between two plain threads over `std::sync::mpsc`. Each round trip wakes
//! a parked thread twice (the server, then the caller). Reports latency
//! and the process's CPU time per round trip (both sides summed), so the
//! floor that glommio's park and wake-up put under an idle shard's cost
//! per request is a measured figure.
//!
//! Run: `cargo bench -p corelog-bench --bench wake`.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use corelog::{Config, Engine, FsyncPolicy};
use futures::executor::block_on;
use hdrhistogram::Histogram;

const TRIPS: usize = 3_000;
/// Pause between round trips: long enough for the server to park.
const PAUSE: Duration = Duration::from_micros(300);

/// User + system CPU time of the whole process.
fn cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `trip` `TRIPS` times, paced; returns the latency histogram (ns) and
/// the CPU time per trip.
fn measure(mut trip: impl FnMut()) -> (Histogram<u64>, Duration) {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let mut busy = Duration::ZERO;
    for _ in 0..TRIPS {
        std::thread::sleep(PAUSE);
        let before = cpu();
        let started = Instant::now();
        trip();
        h.record(started.elapsed().as_nanos() as u64)
            .expect("record");
        busy += cpu() - before;
    }
    (h, busy / TRIPS as u32)
}

fn main() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let engine =
        Engine::open(Config::new(dir.path()).shards(1).fsync(FsyncPolicy::Never)).expect("open");
    let log = engine.handle();
    let shard = measure(|| {
        block_on(log.offsets(0)).expect("offsets");
    });
    engine.close().expect("close");

    let (to_server, requests) = mpsc::channel::<()>();
    let (to_caller, replies) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        while requests.recv().is_ok() {
            to_caller.send(()).expect("reply");
        }
    });
    let plain = measure(|| {
        to_server.send(()).expect("request");
        replies.recv().expect("reply");
    });
    drop(to_server);
    server.join().expect("server");

    println!("round trip to a parked server, {TRIPS} trips, {PAUSE:?} apart");
    for (name, (h, cpu)) in [
        ("idle shard (Handle::offsets)", &shard),
        ("plain thread (std mpsc)", &plain),
    ] {
        println!(
            "  {name:30} p50 {:6.1} us  p99 {:6.1} us  CPU {:5.1} us a trip",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            cpu.as_secs_f64() * 1e6
        );
    }
}
