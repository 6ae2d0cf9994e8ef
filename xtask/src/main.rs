//! corelog development tasks, run as `cargo xtask <task>`:
//!
//! - `load [ARGS]`: builds the load generator with the release profile and
//!   runs it (`cargo xtask load --help` lists its options).
//! - `demo`: builds with the release profile and runs the engine demo in a
//!   temporary directory under the current one.
//! - `disk [--dir DIR]`: measures the disk under DIR (default
//!   `target/disk-baseline`) with fio, the baseline every throughput and
//!   fsync figure in docs/BENCHMARKS.md is compared with.

mod disk;

use std::process::{exit, Command};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => run_cargo(&["run", "--release", "-p", "corelog", "--example", "demo"]),
        Some("load") => {
            let mut cargo = vec![
                "run",
                "--release",
                "-q",
                "-p",
                "corelog-bench",
                "--bin",
                "load",
                "--",
            ];
            cargo.extend(args[1..].iter().map(String::as_str));
            run_cargo(&cargo)
        }
        Some("disk") => {
            let dir = match args.get(1..) {
                Some([flag, dir]) if flag == "--dir" => dir.clone(),
                Some([]) => "target/disk-baseline".to_string(),
                _ => usage(),
            };
            disk::run(std::path::Path::new(&dir))
        }
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: cargo xtask load [ARGS] | cargo xtask demo | cargo xtask disk [--dir DIR]");
    exit(2);
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
