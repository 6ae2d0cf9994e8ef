//! A test-sized run of the real crash loop (`cargo xtask crash` runs more).

use std::process::Command;

#[test]
fn killed_processes_lose_no_acknowledged_append() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crash"))
        .args([
            "loop",
            "--iterations",
            "3",
            "--seed",
            "7",
            "--max-ms",
            "250",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run the crash loop");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 kills"), "{stdout}");
    assert!(stdout.contains(", 0 lost"), "{stdout}");
}
