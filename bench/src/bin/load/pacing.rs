//! Runs a producer thread's futures with its own timers: a `--rate` run
//! waits for each append's due time by parking the thread until the
//! earliest one, instead of on a timer thread that would wake this one.
//! The load generator's own pacing then costs no thread hop, so the CPU a
//! paced run measures is the engine's and the producers' (issue 13's idle
//! cost), not a timer thread's.

use std::{
    cell::RefCell,
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    thread::Thread,
    time::Instant,
};

use futures::task::{waker, ArcWake};

thread_local! {
    /// Due times and the tasks waiting for them, on this thread.
    static TIMERS: RefCell<Vec<(Instant, Waker)>> = const { RefCell::new(Vec::new()) };
}

/// Wakes a parked thread.
struct Unpark(Thread);

impl ArcWake for Unpark {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.unpark();
    }
}

/// Runs `future` to completion on this thread, parking between polls until
/// it is woken or its earliest timer is due.
pub fn run<F: Future>(future: F) -> F::Output {
    let waker = waker(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        match fire_due() {
            Due::Fired => {}
            Due::Next(at) => {
                std::thread::park_timeout(at.saturating_duration_since(Instant::now()))
            }
            Due::None => std::thread::park(),
        }
    }
}

/// What the timers of this thread hold after the due ones fired.
enum Due {
    /// Some fired: poll again.
    Fired,
    /// The earliest left.
    Next(Instant),
    None,
}

/// Wakes the tasks whose time came.
fn fire_due() -> Due {
    let now = Instant::now();
    let mut due = Vec::new();
    TIMERS.with_borrow_mut(|timers| {
        timers.retain(|(at, w)| {
            let fired = *at <= now;
            if fired {
                due.push(w.clone());
            }
            !fired
        })
    });
    if !due.is_empty() {
        due.into_iter().for_each(Waker::wake);
        return Due::Fired;
    }
    TIMERS
        .with_borrow(|timers| timers.iter().map(|(at, _)| *at).min())
        .map_or(Due::None, Due::Next)
}

/// Waits until `at`, on a thread that [`run`] drives.
pub async fn sleep_until(at: Instant) {
    std::future::poll_fn(|cx| {
        if Instant::now() >= at {
            return Poll::Ready(());
        }
        TIMERS.with_borrow_mut(|timers| timers.push((at, cx.waker().clone())));
        Poll::Pending
    })
    .await
}
