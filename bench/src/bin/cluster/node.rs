//! One node of the cluster: a corelog engine holding the Raft log (one
//! partition), the key-value state machine, and the server that answers
//! other nodes and the orchestrator.

use std::{path::Path, sync::Arc};

use corelog::{raft::LogStore, Config, Engine};
use openraft::{Raft, SnapshotPolicy};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use crate::{
    kv::{Kv, TypeConfig},
    net::{Network, Reply, Rpc, Status},
};

/// The partition that holds the group's log.
const PARTITION: u64 = 0;

/// Runs node `id` on `port` with its data in `dir`, until killed.
pub async fn run(id: u64, port: u16, dir: &Path) -> Result<(), String> {
    let engine = Engine::open(Config::new(dir).shards(1)).map_err(|e| e.to_string())?;
    let store = LogStore::new(engine.handle(), PARTITION).map_err(|e| e.to_string())?;
    let kv = Kv::default();
    let config = openraft::Config {
        cluster_name: "corelog".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        // The state machine lives in memory and is rebuilt from the log on
        // a restart: the log is never purged.
        snapshot_policy: SnapshotPolicy::Never,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())?;
    let raft = Raft::new(id, Arc::new(config), Network, store, kv.clone())
        .await
        .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| format!("bind port {port}: {e}"))?;
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (raft, kv) = (raft.clone(), kv.clone());
        tokio::spawn(async move {
            let _ = serve(stream, raft, kv).await;
        });
    }
}

/// Answers the requests of one connection until it closes.
async fn serve(stream: TcpStream, raft: Raft<TypeConfig>, kv: Kv) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Some(line) = lines.next_line().await? {
        let rpc: Rpc = serde_json::from_str(&line)?;
        let reply = match rpc {
            Rpc::Append(req) => Reply::Append(raft.append_entries(req).await),
            Rpc::Vote(req) => Reply::Vote(raft.vote(req).await),
            Rpc::Snapshot(req) => Reply::Snapshot(raft.install_snapshot(req).await),
            Rpc::Init(members) => {
                Reply::Init(raft.initialize(members).await.map_err(|e| e.to_string()))
            }
            Rpc::Write(set) => Reply::Write(match raft.client_write(set).await {
                Ok(_) => Ok(()),
                Err(e) => Err(e.forward_to_leader().and_then(|f| f.leader_id)),
            }),
            Rpc::Status => {
                let m = raft.metrics().borrow().clone();
                Reply::Status(Status {
                    leader: m.current_leader,
                    term: m.current_term,
                    last_applied: m.last_applied.map(|l| l.index),
                    last_log: m.last_log_index,
                })
            }
            Rpc::Dump => Reply::Dump(kv.0.lock().expect("state").map.clone()),
        };
        let mut out = serde_json::to_vec(&reply)?;
        out.push(b'\n');
        w.write_all(&out).await?;
    }
    Ok(())
}
