//! The openraft log store (feature `openraft`): openraft's own storage
//! conformance suite over a corelog partition, and sixteen Raft groups
//! sharing one engine.

use std::{
    io::Cursor,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use corelog::{raft::LogStore, Config, Engine, FsyncPolicy};
use openraft::{
    storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, Snapshot},
    testing::{log_id, StoreBuilder, Suite},
    BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership, Vote,
};

openraft::declare_raft_types!(
    /// Strings in, strings out: enough for the suite.
    pub TypeConfig
);

mod common;

/// A small in-memory state machine: the applied payloads, the last applied
/// log id and membership, and the last snapshot.
#[derive(Clone, Default)]
struct StateMachine(Arc<Mutex<Applied>>);

#[derive(Default)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    data: Vec<String>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
    snapshots_built: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let mut a = self.0.lock().unwrap();
        a.snapshots_built += 1;
        let bytes = a.data.join("\n").into_bytes();
        let meta = SnapshotMeta {
            last_log_id: a.last_applied,
            last_membership: a.membership.clone(),
            snapshot_id: format!("snapshot-{}", a.snapshots_built),
        };
        a.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let a = self.0.lock().unwrap();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<String>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut a = self.0.lock().unwrap();
        let mut out = Vec::new();
        for entry in entries {
            a.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(d) => a.data.push(d),
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(entry.log_id), m)
                }
            }
            out.push(String::new());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = snapshot.into_inner();
        let mut a = self.0.lock().unwrap();
        a.last_applied = meta.last_log_id;
        a.membership = meta.last_membership.clone();
        a.data = String::from_utf8_lossy(&bytes)
            .split('\n')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        a.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let a = self.0.lock().unwrap();
        Ok(a.snapshot.clone().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

fn engine_config(dir: &std::path::Path) -> Config {
    common::config(dir).fsync(FsyncPolicy::Always)
}

/// One engine for every store the suite builds, each store on a partition
/// of its own: the suite's tests are then also many groups on one engine.
struct Builder {
    engine: Engine,
    next_partition: AtomicU64,
    _dir: tempfile::TempDir,
}

impl StoreBuilder<TypeConfig, LogStore<TypeConfig>, StateMachine, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore<TypeConfig>, StateMachine), StorageError<u64>> {
        let partition = self.next_partition.fetch_add(1, Ordering::Relaxed);
        let store = LogStore::new(self.engine.handle(), partition).expect("Always");
        Ok(((), store, StateMachine::default()))
    }
}

#[test]
fn openraft_storage_suite() {
    let dir = common::test_dir();
    let engine = Engine::open(engine_config(dir.path())).unwrap();
    let builder = Builder {
        engine,
        next_partition: AtomicU64::new(1),
        _dir: dir,
    };
    Suite::test_all(builder).unwrap();
}

#[test]
fn a_log_store_needs_always() {
    let dir = common::test_dir();
    let engine = Engine::open(engine_config(dir.path()).fsync(FsyncPolicy::Never)).unwrap();
    assert!(LogStore::<TypeConfig>::new(engine.handle(), 1).is_err());
    engine.close().unwrap();
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(format!("entry {index} of term {term}")),
    }
}

/// Sixteen groups on one engine, each appending, truncating, purging and
/// voting at once; then a reopen finds every group's own log and vote.
#[test]
fn sixteen_groups_share_one_engine_and_survive_reopen() {
    const GROUPS: u64 = 16;
    let dir = common::test_dir();
    let engine = Engine::open(engine_config(dir.path())).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = (0..GROUPS)
            .map(|g| {
                let mut store = LogStore::<TypeConfig>::new(engine.handle(), 100 + g).unwrap();
                tokio::spawn(async move {
                    let vote = Vote::new(g + 1, g);
                    store.save_vote(&vote).await.unwrap();
                    for batch in 0..10u64 {
                        let entries = (batch * 10..batch * 10 + 10).map(|i| entry(1, i));
                        store.blocking_append(entries).await.unwrap();
                    }
                    // A new leader overwrites the tail.
                    store.truncate(log_id(1, 1, 90)).await.unwrap();
                    store
                        .blocking_append((90..95).map(|i| entry(2, i)))
                        .await
                        .unwrap();
                    store.purge(log_id(1, 1, 9 + g)).await.unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    engine.close().unwrap();
    let engine = Engine::open(engine_config(dir.path())).unwrap();
    rt.block_on(async {
        for g in 0..GROUPS {
            let mut store = LogStore::<TypeConfig>::new(engine.handle(), 100 + g).unwrap();
            assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(g + 1, g)));
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 9 + g)));
            assert_eq!(state.last_log_id, Some(log_id(2, 1, 94)));
            let entries = store.try_get_log_entries(0..200).await.unwrap();
            let indexes: Vec<u64> = entries.iter().map(|e| e.log_id.index).collect();
            assert_eq!(indexes, (10 + g..95).collect::<Vec<_>>(), "group {g}");
            assert_eq!(entries.last().unwrap().log_id.leader_id.term, 2);
        }
    });
    engine.close().unwrap();
}

