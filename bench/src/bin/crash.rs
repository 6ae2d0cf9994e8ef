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
//! One more thread plays a replicated log's leader on partitions of its
//! own ([`REPLICATED`]): one operation at a time, conditional appends
//! (`append_at`), metadata writes and resets to any offset, printing each
//! operation before it starts ("try") and when it is acknowledged. After a
//! kill, each such partition must hold exactly the acknowledged operations,
//! in order, plus at most the one in flight.
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

/// Partitions of the replicated-log thread, past those of the producers.
const REPLICATED: std::ops::Range<u64> = 1_000_000..1_000_004;

/// Metadata key the replicated-log thread writes.
const META: &[u8] = b"m";

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
    let print = |line: String| {
        let mut o = out.lock().unwrap();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    };
    std::thread::scope(|s| {
        let handle = engine.handle();
        let seed = args.seed;
        let print = &print;
        s.spawn(move || replicated_leader(&handle, seed, print));
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

/// The replicated-log thread: one operation at a time on each of the
/// [`REPLICATED`] partitions, each printed before it starts and when it is
/// acknowledged. Never returns (the loop kills it).
fn replicated_leader(log: &corelog::Handle, seed: u64, print: &(dyn Fn(String) + Sync)) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    loop {
        let p = rng.u64(REPLICATED);
        let (end, seq) = block_on(async {
            let end = log.offsets(p).await.map(|o| o.end);
            let seq = log
                .get_meta(p, META)
                .await
                .map(|m| m.map_or(0, |v| meta_seq(&v)));
            (end, seq)
        });
        let (Ok(end), Ok(seq)) = (end, seq) else {
            eprintln!("child: replicated partition {p} unreadable");
            std::process::exit(2);
        };
        let done = match rng.u8(..20) {
            0..=13 => {
                let values: Vec<Vec<u8>> = (0..rng.usize(1..=3))
                    .map(|_| (0..rng.usize(8..512)).map(|_| rng.u8(..)).collect())
                    .collect();
                let crc = values_crc(values.iter().map(Vec::as_slice));
                let op = format!("at {p} {end} {} {crc}", values.len());
                print(format!("try {op}"));
                let records = values.into_iter().map(Record::new).collect();
                block_on(log.append_at(p, end, records)).map(|_| op)
            }
            14..=16 => {
                let op = format!("meta {p} {}", seq + 1);
                print(format!("try {op}"));
                block_on(log.put_meta(p, META, (seq + 1).to_le_bytes().to_vec())).map(|()| op)
            }
            _ => {
                let op = format!("reset {p} {}", rng.u64(0..=end + 10));
                print(format!("try {op}"));
                let target = op
                    .rsplit(' ')
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                block_on(log.reset(p, target)).map(|()| op)
            }
        };
        match done {
            Ok(op) => print(format!("done {op}")),
            Err(e) => {
                eprintln!("child: replicated partition {p}: {e}");
                std::process::exit(2);
            }
        }
    }
}

/// The sequence number a metadata value holds.
fn meta_seq(v: &[u8]) -> u64 {
    v.try_into().map_or(u64::MAX, u64::from_le_bytes)
}

/// What a replicated partition holds, as the loop expects it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Replica {
    start: u64,
    end: u64,
    meta: u64,
    /// Appends since the last reset: base -> (count, crc).
    appends: BTreeMap<u64, (u64, u32)>,
}

impl Replica {
    /// Applies operation `op` (a line without its "try"/"done" word).
    fn apply(&mut self, op: &str) -> Result<(), String> {
        let f: Vec<&str> = op.split(' ').collect();
        let n = |i: usize| -> Result<u64, String> {
            f.get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("bad operation {op:?}"))
        };
        match f[0] {
            "at" => {
                let (base, count) = (n(2)?, n(3)?);
                if base != self.end {
                    return Err(format!("{op:?} acknowledged at end {}", self.end));
                }
                self.appends.insert(base, (count, n(4)? as u32));
                self.end += count;
            }
            "meta" => self.meta = n(2)?,
            "reset" => {
                let at = n(2)?;
                *self = Replica {
                    start: at,
                    end: at,
                    meta: self.meta,
                    appends: BTreeMap::new(),
                };
            }
            _ => return Err(format!("bad operation {op:?}")),
        }
        Ok(())
    }
}

