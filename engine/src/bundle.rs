//! An append's way across threads and back: the [`Bundle`] that carries the
//! appends made to one partition while no one waited to its shard in one
//! request, and the [`Ticket`] the shard answers it with. Each append's
//! future ([`crate::Append`]) waits on its bundle.
//!
//! A bundle is the unit that crosses threads: it is staged (see
//! [`crate::staging`]) while the appends join it, sent to the
//! shard's queue once, submitted there as one batch (or part of one) and
//! answered once with the offset of its first record. Each
//! [`crate::Append`] holds the bundle and its records' place in it, so a
//! thread appending one record at a time pays a queue message, an
//! allocation and a wake-up per bundle, not per record; steady-state appends
//! allocate nothing per record beyond the caller's own records (a new
//! bundle reserves room for as many appends like its first as it takes).
//!
//! Completion slots used to be one `sharded_slab` entry per append; a
//! bundle answers hundreds of appends with one shared slot, which the
//! measurements in docs/BENCHMARKS.md ("Request path: bundles") preferred.

use std::{
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    task::Waker,
};

use corelog_shard::{EncodedRecords, Record, BATCH_HEADER_LEN};

use crate::{
    buffers::Buffers,
    error::{Error, Result},
    request::Reply,
};

/// Most appends like its first that a new bundle reserves room for: a
/// few appends' worth, then the buffer grows by doubling. Reserving a
/// whole bundle's worth (up to 1,024 records, about 90 KB) held 66 KB for
/// each one-record append a fan-out producer left outstanding per
/// partition (`engine/tests/memory.rs`).
const MAX_RESERVE: usize = 16;

/// An append request on its way to a shard: the records of one or more
/// appends to one partition, in call order, answered together.
pub(crate) struct AppendRequest {
    pub partition: u64,
    /// For a conditional append (always alone in its bundle): the end the
    /// partition must have.
    pub expected_end: Option<u64>,
    /// The appends' records, encoded by the appending threads.
    pub records: EncodedRecords,
    /// Encoded size of the one batch `records` make, checked against the
    /// limits by the caller.
    pub bytes: usize,
    pub ticket: Ticket,
}

/// What a shard's queue of appends carries, in call order.
pub(crate) enum Queued {
    /// A bundle's appends.
    Appends(AppendRequest),
    /// A flush: answered once everything queued before it is written and
    /// synced (what [`crate::Handle::flush`] promises).
    Flush(Reply<()>),
}

/// Appends made to one partition while no one waited, sent and answered
/// together.
pub(crate) struct Bundle {
    /// The appends while they are staged; `None` once sent.
    staged: Mutex<Option<Staged>>,
    /// Set once, by the shard (or by a dropped [`Ticket`]).
    outcome: OnceLock<Outcome>,
    /// Tasks waiting for the outcome, each once.
    wakers: Mutex<Vec<Waker>>,
    /// The shard it goes to, and where that shard's panic is recorded.
    shard: usize,
    /// The partition its appends go to.
    pub partition: u64,
    /// What its shard shares with the appending threads; also tells
    /// bundles of different engines apart.
    pub exchange: Arc<Exchange>,
    panicked: Arc<OnceLock<String>>,
}

/// Where a bundle goes: a shard, its queue of appends, where its panic,
/// if one stops it, is recorded, and what the shard shares with the
/// appending threads.
pub(crate) struct Route {
    pub queue: async_channel::Sender<Queued>,
    pub shard: usize,
    pub panicked: Arc<OnceLock<String>>,
    pub exchange: Arc<Exchange>,
}

/// What the appending threads share with one shard besides its queue.
#[derive(Default)]
pub(crate) struct Exchange {
    /// The spent buffers of its bundles.
    pub buffers: Buffers,
    /// Its bundles that may still be staged.
    pub unsent: Unsent,
}

/// Bundles staged for a shard, for the shard to send itself: each time a
/// commit of its is answered, the shard sends what the appending threads
/// staged meanwhile ([`Unsent::send_all`]), so appends made without
/// waiting go in the next write instead of waiting for their bundle to
/// fill or for their thread to wait. The disk's pace sets the bundles'
/// size: while the shard writes, the threads gather the next bundle.
/// Entries that were sent otherwise are dropped when the shard sends the
/// rest, or as they gather (an idle shard sends nothing).
pub(crate) struct Unsent(Mutex<UnsentList>);

