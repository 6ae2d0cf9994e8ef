//! A shard's thread: a glommio executor that opens the shard (recovering
//! it), then serves its two queues: appends through [`crate::pipeline`],
//! every other request in its own task; and the engine's side of ending
//! the shard threads (close, or an open that failed).

use std::{
    cell::Cell,
    future::{poll_fn, Future},
    panic::AssertUnwindSafe,
    rc::Rc,
    sync::{mpsc, Arc, OnceLock},
    task::{Poll, Waker},
};

use futures_lite::FutureExt;

use corelog_shard::Shard;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement, PoolPlacement};

use crate::{
    bundle::{Exchange, Queued},
    config::Config,
    error::{Error, Result},
    local::LocalShard,
    pipeline::serve_appends,
    request::{Reply, Request},
    staging::Staged,
    stop::{Queues, Stop, Unwinding},
};

thread_local! {
    /// Set on a shard's own thread.
    static ON_SHARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is one of the engine's shard threads, where
/// nothing may block waiting for a shard (its own would never answer).
pub(crate) fn on_shard_thread() -> bool {
    ON_SHARD.try_with(|s| s.get()).unwrap_or(false)
}

/// A running shard thread and its queues.
pub(crate) struct ShardThread {
    /// Appends, answered in call order.
    pub appends: async_channel::Sender<Queued>,
    /// Every other request.
    pub sender: async_channel::Sender<Request>,
    pub join: ExecutorJoinHandle<Result<()>>,
    /// Set, once, to the message of a panic that stopped the shard.
    pub panicked: Arc<OnceLock<String>>,
    /// What the shard shares with the appending threads.
    pub exchange: Arc<Exchange>,
}

/// Starts shard `id` on its thread; it reports on `ready` once recovered.
pub(crate) fn start(
    config: &Config,
    id: usize,
    core: Option<usize>,
    ready: mpsc::Sender<(usize, Result<()>)>,
) -> Result<ShardThread> {
    // Unbounded: a call enqueues at once, so its place in the order is the
    // call's. What bounds them is the callers' own waiting (see
    // `crate::pipeline` for the log's backpressure).
    let (appends, appends_rx) = async_channel::unbounded();
    let (sender, requests_rx) = async_channel::unbounded();
    let queues = Queues {
        appends: appends_rx,
        requests: requests_rx,
    };
    let placement = match core {
        Some(core) if config.pin_threads => Placement::Fixed(core),
        _ => Placement::Unbound,
    };
    let shard_config = config.shard_config(id);
    let panicked = Arc::new(OnceLock::new());
    let shard_panicked = panicked.clone();
    let exchange = Arc::new(Exchange::default());
    let shard_exchange = exchange.clone();
    let shards = config.shards;
    let join = LocalExecutorBuilder::new(placement)
        .name(&format!("corelog-shard-{id}"))
        .io_memory(config.io_memory.expect("settled by Engine::open"))
        // Renames and unlinks run on this pool: off the shard's core, so
        // freeing a segment's extents does not compete with its reactor.
        .blocking_thread_pool_placement(PoolPlacement::Unbound(1))
        .spawn(move || {
            // On the shard's thread, for its whole life.
            ON_SHARD.with(|s| s.set(true));
            Unwinding {
                panicked: shard_panicked.clone(),
                queues: queues.clone(),
                armed: true,
            }
            .arm();
            async move {
                let ended = run_shard(
                    id,
                    shards,
                    shard_config,
                    ready,
                    (queues, shard_exchange),
                    shard_panicked,
                )
                .await;
                Unwinding::disarm();
                ended
            }
        })
        .map_err(|e| Error::Runtime {
            shard: id,
            reason: e.to_string(),
        })?;
    Ok(ShardThread {
        appends,
        sender,
        join,
        panicked,
        exchange,
    })
}

/// Opens shard `id`, reports on `ready`, then serves its queues until the
/// engine closes them.
async fn run_shard(
    id: usize,
    shards: usize,
    shard_config: corelog_shard::ShardConfig,
    ready: mpsc::Sender<(usize, Result<()>)>,
    (queues, exchange): (Queues, Arc<Exchange>),
    shard_panicked: Arc<OnceLock<String>>,
) -> Result<()> {
    let (shard, report) = match Shard::open(shard_config).await {
        Ok(opened) => opened,
        Err(e) => {
            let e = Error::from(e);
            let _ = ready.send((id, Err(e.clone())));
            return Err(e);
        }
    };
    let _ = ready.send((id, Ok(())));
    // Engine::open waits for every shard's word: a shard that dies
    // later must not hold the channel open.
    drop(ready);
    let local = LocalShard::new(shard.clone(), id, shards);
    let stop = Stop {
        id,
        panicked: shard_panicked,
        queues: queues.clone(),
        shard: shard.clone(),
    };
    serve(shard, local, Rc::new(report), (queues, exchange), stop).await
}

/// Serves both queues until they are closed and drained, waits for the
/// requests in progress, then closes the shard.
///
/// A request that panics (a bug) stops the shard (see [`crate::stop`]).
async fn serve(
    shard: Shard,
    local: LocalShard,
    report: Rc<corelog_shard::RecoveryReport>,
    (queues, exchange): (Queues, Arc<Exchange>),
    stop: Stop,
) -> Result<()> {
    let in_progress = Rc::new(InProgress::default());
    let stop = Rc::new(stop);
    // A flush from the appends' queue runs as a task of its own, counted
    // in progress: the appends behind it need not wait for its fdatasync.
    let flush = {
        let (shard, stop, in_progress) = (shard.clone(), stop.clone(), in_progress.clone());
        move |reply: Reply<()>| {
            let (shard, stop, guard) = (shard.clone(), stop.clone(), in_progress.enter());
            glommio::spawn_local(async move {
                answer(reply, async { Ok(shard.flush().await?) }, &stop).await;
                drop(guard);
            })
            .detach();
        }
    };
    let appends = glommio::spawn_local(serve_appends(
        shard.clone(),
        (queues.appends.clone(), exchange),
        stop.clone(),
        flush,
    ));
    while let Ok(request) = queues.requests.recv().await {
        if stop.panicked.get().is_some() {
            // Dropped: its caller sees the panic.
            continue;
        }
        let (shard, local, report) = (shard.clone(), local.clone(), report.clone());
        let (stop, guard) = (stop.clone(), in_progress.enter());
        glommio::spawn_local(async move {
            handle(&shard, local, &report, request, &stop).await;
            drop(guard);
        })
        .detach();
    }
    // Followers parked in long polls would hold the close for their
    // whole timeout.
    shard.release_waiters();
    // The appends' queue first: a flush in it enters `in_progress`.
    appends.await;
    in_progress.idle().await;
    if let Some(e) = stop.error() {
        return Err(e);
    }
    Ok(shard.close().await?)
}

/// Runs `work` and sends its result on `reply` (a caller that went away is
/// fine). A panic in `work` (a bug) is caught before the reply is dropped:
/// it is recorded, stops the shard, and is the caller's answer.
async fn answer<T>(reply: Reply<T>, work: impl Future<Output = Result<T>>, stop: &Stop) {
    let result = match AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(stop.record(payload)),
    };
    let _ = reply.send(result);
}

