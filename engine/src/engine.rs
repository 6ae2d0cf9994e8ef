//! The engine: shard threads, the data directory's lock and layout, and the
//! handle callers use from any thread.

use std::{
    fs::File,
    path::Path,
    sync::{mpsc, Arc, OnceLock},
    time::Duration,
};

use corelog_shard::{
    FsyncPolicy, Offsets, Record, RecoveryReport, ShardConfig, ShardStats, StoredRecord,
};
use futures_channel::oneshot;

use crate::{
    append::Append,
    bundle::{self, Exchange, Queued, Route},
    config::Config,
    error::{Error, Result},
    io_memory::with_io_memory,
    layout,
    local::LocalShard,
    pipeline::COALESCE_BYTES,
    request::{Reply, Request},
    routing::shard_for,
    runtime::{self, ShardThread},
    staging::{self, Staged},
};

/// Full bundles kept staged behind a partition's open one under `Always`.
const MAX_KEPT_BUNDLES: usize = 15;

/// Name of the lock file in the data directory.
const LOCK_FILE: &str = "LOCK";

/// A running engine: one shard per core, each on its own thread.
///
/// Dropping it closes it as [`Engine::close`] does, ignoring errors.
pub struct Engine {
    handle: Handle,
    threads: Vec<ShardThread>,
    /// The thread that sends appends left staged ([`Staged::linger`]).
    linger: Option<std::thread::JoinHandle<()>>,
    /// The data directory's lock, held until the shards are closed.
    lock: Option<File>,
}

/// A cheap, cloneable way to reach the engine from any thread or async
/// runtime. Its futures do not depend on the executor that polls them.
#[derive(Clone)]
pub struct Handle {
    /// Per shard, its queue of appends.
    appends: Arc<[async_channel::Sender<Queued>]>,
    /// Per shard, its queue of other requests.
    senders: Arc<[async_channel::Sender<Request>]>,
    /// The appends staged per partition, not yet sent.
    staged: Arc<Staged>,
    /// The limits every append is checked against before it is staged.
    limits: Arc<ShardConfig>,
    /// Encoded bytes up to which a thread's appends to a partition share
    /// a bundle.
    bundle_bytes: usize,
    /// Per shard, the message of a panic that stopped it.
    panics: Arc<[Arc<OnceLock<String>>]>,
    /// Per shard, what it shares with the appending threads.
    exchanges: Arc<[Arc<Exchange>]>,
    /// The engine's durability policy.
    fsync: FsyncPolicy,
}

/// Counters of every shard, with what its recovery did on open.
#[derive(Debug, Clone)]
pub struct EngineStats {
    /// Per shard, in shard order.
    pub shards: Vec<(ShardStats, RecoveryReport)>,
}

