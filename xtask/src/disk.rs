//! `cargo xtask disk`: the disk's limits, measured with fio on the file
//! system that holds the data.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
    process::Command,
    time::Instant,
};

use serde_json::Value;

/// One fio job: a name, what it measures, and its arguments.
const JOBS: &[(&str, &[&str])] = &[
    (
        "seq-write",
        &[
            "--rw=write",
            "--bs=1m",
            "--iodepth=4",
            "--ioengine=io_uring",
            "--size=4g",
            "--end_fsync=1",
        ],
    ),
    (
        "sync-write-psync",
        &[
            "--rw=write",
            "--bs=4k",
            "--fdatasync=1",
            "--size=32m",
            "--overwrite=1",
            "--ioengine=psync",
        ],
    ),
    (
        "sync-write-io_uring",
        &[
            "--rw=write",
            "--bs=4k",
            "--fdatasync=1",
            "--size=32m",
            "--overwrite=1",
            "--ioengine=io_uring",
        ],
    ),
    (
        "seq-read",
        &[
            "--rw=read",
            "--bs=1m",
            "--iodepth=4",
            "--ioengine=io_uring",
            "--size=4g",
        ],
    ),
];

/// The disk's figures, as measured by [`run`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Disk {
    /// Sequential O_DIRECT write, MB/s.
    pub seq_write_mb: f64,
    /// Sequential O_DIRECT read, MB/s.
    pub seq_read_mb: f64,
    /// p50 and p99 of a whole 4 KiB write plus fdatasync on written
    /// blocks, timed around both calls in process, µs.
    pub sync_write_p50_us: f64,
    pub sync_write_p99_us: f64,
}