/// Runs one request and sends its reply.
async fn handle(
    shard: &Shard,
    local: LocalShard,
    report: &corelog_shard::RecoveryReport,
    request: Request,
    stop: &Stop,
) {
    let s = shard;
    match request {
        Request::Read {
            partition,
            offset,
            max_bytes,
            reply,
        } => {
            answer(
                reply,
                async { Ok(s.read(partition, offset, max_bytes).await?) },
                stop,
            )
            .await
        }
        Request::ReadRange {
            partition,
            start,
            end,
            reply,
        } => {
            answer(
                reply,
                async { Ok(s.read_range(partition, start, end).await?) },
                stop,
            )
            .await
        }
        Request::Offsets { partition, reply } => {
            answer(reply, async { Ok(s.offsets(partition)) }, stop).await
        }
        Request::DeleteBefore {
            partition,
            offset,
            reply,
        } => {
            answer(
                reply,
                async { Ok(s.delete_before(partition, offset).await?) },
                stop,
            )
            .await
        }
        Request::Truncate {
            partition,
            from,
            reply,
        } => {
            answer(
                reply,
                async { Ok(s.truncate(partition, from).await?) },
                stop,
            )
            .await
        }
        Request::Reset {
            partition,
            start,
            reply,
        } => answer(reply, async { Ok(s.reset(partition, start).await?) }, stop).await,
        Request::PutMeta {
            partition,
            key,
            value,
            reply,
        } => {
            let work = async { Ok(s.put_meta(partition, &key, &value).await?) };
            answer(reply, work, stop).await
        }
        Request::GetMeta {
            partition,
            key,
            reply,
        } => answer(reply, async { Ok(s.get_meta(partition, &key)) }, stop).await,
        Request::Partitions { reply } => answer(reply, async { Ok(s.partitions()) }, stop).await,
        Request::WaitFor {
            partition,
            offset,
            timeout,
            reply,
        } => {
            let work = async { Ok(s.wait_for(partition, offset, timeout).await) };
            answer(reply, work, stop).await
        }
        Request::Fetch {
            partition,
            offset,
            max_bytes,
            timeout,
            reply,
        } => {
            let work = async { Ok(s.fetch(partition, offset, max_bytes, timeout).await?) };
            answer(reply, work, stop).await
        }
        Request::Stats { reply } => {
            answer(reply, async { Ok((s.stats(), report.clone())) }, stop).await
        }
        Request::Run { task, reply } => answer(reply, async { Ok(task(local).await) }, stop).await,
    }
}