struct UnsentList {
    bundles: Vec<Arc<Bundle>>,
    /// Entries at which the next push drops the ones already sent: twice
    /// what the last pruning left, at least [`PRUNE_AT`], so that many
    /// bundles still staged (fan-out producers) are not scanned at every
    /// push.
    prune_at: usize,
}

impl Default for Unsent {
    fn default() -> Self {
        Unsent(Mutex::new(UnsentList {
            bundles: Vec::new(),
            prune_at: PRUNE_AT,
        }))
    }
}

/// Entries [`Unsent`] holds at least before it drops the ones already
/// sent.
const PRUNE_AT: usize = 64;

impl Unsent {
    /// Notes `bundle`, just opened, for its shard to send.
    pub(crate) fn push(&self, bundle: Arc<Bundle>) {
        let mut unsent = lock(&self.0);
        if unsent.bundles.len() >= unsent.prune_at {
            // Invariant: bundle locks are taken after this one, never
            // before it (no bundle lock holder pushes here).
            unsent.bundles.retain(|b| b.is_staged());
            unsent.prune_at = (2 * unsent.bundles.len()).max(PRUNE_AT);
        }
        unsent.bundles.push(bundle);
    }

    /// Sends every bundle noted. In about the order they were opened (a
    /// bundle is noted after its partition's lock is released); the order
    /// of one partition's bundles holds whatever it is, since a bundle
    /// replaced by a newer one was sent already or goes first when the
    /// newer one is sent.
    pub(crate) fn send_all(&self) {
        let unsent = {
            let mut unsent = lock(&self.0);
            unsent.prune_at = PRUNE_AT;
            std::mem::take(&mut unsent.bundles)
        };
        for b in unsent {
            b.send();
        }
    }
}

/// A bundle's appends before they are sent.
struct Staged {
    queue: async_channel::Sender<Queued>,
    partition: u64,
    expected_end: Option<u64>,
    records: EncodedRecords,
    /// Encoded size of the one batch the records make.
    bytes: usize,
    /// The bundle of the same partition before this one, if it
    /// is kept staged to go with this one; sent first.
    prev: Option<Arc<Bundle>>,
    /// Bundles kept staged before this one.
    depth: usize,
    /// Whether appends may still join: the partition's open bundle.
    /// Invariant: cleared, under this lock, before a newer bundle of the
    /// partition can be reached, so a thread that joins its last bundle
    /// without the partition's lock ([`crate::staging`]) never joins one
    /// that a newer bundle replaced.
    open: bool,
}

/// How a bundle ended.
enum Outcome {
    /// The shard answered with the offset of the bundle's first record.
    Done(Result<u64>),
    /// The shard dropped the request without answering: it stopped (closed
    /// or panicked); each caller learns which from the bundle.
    Dropped,
}

