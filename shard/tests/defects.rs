//! Regression tests for defects a review of the shard found (issue 15),
//! one test each, written to fail before its fix.

mod common;

use common::{run, test_dir};
use corelog_shard::{
    sim::{CrashKind, Faults, SimDisk},
    Record, Shard, ShardConfig,
};

/// Recovery must read any batch the format allows: `max_batch_bytes`
/// limits new appends, not what an earlier run wrote. A directory written
/// with large batches and reopened with a smaller limit keeps them all.
#[test]
fn batches_over_a_lowered_max_batch_bytes_survive_a_reopen() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut config = ShardConfig::new(&path);
        config.segment_bytes = 16 << 20;
        config.max_record_bytes = 4 << 20;
        let big = 3 << 20;
        let (shard, _) = Shard::open(config.clone()).await.unwrap();
        for i in 0..3u8 {
            shard.append(1, &[Record::new(vec![i; big])]).await.unwrap();
        }
        // Abandoned without a close, as a crash would leave it: the last
        // segment is scanned on the next open.
        drop(shard);
        config.max_record_bytes = 1 << 20;
        config.max_batch_bytes = 1 << 20;
        let (shard, report) = Shard::open(config).await.unwrap();
        assert!(report.torn_tail.is_none(), "{report:?}");
        assert!(report.skipped.is_empty(), "{report:?}");
        assert_eq!(shard.offsets(1).end, 3);
        let last = shard.read(1, 2, usize::MAX).await.unwrap();
        assert_eq!(last[0].value(), &vec![2u8; big][..]);
        shard.close().await.unwrap();
    });
}

const SIM_DIR: &str = "/sim/shard-000";

fn sim_config() -> ShardConfig {
    let mut c = ShardConfig::new(SIM_DIR);
    c.segment_bytes = 64 << 10;
    c.max_record_bytes = 8 << 10;
    c.max_batch_bytes = 16 << 10;
    c.max_write_bytes = 32 << 10;
    c.memtable_bytes = 1 << 20;
    c
}

/// Seeds of the simulated disk each test runs.
const SEEDS: u64 = 20;

/// A disk whose operations yield to other tasks before they complete, so
/// that a write and its fdatasync are in flight while other tasks run.
fn slow_disk() -> Faults {
    Faults {
        max_delay: 20,
        ..Faults::default()
    }
}

/// Ten records in partition 1, durable.
async fn ten_records(disk: &SimDisk) -> Shard<SimDisk> {
    let (shard, _) = Shard::open_with(disk.clone(), sim_config()).await.unwrap();
    let records: Vec<Record> = (0..10u8).map(|i| Record::new(vec![i; 10])).collect();
    shard.append(1, &records).await.unwrap();
    shard
}

/// A control operation returns only when its effect is durable, even when
/// an identical one issued just before it is still waiting for its
/// fdatasync: otherwise a crash undoes what the second caller was told had
/// succeeded.
#[test]
fn a_repeated_truncate_returns_only_once_it_is_durable() {
    run(|| async {
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed, slow_disk());
            let shard = ten_records(&disk).await;
            let first = glommio::spawn_local({
                let shard = shard.clone();
                async move { shard.truncate(1, 5).await }
            })
            .detach();
            // Let the first truncate log its control batch and start waiting.
            futures_lite::future::yield_now().await;
            assert_eq!(shard.offsets(1).end, 5, "applied in memory");
            shard.truncate(1, 5).await.unwrap();
            // The second caller was told the partition ends at 5: a crash now
            // must keep that.
            let crashed = disk.crash(CrashKind::DurableOnly);
            let (reopened, _) = Shard::open_with(crashed, sim_config()).await.unwrap();
            assert_eq!(reopened.offsets(1).end, 5, "seed {seed}");
            drop(first);
        }
    });
}