/// Retention moves a partition's start by itself, which would drop entries
/// openraft has not purged: a store refuses an engine that retains.
#[test]
fn a_log_store_refuses_an_engine_with_retention() {
    let dir = common::test_dir();
    let engine = Engine::open(engine_config(dir.path()).retention_bytes(1 << 20)).unwrap();
    assert!(LogStore::<TypeConfig>::new(engine.handle(), 1).is_err());
    engine.close().unwrap();
}

/// Runs `test` on a tokio runtime with the store of `partition` on a fresh
/// engine, and the engine's handle, then closes the engine.
fn with_store<Fut: std::future::Future<Output = ()>>(
    partition: u64,
    test: impl FnOnce(LogStore<TypeConfig>, corelog::Handle) -> Fut,
) {
    let dir = common::test_dir();
    let engine = Engine::open(engine_config(dir.path())).unwrap();
    let store = LogStore::new(engine.handle(), partition).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(test(store, engine.handle()));
    engine.close().unwrap();
}

/// A crash inside a purge past the end (the purged id written, the reset
/// not) leaves entries before the purged id; the store finishes the purge
/// when asked for its state, so the state keeps openraft's invariant
/// (the last log id is at least the purged one) and appends go on.
#[test]
fn an_interrupted_purge_past_the_end_is_finished() {
    with_store(7, |mut store, log| async move {
        store
            .blocking_append((0..10).map(|i| entry(1, i)))
            .await
            .unwrap();
        // What `purge(log_id(1, 1, 20))` writes first.
        let purged = postcard::to_allocvec(&log_id(1, 1u64, 20)).unwrap();
        log.put_meta(7, b"raft.purged", purged).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 1, 20)));
        assert_eq!(state.last_log_id, Some(log_id(1, 1, 20)));
        store.blocking_append([entry(2, 21)]).await.unwrap();
        let indexes: Vec<u64> = store
            .try_get_log_entries(0..100)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id.index)
            .collect();
        assert_eq!(indexes, [21]);
    });
}

/// A reader (a replication task's clone) racing truncations and appends
/// gets what the log holds, never an error: openraft takes a read error
/// as fatal.
#[test]
fn a_reader_racing_truncations_gets_entries_not_errors() {
    with_store(9, |mut store, _| async move {
        store
            .blocking_append((0..20).map(|i| entry(1, i)))
            .await
            .unwrap();
        let mut reader = store.get_log_reader().await;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reading = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    reader.try_get_log_entries(0..40).await.unwrap();
                    reads += 1;
                }
                reads
            })
        };
        for round in 0..300u64 {
            store.truncate(log_id(1, 1, 10)).await.unwrap();
            let term = round + 2;
            store
                .blocking_append((10..20).map(|i| entry(term, i)))
                .await
                .unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(reading.await.unwrap() > 0);
    });
}

/// An append larger than the engine's largest batch goes in chunks that
/// fit it.
#[test]
fn an_append_larger_than_a_batch_goes_in_chunks_that_fit() {
    // 64 KiB batches: 300 entries of 1 KiB need five or more.
    with_store(11, |mut store, _| async move {
        let entries = (0..300u64).map(|i| Entry {
            log_id: log_id(1, 1, i),
            payload: EntryPayload::Normal("x".repeat(1024)),
        });
        store.blocking_append(entries).await.unwrap();
        let read = store.try_get_log_entries(0..300).await.unwrap();
        assert_eq!(read.len(), 300);
    });
}
