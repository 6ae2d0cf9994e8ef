//! An append's way across threads and back: the request the caller puts in
//! its shard's queue when it calls [`crate::Handle::append`], the slot its
//! result comes back in, and the [`Append`] future that waits on that slot.
//!
//! Slots live in one [`sharded_slab::Slab`] per engine: a caller takes a
//! slot on its own thread's shard of the slab and the shard thread fills it,
//! so steady-state appends allocate nothing but the caller's records (the
//! slab's pages are reused, and the queue's blocks are amortized over many
//! requests). The shard completes a whole commit group at once: it fills
//! every slot first, then wakes each distinct waker once.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, Waker},
};

use atomic_waker::AtomicWaker;
use corelog_shard::Record;
use sharded_slab::Slab;

use crate::error::{Error, Result};

/// Where appends' results come back, one slot per append in progress.
pub(crate) type Slots = Slab<Slot>;

/// The result of one append, filled once by its shard.
#[derive(Default)]
pub(crate) struct Slot {
    outcome: OnceLock<Outcome>,
    waker: AtomicWaker,
}

/// How an append ended.
enum Outcome {
    /// The shard answered.
    Done(Result<u64>),
    /// The shard dropped the request without answering: it stopped (closed
    /// or panicked); the caller asks the handle which.
    Dropped,
}

/// An append on its way to a shard: what the shard needs, and the ticket it
/// answers with.
pub(crate) struct AppendRequest {
    pub partition: u64,
    /// For a conditional append: the end the partition must have.
    pub expected_end: Option<u64>,
    pub records: Vec<Record>,
    pub ticket: Ticket,
}

/// The shard's side of a slot: answered once, by [`Ticket::fill`]; dropped
/// unanswered (a stopping shard), it tells the caller so, never leaving it
/// waiting.
pub(crate) struct Ticket {
    slots: Arc<Slots>,
    key: usize,
    answered: bool,
}

impl Ticket {
    /// Puts `result` in the slot and returns the waker to wake, if the
    /// caller registered one. Waking is left to the caller so that a whole
    /// group is filled before anyone is woken (see [`Wakers`]).
    pub(crate) fn fill(mut self, result: Result<u64>) -> Option<Waker> {
        self.answered = true;
        self.set(Outcome::Done(result))
    }

    fn set(&self, outcome: Outcome) -> Option<Waker> {
        // The caller may have dropped its future, and with it the slot.
        let slot = self.slots.get(self.key)?;
        // Invariant: a slot is answered once (`answered` guards the drop).
        let fresh = slot.outcome.set(outcome).is_ok();
        debug_assert!(fresh, "an append answered twice");
        slot.waker.take()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.answered {
            if let Some(w) = self.set(Outcome::Dropped) {
                w.wake();
            }
        }
    }
}

/// Wakers of a batch of filled slots, woken together once all are filled,
/// each distinct waker once: a caller with many appends in one commit
/// (pipelined, or joined) is woken once per commit, not once per append.
#[derive(Default)]
pub(crate) struct Wakers(Vec<Waker>);

impl Wakers {
    /// Adds `waker`, unless it wakes the same task as the last one added.
    pub(crate) fn push(&mut self, waker: Option<Waker>) {
        if let Some(w) = waker {
            if !self.0.last().is_some_and(|last| last.will_wake(&w)) {
                self.0.push(w);
            }
        }
    }

    /// Wakes them all; the buffer is kept for the next batch.
    pub(crate) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

/// The result of an append, as a future. The append was put in its shard's
/// queue when [`crate::Handle::append`] returned: its place in the
/// partition's order is fixed by the call, not by when this future is
/// first polled. Dropping the future does not withdraw the append; it only
/// gives up its result.
#[must_use = "the append is queued already; await this to learn its offset or failure"]
pub struct Append {
    state: State,
}

enum State {
    /// Waiting in slot `key` of `slots` for shard `shard`, whose panic, if
    /// one stops it, is recorded in `panicked`.
    Waiting {
        slots: Arc<Slots>,
        key: usize,
        shard: usize,
        panicked: Arc<OnceLock<String>>,
    },
    /// Refused before it reached a shard.
    Failed(Option<Error>),
    /// Its result was taken.
    Finished,
}

impl Append {
    /// An append refused with `error` before it reached a shard.
    pub(crate) fn failed(error: Error) -> Self {
        Append {
            state: State::Failed(Some(error)),
        }
    }
}

impl Future for Append {
    type Output = Result<u64>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<u64>> {
        let this = self.get_mut();
        let result = match &mut this.state {
            State::Failed(error) => error.take().map_or(Err(Error::Closed), Err),
            State::Finished => panic!("an Append polled after it completed"),
            State::Waiting {
                slots,
                key,
                shard,
                panicked,
            } => {
                let stopped = || stopped(*shard, panicked);
                // Invariant: the slot lives until this future removes it.
                let Some(slot) = slots.get(*key) else {
                    return Poll::Ready(Err(stopped()));
                };
                if slot.outcome.get().is_none() {
                    slot.waker.register(cx.waker());
                    if slot.outcome.get().is_none() {
                        return Poll::Pending;
                    }
                }
                match slot.outcome.get() {
                    Some(Outcome::Done(result)) => result.clone(),
                    _ => Err(stopped()),
                }
            }
        };
        this.finish();
        Poll::Ready(result)
    }
}

impl Append {
    /// Frees the slot, if it holds one.
    fn finish(&mut self) {
        if let State::Waiting { slots, key, .. } =
            std::mem::replace(&mut self.state, State::Finished)
        {
            slots.remove(key);
        }
    }
}

impl Drop for Append {
    fn drop(&mut self) {
        self.finish();
    }
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append").finish_non_exhaustive()
    }
}

/// Takes a slot for a new append to shard `shard` and returns the future of
/// its result and the ticket the shard answers with; `None` when the slab
/// is full (more appends in progress than it can index).
pub(crate) fn slot(
    slots: &Arc<Slots>,
    shard: usize,
    panicked: &Arc<OnceLock<String>>,
) -> Option<(Append, Ticket)> {
    let key = slots.insert(Slot::default())?;
    let ticket = Ticket {
        slots: slots.clone(),
        key,
        answered: false,
    };
    let append = Append {
        state: State::Waiting {
            slots: slots.clone(),
            key,
            shard,
            panicked: panicked.clone(),
        },
    };
    Some((append, ticket))
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
