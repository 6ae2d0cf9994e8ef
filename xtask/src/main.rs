//! corelog development tasks, run as `cargo xtask <task>`:
//!
//! - `load [--vs-disk] [ARGS]`: builds the load generator with the release
//!   profile and runs it (`cargo xtask load --help` lists its options); with
//!   `--vs-disk`, measures the disk first and reports ratios to it.
//! - `demo`: builds with the release profile and runs the engine demo in a
//!   temporary directory under the current one.
//! - `profile -- [LOAD ARGS]`: runs the load under `perf record`, writes a
//!   flame graph (`target/profile/flamegraph.svg`) and prints the top
//!   functions by self time.
//! - `crash [--iterations N] [ARGS]`: the real crash loop (release build):
//!   kills a process appending under `Always` at random moments, reopens,
//!   verifies every acknowledged append (`cargo xtask crash --help`).
//! - `cluster [--entries N] [ARGS]`: three Raft nodes on loopback keeping
//!   their logs in corelog (`corelog::raft`): writes through the leader,
//!   SIGKILLs it, writes through the new one, restarts the killed node and
//!   checks every node holds every acknowledged write, printing entries/s,
//!   election and catch-up times.
//! - `sim [--seeds N] [--first-seed S]`: runs the simulated-disk test over
//!   many seeds (default 10,000) and prints the tallies.
//! - `fuzz [SECONDS]`: runs each cargo-fuzz target of the batch decoder
//!   for SECONDS (default 60) with the nightly toolchain, installing
//!   cargo-fuzz if missing.
//! - `disk [--dir DIR]`: measures the disk under DIR (default
//!   `target/disk-baseline`) with fio, the baseline every throughput and
//!   fsync figure in docs/BENCHMARKS.md is compared with.

mod disk;
// The load generator's report type, shared as source so that xtask need not
// build the engine.
#[path = "../../bench/src/load_report.rs"]
mod load_report;
mod profile;

use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => run_cargo(&["run", "--release", "-p", "corelog", "--example", "demo"]),
        Some("load") => load(&args[1..]),
        Some("crash") => run_bench_bin("crash", "loop", &args[1..]),
        Some("cluster") => run_bench_bin("cluster", "run", &args[1..]),
        Some("sim") => sim(&args[1..]),
        Some("fuzz") => fuzz(args.get(1).map_or("60", String::as_str)),
        Some("profile") => {
            let rest = match args.get(1).map(String::as_str) {
                Some("--") => &args[2..],
                _ => &args[1..],
            };
            profile::run(rest)
        }
        Some("disk") => {
            let dir = match args.get(1..) {
                Some([flag, dir]) if flag == "--dir" => dir.clone(),
                Some([]) => "target/disk-baseline".to_string(),
                _ => usage(),
            };
            disk::run(std::path::Path::new(&dir)).map(|_| ())
        }
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        exit(1);
    }
}

/// Runs subcommand `sub` of the bench crate's binary `bin` (release build)
/// with `args`.
fn run_bench_bin(bin: &str, sub: &str, args: &[String]) -> Result<(), String> {
    let mut cargo = vec![
        "run",
        "--release",
        "-q",
        "-p",
        "corelog-bench",
        "--bin",
        bin,
    ];
    cargo.extend(["--", sub]);
    cargo.extend(args.iter().map(String::as_str));
    run_cargo(&cargo)
}

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask load [--vs-disk] [ARGS] | cargo xtask crash [--iterations N] [ARGS] | cargo xtask cluster [--entries N] [ARGS] | cargo xtask sim [--seeds N] [--first-seed S] | cargo xtask fuzz [SECONDS] | cargo xtask profile -- [LOAD ARGS] | cargo xtask disk [--dir DIR] | cargo xtask demo"
    );
    exit(2);
}

/// Cargo arguments that select the load generator's release build.
const LOAD_BIN: [&str; 6] = ["--release", "-q", "-p", "corelog-bench", "--bin", "load"];

