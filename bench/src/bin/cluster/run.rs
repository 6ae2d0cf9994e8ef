//! The orchestrator of `cargo xtask cluster`: starts three node processes on
//! loopback, writes through the leader, SIGKILLs it, waits for a new one,
//! writes more, restarts the killed node, and checks that every node holds
//! every acknowledged write.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use openraft::BasicNode;

use crate::{
    kv::Set,
    net::{call, Conn, Reply, Rpc, Status},
};

/// What a run measured.
pub struct Figures {
    pub first_rate: f64,
    pub second_rate: f64,
    pub election: Duration,
    pub catch_up: Duration,
    pub entries: u64,
}

struct Node {
    id: u64,
    addr: String,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn start(&mut self, exe: &Path) -> Result<(), String> {
        let child = Command::new(exe)
            .args(["node", "--id", &self.id.to_string()])
            .args(["--port", &self.port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .spawn()
            .map_err(|e| format!("start node {}: {e}", self.id))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the scenario with `entries` writes from `clients` connections, in
/// `dir`, failing past `timeout`.
pub async fn run(
    entries: u64,
    clients: u64,
    timeout: Duration,
    dir: &Path,
) -> Result<Figures, String> {
    let deadline = Instant::now() + timeout;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let ports: Vec<u16> = {
        let held: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("free port: {e}"))?;
        held.iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?
    };
    let mut nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| Node {
            id: i as u64 + 1,
            addr: format!("127.0.0.1:{port}"),
            port,
            dir: dir.join(format!("node-{}", i + 1)),
            child: None,
        })
        .collect();
    for n in &mut nodes {
        n.start(&exe)?;
    }
    for n in &nodes {
        until(deadline, &format!("node {} answers", n.id), || async {
            matches!(call(&n.addr, &Rpc::Status).await, Ok(Reply::Status(_))).then_some(())
        })
        .await?;
    }
    let members: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .map(|n| (n.id, BasicNode::new(n.addr.clone())))
        .collect();
    match call(&nodes[0].addr, &Rpc::Init(members)).await {
        Ok(Reply::Init(Ok(()))) => {}
        other => return Err(format!("initialize: {:?}", other.map(|_| "refused"))),
    }
    let addrs: BTreeMap<u64, String> = nodes.iter().map(|n| (n.id, n.addr.clone())).collect();
    let leader = wait_leader(&addrs, None, deadline).await?;
    println!("cluster: 3 nodes on {ports:?}; node {leader} leads");

    let half = entries / 2;
    let started = Instant::now();
    write(&addrs, leader, 0..half, clients, deadline).await?;
    let first_rate = half as f64 / started.elapsed().as_secs_f64();
    println!("wrote {half} entries through node {leader}: {first_rate:.0} entries/s");

    let killed = leader;
    nodes[(killed - 1) as usize].kill();
    let killed_at = Instant::now();
    let alive: BTreeMap<u64, String> = addrs
        .iter()
        .filter(|(&id, _)| id != killed)
        .map(|(&id, a)| (id, a.clone()))
        .collect();
    let leader = wait_leader(&alive, Some(killed), deadline).await?;
    let election = killed_at.elapsed();
    println!(
        "SIGKILLed node {killed}; node {leader} leads after {:.0} ms",
        election.as_secs_f64() * 1e3
    );

    let started = Instant::now();
    write(&alive, leader, half..entries, clients, deadline).await?;
    let second_rate = (entries - half) as f64 / started.elapsed().as_secs_f64();
    println!(
        "wrote {} more entries through node {leader}: {second_rate:.0} entries/s",
        entries - half
    );

    nodes[(killed - 1) as usize].start(&exe)?;
    let restarted = Instant::now();
    let target = match call(&addrs[&leader], &Rpc::Status).await {
        Ok(Reply::Status(s)) => s.last_applied,
        _ => return Err(format!("status of leader {leader}")),
    };
    until(deadline, &format!("node {killed} catches up"), || async {
        match call(&addrs[&killed], &Rpc::Status).await {
            Ok(Reply::Status(Status { last_applied, .. })) if last_applied >= target => Some(()),
            _ => None,
        }
    })
    .await?;
    let catch_up = restarted.elapsed();
    println!(
        "restarted node {killed}: caught up with {target:?} in {:.0} ms",
        catch_up.as_secs_f64() * 1e3
    );

    let mut dumps = Vec::new();
    for (&id, addr) in &addrs {
        let map = until(
            deadline,
            &format!("node {id} holds every write"),
            || async {
                match call(addr, &Rpc::Dump).await {
                    Ok(Reply::Dump(map)) if map.len() as u64 >= entries => Some(map),
                    _ => None,
                }
            },
        )
        .await?;
        for i in 0..entries {
            let (k, v) = key_value(i);
            if map.get(&k) != Some(&v) {
                return Err(format!("node {id}: acknowledged write {k} = {v} missing"));
            }
        }
        dumps.push(map);
    }
    if dumps.windows(2).any(|w| w[0] != w[1]) {
        return Err("the nodes' maps differ".into());
    }
    println!("every node holds all {entries} acknowledged writes; the three maps are equal");
    for n in &mut nodes {
        n.kill();
    }
    Ok(Figures {
        first_rate,
        second_rate,
        election,
        catch_up,
        entries,
    })
}

fn key_value(i: u64) -> (String, String) {
    (format!("k{i:08}"), format!("v{i}"))
}

/// Polls `probe` every 20 ms until it gives a value, or fails at `deadline`
/// naming `what`.
async fn until<T, F, Fut>(deadline: Instant, what: &str, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting until {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a node of `nodes` other than `not` is leader and the nodes
/// agree on it.
async fn wait_leader(
    nodes: &BTreeMap<u64, String>,
    not: Option<u64>,
    deadline: Instant,
) -> Result<u64, String> {
    until(deadline, "a leader is elected", || async {
        let mut seen = Vec::new();
        for addr in nodes.values() {
            match call(addr, &Rpc::Status).await {
                Ok(Reply::Status(s)) => seen.push(s.leader),
                _ => return None,
            }
        }
        let first = seen[0]?;
        (seen.iter().all(|&l| l == Some(first)) && Some(first) != not && nodes.contains_key(&first))
            .then_some(first)
    })
    .await
}

/// Writes keys `range` through `leader` from `clients` connections at once,
/// each write acknowledged once committed; follows the leader if it moves.
async fn write(
    nodes: &BTreeMap<u64, String>,
    leader: u64,
    range: std::ops::Range<u64>,
    clients: u64,
    deadline: Instant,
) -> Result<(), String> {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let nodes = nodes.clone();
            let keys: Vec<u64> = range.clone().filter(|i| i % clients == c).collect();
            tokio::spawn(async move {
                let mut leader = leader;
                let mut conn: Option<Conn> = None;
                for i in keys {
                    let (key, value) = key_value(i);
                    loop {
                        if Instant::now() > deadline {
                            return Err(format!("timed out writing {key}"));
                        }
                        if conn.is_none() {
                            conn = Conn::open(&nodes[&leader]).await.ok();
                        }
                        let Some(c) = conn.as_mut() else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let set = Set {
                            key: key.clone(),
                            value: value.clone(),
                        };
                        match c.call(&Rpc::Write(set)).await {
                            Ok(Reply::Write(Ok(()))) => break,
                            Ok(Reply::Write(Err(Some(l)))) if nodes.contains_key(&l) => {
                                leader = l;
                                conn = None;
                            }
                            _ => {
                                conn = None;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