/// The same for a delete-before at or below a start that retention (or an
/// earlier delete-before still in flight) moved only in memory.
#[test]
fn a_repeated_delete_before_returns_only_once_it_is_durable() {
    run(|| async {
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed, slow_disk());
            let shard = ten_records(&disk).await;
            let first = glommio::spawn_local({
                let shard = shard.clone();
                async move { shard.delete_before(1, 4).await }
            })
            .detach();
            futures_lite::future::yield_now().await;
            assert_eq!(shard.offsets(1).start, 4, "applied in memory");
            shard.delete_before(1, 3).await.unwrap();
            let crashed = disk.crash(CrashKind::DurableOnly);
            let (reopened, _) = Shard::open_with(crashed, sim_config()).await.unwrap();
            assert!(
                reopened.offsets(1).start >= 3,
                "seed {seed}: {:?}",
                reopened.offsets(1)
            );
            drop(first);
        }
    });
}

/// Salvage mode skips and reports what it cannot use, a damaged control
/// batch too; the other modes refuse it, naming file and position.
#[test]
fn tolerate_any_skips_a_damaged_control_batch() {
    use corelog_shard::{internals::Wal, Error, RecoveryMode};
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut config = common::small_config(&path, corelog_shard::FsyncPolicy::Always);
        let (wal, _) = Wal::open(config.clone()).await.unwrap();
        let data: Vec<Record> = (0..4u8).map(|i| Record::new(vec![i; 8])).collect();
        wal.append(1, 0, 0, &data).await.unwrap();
        // A control batch whose operation no version knows (what a bit
        // flipped in memory before the checksum was taken would leave).
        let bad = wal
            .append(1, 2, 1, &[Record::new(vec![9]).with_timestamp(0)])
            .await
            .unwrap();
        wal.append(1, 4, 0, &data[..1]).await.unwrap();
        wal.close().await.unwrap();
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
        ] {
            config.recovery = mode;
            let refused = Shard::open(config.clone()).await.err();
            assert!(
                matches!(&refused, Some(Error::Corrupted { position, .. }) if *position == bad.position),
                "{mode:?}: {refused:?}"
            );
        }
        config.recovery = RecoveryMode::TolerateAnyCorruption;
        let (shard, report) = Shard::open(config).await.unwrap();
        assert!(
            report.skipped.iter().any(|d| d.position == bad.position),
            "{report:?}"
        );
        assert_eq!(shard.offsets(1).end, 5, "the data around it is served");
        assert_eq!(shard.read(1, 0, usize::MAX).await.unwrap().len(), 5);
        shard.close().await.unwrap();
    });
}

/// A follower's `fetch` returns acknowledged records only, also across a
/// truncation: an append whose offsets a truncation cut acknowledges only
/// what is left of them, never the offsets a later append took over while
/// that one still waits for its fdatasync.
#[test]
fn fetch_never_returns_a_record_whose_append_is_not_acknowledged() {
    use std::{cell::Cell, rc::Rc, time::Duration};
    run(|| async {
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed, slow_disk());
            let (shard, _) = Shard::open_with(disk.clone(), sim_config()).await.unwrap();
            let a: Vec<Record> = (0..10u8).map(|i| Record::new(vec![b'a', i])).collect();
            let spawn_append = |records: Vec<Record>, done: Rc<Cell<bool>>| {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let r = shard.append(1, &records).await;
                    done.set(true);
                    r
                })
                .detach()
            };
            let a_done = Rc::new(Cell::new(false));
            let append_a = spawn_append(a, a_done.clone());
            // Let A's group go to the disk.
            for _ in 0..3 {
                futures_lite::future::yield_now().await;
            }
            let follower = glommio::spawn_local({
                let shard = shard.clone();
                async move { shard.fetch(1, 3, usize::MAX, Duration::from_secs(10)).await }
            })
            .detach();
            futures_lite::future::yield_now().await;
            let truncate = glommio::spawn_local({
                let shard = shard.clone();
                async move { shard.truncate(1, 3).await }
            })
            .detach();
            futures_lite::future::yield_now().await;
            let c_done = Rc::new(Cell::new(false));
            let c = vec![Record::new(b"c0".to_vec()), Record::new(b"c1".to_vec())];
            let append_c = spawn_append(c, c_done.clone());
            let fetched = follower.await.unwrap().unwrap();
            // Whatever the follower got at offset 3 and on was acknowledged.
            if fetched.first().is_some_and(|r| r.value().starts_with(b"c")) {
                assert!(
                    c_done.get(),
                    "seed {seed}: fetch served C before its append was acknowledged"
                );
            }
            let _ = (append_a.await, truncate.await, append_c.await);
            assert!(a_done.get());
        }
    });
}

