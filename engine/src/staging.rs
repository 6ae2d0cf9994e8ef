//! Staged appends: per partition, the open [`Bundle`] that the next
//! unconditional appends to it join, whatever thread or task makes them;
//! and per thread, the bundles it staged into and has not sent.
//!
//! A bundle is sent to its shard when a thread or task waits on one of its
//! appends (an [`crate::Append`] polled and not ready sends its own bundle
//! and every bundle the polling thread staged into), when one of its
//! appends is dropped still staged, when a conditional or large append to
//! the partition follows it, when a flush or the engine's close sends
//! everything staged, when another method of a [`crate::Handle`] is called
//! on a thread that staged into it, when that thread exits, when it is
//! full (64 KiB; under `Always` a full bundle waits, linked before the
//! next one, for up to 1 MiB: see [`Bundle::follow`]), or when its shard
//! answers a commit (the shard sends what was staged for it meanwhile:
//! [`crate::bundle::Unsent`]). So an append waits in its bundle only while
//! appends keep coming without anyone waiting and the shard is busy with
//! an earlier write, and a thread appending one record at a time with a
//! window of appends outstanding sends a request a write, at most one a
//! window.
//!
//! Invariant: a partition has at most one open bundle, appends join it in
//! the order of the calls (under the bundle's lock, reached under the
//! partition's lock or as the thread's last bundle while it is open), and
//! a new one is opened only once the previous one is sent or linked to be
//! sent first, and closed to joins,
//! so appends reach the shard in call order: for one thread, for a task
//! that moves between threads, and for calls on several threads ordered
//! by their return.

use std::{
    cell::RefCell,
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use corelog_shard::Record;
use event_listener::{Event, Listener};

use crate::bundle::{Bundle, Exchange, Route};

/// Locks guarding the open bundles, partitions spread over them by hash:
/// appends to different partitions rarely share one.
const LOCKS: usize = 64;

/// Bundles a thread keeps to send at most; past this, the oldest is sent.
const MAX_NOTED: usize = 64;

/// The open bundles of an engine, per partition.
pub(crate) struct Staged {
    open: Vec<Mutex<HashMap<u64, Arc<Bundle>>>>,
    /// The thread that sends what stays staged ([`Staged::linger`]) is
    /// parked because nothing was staged; the next bundle opened wakes it.
    idle: AtomicBool,
    /// [`Staged::linger`] is to return: the engine is closing.
    stopping: AtomicBool,
    wake: Event,
}

/// How long an append made without anyone waiting may stay staged.
const LINGER: Duration = Duration::from_millis(10);

thread_local! {
    /// The bundles this thread staged into, to send when it waits.
    static NOTED: RefCell<Noted> = const { RefCell::new(Noted(Vec::new())) };
}

/// A thread's bundles to send, sent when the thread exits.
struct Noted(Vec<Arc<Bundle>>);

impl Drop for Noted {
    fn drop(&mut self) {
        for b in self.0.drain(..) {
            b.send();
        }
    }
}

/// Locks `m`; every critical section here is a lookup, an insert or a
/// send that leaves the map whole, so a panic elsewhere leaves nothing to
/// repair.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Staged {
    pub(crate) fn new() -> Self {
        Staged {
            open: (0..LOCKS).map(|_| Mutex::new(HashMap::new())).collect(),
            idle: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            wake: Event::new(),
        }
    }

    /// Sends whatever stays staged every [`LINGER`], while anything is
    /// staged, and parks otherwise (an idle engine is not woken): an append
    /// whose caller neither waits on it nor drops it (a future kept, or
    /// forgotten, on a thread that goes on with other work) still reaches
    /// its shard. Blocks until [`Staged::stop_lingering`]; it runs on a
    /// thread of its own, which no shard's end (a panic stops a shard)
    /// takes with it.
    pub(crate) fn linger(&self) {
        loop {
            let woken = self.wake.listen();
            // Invariant: `idle` is set before the table is checked (under
            // each slot's lock), and an append that opens a bundle checks
            // it under the same lock after inserting, so either this sees
            // the bundle or the append sees `idle` and wakes this.
            self.idle.store(true, Ordering::SeqCst);
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            if self.is_empty() {
                woken.wait();
            }
            self.idle.store(false, Ordering::SeqCst);
            // A pause of `LINGER`, cut short only by `stop_lingering`
            // (appends wake this only while `idle` is set).
            let pause = self.wake.listen();
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            pause.wait_timeout(LINGER);
            self.send_everything();
        }
    }

    /// Makes [`Staged::linger`] return.
    pub(crate) fn stop_lingering(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.wake.notify(usize::MAX);
    }

    fn is_empty(&self) -> bool {
        self.open.iter().all(|m| lock(m).is_empty())
    }

    fn slot(&self, partition: u64) -> MutexGuard<'_, HashMap<u64, Arc<Bundle>>> {
        // Fibonacci hashing: the top bits of the product spread any ids.
        let i = (partition.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % LOCKS;
        lock(&self.open[i])
    }

    /// Makes an append that passed its checks: `records`, a batch of
    /// `bytes`, to `partition` on `route`, to the shard that shares
    /// `exchange`, conditional on `expected_end` if given. Staged if
    /// unconditional and at most `limit` bytes (a full bundle it replaces
    /// goes with the new one if fewer than `keep` are linked before it);
    /// else sent at once, after what is staged for the partition. Returns
    /// its bundle and the place of its first record.
    pub(crate) fn append(
        &self,
        (partition, expected_end): (u64, Option<u64>),
        (exchange, route): (&Arc<Exchange>, impl FnOnce() -> Route),
        records: &[Record],
        bytes: usize,
        (limit, keep): (usize, usize),
    ) -> (Arc<Bundle>, u64) {
        if expected_end.is_some() || bytes > limit {
            // Encoded before the lock, which other partitions share: this
            // append may be up to a batch's limit.
            let bundle = Bundle::new(route(), partition, expected_end, records, bytes, limit);
            let mut slot = self.slot(partition);
            // Sent under the lock: after what is staged, before any later
            // append to the partition.
            if let Some(staged) = slot.remove(&partition) {
                staged.send();
            }
            bundle.send();
            return (bundle, 0);
        }
        if let Some(joined) = join_last(exchange, partition, records, bytes, limit) {
            return joined;
        }
        let mut slot = self.slot(partition);
        if let Some(b) = slot.get(&partition) {
            if let Some(place) = b.join(records, bytes, limit) {
                let b = b.clone();
                drop(slot);
                note(&b);
                return (b, place);
            }
        }
        let bundle = Bundle::new(route(), partition, expected_end, records, bytes, limit);
        if let Some(previous) = slot.insert(partition, bundle.clone()) {
            // Under the lock, before anyone can reach the new bundle.
            if let Some(previous) = bundle.follow(previous, keep) {
                previous.send();
            }
        }
        // Checked under the slot's lock: see `linger`.
        if self.idle.load(Ordering::SeqCst) && self.idle.swap(false, Ordering::SeqCst) {
            self.wake.notify(1);
        }
        drop(slot);
        exchange.unsent.push(bundle.clone());
        note(&bundle);
        (bundle, 0)
    }

    /// Sends every bundle staged for any partition: what a flush and a
    /// close must not leave behind.
    pub(crate) fn send_everything(&self) {
        for m in &self.open {
            // Sent under the lock, so that no later append to a partition
            // overtakes what was staged for it.
            let mut slot = lock(m);
            for (_, b) in slot.drain() {
                b.send();
            }
        }
    }
}

