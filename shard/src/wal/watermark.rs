//! A monotonic counter that futures on the same thread can wait on.
//!
//! The write path numbers its commit groups; one watermark tracks the last
//! group written and another the last group made durable. An append waits
//! for the watermark its fsync policy promises.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    future::poll_fn,
    task::{Poll, Waker},
};

/// A counter that only grows, with waiters parked until it reaches a target.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    value: Cell<u64>,
    /// Set when the counter will never move again (failure or close); every
    /// waiter is released and checks the shard state.
    stopped: Cell<bool>,
    /// Parked waiters by the value they wait for. A waiter polled twice may
    /// appear twice; waking it twice is harmless.
    waiters: RefCell<BTreeMap<u64, Vec<Waker>>>,
}

impl Watermark {
    pub(crate) fn get(&self) -> u64 {
        self.value.get()
    }

    /// Raises the counter to `value` and wakes every waiter it satisfies.
    pub(crate) fn advance(&self, value: u64) {
        // Invariant: watermarks never move backwards.
        assert!(value >= self.value.get(), "watermark moved backwards");
        self.value.set(value);
        let mut waiters = self.waiters.borrow_mut();
        let later = waiters.split_off(&(value + 1));
        let ready = std::mem::replace(&mut *waiters, later);
        drop(waiters);
        for waker in ready.into_values().flatten() {
            waker.wake();
        }
    }

    /// Releases every waiter for good.
    pub(crate) fn stop(&self) {
        self.stopped.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters.into_values().flatten() {
            waker.wake();
        }
    }

    /// Waits until the counter reaches `target`; returns false if the
    /// watermark stopped first.
    pub(crate) async fn wait_for(&self, target: u64) -> bool {
        poll_fn(|cx| {
            if self.value.get() >= target {
                Poll::Ready(true)
            } else if self.stopped.get() {
                Poll::Ready(false)
            } else {
                let mut waiters = self.waiters.borrow_mut();
                waiters.entry(target).or_default().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// Wakes one parked task (the committer) when there is work. A wake-up that
/// arrives while nobody waits is remembered.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    pub(crate) fn notify(&self) {
        self.pending.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
