//! The shard thread's side of appends from a [`crate::Handle`]: one task
//! takes them from the shard's queue in call order and submits each to the
//! log (no task per append, so everything queued lands in the same commit
//! group), and one task answers them a commit group at a time.
//!
//! Order: appends are submitted one after another in queue order, and
//! [`Shard::submit`] assigns offsets in the order its calls complete, so
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
    task::{Poll, Waker},
};

use corelog_shard::{Shard, Submitted};
use futures_lite::FutureExt;

use crate::{
    append::{AppendRequest, Ticket, Wakers},
    error::Error,
    stop::Stop,
};

/// Submits the appends of `queue` until it is closed and drained, then
/// waits until every one of them is answered.
pub(crate) async fn serve_appends(
    shard: Shard,
    queue: async_channel::Receiver<AppendRequest>,
    stop: Rc<Stop>,
) {
    let in_flight = Rc::new(InFlight::default());
    let answering = glommio::spawn_local(answer(shard.clone(), in_flight.clone(), stop.clone()));
    while let Ok(request) = queue.recv().await {
        submit(&shard, request, &in_flight, &stop).await;
        // A long queue must not keep the commit task from running.
        glommio::yield_if_needed().await;
    }
    in_flight.close();
    answering.await;
}

/// Submits one append, or answers it at once if it cannot be submitted.
async fn submit(shard: &Shard, request: AppendRequest, in_flight: &InFlight, stop: &Stop) {
    let AppendRequest {
        partition,
        expected_end,
        records,
        ticket,
    } = request;
    if stop.error().is_some() {
        // Dropped unanswered: its caller sees the panic.
        return;
    }
    let submitted = AssertUnwindSafe(shard.submit_at(partition, expected_end, &records))
        .catch_unwind()
        .await;
    let refused = match submitted {
        Ok(Ok(submitted)) => return in_flight.push(submitted, ticket),
        Ok(Err(e)) => Error::from(e),
        Err(payload) => stop.record(payload),
    };
    if let Some(w) = ticket.fill(Err(refused)) {
        w.wake();
    }
}

/// Answers the appends in flight, a commit group at a time, until the
/// queue is closed and none is left.
async fn answer(shard: Shard, in_flight: Rc<InFlight>, stop: Rc<Stop>) {
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
        while appends.front().is_some_and(|(s, _)| s.group <= through) {
            let Some((submitted, ticket)) = appends.pop_front() else {
                break;
            };
            wakers.push(ticket.fill(result(&submitted)));
        }
    }
}
