//! Latency histograms: one per recording thread, so the threads never
//! contend on a lock; merged at the end. The producers' threads also hand
//! what they recorded to the progress line now and then, over a channel.

use std::{
    sync::mpsc::{Receiver, Sender},
    time::{Duration, Instant},
};

use corelog_bench::load_report::LatencyUs;
use hdrhistogram::Histogram;

/// How often a producer thread hands its recent latencies to the progress
/// line.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// An empty latency histogram of nanoseconds, from 1 ns to an hour at three
/// significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

/// Records `ns` (at least 1) in `h`; a latency above an hour is dropped.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.record(ns.max(1)).ok();
}

/// The sum of `parts`.
pub fn merge(parts: impl IntoIterator<Item = Histogram<u64>>) -> Histogram<u64> {
    let mut all = histogram();
    for h in parts {
        // Invariant: every histogram has the bounds of `histogram()`, so
        // adding cannot fail.
        all.add(&h).expect("histograms of the same bounds");
    }
    all
}

/// Quantile `q` of `h` in microseconds.
pub fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

/// The percentiles of `h` that the report gives, in microseconds.
pub fn percentiles(h: &Histogram<u64>) -> LatencyUs {
    LatencyUs {
        p50: us(h, 0.5),
        p90: us(h, 0.9),
        p99: us(h, 0.99),
        p999: us(h, 0.999),
        max: us(h, 1.0),
    }
}

/// The append latencies that the producers of one thread record: all of
/// them, and those not yet handed to the progress line.
pub struct ThreadLatency {
    all: Histogram<u64>,
    recent: Histogram<u64>,
    published: Instant,
    progress: Sender<Histogram<u64>>,
}

impl ThreadLatency {
    /// An empty record that hands recent latencies to `progress`.
    pub fn new(progress: Sender<Histogram<u64>>) -> Self {
        ThreadLatency {
            all: histogram(),
            recent: histogram(),
            published: Instant::now(),
            progress,
        }
    }

    /// Records one append's latency, handing the recent ones to the
    /// progress line when it is time to.
    pub fn record(&mut self, ns: u64) {
        record(&mut self.all, ns);
        record(&mut self.recent, ns);
        if self.published.elapsed() >= PUBLISH_EVERY {
            // An error means the progress line is gone: the run is over.
            self.progress.send(self.recent.clone()).ok();
            self.recent.reset();
            self.published = Instant::now();
        }
    }

    /// Every latency recorded.
    pub fn into_histogram(self) -> Histogram<u64> {
        self.all
    }
}

/// The append latencies the producer threads have handed over so far, for
/// the progress line.
pub struct LiveLatency {
    received: Receiver<Histogram<u64>>,
    so_far: Histogram<u64>,
}

impl LiveLatency {
    /// Gathers what the producer threads send to `received`.
    pub fn new(received: Receiver<Histogram<u64>>) -> Self {
        LiveLatency {
            received,
            so_far: histogram(),
        }
    }

    /// Quantile `q` in microseconds of every latency handed over until now.
    pub fn us(&mut self, q: f64) -> f64 {
        for h in self.received.try_iter() {
            // Invariant: as in `merge`.
            self.so_far.add(&h).expect("histograms of the same bounds");
        }
        us(&self.so_far, q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_histograms_merge_into_the_whole() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut a = ThreadLatency::new(tx.clone());
        let mut b = ThreadLatency::new(tx);
        for ns in 1..=1000 {
            a.record(ns * 1000);
        }
        b.record(0);
        drop(rx);
        let all = merge([a.into_histogram(), b.into_histogram()]);
        assert_eq!(all.len(), 1001);
        assert_eq!(all.min(), 1);
        assert!((us(&all, 1.0) - 1000.0).abs() < 1.0);
    }

    #[test]
    fn the_live_view_adds_up_what_is_handed_over() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut live = LiveLatency::new(rx);
        assert_eq!(live.us(0.99), 0.0);
        let mut h = histogram();
        record(&mut h, 5_000);
        tx.send(h.clone()).unwrap();
        tx.send(h).unwrap();
        assert!((live.us(0.5) - 5.0).abs() < 0.01);
        assert_eq!(live.so_far.len(), 2);
    }
}