impl Engine {
    /// Opens (creating if needed) the engine in `config`'s directory and
    /// starts its shards, which recover in parallel. Blocks until all are
    /// ready.
    pub fn open(config: Config) -> Result<Engine> {
        if config.shards == 0 {
            return Err(Error::InvalidArgument("shards must be at least 1".into()));
        }
        config.shard_config(0).validate()?;
        let config = with_io_memory(config)?;
        std::fs::create_dir_all(&config.dir)
            .map_err(|e| Error::io("create directory", &config.dir, e))?;
        // The directory's own entry, if this created it, must survive a
        // crash with everything written under it.
        if let Some(parent) = config.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync directory", parent, e))?;
        }
        let lock = lock_dir(&config.dir)?;
        layout::check(&config.dir, config.shards)?;
        let cores: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let staged = Arc::new(Staged::new());
        let mut threads = Vec::with_capacity(config.shards);
        for id in 0..config.shards {
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            match runtime::start(&config, id, core, ready_tx.clone()) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    runtime::stop(threads);
                    return Err(e);
                }
            }
        }
        drop(ready_tx);
        let mut failure = None;
        let mut ready = vec![false; config.shards];
        for _ in 0..config.shards {
            match ready_rx.recv() {
                Ok((id, Ok(()))) => ready[id] = true,
                Ok((id, Err(e))) => {
                    ready[id] = true;
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    // Names the first shard that never reported.
                    failure.get_or_insert(Error::Runtime {
                        shard: ready.iter().position(|&r| !r).unwrap_or(0),
                        reason: "a shard thread exited before it was ready".into(),
                    });
                    break;
                }
            }
        }
        if let Some(e) = failure {
            let reasons = runtime::stop(threads);
            return Err(match e {
                Error::Runtime { shard, .. } => Error::Runtime {
                    shard,
                    reason: reasons.unwrap_or_else(|| "unknown".into()),
                },
                other => other,
            });
        }
        let linger = {
            let staged = staged.clone();
            std::thread::Builder::new()
                .name("corelog-linger".into())
                .spawn(move || staged.linger())
        };
        let linger = match linger {
            Ok(thread) => thread,
            Err(e) => {
                runtime::stop(threads);
                return Err(Error::io("start the staging thread for", &config.dir, e));
            }
        };
        let appends = threads.iter().map(|t| t.appends.clone()).collect();
        let senders = threads.iter().map(|t| t.sender.clone()).collect();
        let panics = threads.iter().map(|t| t.panicked.clone()).collect();
        let exchanges = threads.iter().map(|t| t.exchange.clone()).collect();
        Ok(Engine {
            handle: Handle {
                appends,
                senders,
                staged,
                limits: Arc::new(config.shard_config(0)),
                bundle_bytes: COALESCE_BYTES.min(config.shard_config(0).max_batch_bytes),
                panics,
                exchanges,
                fsync: config.shard_config(0).fsync,
            },
            threads,
            linger: Some(linger),
            lock: Some(lock),
        })
    }

    /// A handle for callers; clone it freely.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Counters of every shard (blocking). Refused on a shard's own thread
    /// (in [`Handle::run_on_shard`]), which it would block for good; use
    /// [`LocalShard::stats`] there.
    pub fn stats(&self) -> Result<EngineStats> {
        if runtime::on_shard_thread() {
            return Err(Error::InvalidArgument(
                "Engine::stats blocks until every shard answers: it cannot run on a shard's own \
                 thread (use LocalShard::stats there)"
                    .into(),
            ));
        }
        let h = &self.handle;
        let shards = (0..h.senders.len())
            .map(|s| futures_lite::future::block_on(h.call(s, |reply| Request::Stats { reply })))
            .collect::<Result<_>>()?;
        Ok(EngineStats { shards })
    }

    /// Stops accepting requests, finishes those in progress, syncs, records
    /// clean shutdowns and joins the shard threads (blocking). Later calls
    /// on any handle get [`Error::Closed`].
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let handle = self.handle.clone();
        let threads = std::mem::take(&mut self.threads);
        let linger = self.linger.take();
        let lock = self.lock.take();
        if runtime::on_shard_thread() && !threads.is_empty() {
            // Joining the shards here would join this very thread: the close
            // goes on in the background once the task calling it returns.
            std::thread::spawn(move || {
                let _ = runtime::shut_down(&handle.staged, threads, linger);
                drop(lock);
            });
            return Err(Error::InvalidArgument(
                "the engine was closed on a shard's own thread: it closes in the background \
                 once the calling task returns"
                    .into(),
            ));
        }
        let closed = runtime::shut_down(&handle.staged, threads, linger);
        drop(lock);
        closed
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Takes the directory's lock file, refusing if another process holds it.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

impl Handle {
    /// Sends a request to shard `shard` and waits for its reply.
    async fn call<T>(&self, shard: usize, request: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        // What this thread staged goes before it.
        staging::send_all();
        let (tx, rx) = oneshot::channel();
        self.senders[shard]
            .send(request(tx))
            .await
            .map_err(|_| self.stopped(shard))?;
        rx.await.map_err(|_| self.stopped(shard))?
    }

    /// The error for a call that shard `shard` will not answer: it
    /// panicked, or the engine is closed.
    fn stopped(&self, shard: usize) -> Error {
        bundle::stopped(shard, &self.panics[shard])
    }

    /// The limits every append is checked against, and the engine's other
    /// shard settings.
    #[cfg(feature = "openraft")]
    pub(crate) fn limits(&self) -> &ShardConfig {
        &self.limits
    }