/// Installs fio if missing, runs every job in `dir`, prints the figures and
/// returns them.
pub fn run(dir: &Path) -> Result<Disk, String> {
    let mut disk = Disk::default();
    ensure_fio()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    println!("fio in {} (O_DIRECT)", dir.display());
    for (name, args) in JOBS {
        let json = fio(dir, name, args)?;
        let job = &json["jobs"][0];
        let p50 = |v: &Value| v["percentile"]["50.000000"].as_f64().unwrap_or(0.0) / 1000.0;
        match *name {
            "seq-write" => {
                disk.seq_write_mb = job["write"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6;
                println!("  sequential write, 1 MiB, queue depth 4: {:.0} MB/s", disk.seq_write_mb)
            }
            "seq-read" => {
                disk.seq_read_mb = job["read"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6;
                println!("  sequential read, 1 MiB, queue depth 4: {:.0} MB/s", disk.seq_read_mb)
            }
            _ => println!(
                "  4 KiB write+fdatasync on written blocks ({}): {:.0}/s, p50 write {:.1} us + fdatasync {:.1} us = {:.1} us",
                name.trim_start_matches("sync-write-"),
                job["write"]["iops"].as_f64().unwrap_or(0.0),
                p50(&job["write"]["clat_ns"]),
                p50(&job["sync"]["lat_ns"]),
                p50(&job["write"]["clat_ns"]) + p50(&job["sync"]["lat_ns"]),
            ),
        }
    }
    let latencies = sync_write_loop(dir, 2_000)?;
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    (disk.sync_write_p50_us, disk.sync_write_p99_us) = (at(0.5), at(0.99));
    println!(
        "  4 KiB write+fdatasync on written blocks, whole operation (pwrite + fdatasync loop in process): p50 {:.1} us, p99 {:.1} us",
        disk.sync_write_p50_us, disk.sync_write_p99_us
    );
    Ok(disk)
}

/// Times `n` whole operations of a blocking 4 KiB O_DIRECT `pwrite` and its
/// `fdatasync`, one after another over a file written in full first (so no
/// write allocates), the way a program without io_uring commits; returns
/// the latencies in µs, sorted. fio reports the write and the sync apart,
/// and the sum of their medians leaves out the time between them.
fn sync_write_loop(dir: &Path, n: usize) -> Result<Vec<f64>, String> {
    const BLOCK: usize = 4096;
    let path = dir.join("sync-write-loop");
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
    std::fs::write(&path, vec![0u8; n * BLOCK]).map_err(|e| err("write", e))?;
    File::open(&path)
        .and_then(|f| f.sync_all())
        .map_err(|e| err("fsync", e))?;
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| err("open O_DIRECT", e))?;
    // O_DIRECT needs a block-aligned buffer: the aligned block of a larger one.
    let mut memory = vec![7u8; 2 * BLOCK];
    let start = memory.as_ptr().align_offset(BLOCK);
    let block = &mut memory[start..start + BLOCK];
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        file.write_all_at(block, (i * BLOCK) as u64)
            .map_err(|e| err("pwrite", e))?;
        file.sync_data().map_err(|e| err("fdatasync", e))?;
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(&path);
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// Runs fio job `name` with `args` (O_DIRECT) in `dir`; returns its JSON
/// report.
fn fio(dir: &Path, name: &str, args: &[&str]) -> Result<Value, String> {
    let out = Command::new("fio")
        .arg(format!("--name={name}"))
        .arg(format!("--directory={}", dir.display()))
        .args(["--direct=1", "--output-format=json"])
        .args(args)
        .output()
        .map_err(|e| format!("run fio: {e}"))?;
    // fio leaves its data file behind.
    let _ = std::fs::remove_file(dir.join(format!("{name}.0.0")));
    if !out.status.success() {
        return Err(format!(
            "fio {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("fio {name} output: {e}"))
}

/// The write bandwidth of the commit pattern of a closed loop under
/// `Always` (MB/s): 256 KiB O_DIRECT `O_DSYNC` writes through io_uring,
/// four in flight, two jobs (the two shards), 5 s.
pub fn commit_pattern(dir: &Path) -> Result<f64, String> {
    let args = [
        "--rw=write",
        "--bs=256k",
        "--sync=dsync",
        "--ioengine=io_uring",
        "--iodepth=4",
        "--numjobs=2",
        "--group_reporting",
        "--size=1g",
        "--runtime=5",
        "--time_based",
    ];
    let json = fio(dir, "commit-pattern", &args)?;
    let mb = json["jobs"][0]["write"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6;
    println!(
        "  256 KiB O_DSYNC writes, 4 in flight, 2 jobs, the commit pattern under Always: {mb:.0} MB/s"
    );
    Ok(mb)
}

/// fio writing `block` bytes at `bytes_per_s`, paced, with `fdatasync`
/// after each write if asked (io_uring, up to 16 in flight), 10 s: the disk
/// at the same byte rate and block size as a paced load.
pub struct Paced {
    /// p99 of a write's whole latency (submission to completion, with its
    /// fdatasync if any), µs.
    pub p99_us: f64,
    /// fio's own CPU (user + system) per write, µs: what the machine costs
    /// for one write (and fdatasync) at that rate, with no engine.
    pub cpu_us_per_write: f64,
}

pub fn paced(dir: &Path, block: usize, bytes_per_s: f64, fdatasync: bool) -> Result<Paced, String> {
    let bs = format!("--bs={block}");
    let rate = format!("--rate={}", bytes_per_s as u64);
    let mut args = vec![
        "--rw=write",
        bs.as_str(),
        rate.as_str(),
        "--ioengine=io_uring",
        "--iodepth=16",
        "--size=4g",
        "--runtime=10",
        "--time_based",
        "--lat_percentiles=1",
    ];
    if fdatasync {
        args.push("--fdatasync=1");
    }
    let json = fio(dir, "paced", &args)?;
    let job = &json["jobs"][0];
    let p99_us = job["write"]["lat_ns"]["percentile"]["99.000000"]
        .as_f64()
        .unwrap_or(0.0)
        / 1000.0;
    let runtime_s = job["job_runtime"].as_f64().unwrap_or(0.0) / 1000.0;
    let cpu_s = (job["usr_cpu"].as_f64().unwrap_or(0.0) + job["sys_cpu"].as_f64().unwrap_or(0.0))
        / 100.0
        * runtime_s;
    let writes = job["write"]["total_ios"].as_f64().unwrap_or(0.0).max(1.0);
    let paced = Paced {
        p99_us,
        cpu_us_per_write: cpu_s * 1e6 / writes,
    };
    println!(
        "  {block} B writes paced at {:.1} MB/s{}: p99 {:.0} us, fio's CPU {:.1} us a write",
        bytes_per_s / 1e6,
        if fdatasync { ", each fdatasynced" } else { "" },
        paced.p99_us,
        paced.cpu_us_per_write
    );
    Ok(paced)
}

/// Installs Debian's fio through apt when it is not on the PATH.
fn ensure_fio() -> Result<(), String> {
    if Command::new("fio").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("fio not found; installing it with apt-get");
    crate::apt_install("fio")
}