/// Counts requests in progress on this thread, and wakes whoever waits for
/// none to be left.
#[derive(Default)]
struct InProgress {
    count: Cell<usize>,
    waiter: Cell<Option<Waker>>,
}

/// Held by a request's task while it runs.
struct Entered(Rc<InProgress>);

impl InProgress {
    fn enter(self: &Rc<Self>) -> Entered {
        self.count.set(self.count.get() + 1);
        Entered(self.clone())
    }

    async fn idle(&self) {
        poll_fn(|cx| {
            if self.count.get() == 0 {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let left = self.0.count.get() - 1;
        self.0.count.set(left);
        if left == 0 {
            if let Some(w) = self.0.waiter.take() {
                w.wake();
            }
        }
    }
}

/// Sends what is staged, closes every shard's queues and joins the shard
/// threads; returns the first shard's error.
pub(crate) fn shut_down(
    staged: &Staged,
    threads: Vec<ShardThread>,
    linger: Option<std::thread::JoinHandle<()>>,
) -> Result<()> {
    // Nothing staged is left behind: it goes before the queues close.
    staged.stop_lingering();
    if let Some(linger) = linger {
        // It only sends bundles (never panics with a lock held).
        let _ = linger.join();
    }
    staged.send_everything();
    let mut first = None;
    for t in &threads {
        t.appends.close();
        t.sender.close();
    }
    for (shard, t) in threads.into_iter().enumerate() {
        // A thread that ended by a panic recorded it: that is the error
        // (not the executor's, whose text is about starting one).
        let result = t.join.join().map_err(|e| match t.panicked.get() {
            Some(message) => Error::ShardPanicked {
                shard,
                message: message.clone(),
            },
            None => Error::Runtime {
                shard,
                reason: e.to_string(),
            },
        });
        if let Err(e) = result.and_then(|r| r) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Closes the queues of `threads` and joins them; returns the first
/// thread's error text, if any.
pub(crate) fn stop(threads: Vec<ShardThread>) -> Option<String> {
    for t in &threads {
        t.appends.close();
        t.sender.close();
    }
    let mut reason = None;
    for t in threads {
        let text = match t.join.join() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        reason.get_or_insert(text);
    }
    reason
}