/// Runs the load generator (release build) with `args`. With `--vs-disk`,
/// measures the disk first and prints the engine's figures as ratios of the
/// disk's.
fn load(args: &[String]) -> Result<(), String> {
    let vs_disk = args.iter().any(|a| a == "--vs-disk");
    let mut args: Vec<String> = args.iter().filter(|a| *a != "--vs-disk").cloned().collect();
    let disk = if vs_disk {
        let dir = std::path::Path::new("target/disk-baseline");
        Some((disk::run(dir)?, matched_baseline(dir, &args)?))
    } else {
        None
    };
    // With --vs-disk, the report is needed: into a temporary file unless
    // the caller asked for one.
    let temporary = match (&disk, json_path(&args)) {
        (Some(_), None) => {
            let path =
                std::env::temp_dir().join(format!("corelog-load-{}.json", std::process::id()));
            args.push("--json".into());
            args.push(path.display().to_string());
            Some(path)
        }
        _ => None,
    };
    let mut cargo = vec!["run"];
    cargo.extend(LOAD_BIN);
    cargo.push("--");
    cargo.extend(args.iter().map(String::as_str));
    let result = run_cargo(&cargo);
    if let Some(disk) = disk {
        // Invariant: with --vs-disk, a --json path was given or added.
        let path = json_path(&args).expect("a --json path");
        let report = read_report(&path);
        if let Some(temporary) = temporary {
            let _ = std::fs::remove_file(temporary);
        }
        match report {
            Ok(report) => print_vs_disk(&report, &disk.0, &disk.1),
            // The load failed before it wrote its report: say why.
            Err(e) => return result.and(Err(e)),
        }
    }
    result
}

/// The value of `--json PATH` or `--json=PATH` in the load's `args`.
fn json_path(args: &[String]) -> Option<String> {
    option(args, "--json")
}

/// The value of option `name` (`name VALUE` or `name=VALUE`) in `args`.
fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix(name) {
            Some("") => args.get(i + 1).cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        })
}

/// The disk measured the way the load will run (`args`, the load's own
/// options, with its defaults): a paced load (`--rate`) against fio at the
/// same byte rate and block size (each write synced under `Always`); a
/// closed loop under `Always` against fio's 256 KiB `O_DSYNC` writes.
#[derive(Default)]
struct Matched {
    commit_mb: Option<f64>,
    paced: Option<disk::Paced>,
    /// Records an append of the load.
    batch: f64,
}

fn matched_baseline(dir: &std::path::Path, args: &[String]) -> Result<Matched, String> {
    let number = |name: &str, default: f64| -> Result<f64, String> {
        option(args, name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("{name} {v}: not a number"))
        })
    };
    let always = option(args, "--fsync").is_none_or(|f| f == "always");
    let mut matched = Matched {
        batch: number("--batch", 16.0)?,
        ..Matched::default()
    };
    if let Some(rate) = option(args, "--rate") {
        let rate: f64 = rate
            .parse()
            .map_err(|_| format!("--rate {rate}: not a number"))?;
        let record = number("--record-bytes", 1024.0)?;
        let block = ((record * matched.batch) as usize).div_ceil(4096) * 4096;
        matched.paced = Some(disk::paced(dir, block, rate * record, always)?);
    } else if always {
        matched.commit_mb = Some(disk::commit_pattern(dir)?);
    }
    Ok(matched)
}

/// Reads the load generator's JSON report at `path`; a missing field is an
/// error.
fn read_report(path: &str) -> Result<load_report::Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("load report {path}: {e}"))
}