/// Locks `m`; a panic elsewhere while it was held leaves nothing half
/// done here (every critical section is a push, a take or a set).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Bundle {
    /// A new bundle of one append: `records`, whose batch is `bytes` long,
    /// for `partition`, to go by `route`; unconditional appends may join it
    /// up to a batch of `limit` bytes. The records are encoded here, on
    /// the appending thread.
    pub(crate) fn new(
        route: Route,
        partition: u64,
        expected_end: Option<u64>,
        records: &[Record],
        bytes: usize,
        limit: usize,
    ) -> Arc<Bundle> {
        let body = bytes - BATCH_HEADER_LEN;
        let room = match expected_end {
            // Room for a few more appends like this one.
            None => (limit / bytes).clamp(1, MAX_RESERVE) * body,
            Some(_) => body,
        };
        let mut encoded = EncodedRecords::from_buffer(route.exchange.buffers.take(room));
        // Invariant: the records passed `check_batch`, which refuses what
        // the format cannot hold.
        encoded
            .push(records)
            .expect("records checked by the caller");
        let records = encoded;
        Arc::new(Bundle {
            staged: Mutex::new(Some(Staged {
                queue: route.queue,
                partition,
                expected_end,
                records,
                bytes,
                prev: None,
                depth: 0,
                open: true,
            })),
            outcome: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
            shard: route.shard,
            partition,
            exchange: route.exchange,
            panicked: route.panicked,
        })
    }

    /// Encodes an unconditional append, `records` with a batch of `bytes`,
    /// into the bundle if it is still the partition's open bundle and
    /// takes no conditional append, and their one batch stays within
    /// `limit`. Returns the place of the append's first record in the
    /// bundle; `None` if it did not join.
    pub(crate) fn join(&self, records: &[Record], bytes: usize, limit: usize) -> Option<u64> {
        let mut staged = lock(&self.staged);
        let s = staged.as_mut()?;
        let joined = s.bytes + bytes - BATCH_HEADER_LEN;
        if !s.open || s.expected_end.is_some() || joined > limit {
            return None;
        }
        let place = u64::from(s.records.count());
        // Invariant: as in `Bundle::new`.
        s.records
            .push(records)
            .expect("records checked by the caller");
        s.bytes = joined;
        Some(place)
    }

    /// Makes `prev`, the bundle of the same partition that this new one
    /// replaces, go with it: kept staged and sent first when this
    /// one is sent, if it is still staged and fewer than `max` bundles
    /// would be kept before this one. Else hands `prev` back, to be sent
    /// now (or `None` if it was sent already).
    pub(crate) fn follow(&self, prev: Arc<Bundle>, max: usize) -> Option<Arc<Bundle>> {
        let depth = {
            let mut p = lock(&prev.staged);
            let p = p.as_mut()?;
            // Replaced: no append joins it any more, sent now or with this one.
            p.open = false;
            p.depth + 1
        };
        if depth > max {
            return Some(prev);
        }
        let mut staged = lock(&self.staged);
        let Some(s) = staged.as_mut() else {
            return Some(prev);
        };
        s.prev = Some(prev);
        s.depth = depth;
        None
    }

    /// Whether the bundle is still staged, not sent.
    fn is_staged(&self) -> bool {
        lock(&self.staged).is_some()
    }

    /// Sends the bundle to its shard's queue, after the bundles kept staged
    /// before it, unless it was sent already.
    pub(crate) fn send(self: &Arc<Self>) {
        let mut staged = lock(&self.staged);
        let Some(mut s) = staged.take() else {
            return;
        };
        // Invariant: no one holding a bundle's lock takes another's but
        // this, from a newer bundle to an older one (an append, a prune
        // of `Unsent` and its `send_all` lock one bundle at a time, and
        // no bundle lock holder takes a partition's slot lock or
        // `Unsent`'s), so this cannot deadlock, and the older bundle is
        // queued first.
        if let Some(prev) = s.prev.take() {
            prev.send();
        }
        let request = AppendRequest {
            partition: s.partition,
            expected_end: s.expected_end,
            records: s.records,
            bytes: s.bytes,
            ticket: Ticket {
                bundle: self.clone(),
                answered: false,
            },
        };
        // Invariant: sent while the lock is held. An append that finds this
        // bundle sent opens the next one only once this one is in the
        // queue, so the queue keeps the calls' order whoever sends it.
        //
        // A closed queue hands the request back; dropping it answers every
        // append in it with why the shard stopped, once the lock is
        // released (the wakers it runs may poll this bundle's appends).
        let refused = s.queue.try_send(Queued::Appends(request)).err();
        drop(staged);
        drop(refused);
    }

    /// Sets the outcome and hands the waiting tasks' wakers to `wakers`.
    fn finish(&self, outcome: Outcome, wakers: &mut Wakers) {
        // Invariant: a bundle is answered once (`Ticket::answered` guards
        // the drop).
        let fresh = self.outcome.set(outcome).is_ok();
        debug_assert!(fresh, "a bundle answered twice");
        for w in lock(&self.wakers).drain(..) {
            wakers.push(w);
        }
    }

    /// The result of the append whose first record is at `place`, once
    /// the bundle is answered.
    pub(crate) fn result(&self, place: u64) -> Option<Result<u64>> {
        Some(match self.outcome.get()? {
            Outcome::Done(Ok(base)) => Ok(base + place),
            Outcome::Done(Err(e)) => Err(e.clone()),
            Outcome::Dropped => Err(stopped(self.shard, &self.panicked)),
        })
    }

    /// The result of the append at `place` if the bundle is answered; else
    /// `waker` is woken when it is.
    pub(crate) fn result_or_wake(&self, place: u64, waker: &Waker) -> Option<Result<u64>> {
        let mut wakers = lock(&self.wakers);
        // Checked under the lock that `finish` takes after setting the
        // outcome: a waker registered here is never missed.
        let result = self.result(place);
        if result.is_none() && !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        result
    }
}

/// The shard's side of a bundle: answered once, by [`Ticket::fill`];
/// dropped unanswered (a stopping shard), it tells the callers so, never
/// leaving them waiting.
pub(crate) struct Ticket {
    bundle: Arc<Bundle>,
    answered: bool,
}

