//! The replicated state machine: a key-value map, with its type config.

use std::{
    collections::BTreeMap,
    io::Cursor,
    sync::{Arc, Mutex},
};

use openraft::{
    storage::{RaftStateMachine, Snapshot},
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

/// A write: set `key` to `value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Set {
    pub key: String,
    pub value: String,
}

openraft::declare_raft_types!(
    /// Key-value writes over corelog.
    pub TypeConfig:
        D = Set,
        R = (),
);

/// The map and what Raft needs to know about it. Kept in memory: on a
/// restart openraft applies the log again from the committed id corelog
/// kept (snapshots are off, so the log is never purged).
#[derive(Clone, Default)]
pub struct Kv(pub Arc<Mutex<State>>);

#[derive(Default)]
pub struct State {
    pub last_applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, BasicNode>,
    pub map: BTreeMap<String, String>,
    snapshot: Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>,
}

fn snapshot_err(e: serde_json::Error) -> StorageError<u64> {
    StorageIOError::read_snapshot(None, openraft::AnyError::new(&e)).into()
}

impl RaftSnapshotBuilder<TypeConfig> for Kv {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let mut s = self.0.lock().expect("state");
        let bytes = serde_json::to_vec(&s.map).map_err(snapshot_err)?;
        let meta = SnapshotMeta {
            last_log_id: s.last_applied,
            last_membership: s.membership.clone(),
            snapshot_id: format!("{:?}", s.last_applied),
        };
        s.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Kv {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let s = self.0.lock().expect("state");
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut s = self.0.lock().expect("state");
        let mut out = Vec::new();
        for entry in entries {
            s.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(set) => {
                    s.map.insert(set.key, set.value);
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m)
                }
            }
            out.push(());
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
        let map = serde_json::from_slice(&bytes).map_err(snapshot_err)?;
        let mut s = self.0.lock().expect("state");
        s.last_applied = meta.last_log_id;
        s.membership = meta.last_membership.clone();
        s.map = map;
        s.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let s = self.0.lock().expect("state");
        Ok(s.snapshot.clone().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