/// Joins the append to the bundle this thread staged into last if that
/// is `partition`'s open bundle on the shard that shares `exchange`, without the partition's lock: a thread
/// appending to one partition takes one lock an append. Order holds as
/// under the partition's lock: appends join a bundle under its own lock,
/// and a bundle replaced by a newer one was closed to joins first (see
/// `Bundle::join`).
fn join_last(
    exchange: &Arc<Exchange>,
    partition: u64,
    records: &[Record],
    bytes: usize,
    limit: usize,
) -> Option<(Arc<Bundle>, u64)> {
    NOTED
        .try_with(|n| {
            let n = n.borrow();
            // The same partition of the same engine: a thread may append
            // to several engines.
            let last =
                n.0.last()
                    .filter(|b| b.partition == partition && Arc::ptr_eq(&b.exchange, exchange))?;
            let place = last.join(records, bytes, limit)?;
            Some((last.clone(), place))
        })
        .ok()
        .flatten()
}

/// Notes that this thread staged into `bundle`, to send it when the thread
/// waits.
fn note(bundle: &Arc<Bundle>) {
    let oldest = NOTED.try_with(|n| {
        let mut n = n.borrow_mut();
        if n.0.last().is_some_and(|last| Arc::ptr_eq(last, bundle)) {
            return None;
        }
        n.0.push(bundle.clone());
        (n.0.len() > MAX_NOTED).then(|| n.0.remove(0))
    });
    match oldest {
        Ok(Some(oldest)) => oldest.send(),
        Ok(None) => {}
        // The thread is exiting: nothing waits here any more.
        Err(_) => bundle.send(),
    }
}

/// Sends every bundle this thread staged into.
pub(crate) fn send_all() {
    let noted = NOTED.try_with(|n| std::mem::take(&mut n.borrow_mut().0));
    if let Ok(noted) = noted {
        for b in noted {
            b.send();
        }
    }
}
