//! How a shard stops on a panic (a bug): the panic is recorded for callers
//! to see ([`crate::Error::ShardPanicked`]), the shard's queues are closed
//! and drained so that no caller waits for an answer that will never come,
//! and the shard is abandoned, since its state in memory can no longer be
//! trusted; the next open recovers it as after a crash.

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

/// Held by a shard's thread for its whole life. When the thread unwinds
/// from a panic that no request caught (in the open, the commit task, the
/// spare's preparation), it records the panic and drops every request still
/// queued, so that no caller waits for a reply that will never come.
pub(crate) struct Unwinding {
    pub panicked: Arc<OnceLock<String>>,
    pub queues: Queues,
}

impl Drop for Unwinding {
    fn drop(&mut self) {
        if !std::thread::panicking() {
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