/// Prints the load's figures as ratios of the disk's.
fn print_vs_disk(report: &load_report::Report, disk: &disk::Disk, matched: &Matched) {
    println!("against the disk (fio, measured just before):");
    println!(
        "  write bandwidth  {:.1} MB/s = {:.2}x fio sequential write ({:.0} MB/s)",
        report.mb_per_s,
        report.mb_per_s / disk.seq_write_mb,
        disk.seq_write_mb
    );
    if let Some(mb) = matched.commit_mb {
        println!(
            "                   = {:.2}x fio 256 KiB O_DSYNC writes, 4 in flight ({mb:.0} MB/s)",
            report.mb_per_s / mb
        );
    }
    let p50 = report.append_latency_us.p50;
    println!(
        "  append p50       {:.0} us = {:.2}x a 4 KiB write+fdatasync p50 ({:.0} us)",
        p50,
        p50 / disk.sync_write_p50_us,
        disk.sync_write_p50_us
    );
    if let Some(paced) = &matched.paced {
        let p99 = report.append_latency_us.p99;
        println!(
            "  append p99       {p99:.0} us = {:.2}x fio's p99 at the same byte rate and block size ({:.0} us)",
            p99 / paced.p99_us,
            paced.p99_us
        );
        let cpu = report.cpu_us_per_record * matched.batch;
        println!(
            "  cpu per append   {cpu:.1} us = {:.2}x fio's own CPU per write at that rate ({:.1} us)",
            cpu / paced.cpu_us_per_write,
            paced.cpu_us_per_write
        );
    }
    if let Some(cold) = &report.cold_read {
        println!(
            "  cold read        {:.1} MB/s = {:.2}x fio sequential read ({:.0} MB/s)",
            cold.mb_per_s,
            cold.mb_per_s / disk.seq_read_mb,
            disk.seq_read_mb
        );
    }
}

/// Runs the simulation test over many seeds, optimised, printing its
/// tallies.
fn sim(args: &[String]) -> Result<(), String> {
    let mut seeds = "10000".to_string();
    let mut first = "0".to_string();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seeds" => seeds = value.clone(),
            "--first-seed" => first = value.clone(),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let status = Command::new(env!("CARGO"))
        .args([
            "test",
            "--release",
            "-q",
            "-p",
            "corelog-shard",
            "--test",
            "sim",
        ])
        .args(["simulated_seeds", "--", "--nocapture"])
        .env("CORELOG_SIM_SEEDS", seeds)
        .env("CORELOG_SIM_FIRST_SEED", first)
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("simulation failed: {status}"))
    }
}

/// Fuzz targets, in `shard/fuzz/fuzz_targets`.
const FUZZ_TARGETS: [&str; 2] = ["batch_decode", "batch_records"];

/// Runs every fuzz target for `seconds` each (nightly toolchain).
fn fuzz(seconds: &str) -> Result<(), String> {
    let seconds: u64 = seconds
        .parse()
        .map_err(|_| format!("seconds must be a number, not {seconds:?}"))?;
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        run_cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    for target in FUZZ_TARGETS {
        let status = Command::new("rustup")
            .args(["run", "nightly", "cargo", "fuzz", "run", target])
            .args(["--fuzz-dir", "shard/fuzz", "--"])
            .arg(format!("-max_total_time={seconds}"))
            .status()
            .map_err(|e| format!("run cargo fuzz (needs rustup and a nightly toolchain): {e}"))?;
        if !status.success() {
            return Err(format!("fuzz target {target} failed: {status}"));
        }
    }
    Ok(())
}

/// Installs a Debian package with apt-get.
fn apt_install(package: &str) -> Result<(), String> {
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", package][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("run apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed", args.join(" ")));
        }
    }
    Ok(())
}

/// Runs cargo with `args`, failing on a non-zero exit.
fn run_cargo(args: &[&str]) -> Result<(), String> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed: {status}", args.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_json_path_is_found_in_either_spelling() {
        assert_eq!(
            json_path(&strings(&["--json", "a.json"])).as_deref(),
            Some("a.json")
        );
        assert_eq!(
            json_path(&strings(&["-q", "--json=b.json"])).as_deref(),
            Some("b.json")
        );
        assert_eq!(json_path(&strings(&["--jsonx", "c"])), None);
        assert_eq!(json_path(&strings(&["--json"])), None);
        assert_eq!(json_path(&strings(&[])), None);
    }

    #[test]
    fn a_report_missing_a_field_is_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        std::fs::write(&path, r#"{"profile": "release", "mb_per_s": 1.0}"#).unwrap();
        let err = read_report(path.to_str().unwrap()).unwrap_err();
        assert!(err.contains("missing field"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
