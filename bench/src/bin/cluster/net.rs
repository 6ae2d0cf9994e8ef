//! The cluster's network: one JSON request and one JSON reply per line over
//! TCP on loopback, for Raft's messages between nodes and for the
//! orchestrator's writes and status queries.

use std::{collections::BTreeMap, io};

use openraft::{
    error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable},
    network::{RPCOption, RaftNetwork, RaftNetworkFactory},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
    BasicNode,
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

use crate::kv::{Set, TypeConfig};

/// A request to a node.
#[derive(Serialize, Deserialize)]
pub enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Make these nodes the cluster (sent to one node, once).
    Init(BTreeMap<u64, BasicNode>),
    /// A client write.
    Write(Set),
    Status,
    /// The whole key-value map.
    Dump,
}

/// A node's answer to an [`Rpc`] of the same name.
#[derive(Serialize, Deserialize)]
pub enum Reply {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Init(Result<(), String>),
    /// `Err(leader)`: not the leader; the leader it knows of, if any.
    Write(Result<(), Option<u64>>),
    Status(Status),
    Dump(BTreeMap<String, String>),
}

/// What a node knows of the cluster.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Status {
    pub leader: Option<u64>,
    pub term: u64,
    pub last_applied: Option<u64>,
    pub last_log: Option<u64>,
}

/// One connection to a node, kept open across requests.
pub struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl Conn {
    pub async fn open(addr: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: BufReader::new(r),
            writer: w,
            line: String::new(),
        })
    }

    /// Sends `rpc` and waits for the reply.
    pub async fn call(&mut self, rpc: &Rpc) -> io::Result<Reply> {
        let mut out = serde_json::to_vec(rpc)?;
        out.push(b'\n');
        self.writer.write_all(&out).await?;
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(serde_json::from_str(&self.line)?)
    }
}

/// Sends one request on a fresh connection.
pub async fn call(addr: &str, rpc: &Rpc) -> io::Result<Reply> {
    Conn::open(addr).await?.call(rpc).await
}

/// Raft's way to the other nodes.
pub struct Network;

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            conn: None,
        }
    }
}

/// One other node, with a connection opened on first use and again after
/// a failure.
pub struct Peer {
    target: u64,
    addr: String,
    conn: Option<Conn>,
}

impl Peer {
    async fn send<E: std::error::Error>(
        &mut self,
        rpc: Rpc,
    ) -> Result<Reply, RPCError<u64, BasicNode, E>> {
        if self.conn.is_none() {
            let conn = Conn::open(&self.addr)
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("opened above");
        match conn.call(&rpc).await {
            Ok(reply) => Ok(reply),
            Err(e) => {
                self.conn = None;
                Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
        }
    }

    fn unexpected<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
        let e = io::Error::new(io::ErrorKind::InvalidData, "reply to another request");
        RPCError::Unreachable(Unreachable::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.send(Rpc::Append(rpc)).await? {
            Reply::Append(r) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            _ => Err(Self::unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        match self.send(Rpc::Snapshot(rpc)).await? {
            Reply::Snapshot(r) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            _ => Err(Self::unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        match self.send(Rpc::Vote(rpc)).await? {
            Reply::Vote(r) => r.map_err(|e| RemoteError::new(self.target, e).into()),
            _ => Err(Self::unexpected()),
        }
    }
}
