//! A full disk, for real: a small ext4 image mounted on a loop device.
//! Appends fail with a clear ENOSPC error, everything acknowledged stays
//! readable, and once space is freed a reopened engine appends again.
//!
//! Needs root, `mkfs.ext4` and loop devices; without them the test prints
//! why and passes without checking anything.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use corelog::{Config, Engine, Error, FsyncPolicy, Record};
use futures::executor::block_on;

/// A mounted ext4 image, unmounted on drop (a leaked mount would pin a loop
/// device on the machine).
struct LoopFs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    fn new(bytes: u64) -> Result<LoopFs, String> {
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).map_err(|e| e.to_string())?;
        let image = dir.path().join("fs.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .map_err(|e| e.to_string())?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount))?;
        Ok(LoopFs { mount, _dir: dir })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Retry while the file system is busy, then detach lazily as a last
        // resort, so that even a failing test leaves no mount behind.
        let umount = |args: &[&str]| {
            Command::new("umount")
                .args(args)
                .arg(&self.mount)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        for _ in 0..50 {
            if umount(&[]) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !umount(&["-l"]) {
            eprintln!("could not unmount {}", self.mount.display());
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn config(dir: &Path) -> Config {
    Config::new(dir)
        .shards(1)
        .pin_threads(false)
        .io_memory(1 << 20)
        .fsync(FsyncPolicy::Always)
        .segment_bytes(1 << 20)
        .max_batch_bytes(512 << 10)
        .max_record_bytes(128 << 10)
}

fn records(i: u64) -> Vec<Record> {
    (0..4u64)
        .map(|j| Record::new(vec![(i * 4 + j) as u8; 60 << 10]))
        .collect()
}

/// Whether `e` reports a full disk, directly or as the cause of a stop.
fn is_no_space(e: &Error) -> bool {
    match e {
        Error::NoSpace { .. } => true,
        Error::Failed(inner) => is_no_space(inner),
        _ => false,
    }
}

/// A 48 MiB ext4 image mounted on a loop device, or `None` (with the reason
/// printed) where that cannot be done here.
fn small_disk() -> Option<LoopFs> {
    if !is_root() {
        println!("skipped: mounting a loop file system needs root");
        return None;
    }
    LoopFs::new(48 << 20)
        .map_err(|e| println!("skipped: no loop-mounted ext4 here ({e})"))
        .ok()
}

/// Appends until the disk is full: every acknowledged append (partition,
/// base offset, index of its records), and the error that stopped them.
fn fill(log: &corelog::Handle) -> (Vec<(u64, u64, u64)>, Error) {
    let mut acked = Vec::new();
    loop {
        let i = acked.len() as u64;
        assert!(i < 10_000, "the disk never filled");
        match block_on(log.append(i % 3, records(i))) {
            Ok(base) => acked.push((i % 3, base, i)),
            Err(e) => return (acked, e),
        }
    }
}

/// Every append in `acked` reads back as written.
fn check(log: &corelog::Handle, acked: &[(u64, u64, u64)]) {
    for &(p, base, i) in acked {
        let got = block_on(log.read_range(p, base, base + 4)).unwrap();
        let want = records(i);
        assert_eq!(got.len(), 4);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.value(), w.value(), "partition {p} offset {}", g.offset());
        }
    }
}

#[test]
fn a_full_disk_fails_appends_clearly_and_keeps_what_was_acknowledged() {
    let Some(fs) = small_disk() else {
        return;
    };
    // Ballast, deleted later to free space that is not corelog's.
    let ballast = fs.mount.join("ballast");
    std::fs::write(&ballast, vec![1u8; 8 << 20]).unwrap();
    let data = fs.mount.join("data");

    let engine = Engine::open(config(&data)).unwrap();
    let log = engine.handle();
    let (acked, error) = fill(&log);
    println!("disk full after {} appends: {error}", acked.len());
    assert!(is_no_space(&error), "not a clear ENOSPC error: {error}");
    assert!(error.to_string().contains("no space left"), "{error}");
    assert!(acked.len() > 20, "only {} appends fit", acked.len());
    // The shard stopped: later appends fail the same way.
    let again = block_on(log.append(0, records(0))).unwrap_err();
    assert!(is_no_space(&again), "{again}");

    check(&log, &acked);
    let _ = engine.close();

    // Free space and reopen: everything is there, and appends work again.
    std::fs::remove_file(&ballast).unwrap();
    let engine = Engine::open(config(&data)).unwrap();
    let log = engine.handle();
    check(&log, &acked);
    for i in 0..8 {
        block_on(log.append(i % 3, records(i))).unwrap();
    }
    engine.close().unwrap();
}

/// On a full disk the log can still free space: a delete-before (its
/// control batch has room kept for it in every segment, its checkpoint a
/// reserve file) deletes whole segments, and appends resume in the same
/// engine, nothing acknowledged lost.
#[test]
fn a_full_disk_frees_space_with_delete_before_and_appends_resume() {
    let Some(fs) = small_disk() else {
        return;
    };
    let data = fs.mount.join("data");
    let engine = Engine::open(config(&data)).unwrap();
    let log = engine.handle();
    let (mut acked, error) = fill(&log);
    assert!(is_no_space(&error), "not a clear ENOSPC error: {error}");
    let _ = engine.close();
    // Nothing else on the disk can be deleted: corelog must free it.
    let engine = Engine::open(config(&data)).unwrap();
    let log = engine.handle();
    let keep_from: Vec<u64> = (0..3u64)
        .map(|p| block_on(log.offsets(p)).unwrap().end.saturating_sub(8))
        .collect();
    for p in 0..3u64 {
        block_on(log.delete_before(p, keep_from[p as usize])).unwrap();
    }
    // Appends resume without a reopen.
    for i in 0..40 {
        let p = i % 3;
        let base = block_on(log.append(p, records(i))).unwrap();
        acked.push((p, base, i));
    }
    acked.retain(|&(p, base, _)| base >= keep_from[p as usize]);
    check(&log, &acked);
    engine.close().unwrap();
}
