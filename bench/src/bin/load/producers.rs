//! The producers: `--producers` appenders, each with one append in flight,
//! spread over `--threads` client threads; each thread records its own
//! append latencies.

use std::{
    cell::RefCell,
    sync::{mpsc::Sender, Arc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use corelog::{Handle, Record};
use futures::{stream::FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;

use crate::{
    args::Args,
    latency::{self, ThreadLatency},
    pacing,
    progress::Shared,
    workload::{self, Header},
};

/// What one producer thread hands back: each of its producers with the
/// number of its acknowledged records, and the thread's append latencies.
type ThreadResult = (Vec<(u64, u64)>, Histogram<u64>);

/// The running producer threads.
pub struct Producers {
    threads: Vec<JoinHandle<ThreadResult>>,
}

/// What the producers did.
pub struct Produced {
    /// Per producer, its acknowledged records: sequences `0..acked[p]`.
    pub acked: Vec<u64>,
    /// Every append's latency, ns.
    pub latency: Histogram<u64>,
}

impl Producers {
    /// Starts the producer threads; each hands its recent append latencies
    /// to `progress` now and then.
    pub fn start(
        args: &Args,
        log: &Handle,
        shared: &Arc<Shared>,
        progress: &Sender<Histogram<u64>>,
    ) -> Producers {
        let budget = args.records.map(|r| r.div_ceil(args.producers));
        let threads = (0..args.threads)
            .map(|t| {
                let (args, log, shared) = (args.clone(), log.clone(), shared.clone());
                let progress = progress.clone();
                std::thread::spawn(move || run_thread(&args, &log, &shared, t, budget, progress))
            })
            .collect();
        Producers { threads }
    }

    /// True once every producer thread has finished.
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for the producer threads and gathers what they did.
    pub fn join(self, producers: u64) -> Result<Produced, String> {
        let mut acked = vec![0u64; producers as usize];
        let mut latencies = Vec::with_capacity(self.threads.len());
        for t in self.threads {
            let (counts, latency) = t.join().map_err(|_| "a producer thread panicked")?;
            for (p, n) in counts {
                acked[p as usize] = n;
            }
            latencies.push(latency);
        }
        Ok(Produced {
            acked,
            latency: latency::merge(latencies),
        })
    }
}

/// Runs the producers `p ≡ thread (mod threads)` concurrently on this
/// thread until they are done.
fn run_thread(
    args: &Args,
    log: &Handle,
    shared: &Shared,
    thread: u64,
    budget: Option<u64>,
    progress: Sender<Histogram<u64>>,
) -> ThreadResult {
    let latency = RefCell::new(ThreadLatency::new(progress));
    let counts = pacing::run(
        (0..args.producers)
            .filter(|p| p % args.threads == thread)
            .map(|p| {
                let latency = &latency;
                async move { (p, produce(args, log, shared, latency, p, budget).await) }
            })
            .collect::<FuturesUnordered<_>>()
            .collect::<Vec<_>>(),
    );
    (counts, latency.into_inner().into_histogram())
}

/// Runs one producer: appends batches to its partitions in turn until told
/// to stop or its share of records is done. Returns how many records (by
/// sequence, from 0) were acknowledged.
async fn produce(
    args: &Args,
    log: &Handle,
    shared: &Shared,
    latency: &RefCell<ThreadLatency>,
    producer: u64,
    budget: Option<u64>,
) -> u64 {
    let mine = workload::partitions_of(producer, args.producers, args.partitions);
    let schedule = Schedule::new(args, producer);
    let mut seq = 0u64;
    let mut round = 0usize;
    while !shared.stopped() && budget.is_none_or(|b| seq < b) {
        let t = schedule.wait_for(shared.started, round).await;
        let partition = mine[round % mine.len()];
        round += 1;
        let n = budget.map_or(args.batch as u64, |b| (b - seq).min(args.batch as u64));
        let sent_ns = t.duration_since(shared.started).as_nanos() as u64;
        let records = (seq..seq + n)
            .map(|seq| {
                let h = Header {
                    producer,
                    seq,
                    partition,
                    sent_ns,
                };
                Record::new(workload::value(args.seed, args.record_bytes, h))
            })
            .collect();
        match log.append(partition, records).await {
            Ok(_) => {
                latency.borrow_mut().record(t.elapsed().as_nanos() as u64);
                shared.acknowledged(n);
                seq += n;
            }
            Err(e) => {
                shared.error(format!("producer {producer}, partition {partition}: {e}"));
                shared.stop();
            }
        }
    }
    seq
}

/// When a producer's appends are due under `--rate`.
struct Schedule {
    /// Time between two appends of one producer; `None` without `--rate`.
    interval: Option<Duration>,
    /// This producer's offset in the interval, as a fraction of it.
    phase: f64,
}

impl Schedule {
    /// The schedule of `producer`.
    fn new(args: &Args, producer: u64) -> Schedule {
        Schedule {
            interval: args
                .rate
                .map(|r| Duration::from_secs_f64(args.batch as f64 * args.producers as f64 / r)),
            phase: producer as f64 / args.producers as f64,
        }
    }

    /// Waits until append number `round` is due, and returns when that
    /// was: latencies count from then, not from when the append went out,
    /// so that a generator running behind its schedule does not hide the
    /// wait (coordinated omission). Without `--rate`, it is due now.
    ///
    /// With `--rate`, append number k of a producer is due at
    /// (k + producer / producers) * interval: the producers' schedules are
    /// staggered, so the offered load is even, not a burst per interval.
    async fn wait_for(&self, started: Instant, round: usize) -> Instant {
        let now = Instant::now();
        let Some(interval) = self.interval else {
            return now;
        };
        let due = started + interval.mul_f64(round as f64 + self.phase);
        if due > now {
            pacing::sleep_until(due).await;
        }
        due
    }
}