/// Totals of a loop.
#[derive(Default)]
struct Totals {
    acked: u64,
    /// Replicated-log operations acknowledged (appends, metadata, resets).
    replicated: u64,
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
    // What each replicated partition holds.
    let mut replicas: BTreeMap<u64, Replica> =
        REPLICATED.map(|p| (p, Replica::default())).collect();
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
        // The replicated operation in flight when the kill came, if any.
        let mut in_flight: Option<String> = None;
        for line in &lines {
            if let Some(op) = line.strip_prefix("try ") {
                in_flight = Some(op.to_string());
                continue;
            }
            if let Some(op) = line.strip_prefix("done ") {
                let p = op
                    .split(' ')
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let replica = replicas
                    .get_mut(&p)
                    .ok_or_else(|| fail(format!("bad line {line:?}")))?;
                replica.apply(op).map_err(&fail)?;
                totals.replicated += 1;
                in_flight = None;
                continue;
            }
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
        let verified = verify(&dir, &acked, &mut replicas, in_flight.as_deref()).map_err(fail)?;
        totals.verified_records += verified;
        println!(
            "iteration {i} (seed {seed}): killed after {delay} ms, {new} appends acknowledged, {} in all verified ({verified} records) in {:.0} ms",
            acked.len(),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(totals)
}

/// Reopens the directory and reads back every acknowledged append; each
/// replicated partition must hold its acknowledged operations, and at most
/// the one `in_flight` besides (which the replica then adopts).
fn verify(
    dir: &Path,
    acked: &BTreeMap<(u64, u64), Ack>,
    replicas: &mut BTreeMap<u64, Replica>,
    in_flight: Option<&str>,
) -> Result<u64, String> {
    let engine = Engine::open(config(dir)).map_err(|e| format!("reopen: {e}"))?;
    let log = engine.handle();
    let mut records = 0;
    for (&p, replica) in replicas.iter_mut() {
        let found = observe(&log, p, replica)?;
        let mut after = replica.clone();
        let in_flight_here = in_flight.filter(|op| op.split(' ').nth(1) == Some(&p.to_string()));
        if let Some(op) = in_flight_here {
            after.apply(op)?;
        }
        if found == *replica {
        } else if found == after {
            *replica = after;
        } else {
            return Err(format!(
                "replicated partition {p} holds {found:?}, expected {replica:?} (or, with {in_flight_here:?}, {after:?})"
            ));
        }
        records += replica.appends.values().map(|&(c, _)| c).sum::<u64>();
    }
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

/// What replicated partition `p` holds, read back the way `expected`
/// describes it (its appends' checksums where it expects appends).
fn observe(log: &corelog::Handle, p: u64, expected: &Replica) -> Result<Replica, String> {
    let o = block_on(log.offsets(p)).map_err(|e| e.to_string())?;
    let meta = block_on(log.get_meta(p, META))
        .map_err(|e| e.to_string())?
        .map_or(0, |v| meta_seq(&v));
    let values: Vec<Vec<u8>> = block_on(log.read_range(p, o.start, o.end))
        .map_err(|e| format!("replicated partition {p}: {e}"))?
        .into_iter()
        .map(|r| r.value().to_vec())
        .collect();
    let mut appends = BTreeMap::new();
    let mut at = o.start;
    // Group the records as the expected appends are, then one more group
    // for whatever follows them (an append in flight).
    for (&base, &(count, _)) in &expected.appends {
        if base != at || base + count > o.end {
            break;
        }
        let got = &values[(base - o.start) as usize..(base + count - o.start) as usize];
        appends.insert(base, (count, values_crc(got.iter().map(Vec::as_slice))));
        at = base + count;
    }
    if at < o.end {
        let got = &values[(at - o.start) as usize..];
        appends.insert(at, (o.end - at, values_crc(got.iter().map(Vec::as_slice))));
    }
    Ok(Replica {
        start: o.start,
        end: o.end,
        meta,
        appends,
    })
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
                        "crash loop: {iterations} iterations, {} kills, {} acknowledged appends and {} replicated-log operations, {} records verified, 0 lost",
                        t.kills, t.acked, t.replicated, t.verified_records
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
