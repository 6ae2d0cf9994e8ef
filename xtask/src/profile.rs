//! `cargo xtask profile -- <load args>`: runs the load generator under
//! `perf record`, writes a flame graph and prints the functions with the
//! most self time.

use std::{
    fs::File,
    io::{BufReader, BufWriter},
    path::Path,
    process::Command,
};

use inferno::{
    collapse::{perf::Folder, Collapse},
    flamegraph::{self, Options},
};

/// Where the profile's files go.
const OUT: &str = "target/profile";

/// Profiles `cargo xtask load` with `load_args`.
pub fn run(load_args: &[String]) -> Result<(), String> {
    ensure_perf()?;
    let mut build = vec!["build"];
    build.extend(crate::LOAD_BIN);
    crate::run_cargo(&build)?;
    std::fs::create_dir_all(OUT).map_err(|e| format!("create {OUT}: {e}"))?;
    let data = Path::new(OUT).join("perf.data");
    // Hardware cycles where the machine exposes them, else a software clock.
    let event = if counters_supported() {
        "cycles"
    } else {
        "cpu-clock"
    };
    println!("perf record -e {event}, stacks unwound from DWARF debug info");
    let status = Command::new("perf")
        .args([
            "record",
            "-e",
            event,
            "-F",
            "499",
            "--call-graph",
            "dwarf,32768",
            "-o",
        ])
        .arg(&data)
        .arg("--")
        .arg("target/release/load")
        .args(load_args)
        .status()
        .map_err(|e| format!("run perf record: {e}"))?;
    if !status.success() {
        return Err(format!("perf record failed: {status}"));
    }
    let script = Path::new(OUT).join("perf.script");
    let out = Command::new("perf")
        .args(["script", "-i"])
        .arg(&data)
        .output()
        .map_err(|e| format!("run perf script: {e}"))?;
    std::fs::write(&script, &out.stdout).map_err(|e| format!("write {}: {e}", script.display()))?;
    let folded = Path::new(OUT).join("stacks.folded");
    let svg = Path::new(OUT).join("flamegraph.svg");
    {
        let input = BufReader::new(File::open(&script).map_err(|e| e.to_string())?);
        let output = BufWriter::new(File::create(&folded).map_err(|e| e.to_string())?);
        Folder::default()
            .collapse(input, output)
            .map_err(|e| format!("fold stacks: {e}"))?;
        let input = BufReader::new(File::open(&folded).map_err(|e| e.to_string())?);
        let output = BufWriter::new(File::create(&svg).map_err(|e| e.to_string())?);
        let mut options = Options::default();
        options.title = format!("corelog load {}", load_args.join(" "));
        flamegraph::from_reader(&mut options, input, output)
            .map_err(|e| format!("draw flame graph: {e}"))?;
    }
    println!("flame graph: {}", svg.display());
    let report = Command::new("perf")
        .args([
            "report",
            "--no-children",
            "--sort",
            "symbol",
            "--stdio",
            "-g",
            "none",
            "-i",
        ])
        .arg(&data)
        .output()
        .map_err(|e| format!("run perf report: {e}"))?;
    println!("top functions by self time:");
    for line in String::from_utf8_lossy(&report.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .take(15)
    {
        println!("  {}", line.trim());
    }
    Ok(())
}

/// True when `perf stat` can count hardware cycles here.
fn counters_supported() -> bool {
    Command::new("perf")
        .args(["stat", "-e", "cycles", "true"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("not supported")
        })
}

/// Installs Debian's linux-perf through apt when perf is missing.
fn ensure_perf() -> Result<(), String> {
    if Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    eprintln!("perf not found; installing linux-perf with apt-get");
    crate::apt_install("linux-perf")
}