/// The batches of a segment file, control batches too, found by walking
/// headers: (position, length, flags).
fn walk_batches(bytes: &[u8]) -> Vec<(usize, usize, u16)> {
    let mut out = Vec::new();
    let mut pos = 4096;
    while pos + 64 <= bytes.len() {
        match corelog_shard::internals::peek_header(&bytes[pos..]) {
            Some(h) if h.length >= 64 && h.magic == corelog_shard::internals::BATCH_MAGIC => {
                out.push((pos, h.length as usize, h.flags));
                pos += h.length as usize;
            }
            _ => pos = (pos / 4096 + 1) * 4096,
        }
    }
    out
}

/// Recovery decides before it writes: an open that is refused leaves the
/// files as they were (nothing erased, the clean-shutdown marker kept), so
/// that a salvage can still read what the refusal protected.
#[test]
fn a_refused_open_changes_nothing_on_disk() {
    use corelog_shard::{Error, RecoveryMode};
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut config = common::small_config(&path, corelog_shard::FsyncPolicy::Always);
        let (shard, _) = Shard::open(config.clone()).await.unwrap();
        for i in 0..120u32 {
            let value = vec![(i % 251) as u8; 1000];
            shard.append(1, &[Record::new(value)]).await.unwrap();
        }
        // Deletes the first segment, so a checkpoint records the log up to
        // just after this delete-before's control batch.
        shard.delete_before(1, 100).await.unwrap();
        drop(shard);
        let segments: Vec<_> = {
            let mut v: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "wal"))
                .collect();
            v.sort();
            v
        };
        let last = segments.last().unwrap().clone();
        let mut bytes = std::fs::read(&last).unwrap();
        let &(pos, _, flags) = walk_batches(&bytes).last().unwrap();
        assert_eq!(flags, 1, "the delete-before's control batch ends the log");
        // Damage it: the scan cuts it as a torn tail, then the checkpoint,
        // which accounts for it, proves that synced data was lost.
        bytes[pos + 70] ^= 0xFF;
        std::fs::write(&last, &bytes).unwrap();
        let refused = Shard::open(config.clone()).await.err();
        assert!(
            matches!(refused, Some(Error::Corrupted { .. })),
            "{refused:?}"
        );
        assert!(
            std::fs::read(&last).unwrap() == bytes,
            "a refused open erased bytes of {}",
            last.display()
        );
        config.recovery = RecoveryMode::TolerateAnyCorruption;
        let (shard, report) = Shard::open(config).await.unwrap();
        assert!(!report.skipped.is_empty(), "{report:?}");
        assert_eq!(shard.offsets(1).end, 120);
        shard.close().await.unwrap();
    });
}

