//! Backpressure: a bound on the bytes of appends in flight to one shard.

use std::sync::atomic::{AtomicU64, Ordering};

use event_listener::Event;

/// Bytes of appends sent to a shard and not yet answered, with callers
/// parked while the budget is spent. Callers wait; they never fail.
pub(crate) struct ByteBudget {
    used: AtomicU64,
    max: u64,
    freed: Event,
}

impl ByteBudget {
    pub(crate) fn new(max: u64) -> Self {
        ByteBudget {
            used: AtomicU64::new(0),
            max,
            freed: Event::new(),
        }
    }

    /// Waits until `n` more bytes fit, then takes them until the returned
    /// permit is dropped (also when the caller's future is dropped). A
    /// request larger than the whole budget goes alone, when nothing else
    /// is in flight.
    pub(crate) async fn acquire(&self, n: u64) -> Permit<'_> {
        loop {
            if self.try_acquire(n) {
                return Permit { budget: self, n };
            }
            let listener = self.freed.listen();
            if self.try_acquire(n) {
                return Permit { budget: self, n };
            }
            listener.await;
        }
    }

    fn try_acquire(&self, n: u64) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used != 0 && used + n > self.max {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Gives back `n` bytes and wakes the waiting callers.
    fn release(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify(usize::MAX);
    }
}

/// Bytes taken from a [`ByteBudget`], given back on drop.
pub(crate) struct Permit<'a> {
    budget: &'a ByteBudget,
    n: u64,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.budget.release(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::ByteBudget;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn waits_while_spent_and_lets_an_oversized_request_go_alone() {
        let budget = ByteBudget::new(100);
        let a = block_on(budget.acquire(60));
        let mut second = Box::pin(budget.acquire(60));
        assert!(
            block_on(poll_once(&mut second)).is_none(),
            "over budget: waits"
        );
        drop(a);
        let b = block_on(second);
        drop(b);
        // Larger than the whole budget, with nothing in flight: goes.
        let big = block_on(budget.acquire(500));
        drop(big);
    }
}
