//! The load generator, run as a program: it completes with verification
//! under every fsync policy, its JSON report holds the documented fields,
//! and a damaged data directory fails verification.

use std::{path::Path, process::Command};

fn load(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_load"))
        .args([
            "--shards",
            "1",
            "--producers",
            "4",
            "--partitions",
            "6",
            "--record-bytes",
            "64",
            "--batch",
            "4",
        ])
        .args(args)
        .output()
        .expect("run the load generator")
}

fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

#[test]
fn runs_and_verifies_under_every_policy_with_a_json_report() {
    for fsync in ["always", "never", "interval:5"] {
        let dir = test_dir();
        let json = dir.path().join("report.json");
        let svg = dir.path().join("plot.svg");
        let data = dir.path().join("data");
        let out = load(&[
            "--fsync",
            fsync,
            "--duration",
            "1",
            "--consumers",
            "1",
            "--read-from-start",
            "--dir",
            data.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{fsync}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("verification     passed"), "{stdout}");
        let text = std::fs::read_to_string(&json).unwrap();
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The typed report, as `cargo xtask load --vs-disk` reads it.
        let typed: corelog_bench::load_report::Report =
            serde_json::from_str(&text).expect("the report reads as a Report");
        assert_eq!(typed.config.fsync, fsync);
        assert_eq!(typed.records, report["records"].as_u64().unwrap());
        assert!(typed.end_to_end_latency_us.count > 0);
        for field in [
            "profile",
            "config",
            "records_per_s",
            "mb_per_s",
            "append_latency_us",
            "end_to_end_latency_us",
            "fdatasyncs_per_s",
            "appends_per_commit",
            "write_amplification",
            "cpu_us_per_record",
            "peak_rss_bytes",
            "throughput_timeline",
        ] {
            assert!(
                report.get(field).is_some(),
                "{fsync}: no {field} in the report"
            );
        }
        assert!(report["records"].as_u64().unwrap() > 0);
        assert_eq!(report["verification_problems"].as_array().unwrap().len(), 0);
        assert!(report["append_latency_us"]["p99"].as_f64().unwrap() > 0.0);
        assert!(report["cold_read"]["mb_per_s"].as_f64().unwrap() > 0.0);
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("latency CDF"),
            "not a plot"
        );
    }
}

#[test]
fn a_damaged_data_directory_fails_verification() {
    let dir = test_dir();
    let data = dir.path().join("data");
    let out = load(&["--records", "4000", "--dir", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Flip a byte inside the data of the first segment.
    let segment = find_segment(&data).expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[4096 + 200] ^= 0x55;
    std::fs::write(&segment, bytes).unwrap();
    let out = load(&["--records", "0", "--dir", data.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "verification passed on damaged data: {stdout}"
    );
    assert!(stdout.contains("verification     FAILED"), "{stdout}");
    assert!(
        stdout.contains(".wal"),
        "the failure names the file: {stdout}"
    );
}

fn find_segment(dir: &Path) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()? {
        let path = entry.ok()?.path();
        if path.is_dir() {
            if let Some(found) = find_segment(&path) {
                return Some(found);
            }
        } else if path.extension().is_some_and(|e| e == "wal") {
            return Some(path);
        }
    }
    None
}
