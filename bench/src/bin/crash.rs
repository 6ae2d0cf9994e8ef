//! The real crash loop behind `cargo xtask crash`.
//!
//! `crash loop --iterations N` repeats N times: start `crash child`, a
//! process that appends under `FsyncPolicy::Always` from several producers
//! and prints every acknowledged append (partition, base offset, record
//! count, CRC32C of the values) on stdout; SIGKILL it at a random moment;
//! reopen the data directory and check that every append ever acknowledged
//! reads back with the same bytes. Any difference fails, naming the
//! iteration's seed. The directory carries over from one iteration to the
//! next, so each recovery starts from the previous ones.
//!
//! A kill does not lose the page cache, so this tests the process side
//! (acknowledgement order, recovery of writes torn in flight, io_uring
//! completing writes after the process died); power loss is the simulated
//! disk's job (`shard/tests/sim.rs`).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::{mpsc, Mutex},
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use corelog::{Config, Engine, FsyncPolicy, Record};
use futures::{executor::block_on, stream::FuturesUnordered, StreamExt};

#[derive(Parser)]
#[command(
    about = "Kill a process appending under Always, reopen, verify every acknowledged record"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the crash loop.
    Loop(LoopArgs),
    /// The process that gets killed (started by `loop`).
    Child(ChildArgs),
}

#[derive(clap::Args)]
struct LoopArgs {
    /// Kill-and-verify rounds.
    #[arg(long, default_value_t = 20)]
    iterations: u64,
    /// Data directory (kept); default: a temporary directory under the
    /// current one, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the first iteration (then seed+1, ...); default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Earliest kill, in ms after the child's first acknowledgement.
    #[arg(long, default_value_t = 20)]
    min_ms: u64,
    /// Latest kill, in ms after the child's first acknowledgement.
    #[arg(long, default_value_t = 400)]
    max_ms: u64,
    #[command(flatten)]
    work: Work,
}

#[derive(clap::Args)]
struct ChildArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    seed: u64,
    #[command(flatten)]
    work: Work,
}

/// What the child does.
#[derive(clap::Args, Clone, Copy)]
struct Work {
    /// Producer threads.
    #[arg(long, default_value_t = 4)]
    producers: u64,
    /// Appends each producer keeps in flight.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Partitions appended to.
    #[arg(long, default_value_t = 16)]
    partitions: u64,
}

/// Both sides open the directory with this configuration.
fn config(dir: &Path) -> Config {
    Config::new(dir)
        .shards(2)
        .fsync(FsyncPolicy::Always)
        .segment_bytes(1 << 20)
        .max_batch_bytes(256 << 10)
        .io_memory(2 << 20)
}

/// One acknowledged append, as the child prints it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ack {
    partition: u64,
    base: u64,
    count: u64,
    crc: u32,
}

impl Ack {
    fn parse(line: &str) -> Option<Ack> {
        let mut it = line.strip_prefix("ack ")?.split(' ');
        let mut next = || it.next()?.parse::<u64>().ok();
        Some(Ack {
            partition: next()?,
            base: next()?,
            count: next()?,
            crc: u32::try_from(next()?).ok()?,
        })
    }
}

/// CRC32C of values, each prefixed by its length.
fn values_crc<'a>(values: impl Iterator<Item = &'a [u8]>) -> u32 {
    values.fold(0, |crc, v| {
        let crc = crc32c::crc32c_append(crc, &(v.len() as u32).to_le_bytes());
        crc32c::crc32c_append(crc, v)
    })
}

fn child(args: ChildArgs) -> Result<(), String> {
    let engine = Engine::open(config(&args.dir)).map_err(|e| e.to_string())?;
    let out = Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for producer in 0..args.work.producers {
            let handle = engine.handle();
            let out = &out;
            let work = args.work;
            let seed = args.seed;
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ (producer << 32));
                block_on(async {
                    let mut in_flight = FuturesUnordered::new();
                    loop {
                        while in_flight.len() < work.window {
                            let partition = rng.u64(..work.partitions);
                            let values: Vec<Vec<u8>> = (0..rng.usize(1..=4))
                                .map(|_| {
                                    let len = rng.usize(16..2048);
                                    (0..len).map(|_| rng.u8(..)).collect()
                                })
                                .collect();
                            let crc = values_crc(values.iter().map(Vec::as_slice));
                            let count = values.len() as u64;
                            let records = values.into_iter().map(Record::new).collect();
                            let h = handle.clone();
                            in_flight.push(async move {
                                let base = h.append(partition, records).await;
                                (partition, count, crc, base)
                            });
                        }
                        let Some((partition, count, crc, base)) = in_flight.next().await else {
                            continue;
                        };
                        match base {
                            Ok(base) => {
                                let mut o = out.lock().unwrap();
                                let _ = writeln!(o, "ack {partition} {base} {count} {crc}");
                                let _ = o.flush();
                            }
                            Err(e) => {
                                eprintln!("child: append failed: {e}");
                                std::process::exit(2);
                            }
                        }
                    }
                })
            });
        }
    });
    Ok(())
}