/// A read that needs several disk reads, while a truncate or a
/// delete-before runs between them, returns what existed when it started
/// or a clear out-of-range error, never `Corrupted` on a healthy log.
#[test]
fn a_read_across_a_truncate_is_never_reported_as_corruption() {
    use corelog_shard::Error;
    run(|| async {
        for seed in 0..SEEDS {
            let disk = SimDisk::new(seed, slow_disk());
            let mut config = sim_config();
            config.memtable_bytes = 4 << 10;
            let (shard, _) = Shard::open_with(disk.clone(), config).await.unwrap();
            for i in 0..150u32 {
                let value = vec![(i % 251) as u8; 1000];
                shard.append(1, &[Record::new(value)]).await.unwrap();
            }
            let reader = glommio::spawn_local({
                let shard = shard.clone();
                async move { shard.read_range(1, 0, 150).await }
            })
            .detach();
            futures_lite::future::yield_now().await;
            let cut = if seed % 2 == 0 {
                shard.truncate(1, 10).await
            } else {
                shard.delete_before(1, 140).await
            };
            cut.unwrap();
            match reader.await.unwrap() {
                Ok(records) => {
                    for (i, r) in records.iter().enumerate() {
                        assert_eq!(r.offset(), i as u64, "seed {seed}: dense from the start");
                        assert_eq!(r.value()[0], (i % 251) as u8, "seed {seed}");
                    }
                }
                Err(Error::OffsetOutOfRange { .. }) => {}
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
    });
}

/// A shard directory the open created is durable before the first append
/// is acknowledged: its entry in the parent directory is synced, so a power
/// loss keeps it, and with it every acknowledged append. (The simulated
/// disk forgets the files of a directory whose entry was never synced.)
#[test]
fn a_new_shard_directory_survives_a_power_loss() {
    run(|| async {
        let disk = SimDisk::new(3, Faults::default());
        let (shard, _) = Shard::open_with(disk.clone(), sim_config()).await.unwrap();
        shard
            .append(1, &[Record::new(b"acked".to_vec())])
            .await
            .unwrap();
        let crashed = disk.crash(CrashKind::DurableOnly);
        let (reopened, _) = Shard::open_with(crashed, sim_config()).await.unwrap();
        assert_eq!(reopened.offsets(1).end, 1);
    });
}

/// The simulation covers `Interval`: on the simulated disk's virtual clock
/// the commit task's deadline passes as soon as nothing else is to be done,
/// so an acknowledged append becomes durable without a flush, and a power
/// loss then keeps it.
#[test]
fn interval_syncs_run_on_the_simulated_disk_clock() {
    run(|| async {
        let disk = SimDisk::new(5, slow_disk());
        let mut config = sim_config();
        config.fsync = corelog_shard::FsyncPolicy::Interval(std::time::Duration::from_secs(3600));
        let (shard, _) = Shard::open_with(disk.clone(), config.clone())
            .await
            .unwrap();
        shard
            .append(1, &[Record::new(b"acked".to_vec())])
            .await
            .unwrap();
        let mut yields = 0;
        while shard.offsets(1).durable_end < 1 {
            yields += 1;
            assert!(yields < 10_000, "no sync an hour (virtual) after the write");
            futures_lite::future::yield_now().await;
        }
        let crashed = disk.crash(CrashKind::DurableOnly);
        let (reopened, _) = Shard::open_with(crashed, config).await.unwrap();
        assert_eq!(reopened.offsets(1).end, 1);
    });
}

/// A roll that needs the spare while its zero-filling is still going (it
/// pauses while appends wait to be written) takes it at once, cutting the
/// filling short; the rest of the segment is unwritten extents, correct and
/// only slower to sync. Nothing is lost.
#[test]
fn a_roll_takes_a_spare_whose_zero_filling_is_unfinished() {
    const APPENDS: u64 = 12;
    run(|| async {
        let mut cut = 0;
        for seed in 0..4 {
            let disk = SimDisk::new(seed, slow_disk());
            let mut config = sim_config();
            config.segment_bytes = 16 << 20;
            config.max_record_bytes = 1 << 20;
            config.max_batch_bytes = 1 << 20;
            config.max_write_bytes = 1 << 20;
            let (shard, _) = Shard::open_with(disk.clone(), config.clone())
                .await
                .unwrap();
            // Appends of most of a megabyte from eight tasks keep bytes
            // waiting to be written, so the filling mostly pauses.
            let tasks: Vec<_> = (0..8u64)
                .map(|t| {
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        for i in 0..APPENDS {
                            let value = vec![(t * 31 + i) as u8; 900_000];
                            shard.append(t, &[Record::new(value)]).await.unwrap();
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            let s = shard.stats();
            assert!(s.rolls > 2, "seed {seed}: {s:?}");
            cut += s.zeroing_cut;
            shard.close().await.unwrap();
            let (shard, _) = Shard::open_with(disk.clone(), config).await.unwrap();
            for t in 0..8u64 {
                let got = shard.read_range(t, 0, APPENDS).await.unwrap();
                for (i, r) in got.iter().enumerate() {
                    assert_eq!(r.value()[0], (t * 31 + i as u64) as u8, "seed {seed}");
                }
            }
            shard.close().await.unwrap();
        }
        assert!(cut > 0, "no roll found the spare still being zero-filled");
    });
}

/// A delete-before that finds another one's segment deletion under way
/// waits for it and deletes what it freed itself, before it returns: the
/// running deletion chose its segments before this one's change.
#[test]
fn a_delete_before_during_another_deletion_deletes_what_it_freed() {
    run(|| async {
        // The second delete-before starts after `lead` yields of the first:
        // some land while the first deletes.
        for (seed, lead) in (0..SEEDS).flat_map(|s| (0..40).map(move |l| (s, l))) {
            let disk = SimDisk::new(seed, slow_disk());
            let (shard, _) = Shard::open_with(disk.clone(), sim_config()).await.unwrap();
            // Partition 1 in the oldest segments, then 2, then 3.
            for p in 1..=3u64 {
                for i in 0..60u8 {
                    shard
                        .append(p, &[Record::new(vec![i; 1024])])
                        .await
                        .unwrap();
                }
            }
            let first = glommio::spawn_local({
                let shard = shard.clone();
                async move { shard.delete_before(1, 60).await }
            })
            .detach();
            for _ in 0..lead {
                futures_lite::future::yield_now().await;
            }
            shard.delete_before(2, 60).await.unwrap();
            first.await.unwrap().unwrap();
            let left = shard.wal().segments();
            // A deletion with nothing new to free finds nothing left over.
            shard.delete_before(3, 0).await.unwrap();
            assert_eq!(shard.wal().segments(), left, "seed {seed}, lead {lead}");
            shard.close().await.unwrap();
        }
    });
}

/// A roll that comes before the spare's header is synced (the first append
/// after an open, with the active segment full) waits for the header only,
/// not for the spare's whole zero-fill.
#[test]
fn a_roll_before_the_spare_is_usable_does_not_wait_for_its_zero_fill() {
    use corelog_shard::FsyncPolicy;
    run(|| async {
        let mut config = sim_config();
        config.fsync = FsyncPolicy::Always;
        config.segment_bytes = 32 << 20;
        let batch: Vec<Record> = (0..15u8).map(|i| Record::new(vec![i; 1000])).collect();
        let mut waited_for_header = 0;
        for seed in 0..6 {
            let disk = SimDisk::new(seed, slow_disk());
            let (shard, _) = Shard::open_with(disk.clone(), config.clone())
                .await
                .unwrap();
            // Fill the first segment until the next batch no longer fits.
            while shard.stats().written_position + (24 << 10) < config.segment_bytes {
                shard.append(1, &batch).await.unwrap();
            }
            assert_eq!(shard.stats().active_segment, 1);
            shard.close().await.unwrap();
            let (shard, _) = Shard::open_with(disk.clone(), config.clone())
                .await
                .unwrap();
            shard.append(1, &batch).await.unwrap();
            let stats = shard.stats();
            assert_eq!(stats.rolls, 1);
            waited_for_header += stats.roll_waits;
            // A roll that came before the spare's header takes it with no
            // zeros written (it is 32 MiB); the next spare has only begun.
            assert!(
                stats.roll_waits == 0 || stats.zeroed_bytes < config.segment_bytes / 2,
                "seed {seed}: the roll waited for {} bytes of zeros: {stats:?}",
                stats.zeroed_bytes
            );
            shard.close().await.unwrap();
        }
        assert!(
            waited_for_header > 0,
            "no roll came before the spare's header"
        );
    });
}

/// A write that fails names the file and the position it was written at.
#[test]
fn a_failed_write_names_its_file_and_position() {
    use corelog_shard::{Error, FsyncPolicy};
    run(|| async {
        for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
            let mut config = sim_config();
            config.fsync = fsync;
            let disk = SimDisk::new(3, Faults::default());
            let (shard, _) = Shard::open_with(disk.clone(), config).await.unwrap();
            disk.set_faults(Faults {
                write_eio: 1.0,
                ..Faults::default()
            });
            let e = shard
                .append(1, &[Record::new(vec![1; 10])])
                .await
                .unwrap_err();
            let Error::Failed(inner) = &e else {
                panic!("{e}")
            };
            assert!(
                matches!(&**inner, Error::Io { position: Some(p), path, .. }
                    if *p >= 4096 && path.to_string_lossy().ends_with(".wal")),
                "{inner:?}"
            );
            assert!(e.to_string().contains(" at position "), "{e}");
        }
    });
}
