//! The load generator behind `cargo xtask load`: drives an embedded engine
//! with concurrent producers (and optional tail consumers), reports
//! throughput, latency percentiles, fdatasyncs, write amplification, CPU
//! time and peak memory, then reads every record back and checks it.
//!
//! Every record's value starts with a 32-byte header (producer, sequence,
//! partition, send time in ns since the start) followed by bytes derived
//! from the producer and sequence, so verification needs no copy of what
//! was written: each producer's acknowledged sequences must each appear
//! exactly once, intact, in the partition they were sent to.

use std::{
    cell::RefCell,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use clap::Parser;
use corelog::{Config, Engine, FsyncPolicy, Handle, Record, StoredRecord};
use futures::{executor::block_on, stream::FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;

/// Drive an embedded corelog engine and report what it does on this disk.
#[derive(Parser, Debug, Clone)]
#[command(name = "cargo xtask load")]
struct Args {
    /// Data directory to use and keep (default: a temporary directory under
    /// the current one, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Shards (default: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// Partitions written.
    #[arg(long, default_value_t = 64)]
    partitions: u64,
    /// Concurrent appenders, each with one append in flight.
    #[arg(long, default_value_t = 64)]
    producers: u64,
    /// Bytes per record value (at least 32).
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records per append.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// always, never, or interval:<ms>.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Seconds to run (ignored with --records).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many records instead of after --duration.
    #[arg(long)]
    records: Option<u64>,
    /// Tail readers following every partition with `fetch` long polls, measuring append-to-read latency.
    #[arg(long, default_value_t = 0)]
    consumers: u64,
    /// Write every figure and the configuration to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw throughput over time and latency CDFs to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Seed of the record contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Skip reading everything back.
    #[arg(long)]
    no_verify: bool,
    /// After the writes, close and reopen the engine (empty memtables) and
    /// time reading every partition from its start: the cold-read rate.
    #[arg(long)]
    read_from_start: bool,
    /// Memtable budget per shard, bytes (default: the engine's, 64 MiB).
    #[arg(long)]
    memtable_bytes: Option<usize>,
    /// Client threads the producers run on.
    #[arg(long, default_value_t = 2)]
    threads: u64,
    /// Offered load, records/s over all producers (default: as fast as the
    /// engine takes them). Each producer sends on a fixed schedule.
    #[arg(long)]
    rate: Option<f64>,
}

const HEADER: usize = 32;

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    match s {
        "always" => Ok(FsyncPolicy::Always),
        "never" => Ok(FsyncPolicy::Never),
        _ => s
            .strip_prefix("interval:")
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map(|ms| FsyncPolicy::Interval(Duration::from_millis(ms)))
            .ok_or_else(|| format!("--fsync {s}: expected always, never or interval:<ms>")),
    }
}

/// A 64-bit mix (splitmix64), for record contents.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The key of the body bytes of record (`producer`, `seq`).
fn body_key(seed: u64, producer: u64, seq: u64) -> u64 {
    mix(seed ^ (producer << 40) ^ seq)
}

/// Byte `i` of a record body with key `key`.
fn body_byte(key: u64, i: usize) -> u8 {
    (key >> ((i % 8) * 8)) as u8 ^ (i / 8) as u8
}

/// The eight body bytes from `8 * j` on, as [`body_byte`] defines them.
fn body_word(key: u64, j: usize) -> [u8; 8] {
    (key ^ u64::from(j as u8).wrapping_mul(0x0101_0101_0101_0101)).to_le_bytes()
}

/// Appends the body bytes `[HEADER, len)` of a record with key `key`.
fn fill_body(key: u64, len: usize, out: &mut Vec<u8>) {
    // Invariant: the header is a whole number of words.
    const _: () = assert!(HEADER.is_multiple_of(8));
    for j in HEADER / 8..len / 8 {
        out.extend_from_slice(&body_word(key, j));
    }
    out.extend((len / 8 * 8..len).map(|i| body_byte(key, i)));
}

/// True when `value[HEADER..]` is the body of a record with key `key`.
fn body_matches(key: u64, value: &[u8]) -> bool {
    let len = value.len();
    value[HEADER..len / 8 * 8]
        .chunks_exact(8)
        .enumerate()
        .all(|(k, w)| w == body_word(key, HEADER / 8 + k))
        && (len / 8 * 8..len).all(|i| value[i] == body_byte(key, i))
}

fn value(args: &Args, producer: u64, seq: u64, partition: u64, sent_ns: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(args.record_bytes);
    for x in [producer, seq, partition, sent_ns] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fill_body(
        body_key(args.seed, producer, seq),
        args.record_bytes,
        &mut v,
    );
    v
}

/// Figures gathered while the load runs.
struct Shared {
    started: Instant,
    stop: AtomicBool,
    records: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    end_to_end: Mutex<Histogram<u64>>,
    errors: Mutex<Vec<String>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

/// Runs one producer: appends batches to its partitions in turn until told
/// to stop or its share of records is done. Returns how many records (by
/// sequence, from 0) were acknowledged.
async fn produce(
    args: &Args,
    log: &Handle,
    shared: &Shared,
    producer: u64,
    budget: Option<u64>,
) -> u64 {
    // Producers split the partitions; with fewer partitions, they share.
    let mine: Vec<u64> = if args.partitions >= args.producers {
        (0..args.partitions)
            .filter(|p| p % args.producers == producer)
            .collect()
    } else {
        vec![producer % args.partitions]
    };
    let mut seq = 0u64;
    let mut round = 0usize;
    // With --rate, append number k of this producer is due at
    // (k + producer / producers) * interval: the producers' schedules are
    // staggered, so the offered load is even, not a burst per interval.
    let interval = args
        .rate
        .map(|r| Duration::from_secs_f64(args.batch as f64 * args.producers as f64 / r));
    let phase = producer as f64 / args.producers as f64;
    while !shared.stop.load(Ordering::Relaxed) && budget.is_none_or(|b| seq < b) {
        // Latencies count from when the append was due, not from when it
        // went out: a generator running behind its schedule must not hide
        // the wait (coordinated omission).
        let mut t = Instant::now();
        if let Some(interval) = interval {
            let due = shared.started + interval.mul_f64(round as f64 + phase);
            if let Some(wait) = due.checked_duration_since(t) {
                futures_timer::Delay::new(wait).await;
            }
            t = due;
        }
        let partition = mine[round % mine.len()];
        round += 1;
        let n = budget.map_or(args.batch as u64, |b| (b - seq).min(args.batch as u64));
        let sent = t.duration_since(shared.started).as_nanos() as u64;
        let records = (seq..seq + n)
            .map(|s| Record::new(value(args, producer, s, partition, sent)))
            .collect();
        match log.append(partition, records).await {
            Ok(_) => {
                let ns = t.elapsed().as_nanos() as u64;
                shared.latency.lock().unwrap().record(ns.max(1)).ok();
                shared.records.fetch_add(n, Ordering::Relaxed);
                seq += n;
            }
            Err(e) => {
                shared
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("producer {producer}, partition {partition}: {e}"));
                shared.stop.store(true, Ordering::Relaxed);
            }
        }
    }
    seq
}

/// Follows partitions `p ≡ consumer (mod consumers)` from their start with
/// `fetch`, each partition by its own long poll (all concurrently on
/// this thread), recording append-to-read latency, until told to stop.
fn consume(log: Handle, shared: Arc<Shared>, args: Args, consumer: u64) {
    let local = RefCell::new(histogram());
    let follow = |p: u64| {
        let (log, shared, local) = (&log, &shared, &local);
        async move {
            let mut next = 0u64;
            while !shared.stop.load(Ordering::Relaxed) {
                let records = match log.fetch(p, next, 1 << 20, Duration::from_millis(20)).await {
                    Ok(records) => records,
                    Err(e) => {
                        let what = format!("consumer {consumer}, partition {p} offset {next}: {e}");
                        shared.errors.lock().unwrap().push(what);
                        return;
                    }
                };
                let now = shared.started.elapsed().as_nanos() as u64;
                let mut h = local.borrow_mut();
                for r in &records {
                    let sent = u64::from_le_bytes(r.value()[24..32].try_into().unwrap());
                    h.record(now.saturating_sub(sent).max(1)).ok();
                }
                next += records.len() as u64;
            }
        }
    };
    block_on(futures::future::join_all(
        (0..args.partitions)
            .filter(|p| p % args.consumers == consumer)
            .map(follow),
    ));
    shared.end_to_end.lock().unwrap().add(&*local.borrow()).ok();
}

/// Reads every partition back; returns a description of each difference.
fn verify(args: &Args, log: &Handle, acked: &[u64]) -> Vec<String> {
    let problems = RefCell::new(Vec::new());
    let seen: RefCell<Vec<Vec<bool>>> =
        RefCell::new(acked.iter().map(|&n| vec![false; n as usize]).collect());
    let check = |p: u64, r: &StoredRecord| {
        let mut problems = problems.borrow_mut();
        let v = r.value();
        let field = |i: usize| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().unwrap());
        if v.len() != args.record_bytes {
            problems.push(format!(
                "partition {p} offset {}: {} bytes, expected {}",
                r.offset(),
                v.len(),
                args.record_bytes
            ));
            return;
        }
        let (producer, seq, partition) = (field(0), field(1), field(2));
        let body_ok = body_matches(body_key(args.seed, producer, seq), v);
        if partition != p || !body_ok {
            problems.push(format!("partition {p} offset {}: content differs (says producer {producer}, seq {seq}, partition {partition})", r.offset()));
            return;
        }
        match seen
            .borrow_mut()
            .get_mut(producer as usize)
            .and_then(|s| s.get_mut(seq as usize))
        {
            Some(slot) if !*slot => *slot = true,
            Some(_) => problems.push(format!(
                "partition {p} offset {}: producer {producer} seq {seq} stored twice",
                r.offset()
            )),
            // Written but not acknowledged before the run stopped: fine.
            None => {}
        }
    };
    // Every partition at once: their batches are spread through the whole
    // log, so one reader at a time would wait on one small device read
    // after another.
    let follow = |p: u64| {
        let (check, problems) = (&check, &problems);
        async move {
            let o = match log.offsets(p).await {
                Ok(o) => o,
                Err(e) => {
                    problems
                        .borrow_mut()
                        .push(format!("partition {p}: offsets failed: {e}"));
                    return;
                }
            };
            let mut next = o.start;
            while next < o.end {
                let records = match log.read(p, next, 1 << 20).await {
                    Ok(r) => r,
                    Err(e) => {
                        problems
                            .borrow_mut()
                            .push(format!("partition {p} offset {next}: read failed: {e}"));
                        return;
                    }
                };
                for r in &records {
                    check(p, r);
                }
                next += records.len() as u64;
            }
        }
    };
    block_on(futures::future::join_all((0..args.partitions).map(follow)));
    let mut problems = problems.into_inner();
    for (producer, s) in seen.into_inner().iter().enumerate() {
        if let Some(seq) = s.iter().position(|&x| !x) {
            let missing = s.iter().filter(|&&x| !x).count();
            problems.push(format!("producer {producer}: {missing} acknowledged records missing, the first is seq {seq}"));
        }
    }
    problems
}

