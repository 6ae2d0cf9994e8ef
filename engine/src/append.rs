//! The [`Append`] future: the result of one append, waiting on the
//! [`Bundle`] that carries it (see [`crate::bundle`]).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use crate::{
    bundle::Bundle,
    error::{Error, Result},
    staging,
};

/// The result of an append, as a future: the offset of its first record
/// once the fsync policy is met. The append's place in its partition's
/// order was fixed when [`crate::Handle::append`] returned; see there for
/// when it is sent. Dropping the future does not withdraw the append (it
/// sends it, if it was still staged); it only gives up its result.
#[must_use = "the append is made already; await this to learn its offset or failure"]
pub struct Append {
    state: State,
}

enum State {
    /// Its records are at `place` in `bundle`.
    Waiting { bundle: Arc<Bundle>, place: u64 },
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

    /// The append whose first record is at `place` in `bundle`.
    pub(crate) fn waiting(bundle: Arc<Bundle>, place: u64) -> Self {
        Append {
            state: State::Waiting { bundle, place },
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
            State::Waiting { bundle, place } => match bundle.result(*place) {
                Some(result) => result,
                None => {
                    // Someone waits: nothing this thread staged may wait
                    // any longer, this append's bundle least of all (it
                    // may have been staged elsewhere).
                    bundle.send();
                    staging::send_all();
                    match bundle.result_or_wake(*place, cx.waker()) {
                        Some(result) => result,
                        None => return Poll::Pending,
                    }
                }
            },
        };
        this.state = State::Finished;
        Poll::Ready(result)
    }
}

impl Drop for Append {
    fn drop(&mut self) {
        if let State::Waiting { bundle, .. } = &self.state {
            bundle.send();
        }
    }
}

impl std::fmt::Debug for Append {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Append").finish_non_exhaustive()
    }
}
