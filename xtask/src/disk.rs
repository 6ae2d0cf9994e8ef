//! `cargo xtask disk`: the disk's limits, measured with fio on the file
//! system that holds the data.

use std::{path::Path, process::Command};

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
    /// p50 of a 4 KiB write plus fdatasync on written blocks (psync), µs.
    pub sync_write_p50_us: f64,
}

/// Installs fio if missing, runs every job in `dir`, prints the figures and
/// returns them.
pub fn run(dir: &Path) -> Result<Disk, String> {
    let mut disk = Disk::default();
    ensure_fio()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    println!("fio in {} (O_DIRECT)", dir.display());
    for (name, args) in JOBS {
        let out = Command::new("fio")
            .arg(format!("--name={name}"))
            .arg(format!("--directory={}", dir.display()))
            .args(["--direct=1", "--output-format=json"])
            .args(*args)
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
        let json: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| format!("fio {name} output: {e}"))?;
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
            "sync-write-psync" => {
                disk.sync_write_p50_us = p50(&job["write"]["clat_ns"]) + p50(&job["sync"]["lat_ns"]);
                println!(
                    "  4 KiB write+fdatasync on written blocks (psync): {:.0}/s, p50 {:.1} us",
                    job["write"]["iops"].as_f64().unwrap_or(0.0),
                    disk.sync_write_p50_us
                )
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
    Ok(disk)
}

/// Installs Debian's fio through apt when it is not on the PATH.
fn ensure_fio() -> Result<(), String> {
    if Command::new("fio").arg("--version").output().is_ok() {
        return Ok(());
    }
    eprintln!("fio not found; installing it with apt-get");
    crate::apt_install("fio")
}
