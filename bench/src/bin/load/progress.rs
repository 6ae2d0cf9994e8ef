//! The state the load's threads share (start, stop flag, acknowledged
//! records, errors) and the progress line that watches it.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use crate::{args::Args, latency::LiveLatency};

/// How often the progress line is updated and the throughput sampled.
const TICK: Duration = Duration::from_millis(250);

/// What the producers, the consumers and the progress line share.
pub struct Shared {
    /// When the load started; send times count from here.
    pub started: Instant,
    /// Set when the producers and consumers are to stop.
    stop: AtomicBool,
    /// Records acknowledged so far.
    records: AtomicU64,
    /// Errors of appends and fetches (rare: not on the hot path).
    errors: Mutex<Vec<String>>,
}

impl Shared {
    /// The shared state of a load starting now.
    pub fn new() -> Self {
        Shared {
            started: Instant::now(),
            stop: AtomicBool::new(false),
            records: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
        }
    }

    /// Tells the producers and consumers to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// True once the producers and consumers are to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts `n` more acknowledged records.
    pub fn acknowledged(&self, n: u64) {
        self.records.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes an error of the load.
    pub fn error(&self, what: String) {
        self.errors.lock().unwrap().push(what);
    }

    /// The errors noted so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// Shows throughput and append p99 until `finished` (every producer has
/// finished), stopping the producers at the end of `--duration` (unless
/// `--records` is set).
/// Returns the throughput over time: (seconds since the start, records/s).
pub fn watch(
    args: &Args,
    shared: &Shared,
    live: &mut LiveLatency,
    finished: impl Fn() -> bool,
) -> Vec<(f64, f64)> {
    let bar = indicatif::ProgressBar::new_spinner();
    let deadline = shared.started + Duration::from_secs_f64(args.duration);
    let mut timeline = Vec::new();
    let mut last = (Instant::now(), 0u64);
    while !finished() {
        std::thread::sleep(TICK);
        if args.records.is_none() && Instant::now() >= deadline {
            shared.stop();
        }
        let now = Instant::now();
        let records = shared.records.load(Ordering::Relaxed);
        let rate = (records - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        timeline.push((shared.started.elapsed().as_secs_f64(), rate));
        bar.set_message(format!(
            "{:>10.0} records/s  {:>8.1} MB/s  append p99 {:>8.0} us  ({records} records)",
            rate,
            rate * args.record_bytes as f64 / 1e6,
            live.us(0.99)
        ));
        bar.tick();
        last = (now, records);
    }
    bar.finish_and_clear();
    timeline
}