/// Draws throughput over time and the latency CDFs (append, and end to end
/// when consumers ran) to an SVG file.
fn plot(
    path: &std::path::Path,
    timeline: &[(f64, f64)],
    append: &Histogram<u64>,
    e2e: &Histogram<u64>,
) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(400);
    let max_t = timeline.last().map_or(1.0, |t| t.0).max(1.0);
    let max_rate = timeline.iter().map(|t| t.1).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption("throughput (records/s)", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_t, 0.0..max_rate * 1.1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(timeline.iter().copied(), &BLUE))
        .map_err(|e| err(&e))?;
    let max_us = (append.max().max(e2e.max()) as f64 / 1e3).max(10.0);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency CDF", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d((1.0..max_us * 1.1).log_scale(), 0.0..1.0)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("microseconds")
        .y_desc("fraction")
        .draw()
        .map_err(|e| err(&e))?;
    for (h, name, color) in [(append, "append", BLUE), (e2e, "append to read", RED)] {
        if h.is_empty() {
            continue;
        }
        let points = (0..=1000).map(|i| {
            let q = f64::from(i) / 1000.0;
            ((h.value_at_quantile(q) as f64 / 1e3).max(1.0), q)
        });
        chart
            .draw_series(LineSeries::new(points, &color))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// CPU seconds this process used (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which ends with ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 here,
    // in clock ticks of 1/100 s on Linux.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory in bytes (VmHWM).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    let fsync = parse_fsync(&args.fsync)?;
    if args.record_bytes < HEADER
        || args.batch == 0
        || args.producers == 0
        || args.partitions == 0
        || args.threads == 0
    {
        return Err(format!("--record-bytes must be at least {HEADER}; --batch, --producers, --partitions and --threads at least 1"));
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number of records per second".into());
    }
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            // Under the current directory: tmpfs (often /tmp) has no O_DIRECT.
            temp = tempfile::tempdir_in(".").map_err(|e| format!("temporary directory: {e}"))?;
            temp.path().to_path_buf()
        }
    };
    let mut config = Config::new(&dir)
        .fsync(fsync)
        .max_batch_bytes(8 << 20)
        .max_record_bytes(4 << 20);
    if let Some(n) = args.shards {
        config = config.shards(n);
    }
    if let Some(n) = args.memtable_bytes {
        config = config.memtable_bytes(n);
    }
    let engine = Engine::open(config.clone()).map_err(|e| e.to_string())?;
    let log = engine.handle();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "corelog load ({profile} build): {} producers on {} threads, {} partitions, {} B records × {} per append, fsync {}, {}",
        args.producers,
        args.threads,
        args.partitions,
        args.record_bytes,
        args.batch,
        args.fsync,
        args.records.map_or(format!("{} s", args.duration), |r| format!("{r} records")),
    );
    let shared = Arc::new(Shared {
        started: Instant::now(),
        stop: AtomicBool::new(false),
        records: AtomicU64::new(0),
        latency: Mutex::new(histogram()),
        end_to_end: Mutex::new(histogram()),
        errors: Mutex::new(Vec::new()),
    });
    let cpu_before = cpu_seconds();
    let budget = args.records.map(|r| r.div_ceil(args.producers));
    let workers: Vec<_> = (0..args.threads)
        .map(|t| {
            let (args, log, shared) = (args.clone(), log.clone(), shared.clone());
            std::thread::spawn(move || {
                let producers: Vec<u64> = (0..args.producers)
                    .filter(|p| p % args.threads == t)
                    .collect();
                block_on(async {
                    let runs: FuturesUnordered<_> = producers
                        .iter()
                        .map(|&p| {
                            let (args, log, shared) = (&args, &log, &shared);
                            async move { (p, produce(args, log, shared, p, budget).await) }
                        })
                        .collect();
                    runs.collect::<Vec<_>>().await
                })
            })
        })
        .collect();
    let consumers: Vec<_> = (0..args.consumers)
        .map(|c| {
            let (args, log, shared) = (args.clone(), log.clone(), shared.clone());
            std::thread::spawn(move || consume(log, shared, args, c))
        })
        .collect();
    let bar = indicatif::ProgressBar::new_spinner();
    let deadline = shared.started + Duration::from_secs_f64(args.duration);
    let mut timeline = Vec::new();
    let mut last = (Instant::now(), 0u64);
    while !workers.iter().all(|w| w.is_finished()) {
        std::thread::sleep(Duration::from_millis(250));
        if args.records.is_none() && Instant::now() >= deadline {
            shared.stop.store(true, Ordering::Relaxed);
        }
        let now = Instant::now();
        let records = shared.records.load(Ordering::Relaxed);
        let rate = (records - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        let p99 = shared.latency.lock().unwrap().value_at_quantile(0.99) as f64 / 1e3;
        timeline.push((shared.started.elapsed().as_secs_f64(), rate));
        bar.set_message(format!(
            "{:>10.0} records/s  {:>8.1} MB/s  append p99 {:>8.0} us  ({records} records)",
            rate,
            rate * args.record_bytes as f64 / 1e6,
            p99
        ));
        bar.tick();
        last = (now, records);
    }
    bar.finish_and_clear();
    let elapsed = shared.started.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    let mut acked = vec![0u64; args.producers as usize];
    for w in workers {
        for (p, n) in w.join().map_err(|_| "a producer thread panicked")? {
            acked[p as usize] = n;
        }
    }
    for c in consumers {
        c.join().map_err(|_| "a consumer thread panicked")?;
    }
    let cpu = cpu_seconds() - cpu_before;
    let stats = engine.stats().map_err(|e| e.to_string())?;
    let sum =
        |f: fn(&corelog::ShardStats) -> u64| stats.shards.iter().map(|(s, _)| f(s)).sum::<u64>();
    let (fdatasyncs, commits, appends, batch_bytes, disk_bytes) = (
        sum(|s| s.fdatasyncs),
        sum(|s| s.commits),
        sum(|s| s.appends),
        sum(|s| s.bytes),
        sum(|s| s.bytes_written),
    );
    let records: u64 = acked.iter().sum();
    let payload = records * args.record_bytes as u64;
    let lat = shared.latency.lock().unwrap().clone();
    let e2e = shared.end_to_end.lock().unwrap().clone();
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let errors = shared.errors.lock().unwrap().clone();
    println!(
        "throughput       {:.0} records/s, {:.1} MB/s over {elapsed:.2} s ({records} records)",
        records as f64 / elapsed,
        payload as f64 / elapsed / 1e6
    );
    println!(
        "append latency   p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us",
        us(&lat, 0.5),
        us(&lat, 0.9),
        us(&lat, 0.99),
        us(&lat, 0.999),
        us(&lat, 1.0)
    );
    if args.consumers > 0 {
        println!(
            "end to end       p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us  ({} records read)",
            us(&e2e, 0.5), us(&e2e, 0.9), us(&e2e, 0.99), us(&e2e, 0.999), us(&e2e, 1.0), e2e.len()
        );
    }
    println!(
        "fdatasyncs       {:.0}/s, {:.1} appends per commit",
        fdatasyncs as f64 / elapsed,
        appends as f64 / commits.max(1) as f64
    );
    println!(
        "write amplif.    {:.3} disk bytes per payload byte ({:.3} per encoded byte)",
        disk_bytes as f64 / payload.max(1) as f64,
        disk_bytes as f64 / batch_bytes.max(1) as f64
    );
    println!(
        "cpu              {:.2} us per record ({cpu:.2} s)",
        cpu * 1e6 / records.max(1) as f64
    );
    println!(
        "memory           peak rss {:.1} MiB, memtables {:.1} MiB",
        peak_rss() as f64 / (1 << 20) as f64,
        sum(|s| s.memtable_bytes) as f64 / (1 << 20) as f64
    );
    for e in &errors {
        println!("error            {e}");
    }
    let mut cold_read = None;
    let (engine, log) = if args.read_from_start {
        engine.close().map_err(|e| e.to_string())?;
        let engine = Engine::open(config.clone()).map_err(|e| e.to_string())?;
        let log = engine.handle();
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut count = 0u64;
        for p in 0..args.partitions {
            let o = block_on(log.offsets(p)).map_err(|e| e.to_string())?;
            let mut next = o.start;
            while next < o.end {
                let records = block_on(log.read(p, next, 4 << 20)).map_err(|e| e.to_string())?;
                bytes += records.iter().map(|r| r.value().len() as u64).sum::<u64>();
                count += records.len() as u64;
                next += records.len() as u64;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "cold read        {:.0} records/s, {:.1} MB/s ({count} records from disk after a reopen)",
            count as f64 / secs,
            bytes as f64 / secs / 1e6
        );
        cold_read = Some(
            serde_json::json!({"records_per_s": count as f64 / secs, "mb_per_s": bytes as f64 / secs / 1e6}),
        );
        (engine, log)
    } else {
        (engine, log)
    };
    if let Some(path) = &args.plot {
        plot(path, &timeline, &lat, &e2e)?;
        println!("plot             {}", path.display());
    }
    let problems = if args.no_verify {
        Vec::new()
    } else {
        let started = Instant::now();
        let problems = verify(&args, &log, &acked);
        println!(
            "verification     {} in {:.2} s: {records} acknowledged records read back",
            if problems.is_empty() {
                "passed"
            } else {
                "FAILED"
            },
            started.elapsed().as_secs_f64()
        );
        for p in problems.iter().take(20) {
            println!("  {p}");
        }
        println!(
            "peak rss after verification {:.1} MiB",
            peak_rss() as f64 / (1 << 20) as f64
        );
        problems
    };
    engine.close().map_err(|e| e.to_string())?;
    if let Some(path) = &args.json {
        let report = serde_json::json!({
            "profile": profile,
            "config": {
                "shards": stats.shards.len(), "partitions": args.partitions, "producers": args.producers,
                "threads": args.threads, "consumers": args.consumers, "rate": args.rate, "record_bytes": args.record_bytes,
                "batch": args.batch, "fsync": args.fsync, "duration_s": args.duration, "records": args.records,
                "seed": args.seed, "dir": dir.display().to_string(),
            },
            "elapsed_s": elapsed,
            "records": records,
            "records_per_s": records as f64 / elapsed,
            "mb_per_s": payload as f64 / elapsed / 1e6,
            "append_latency_us": {"p50": us(&lat, 0.5), "p90": us(&lat, 0.9), "p99": us(&lat, 0.99), "p999": us(&lat, 0.999), "max": us(&lat, 1.0)},
            "end_to_end_latency_us": {"count": e2e.len(), "p50": us(&e2e, 0.5), "p90": us(&e2e, 0.9), "p99": us(&e2e, 0.99), "p999": us(&e2e, 0.999), "max": us(&e2e, 1.0)},
            "fdatasyncs_per_s": fdatasyncs as f64 / elapsed,
            "appends_per_commit": appends as f64 / commits.max(1) as f64,
            "write_amplification": disk_bytes as f64 / payload.max(1) as f64,
            "cpu_us_per_record": cpu * 1e6 / records.max(1) as f64,
            "peak_rss_bytes": peak_rss(),
            "throughput_timeline": timeline.iter().map(|(t, r)| serde_json::json!([t, r])).collect::<Vec<_>>(),
            "cold_read": cold_read,
            "errors": errors,
            "verified": !args.no_verify,
            "verification_problems": problems,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).expect("json"))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(errors.is_empty() && problems.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_and_byte_bodies_agree() {
        for len in [HEADER, 33, 40, 1000, 4096 + 3, 8 * 300 + 5] {
            let mut v = vec![0u8; HEADER];
            fill_body(0xDEAD_BEEF, len, &mut v);
            assert_eq!(v.len(), len);
            assert!((HEADER..len).all(|i| v[i] == body_byte(0xDEAD_BEEF, i)));
            assert!(body_matches(0xDEAD_BEEF, &v));
            if len > HEADER {
                v[len - 1] ^= 1;
                assert!(!body_matches(0xDEAD_BEEF, &v));
            }
        }
    }
}