impl Ticket {
    /// Answers the bundle with `result` (the offset of its first record)
    /// and adds its waiting tasks to `wakers`. Waking is left to the caller
    /// so that a whole commit group is answered before anyone is woken.
    pub(crate) fn fill(mut self, result: Result<u64>, wakers: &mut Wakers) {
        self.answered = true;
        self.bundle.finish(Outcome::Done(result), wakers);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.answered {
            let mut wakers = Wakers::default();
            self.bundle.finish(Outcome::Dropped, &mut wakers);
            wakers.wake_all();
        }
    }
}

/// Wakers of a batch of answered bundles, woken together once all are
/// answered, each distinct task once in a row: a caller with many bundles
/// in one commit is woken once per commit.
#[derive(Default)]
pub(crate) struct Wakers(Vec<Waker>);

impl Wakers {
    /// Adds `waker`, unless it wakes the same task as the last one added.
    pub(crate) fn push(&mut self, waker: Waker) {
        if !self.0.last().is_some_and(|last| last.will_wake(&waker)) {
            self.0.push(waker);
        }
    }

    /// Wakes them all; the buffer is kept for the next batch.
    pub(crate) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

/// The error for a request that shard `shard` will not answer: it panicked
/// (`panicked` holds the message), or the engine is closed.
pub(crate) fn stopped(shard: usize, panicked: &OnceLock<String>) -> Error {
    match panicked.get() {
        Some(message) => Error::ShardPanicked {
            shard,
            message: message.clone(),
        },
        None => Error::Closed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route to `queue`, sharing `exchange`.
    fn route(queue: &async_channel::Sender<Queued>, exchange: &Arc<Exchange>) -> Route {
        Route {
            queue: queue.clone(),
            shard: 0,
            panicked: Arc::new(OnceLock::new()),
            exchange: exchange.clone(),
        }
    }

    /// A one-record append of 100 bytes, and its batch's size.
    fn append() -> (Vec<Record>, usize) {
        let records = vec![Record::new(vec![7u8; 100])];
        let limits = corelog_shard::ShardConfig::new("unused");
        let bytes = corelog_shard::check_batch(&limits, 1, &records).expect("valid");
        (records, bytes)
    }

    const LIMIT: usize = 64 << 10;

    /// A bundle replaced by a newer one of its partition takes no more
    /// appends, even with room left, so a thread that joins its last
    /// bundle without the partition's lock cannot put an append behind
    /// a later one.
    #[test]
    fn a_replaced_bundle_takes_no_more_appends() {
        let (queue, _rx) = async_channel::unbounded();
        let exchange = Arc::new(Exchange::default());
        let (records, bytes) = append();
        let old = Bundle::new(route(&queue, &exchange), 1, None, &records, bytes, LIMIT);
        assert_eq!(old.join(&records, bytes, LIMIT), Some(1));
        let new = Bundle::new(route(&queue, &exchange), 1, None, &records, bytes, LIMIT);
        // Kept staged, to go first when the new one goes.
        assert!(new.follow(old.clone(), 16).is_none());
        assert!(old.is_staged());
        assert_eq!(old.join(&records, bytes, LIMIT), None);
        assert_eq!(new.join(&records, bytes, LIMIT), Some(1));
    }

    /// The shard's list of staged bundles sends each one still staged,
    /// oldest first, and does not grow without bound while the shard
    /// takes nothing.
    #[test]
    fn unsent_bundles_are_sent_in_order_and_the_list_is_bounded() {
        let (queue, rx) = async_channel::unbounded();
        let exchange = Arc::new(Exchange::default());
        let (records, bytes) = append();
        let opened: Vec<Arc<Bundle>> = (1..=2)
            .map(|p| Bundle::new(route(&queue, &exchange), p, None, &records, bytes, LIMIT))
            .collect();
        for b in &opened {
            exchange.unsent.push(b.clone());
        }
        exchange.unsent.send_all();
        let partitions: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|q| match q {
                Queued::Appends(a) => a.partition,
                Queued::Flush(_) => unreachable!("no flush queued"),
            })
            .collect();
        assert_eq!(partitions, [1, 2]);
        assert!(opened.iter().all(|b| !b.is_staged()));

        // Bundles sent by their threads are dropped from the list as it
        // fills.
        for _ in 0..PRUNE_AT * 3 {
            let b = Bundle::new(route(&queue, &exchange), 3, None, &records, bytes, LIMIT);
            b.send();
            exchange.unsent.push(b);
        }
        assert!(lock(&exchange.unsent.0).bundles.len() <= PRUNE_AT);
    }
}
