//! Deterministic simulation: random appends (sequential and concurrent),
//! reads, delete-befores, truncates, flushes, clean reopens and crashes on
//! a simulated faulty disk, checked against a model after every step.
//!
//! Each seed picks a fault profile. What must hold, whatever the seed:
//! - recovery never panics;
//! - no read ever returns a record whose bytes differ from what was
//!   appended at that offset (damage is reported, never served);
//! - after a crash, every partition keeps every offset below the
//!   durable end it reported before the crash, with the same bytes, so
//!   under `Always` every acknowledged append survives and offsets are
//!   never reused;
//! - after an I/O error the shard refuses appends, naming the file.
//!
//! `cargo test` runs `CORELOG_SIM_SEEDS` seeds (default 300) from
//! `CORELOG_SIM_FIRST_SEED` (default 0); `CORELOG_SIM_SEED=n` runs one. A
//! failure prints the seed that reproduces it.

#[path = "sim/checks.rs"]
mod checks;
mod common;
#[path = "sim/model.rs"]
mod model;
#[path = "sim/ops.rs"]
mod ops;
#[path = "sim/run.rs"]
mod run;
#[path = "sim/trace.rs"]
mod trace;

use std::{cell::RefCell, panic::AssertUnwindSafe, path::Path, rc::Rc};

use futures_lite::FutureExt;

use corelog_shard::sim::{CrashKind, Faults, SimDisk};

use model::{Model, Profile, Tally};
use run::Run;

/// Runs one seed on its own executor; returns its tallies and the disk's
/// trace digest.
fn run_seed(seed: u64) -> (Tally, u32) {
    common::run(move || seed_run(seed))
}

/// One seed's run, on the current executor.
async fn seed_run(seed: u64) -> (Tally, u32) {
    let profile = Profile::of(seed);
    let run = Run {
        seed,
        profile,
        rng: fastrand::Rng::with_seed(seed ^ 0x5eed),
        model: Rc::new(RefCell::new(Model::default())),
        disk: SimDisk::new(seed, profile.faults()),
    };
    run.run().await
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

#[test]
fn simulated_seeds_lose_nothing_and_serve_no_damage() {
    let (first, count) = match env_u64("CORELOG_SIM_SEED") {
        Some(seed) => (seed, 1),
        None => (
            env_u64("CORELOG_SIM_FIRST_SEED").unwrap_or(0),
            env_u64("CORELOG_SIM_SEEDS").unwrap_or(300),
        ),
    };
    // One executor for all seeds (an executor per seed exhausts file
    // descriptors over tens of thousands of seeds).
    let outcome = common::run(move || async move {
        let mut total = Tally::default();
        for seed in first..first + count {
            match AssertUnwindSafe(seed_run(seed)).catch_unwind().await {
                Ok((tally, _)) => total.add(&tally),
                Err(_) => return Err(seed),
            }
        }
        Ok(total)
    });
    let total = match outcome {
        Ok(total) => total,
        Err(seed) => panic!(
            "simulation seed {seed} ({:?}) failed; reproduce with CORELOG_SIM_SEED={seed} cargo test -p corelog-shard --test sim",
            Profile::of(seed)
        ),
    };
    println!("simulation: seeds {first}..{}: {total:#?}", first + count);
    assert_eq!(total.seeds, count);
    if count >= 50 {
        assert!(total.crashes > 0 && total.records_verified > 0 && total.io_failures > 0);
        assert!(total.corruption_detected > 0 && total.faults.torn_sectors > 0);
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 4, 11] {
        let (a, trace_a) = run_seed(seed);
        let (b, trace_b) = run_seed(seed);
        assert_eq!(trace_a, trace_b, "seed {seed} diverged");
        assert_eq!(a.records_verified, b.records_verified, "seed {seed}");
    }
}

#[test]
fn simulated_disk_keeps_only_durable_data_and_names() {
    use corelog_shard::{IoBuffer, Storage, StorageFile};
    common::run(|| async {
        let disk = SimDisk::new(1, Faults::default());
        let dir = Path::new("/d");
        let a = dir.join("a");
        let f = disk.open(&a, true).await.unwrap();
        let mut buf = disk.alloc(4096);
        buf.as_mut_slice().fill(7);
        f.write_at(buf, 0).await.unwrap();
        // Name not durable: a kill keeps the file, power loss does not.
        assert_eq!(
            disk.crash(CrashKind::AllWritten).contents(&a).unwrap(),
            vec![7; 4096]
        );
        let after = disk.crash(CrashKind::DurableOnly);
        assert!(after.contents(&a).is_none());
        assert!(disk.list(dir).await.is_err(), "a crashed disk refuses work");

        let f = after.open(&a, true).await.unwrap();
        after.sync_dir(dir).await.unwrap();
        let mut buf = after.alloc(4096);
        buf.as_mut_slice().fill(7);
        f.write_at(buf, 0).await.unwrap();
        f.fdatasync().await.unwrap();
        let mut buf = after.alloc(4096);
        buf.as_mut_slice().fill(9);
        f.write_at(buf, 4096).await.unwrap();
        assert_eq!(
            after.crash(CrashKind::DurableOnly).contents(&a).unwrap(),
            vec![7; 4096]
        );
        // Torn: whole 512-byte sectors of the pending write survive or not.
        let (mut kept, mut lost) = (0, 0);
        for _ in 0..20 {
            let torn = after.crash(CrashKind::Torn).contents(&a).unwrap();
            assert!(torn[..4096].iter().all(|&b| b == 7));
            assert_eq!(torn.len() % 512, 0);
            for sector in torn[4096..].chunks(512) {
                assert!(sector.iter().all(|&b| b == 9) || sector.iter().all(|&b| b == 0));
            }
            let survived = torn[4096..].chunks(512).filter(|s| s[0] == 9).count();
            kept += survived;
            lost += 8 - survived;
        }
        assert!(kept > 0 && lost > 0, "kept {kept} lost {lost}");
    });
}
