//! The shard thread's side of appends from a [`crate::Handle`]: one task
//! takes them from the shard's queue in call order and submits them to the
//! log (no task per append, so everything queued lands in the same commit
//! group), and one task answers them a commit group at a time.
//!
//! Each request is a bundle: the appends one thread made to one partition
//! without waiting in between (see [`crate::bundle`]), checked against the
//! limits by the caller.
//!
//! Coalescing: consecutive unconditional bundles to one partition found
//! queued together (from several threads, or one thread's bundles that
//! filled up) are submitted as one batch (up to [`COALESCE_BYTES`]), each
//! still answered with its own offset; a bundle to another partition, or a
//! conditional one, ends the run. A batch costs an index entry, a memtable
//! entry, a header and a checksum whatever its records, so a service
//! thread appending one record at a time pays that once per pass, not per
//! record. A batch is atomic, so each append in it still is; it also fails
//! as a whole, so the one error an append alone could meet beyond the
//! checks made first (offsets past `u64::MAX`) fails the run.
//!
//! Order: appends are submitted one after another in queue order, and
//! [`Shard::submit_encoded_at`] assigns offsets in the order its calls complete, so
//! the appends one thread makes to a partition get increasing offsets
//! whatever their sizes. Backpressure is the log's: a submit waits while
//! the commit buffer is full, which holds up the queue behind it in order
//! (an append larger than the buffer goes alone once it is empty).

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::poll_fn,
    panic::AssertUnwindSafe,
    rc::Rc,
    sync::Arc,
    task::{Poll, Waker},
};

use corelog_shard::{EncodedRecords, Shard, Submitted, BATCH_HEADER_LEN};
use futures_lite::FutureExt;

use crate::{
    bundle::{AppendRequest, Exchange, Queued, Ticket, Wakers},
    error::Error,
    request::Reply,
    stop::Stop,
};

/// Encoded bytes up to which queued appends to a partition are coalesced
/// into one batch: enough to spread a batch's cost over hundreds of small
/// records, small enough that a reader from disk does not read much more
/// than it asked for.
pub(crate) const COALESCE_BYTES: usize = 64 << 10;

/// Submits the appends of `queue` until it is closed and drained, then
/// waits until every one of them is answered. A flush in the queue is
/// handed to `flush` once every append queued before it is submitted, so
/// that the log's flush covers them.
pub(crate) async fn serve_appends(
    shard: Shard,
    (queue, exchange): (async_channel::Receiver<Queued>, Arc<Exchange>),
    stop: Rc<Stop>,
    flush: impl Fn(Reply<()>),
) {
    let in_flight = Rc::new(InFlight::default());
    let answering = glommio::spawn_local(answer(
        shard.clone(),
        in_flight.clone(),
        exchange.clone(),
        stop.clone(),
    ));
    let limit = COALESCE_BYTES.min(shard.config().max_batch_bytes);
    let mut run = Run::default();
    while let Ok(first) = queue.recv().await {
        let mut next = Some(first);
        while let Some(queued) = next.take().or_else(|| queue.try_recv().ok()) {
            let request = match queued {
                Queued::Appends(request) => request,
                Queued::Flush(reply) => {
                    // Invariant: the run is empty, every earlier append
                    // submitted. Once the shard stopped, dropped unanswered:
                    // its caller sees the panic.
                    if stop.error().is_none() {
                        flush(reply);
                    }
                    continue;
                }
            };
            if stop.error().is_some() {
                // Dropped unanswered: its caller sees the panic.
                continue;
            }
            // Invariant: the run is empty here, and an empty run takes any
            // append.
            let joined = run.add(request, limit);
            debug_assert!(joined.is_none(), "an empty run refused an append");
            // Gather the appends queued behind it to the same partition; a
            // flush ends the run.
            while let Ok(queued) = queue.try_recv() {
                let Queued::Appends(request) = queued else {
                    next = Some(queued);
                    break;
                };
                if let Some(request) = run.add(request, limit) {
                    next = Some(Queued::Appends(request));
                    break;
                }
            }
            submit(&shard, &mut run, &in_flight, &stop).await;
            for spent in run.records.drain(..) {
                exchange.buffers.give(spent.into_buffer());
            }
            // A long queue must not keep the commit task from running.
            glommio::yield_if_needed().await;
        }
    }
    in_flight.close();
    answering.await;
}

/// Appends to one partition gathered into one batch: their records, in
/// queue order (each bundle's as its thread encoded them, written one
/// after another into the batch), and each one's ticket and record count.
/// A conditional append goes alone.
#[derive(Default)]
struct Run {
    partition: u64,
    expected_end: Option<u64>,
    records: Vec<EncodedRecords>,
    tickets: Vec<(Ticket, usize)>,
    /// Encoded bytes of the one batch the appends gathered make.
    bytes: usize,
}