    /// The durability policy the engine runs: what an acknowledged append
    /// promises.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    fn shard(&self, partition: u64) -> usize {
        shard_for(partition, self.senders.len())
    }

    /// Appends `records` to `partition` with consecutive offsets, all or
    /// none. The returned future gives the first offset once the fsync
    /// policy is met; records that break the limits are refused at once
    /// (the future gives why).
    ///
    /// The append's place in the partition's order is fixed when this
    /// returns: an append made after this call returned, on any thread or
    /// task, gets a later offset, whether or not this one was awaited and
    /// whatever the sizes. Appends made to a partition while no one waits
    /// are staged together and sent in one request when someone waits on
    /// one of them, drops one, flushes or closes the engine, when the
    /// thread that made them waits on any append, calls another method of
    /// a handle or exits, when they reach 64 KiB (1 MiB under `Always`),
    /// when their shard completes a write (the next write takes them), and
    /// within about 20 ms: awaiting each append sends each at once; a
    /// window of outstanding appends goes at most a window at a time. Dropping the future does not
    /// withdraw the append. The call never blocks: bound your window of
    /// outstanding appends to bound memory. Order against other operations
    /// (a `truncate`, a `read`) holds once the append's future has
    /// resolved.
    pub fn append(&self, partition: u64, records: Vec<Record>) -> Append {
        self.enqueue(partition, None, records)
    }

    /// Appends `records` to `partition` as [`Handle::append`] does, but only
    /// if the partition's end, counting appends made before this one, is
    /// `expected_end`; else the future gives [`Error::OffsetMismatch`] and
    /// nothing is written. The conditional append a replicated log's
    /// leader (or a producer that must not duplicate) needs. It is sent at
    /// once, after what is staged for the partition.
    pub fn append_at(&self, partition: u64, expected_end: u64, records: Vec<Record>) -> Append {
        self.enqueue(partition, Some(expected_end), records)
    }

    /// Stages or sends an append; see [`Handle::append`].
    fn enqueue(&self, partition: u64, expected_end: Option<u64>, records: Vec<Record>) -> Append {
        let bytes = match corelog_shard::check_batch(&self.limits, partition, &records) {
            Ok(bytes) => bytes,
            Err(e) => return Append::failed(e.into()),
        };
        let shard = self.shard(partition);
        let route = || Route {
            queue: self.appends[shard].clone(),
            shard,
            panicked: self.panics[shard].clone(),
            exchange: self.exchanges[shard].clone(),
        };
        let at = (partition, expected_end);
        // Under `Always` a thread's full bundles wait for the rest of its
        // window (up to 1 MiB): sent early, the first would take a commit
        // of its own, an fdatasync more per window. Otherwise they go as
        // they fill, so the shard writes while the thread goes on.
        let keep = match self.fsync {
            FsyncPolicy::Always => MAX_KEPT_BUNDLES,
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => 0,
        };
        let sizes = (self.bundle_bytes, keep);
        // Encoded on this thread, which also frees the records.
        let way = (&self.exchanges[shard], route);
        let (bundle, place) = self.staged.append(at, way, &records, bytes, sizes);
        Append::waiting(bundle, place)
    }

    /// Acknowledged records from `offset` on, up to `max_bytes` (at least
    /// one record when `offset` is below the end). Read committed: a record
    /// whose append has not resolved `Ok` is never returned, under any
    /// policy; past the end ([`Offsets::end`], the acknowledged end) is
    /// [`Error::OffsetOutOfRange`].
    pub async fn read(
        &self,
        partition: u64,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.call(self.shard(partition), |reply| Request::Read {
            partition,
            offset,
            max_bytes,
            reply,
        })
        .await
    }

    /// Exactly the records in `[start, end)`, all acknowledged (an `end`
    /// past the acknowledged end is refused); only the first of them when a
    /// truncate or delete-before crossed the read while it waited for the
    /// disk (what existed when it started, never a mix).
    pub async fn read_range(
        &self,
        partition: u64,
        start: u64,
        end: u64,
    ) -> Result<Vec<StoredRecord>> {
        self.call(self.shard(partition), |reply| Request::ReadRange {
            partition,
            start,
            end,
            reply,
        })
        .await
    }

    /// Start, acknowledged end and durable end of `partition` (see
    /// [`Offsets`]); all zero for a partition never written.
    pub async fn offsets(&self, partition: u64) -> Result<Offsets> {
        self.call(self.shard(partition), |reply| Request::Offsets {
            partition,
            reply,
        })
        .await
    }

    /// Moves the start of `partition` to `offset`, durably.
    pub async fn delete_before(&self, partition: u64, offset: u64) -> Result<()> {
        self.call(self.shard(partition), |reply| Request::DeleteBefore {
            partition,
            offset,
            reply,
        })
        .await
    }

    /// Removes offsets `from` and above of `partition`, durably.
    pub async fn truncate(&self, partition: u64, from: u64) -> Result<()> {
        self.call(self.shard(partition), |reply| Request::Truncate {
            partition,
            from,
            reply,
        })
        .await
    }

    /// Empties `partition` durably and sets its start and end to `start`
    /// (any value, also past the old end): the next append gets offset
    /// `start`. What a replicated log's follower does after installing a
    /// snapshot. Appends in flight to the partition are cut as by a
    /// `truncate`.
    pub async fn reset(&self, partition: u64, start: u64) -> Result<()> {
        self.call(self.shard(partition), |reply| Request::Reset {
            partition,
            start,
            reply,
        })
        .await
    }

    /// Sets metadata `key` of `partition` to `value` (a Raft vote, a
    /// commit index): durable when this returns, ordered with the
    /// partition's appends in the log (a crash never keeps an append made
    /// after this returned, or issued while it was in flight, and loses
    /// this), and kept across segment deletion and retention. At most
    /// [`MAX_META_KEYS`](crate::MAX_META_KEYS) keys a partition, of at most
    /// [`MAX_META_KEY_BYTES`](crate::MAX_META_KEY_BYTES) bytes, with values
    /// of at most [`MAX_META_VALUE_BYTES`](crate::MAX_META_VALUE_BYTES):
    /// [`Error::RecordTooLarge`] or [`Error::InvalidArgument`] past them.
    pub async fn put_meta(&self, partition: u64, key: &[u8], value: Vec<u8>) -> Result<()> {
        let key = key.to_vec();
        self.call(self.shard(partition), |reply| Request::PutMeta {
            partition,
            key,
            value,
            reply,
        })
        .await
    }

    /// Metadata `key` of `partition`, if set.
    pub async fn get_meta(&self, partition: u64, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = key.to_vec();
        self.call(self.shard(partition), |reply| Request::GetMeta {
            partition,
            key,
            reply,
        })
        .await
    }

    /// Every partition that holds offsets or metadata, with its offsets, in
    /// partition order. Partitions only read, polled or asked for their
    /// offsets are not listed: those calls create nothing.
    pub async fn partitions(&self) -> Result<Vec<(u64, Offsets)>> {
        let mut all = Vec::new();
        for shard in 0..self.senders.len() {
            all.extend(
                self.call(shard, |reply| Request::Partitions { reply })
                    .await?,
            );
        }
        all.sort_unstable_by_key(|&(p, _)| p);
        Ok(all)
    }

    /// Makes everything appended so far, on every shard, durable.
    pub async fn flush(&self) -> Result<()> {
        // Appends staged on any thread are appended already: they go first.
        self.staged.send_everything();
        // Each flush goes behind the shard's appends, on their queue: the
        // shard may not have taken them all yet (it takes them as the log
        // has room).
        let replies: Vec<_> = self
            .appends
            .iter()
            .enumerate()
            .map(|(shard, queue)| {
                let (tx, rx) = oneshot::channel();
                let sent = queue.try_send(Queued::Flush(tx)).is_ok();
                (shard, sent.then_some(rx))
            })
            .collect();
        for (shard, rx) in replies {
            let rx = rx.ok_or_else(|| self.stopped(shard))?;
            rx.await.map_err(|_| self.stopped(shard))??;
        }
        Ok(())
    }

    /// Runs `task` on the executor of the shard that owns `partition`, with
    /// a [`LocalShard`] on that shard, and returns its output. Code in
    /// `task` calls the shard directly: the local fast path, with no thread
    /// crossing per operation. `task` itself is sent once.
    pub async fn run_on_shard<F, Fut, T>(&self, partition: u64, task: F) -> Result<T>
    where
        F: FnOnce(LocalShard) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let task: crate::request::LocalTask = Box::new(move |shard| {
            Box::pin(async move { Box::new(task(shard).await) as Box<dyn std::any::Any + Send> })
        });
        let output = self
            .call(self.shard(partition), |reply| Request::Run { task, reply })
            .await?;
        // Invariant: the box holds what `task` returned.
        Ok(*output
            .downcast::<T>()
            .expect("a local task's output has the task's type"))
    }

    /// Waits until the end of `partition` passes `offset` (an acknowledged
    /// append reached it) or `timeout` expires; returns whether it passed.
    /// The long poll of a consumer at the tail: it parks, never spins.
    pub async fn wait_for(&self, partition: u64, offset: u64, timeout: Duration) -> Result<bool> {
        self.call(self.shard(partition), |reply| Request::WaitFor {
            partition,
            offset,
            timeout,
            reply,
        })
        .await
    }

    /// The long poll of a consumer at the tail, in one round trip: waits
    /// until an acknowledged append takes the end of `partition` past
    /// `offset`, then returns acknowledged records from `offset` on, up to
    /// `max_bytes` (at least one); returns nothing when `timeout` passes
    /// first. An offset outside the partition gets `OffsetOutOfRange` at
    /// once, and a failed shard its error.
    pub async fn fetch(
        &self,
        partition: u64,
        offset: u64,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<StoredRecord>> {
        self.call(self.shard(partition), |reply| Request::Fetch {
            partition,
            offset,
            max_bytes,
            timeout,
            reply,
        })
        .await
    }
}
