//! The load generator behind `cargo xtask load`: drives an embedded engine
//! with concurrent producers (and optional tail consumers), reports
//! throughput, latency percentiles, fdatasyncs, write amplification, CPU
//! time and peak memory, then reads every record back and checks it.
//!
//! Every record's value carries a header and a body derived from it (see
//! [`workload`]), so verification needs no copy of what was written: each
//! producer's acknowledged sequences must each appear exactly once, intact,
//! in the partition they were sent to.

mod args;
mod cold_read;
mod consumers;
mod latency;
mod pacing;
mod plot;
mod producers;
mod progress;
mod report;
mod usage;
mod verify;
mod workload;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{mpsc, Arc},
    time::Instant,
};

use clap::Parser;
use corelog::{Config, Engine, Handle};

use crate::{
    args::Args,
    consumers::Consumers,
    latency::LiveLatency,
    producers::Producers,
    progress::Shared,
    report::{EngineFigures, Figures},
};

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

/// Runs the load, prints its figures, optionally times a cold read, draws
/// the plot and verifies, then writes the JSON report. True when no append
/// or fetch failed and verification (if any) passed.
fn run(args: Args) -> Result<bool, String> {
    args.validate()?;
    let data = DataDir::new(args.dir.as_deref())?;
    let config = engine_config(&args, &data.path);
    let engine = Engine::open(config.clone()).map_err(|e| e.to_string())?;
    print_banner(&args);
    let (figures, acked) = load(&args, &engine)?;
    figures.print(args.consumers > 0);
    let (engine, cold_read) = if args.read_from_start {
        engine.close().map_err(|e| e.to_string())?;
        let engine = Engine::open(config).map_err(|e| e.to_string())?;
        let rate = cold_read::measure(&engine.handle(), args.partitions)?;
        (engine, Some(rate))
    } else {
        (engine, None)
    };
    if let Some(path) = &args.plot {
        plot::plot(
            path,
            &figures.timeline,
            &figures.append,
            &figures.end_to_end,
        )?;
        println!("plot             {}", path.display());
    }
    let problems = if args.no_verify {
        Vec::new()
    } else {
        verify_and_print(&args, &engine.handle(), &acked)
    };
    engine.close().map_err(|e| e.to_string())?;
    let passed = figures.errors.is_empty() && problems.is_empty();
    if let Some(path) = &args.json {
        report::write(
            &figures.report(&args, &data.path, cold_read, problems),
            path,
        )?;
    }
    Ok(passed)
}

/// The data directory: `--dir`, or a temporary one removed when dropped.
struct DataDir {
    path: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl DataDir {
    /// `dir`, or a new temporary directory under the current one (not
    /// /tmp: tmpfs has no O_DIRECT).
    fn new(dir: Option<&Path>) -> Result<DataDir, String> {
        Ok(match dir {
            Some(d) => DataDir {
                path: d.to_path_buf(),
                _temp: None,
            },
            None => {
                let temp =
                    tempfile::tempdir_in(".").map_err(|e| format!("temporary directory: {e}"))?;
                DataDir {
                    path: temp.path().to_path_buf(),
                    _temp: Some(temp),
                }
            }
        })
    }
}

/// The engine's configuration for `args` in `dir`.
fn engine_config(args: &Args, dir: &Path) -> Config {
    let mut config = Config::new(dir)
        .fsync(args.fsync.0)
        .max_batch_bytes(8 << 20)
        .max_record_bytes(4 << 20);
    if let Some(n) = args.shards {
        config = config.shards(n);
    }
    if let Some(n) = args.memtable_bytes {
        config = config.memtable_bytes(n);
    }
    config
}

/// Prints what is about to run.
fn print_banner(args: &Args) {
    println!(
        "corelog load ({} build): {} producers on {} threads, {} partitions, {} B records × {} per append, fsync {}, {}",
        report::profile(),
        args.producers,
        args.threads,
        args.partitions,
        args.record_bytes,
        args.batch,
        args.fsync,
        args.records.map_or(format!("{} s", args.duration), |r| format!("{r} records")),
    );
}

/// Runs the producers (and consumers) until the producers are done,
/// showing progress; returns the figures and, per producer, how many of its
/// records were acknowledged.
fn load(args: &Args, engine: &Engine) -> Result<(Figures, Vec<u64>), String> {
    let log = engine.handle();
    let shared = Arc::new(Shared::new());
    let cpu_before = usage::cpu_time();
    let (to_progress, progress) = mpsc::channel();
    let producers = Producers::start(args, &log, &shared, &to_progress);
    drop(to_progress);
    let consumers = Consumers::start(args, &log, &shared);
    let mut live = LiveLatency::new(progress);
    let timeline = progress::watch(args, &shared, &mut live, || producers.finished());
    let elapsed = shared.started.elapsed().as_secs_f64();
    shared.stop();
    let produced = producers.join(args.producers)?;
    let end_to_end = consumers.join()?;
    let cpu = (usage::cpu_time() - cpu_before).as_secs_f64();
    let stats = engine.stats().map_err(|e| e.to_string())?;
    let records: u64 = produced.acked.iter().sum();
    let figures = Figures {
        elapsed,
        records,
        payload: records * args.record_bytes as u64,
        append: produced.latency,
        end_to_end,
        timeline,
        cpu,
        engine: EngineFigures::new(&stats),
        errors: shared.errors(),
    };
    Ok((figures, produced.acked))
}

/// Reads every record back, printing the outcome; returns the problems.
fn verify_and_print(args: &Args, log: &Handle, acked: &[u64]) -> Vec<String> {
    let started = Instant::now();
    let problems = verify::verify(args, log, acked);
    let outcome = if problems.is_empty() {
        "passed"
    } else {
        "FAILED"
    };
    println!(
        "verification     {outcome} in {:.2} s: {} acknowledged records read back",
        started.elapsed().as_secs_f64(),
        acked.iter().sum::<u64>()
    );
    for p in problems.iter().take(20) {
        println!("  {p}");
    }
    println!(
        "peak rss after verification {:.1} MiB",
        usage::peak_rss() as f64 / (1 << 20) as f64
    );
    problems
}