impl Run {
    /// Adds `request` to the run if it may join: an empty run takes any
    /// append; a run takes more unconditional appends to its partition
    /// while their bytes together stay within `limit` (so their one batch
    /// is within the limits too). The caller checked each request against
    /// the limits; [`Shard::submit_encoded_at`] checks the run's batch again.
    /// Hands back an append that belongs to the next run.
    fn add(&mut self, request: AppendRequest, limit: usize) -> Option<AppendRequest> {
        let bytes = if self.tickets.is_empty() {
            request.bytes
        } else {
            // One batch: one header for all.
            self.bytes + request.bytes - BATCH_HEADER_LEN
        };
        if !self.tickets.is_empty()
            && (request.partition != self.partition
                || request.expected_end.is_some()
                || self.expected_end.is_some()
                || bytes > limit)
        {
            return Some(request);
        }
        let AppendRequest {
            partition,
            expected_end,
            records,
            ticket,
            ..
        } = request;
        self.partition = partition;
        self.expected_end = expected_end;
        self.bytes = bytes;
        self.tickets.push((ticket, records.count() as usize));
        self.records.push(records);
        None
    }
}

/// Submits the run as one batch and empties it but for its records
/// (the caller hands their buffers back); each append in it is
/// answered with its own offsets once the batch is committed, or at once
/// with why the batch could not be submitted.
async fn submit(shard: &Shard, run: &mut Run, in_flight: &InFlight, stop: &Stop) {
    if stop.error().is_some() {
        // The shard stopped while the run gathered: dropped unanswered,
        // its callers see the panic.
        run.records.clear();
        run.bytes = 0;
        run.tickets.clear();
        return;
    }
    let submitted =
        AssertUnwindSafe(shard.submit_encoded_at(run.partition, run.expected_end, &run.records))
            .catch_unwind()
            .await;
    // The records stay for the caller to hand their buffers back.
    run.bytes = 0;
    let refused = match submitted {
        Ok(Ok(batch)) => {
            let mut offset = batch.base_offset;
            for (ticket, count) in run.tickets.drain(..) {
                let append = Submitted {
                    base_offset: offset,
                    ..batch
                };
                in_flight.push(append, ticket);
                offset += count as u64;
            }
            return;
        }
        Ok(Err(e)) => Error::from(e),
        Err(payload) => stop.record(payload),
    };
    let mut wakers = Wakers::default();
    for (ticket, _) in run.tickets.drain(..) {
        ticket.fill(Err(refused.clone()), &mut wakers);
    }
    wakers.wake_all();
}

/// Answers the appends in flight, a commit group at a time, until the
/// queue is closed and none is left.
async fn answer(shard: Shard, in_flight: Rc<InFlight>, exchange: Arc<Exchange>, stop: Rc<Stop>) {
    let mut wakers = Wakers::default();
    while let Some(group) = in_flight.next_group().await {
        let waited = AssertUnwindSafe(shard.wait_committed(group))
            .catch_unwind()
            .await;
        let mut failure = match waited {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Error::from(e)),
            Err(payload) => Some(stop.record(payload)),
        };
        let through = shard.committed_group();
        let acknowledged = std::panic::catch_unwind(AssertUnwindSafe(|| {
            in_flight.answer_through(through, &mut wakers, |s| {
                shard.acknowledge(s);
                Ok(s.base_offset)
            })
        }));
        if let Err(payload) = acknowledged {
            failure = Some(stop.record(payload));
        }
        if let Some(e) = failure {
            // A stop caused by a panic is reported as the panic.
            let e = stop.error().unwrap_or(e);
            in_flight.answer_through(u64::MAX, &mut wakers, |_| Err(e.clone()));
        }
        wakers.wake_all();
        // A write completed: what the threads staged meanwhile goes in
        // the next one (see `Unsent`).
        exchange.unsent.send_all();
        if let Err(payload) = AssertUnwindSafe(shard.after_commit()).catch_unwind().await {
            stop.record(payload);
        }
    }
}

/// Appends submitted and not yet answered, in log order, with the task
/// that answers them.
#[derive(Default)]
struct InFlight {
    appends: RefCell<VecDeque<(Submitted, Ticket)>>,
    /// The answering task, parked while there is nothing to answer.
    waiter: Cell<Option<Waker>>,
    /// No more appends will come.
    closed: Cell<bool>,
}

impl InFlight {
    fn push(&self, submitted: Submitted, ticket: Ticket) {
        self.appends.borrow_mut().push_back((submitted, ticket));
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }

    /// The commit group of the oldest append in flight, once there is one;
    /// `None` once closed with none left.
    async fn next_group(&self) -> Option<u64> {
        poll_fn(|cx| {
            if let Some((s, _)) = self.appends.borrow().front() {
                return Poll::Ready(Some(s.group));
            }
            if self.closed.get() {
                return Poll::Ready(None);
            }
            self.waiter.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Answers, with `result`, every append in flight whose group is at most
    /// `through`, oldest first; their wakers go to `wakers`.
    fn answer_through(
        &self,
        through: u64,
        wakers: &mut Wakers,
        mut result: impl FnMut(&Submitted) -> crate::error::Result<u64>,
    ) {
        let mut appends = self.appends.borrow_mut();
        // Invariant: the result is worked out before its ticket leaves the
        // queue. Should `result` panic (a bug), the ticket stays queued to be
        // answered with the panic once it is recorded, instead of being
        // dropped in the unwinding and telling its callers the engine closed.
        while let Some(answer) = appends
            .front()
            .filter(|(s, _)| s.group <= through)
            .map(|(s, _)| result(s))
        {
            let Some((_, ticket)) = appends.pop_front() else {
                unreachable!("the front was just seen")
            };
            ticket.fill(answer, wakers);
        }
    }
}