/// Totals of a loop.
#[derive(Default)]
struct Totals {
    acked: u64,
    verified_records: u64,
    kills: u64,
}

fn run_loop(args: LoopArgs) -> Result<Totals, String> {
    let tmp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix(".corelog-crash-")
                .tempdir_in(".")
                .map_err(|e| format!("temporary directory: {e}"))?;
            tmp.path().to_path_buf()
        }
    };
    let first_seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // Every append acknowledged so far, by (partition, base).
    let mut acked: BTreeMap<(u64, u64), Ack> = BTreeMap::new();
    let mut totals = Totals::default();
    for i in 0..args.iterations {
        let seed = first_seed + i;
        let fail = |what: String| format!("iteration {i} (seed {seed}): {what}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut child = Command::new(&exe)
            .arg("child")
            .arg("--dir")
            .arg(&dir)
            .args(["--seed", &seed.to_string()])
            .args(["--producers", &args.work.producers.to_string()])
            .args(["--window", &args.work.window.to_string()])
            .args(["--partitions", &args.work.partitions.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("start child: {e}")))?;
        let stdout = child.stdout.take().expect("piped");
        let (first_tx, first_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.is_empty() {
                    let _ = first_tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        // Kill at a random moment once appends are being acknowledged.
        match first_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(()) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                return Err(fail("the child acknowledged nothing in 30 s".into()));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|e| fail(format!("wait: {e}")))?;
                return Err(fail(format!(
                    "the child exited before acknowledging anything: {status}"
                )));
            }
        }
        let delay = rng.u64(args.min_ms..=args.max_ms.max(args.min_ms));
        std::thread::sleep(Duration::from_millis(delay));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!("the child died by itself: {status}")));
        }
        child.kill().map_err(|e| fail(format!("kill: {e}")))?;
        child.wait().map_err(|e| fail(format!("wait: {e}")))?;
        totals.kills += 1;
        let lines = reader.join().map_err(|_| fail("reader panicked".into()))?;
        let mut new = 0;
        for line in &lines {
            let ack = Ack::parse(line).ok_or_else(|| fail(format!("bad line {line:?}")))?;
            if let Some(old) = acked.insert((ack.partition, ack.base), ack) {
                return Err(fail(format!(
                    "offset reused: partition {} base {} acknowledged as {old:?} and again as {ack:?}",
                    ack.partition, ack.base
                )));
            }
            new += 1;
        }
        totals.acked += new;
        // The kernel may still be completing the dead process's io_uring
        // writes; give them a moment, as a restarting service would.
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let verified = verify(&dir, &acked).map_err(fail)?;
        totals.verified_records += verified;
        println!(
            "iteration {i} (seed {seed}): killed after {delay} ms, {new} appends acknowledged, {} in all verified ({verified} records) in {:.0} ms",
            acked.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(totals)
}

/// Reopens the directory and reads back every acknowledged append.
fn verify(dir: &Path, acked: &BTreeMap<(u64, u64), Ack>) -> Result<u64, String> {
    let engine = Engine::open(config(dir)).map_err(|e| format!("reopen: {e}"))?;
    let log = engine.handle();
    let mut records = 0;
    let mut ends: BTreeMap<u64, u64> = BTreeMap::new();
    for ack in acked.values() {
        let end = ends.entry(ack.partition).or_default();
        *end = (*end).max(ack.base + ack.count);
    }
    for (&p, &end) in &ends {
        let o = block_on(log.offsets(p)).map_err(|e| e.to_string())?;
        if o.end < end {
            return Err(format!(
                "partition {p} ends at {} but offsets up to {end} were acknowledged",
                o.end
            ));
        }
        // The whole partition, read in large pieces.
        let mut values: Vec<Vec<u8>> = Vec::with_capacity(o.end as usize);
        while (values.len() as u64) < o.end {
            let got = block_on(log.read(p, values.len() as u64, 4 << 20))
                .map_err(|e| format!("partition {p} offset {}: {e}", values.len()))?;
            if got.is_empty() {
                return Err(format!("partition {p}: empty read below the end {}", o.end));
            }
            values.extend(got.into_iter().map(|r| r.value().to_vec()));
        }
        for ack in acked.range((p, 0)..=(p, u64::MAX)).map(|(_, a)| a) {
            let got = &values[ack.base as usize..(ack.base + ack.count) as usize];
            let crc = values_crc(got.iter().map(Vec::as_slice));
            if crc != ack.crc {
                return Err(format!(
                    "acknowledged append changed: partition {p} offsets {}..{} (crc {:#x}, read {crc:#x})",
                    ack.base,
                    ack.base + ack.count,
                    ack.crc
                ));
            }
            records += ack.count;
        }
    }
    engine.close().map_err(|e| format!("close: {e}"))?;
    Ok(records)
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Child(args) => match child(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("child: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Loop(args) => {
            let iterations = args.iterations;
            match run_loop(args) {
                Ok(t) => {
                    println!(
                        "crash loop: {iterations} iterations, {} kills, {} acknowledged appends, {} records verified, 0 lost",
                        t.kills, t.acked, t.verified_records
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("crash loop FAILED: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
