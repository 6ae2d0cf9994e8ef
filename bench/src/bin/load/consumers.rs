//! The tail consumers (`--consumers`): each follows its share of the
//! partitions with `fetch` long polls and records append-to-read latency in
//! its own histogram.

use std::{cell::RefCell, sync::Arc, thread::JoinHandle, time::Duration};

use corelog::Handle;
use futures::executor::block_on;
use hdrhistogram::Histogram;

use crate::{args::Args, latency, progress::Shared, workload::Header};

/// How long one `fetch` waits for new records.
const LONG_POLL: Duration = Duration::from_millis(20);

/// Most bytes one `fetch` returns.
const FETCH_BYTES: usize = 1 << 20;

/// The running consumer threads.
pub struct Consumers {
    threads: Vec<JoinHandle<Histogram<u64>>>,
}

impl Consumers {
    /// Starts `--consumers` consumer threads.
    pub fn start(args: &Args, log: &Handle, shared: &Arc<Shared>) -> Consumers {
        let threads = (0..args.consumers)
            .map(|c| {
                let (args, log, shared) = (args.clone(), log.clone(), shared.clone());
                std::thread::spawn(move || consume(&log, &shared, &args, c))
            })
            .collect();
        Consumers { threads }
    }

    /// Waits for the consumers (once told to stop) and merges their
    /// append-to-read latencies.
    pub fn join(self) -> Result<Histogram<u64>, String> {
        let mut parts = Vec::with_capacity(self.threads.len());
        for t in self.threads {
            parts.push(t.join().map_err(|_| "a consumer thread panicked")?);
        }
        Ok(latency::merge(parts))
    }
}

/// Follows partitions `p ≡ consumer (mod consumers)` from their start with
/// `fetch`, each partition by its own long poll (all concurrently on
/// this thread), recording append-to-read latency, until told to stop.
fn consume(log: &Handle, shared: &Shared, args: &Args, consumer: u64) -> Histogram<u64> {
    let local = RefCell::new(latency::histogram());
    block_on(futures::future::join_all(
        (0..args.partitions)
            .filter(|p| p % args.consumers == consumer)
            .map(|p| follow(log, shared, &local, consumer, p)),
    ));
    local.into_inner()
}

/// Follows partition `p` from its start until told to stop, recording in
/// `latencies` how long after its send each record was read.
async fn follow(
    log: &Handle,
    shared: &Shared,
    latencies: &RefCell<Histogram<u64>>,
    consumer: u64,
    p: u64,
) {
    let mut next = 0u64;
    while !shared.stopped() {
        let records = match log.fetch(p, next, FETCH_BYTES, LONG_POLL).await {
            Ok(records) => records,
            Err(e) => {
                shared.error(format!(
                    "consumer {consumer}, partition {p} offset {next}: {e}"
                ));
                return;
            }
        };
        let now = shared.started.elapsed().as_nanos() as u64;
        let mut h = latencies.borrow_mut();
        for r in &records {
            let sent = Header::read(r.value()).sent_ns;
            latency::record(&mut h, now.saturating_sub(sent));
        }
        next += records.len() as u64;
    }
}
