//! `cargo xtask cluster`: a three-node Raft cluster on loopback, each node
//! a process keeping its Raft log in corelog through `corelog::raft`, with
//! a replicated key-value map. `cluster run` starts the nodes, writes
//! through the leader, SIGKILLs it, writes through the new leader, restarts
//! the killed node and checks that every node holds every acknowledged
//! write, printing entries/s, the election time and the catch-up time.
//! `cluster node` is one node (started by `run`).

mod kv;
mod net;
mod node;
mod run;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "A three-node Raft cluster over corelog on loopback, with a leader killed")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the scenario.
    Run {
        /// Writes in all, half before the kill and half after.
        #[arg(long, default_value_t = 4000)]
        entries: u64,
        /// Client connections writing at once.
        #[arg(long, default_value_t = 16)]
        clients: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Data directory (kept); default: a temporary directory under the
        /// current one, removed at the end.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// One node (started by `run`).
    Node {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Node { id, port, dir } => node::run(id, port, &dir).await,
        Cmd::Run {
            entries,
            clients,
            timeout,
            dir,
        } => {
            let tmp;
            let dir = match dir {
                Some(d) => d,
                None => match tempfile::Builder::new()
                    .prefix(".corelog-cluster-")
                    .tempdir_in(".")
                {
                    Ok(t) => {
                        tmp = t;
                        tmp.path().to_path_buf()
                    }
                    Err(e) => {
                        eprintln!("cluster: temporary directory: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            run::run(entries, clients.max(1), Duration::from_secs(timeout), &dir)
                .await
                .map(|f| {
                    println!(
                        "cluster: {} entries; {:.0} entries/s before the kill, {:.0} after; election {:.0} ms; catch-up {:.0} ms",
                        f.entries,
                        f.first_rate,
                        f.second_rate,
                        f.election.as_secs_f64() * 1e3,
                        f.catch_up.as_secs_f64() * 1e3
                    );
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
