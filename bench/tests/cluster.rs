//! A test-sized run of the Raft cluster on loopback (`cargo xtask cluster`
//! runs more): three node processes, the leader SIGKILLed and restarted,
//! every acknowledged write on every node. Bounded by its own timeout.

use std::process::Command;

#[test]
fn a_killed_leader_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cluster"))
        .args([
            "run",
            "--entries",
            "300",
            "--clients",
            "4",
            "--timeout",
            "60",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run the cluster");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("SIGKILLed node"), "{stdout}");
    assert!(
        stdout.contains("every node holds all 300 acknowledged writes"),
        "{stdout}"
    );
}
