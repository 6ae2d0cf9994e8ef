//! How a shard stops on a panic (a bug): the panic is recorded for callers
//! to see ([`crate::Error::ShardPanicked`]), the shard's queues are closed
//! and drained so that no caller waits for an answer that will never come,
//! and the shard is abandoned, since its state in memory can no longer be
//! trusted; the next open recovers it as after a crash.

use std::cell::RefCell;
use std::{
    any::Any,
    sync::{Arc, OnceLock},
};

use corelog_shard::Shard;

use crate::{bundle::Queued, error::Error, request::Request};

/// A shard's two queues, as its thread sees them.
#[derive(Clone)]
pub(crate) struct Queues {
    /// Appends, in call order.
    pub appends: async_channel::Receiver<Queued>,
    /// Every other request.
    pub requests: async_channel::Receiver<Request>,
}

impl Queues {
    /// Closes both queues; what is still queued stays to be received.
    fn close(&self) {
        self.appends.close();
        self.requests.close();
    }

    /// Closes both queues and drops what is still queued: each dropped
    /// request tells its caller that the shard stopped.
    fn close_and_drain(&self) {
        self.close();
        while self.appends.try_recv().is_ok() {}
        while self.requests.try_recv().is_ok() {}
    }
}

/// Armed on a shard's thread for its whole life ([`Unwinding::arm`]). When
/// the thread ends by a panic that no request caught (in the open, the
/// commit task, the spare's preparation, any task on the shard), it records
/// the panic and drops every request still queued, so that no caller waits
/// for a reply that will never come.
///
/// A thread-local, not a value held by the shard's main future: when a
/// detached task panics, glommio unwinds the thread without dropping a main
/// future parked on its queue, so a guard held there never ran (a review
/// found callers then hung for good; `engine/tests/engine.rs`).
pub(crate) struct Unwinding {
    pub panicked: Arc<OnceLock<String>>,
    pub queues: Queues,
    /// Cleared by [`Unwinding::disarm`].
    pub armed: bool,
}

thread_local! {
    /// The shard thread's guard, until the shard ends normally.
    static ARMED: RefCell<Option<Unwinding>> = const { RefCell::new(None) };
}

impl Unwinding {
    /// Arms the guard for the rest of the calling thread's life.
    pub(crate) fn arm(self) {
        let _ = ARMED.try_with(|armed| *armed.borrow_mut() = Some(self));
    }

    /// Disarms the calling thread's guard: its shard ended normally.
    pub(crate) fn disarm() {
        let _ = ARMED.try_with(|armed| {
            if let Some(mut guard) = armed.borrow_mut().take() {
                guard.armed = false;
            }
        });
    }
}

impl Drop for Unwinding {
    /// Runs only while armed: when the thread ends (its thread-locals are
    /// dropped) without [`Unwinding::disarm`], a panic ended it.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let _ = self.panicked.set(
            "the shard's thread panicked outside a request; its output has the message".into(),
        );
        self.queues.close_and_drain();
    }
}

/// Where a shard records the panic that stops it.
pub(crate) struct Stop {
    pub id: usize,
    pub panicked: Arc<OnceLock<String>>,
    /// The shard's queues, closed by a panic.
    pub queues: Queues,
    /// The shard, abandoned by a panic: requests still running on it fail
    /// instead of writing from state that can no longer be trusted.
    pub shard: Shard,
}

impl Stop {
    /// Records the panic whose payload is `payload`, closes the queues, and
    /// returns the error its callers get.
    pub(crate) fn record(&self, payload: Box<dyn Any + Send>) -> Error {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        let _ = self.panicked.set(message);
        self.queues.close();
        self.shard.abandon();
        self.error().expect("just recorded")
    }

    /// The error for the callers of a shard that panicked, if it did.
    pub(crate) fn error(&self) -> Option<Error> {
        self.panicked.get().map(|message| Error::ShardPanicked {
            shard: self.id,
            message: message.clone(),
        })
    }
}
