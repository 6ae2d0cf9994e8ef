//! The write path and recovery, through the shard's public API on a real
//! ext4 directory; the two tests that damage a segment byte by byte and
//! reopen it thousands of times run on the simulated disk (glommio's open
//! can stall for good on this kernel, docs/ARCHITECTURE.md, "glommio
//! notes", and those tests are where it showed).

mod common;

use std::{cell::RefCell, rc::Rc};

use common::{append, assert_batch_holds, records_for, run, small_config, test_dir};
use corelog_shard::{
    internals::{Appended, DmaStorage, Wal},
    sim::{Faults, SimDisk},
    Error, FsyncPolicy, Record, RecoveryMode, Storage,
};

#[test]
fn round_trip_across_segment_rolls() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(&path, FsyncPolicy::Never);
        let (shard, rec) = Wal::open(config.clone()).await.unwrap();
        assert_eq!(rec.batches.len(), 0);
        let mut appended = Vec::new();
        for i in 0..400u64 {
            let a = append(&shard, i % 7, &records_for(i)).await.unwrap();
            appended.push((i, a));
        }
        let stats = shard.stats();
        assert!(
            stats.rolls >= 4,
            "expected several rolls, got {}",
            stats.rolls
        );
        shard.close().await.unwrap();

        let (shard, rec) = Wal::open(config).await.unwrap();
        assert!(rec.report.clean_shutdown);
        assert_eq!(rec.report.torn_tail, None);
        assert_eq!(rec.batches.len(), appended.len());
        for ((i, a), b) in appended.iter().zip(&rec.batches) {
            assert_eq!((b.segment, b.position), (a.segment, a.position));
            assert_eq!(b.header.partition, i % 7);
            assert_eq!(b.header.base_offset, a.base_offset);
            let batch = shard
                .read_batch(b.segment, b.position, b.header.length)
                .await
                .unwrap();
            assert_batch_holds(&batch, a.base_offset, &records_for(*i));
        }
        shard.close().await.unwrap();
    });
}

/// Appends `n` batches to a fresh shard and abandons it without close.
/// Returns what was acknowledged.
async fn write_and_abandon(config: corelog_shard::ShardConfig, n: u64) -> Vec<Appended> {
    write_and_abandon_on(DmaStorage, config, n).await
}

/// [`write_and_abandon`] on `storage`.
async fn write_and_abandon_on<S: Storage>(
    storage: S,
    config: corelog_shard::ShardConfig,
    n: u64,
) -> Vec<Appended> {
    let (shard, _) = Wal::open_with(storage, config).await.unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        out.push(append(&shard, 1, &records_for(i)).await.unwrap());
    }
    out
}

#[test]
fn torn_tail_at_every_byte_keeps_exactly_the_batches_before() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let disk = SimDisk::new(1, Faults::default());
        let config = small_config(&path, FsyncPolicy::Always);
        let appended = write_and_abandon_on(disk.clone(), config.clone(), 12).await;
        let last = *appended.last().unwrap();
        let seg = corelog_shard::internals::segment_path(&path, last.segment);
        let original = disk.contents(&seg).unwrap();
        let start = last.position as usize;
        let end = start + last.length as usize;
        for cut in start..end {
            for zero_fill in [false, true] {
                let mut damaged = original.clone();
                if zero_fill {
                    damaged[cut..end].fill(0);
                } else {
                    damaged.truncate(cut);
                }
                disk.set_contents(&seg, &damaged);
                let (shard, rec) = Wal::open_with(disk.clone(), config.clone()).await.unwrap();
                assert_eq!(rec.batches.len(), appended.len() - 1, "cut at {cut}");
                // A cut exactly at the batch start looks like a clean end.
                if cut > start {
                    let torn = rec.report.torn_tail.as_ref().expect("tail reported");
                    assert_eq!(torn.position, last.position);
                    assert_eq!(torn.path, seg);
                }
                let end = rec.batches.last().map(|b| b.header.end_offset());
                assert_eq!(end, Some(last.base_offset));
                drop(shard);
            }
        }
        disk.set_contents(&seg, &original);
        let (_, rec) = Wal::open_with(disk, config).await.unwrap();
        assert_eq!(rec.batches.len(), appended.len());
    });
}

#[test]
fn appends_after_a_torn_tail_recover_cleanly_in_absolute_mode() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut config = small_config(&path, FsyncPolicy::Always);
        let appended = write_and_abandon(config.clone(), 5).await;
        let last = *appended.last().unwrap();
        let seg = corelog_shard::internals::segment_path(&path, last.segment);
        let mut bytes = std::fs::read(&seg).unwrap();
        // Tear the last batch in the middle of its body.
        let mid = last.position as usize + last.length as usize / 2;
        bytes[mid..last.position as usize + last.length as usize].fill(0xAB);
        std::fs::write(&seg, &bytes).unwrap();

        // Absolute mode refuses the torn tail, naming file and position.
        config.recovery = RecoveryMode::AbsoluteConsistency;
        match Wal::open(config.clone()).await {
            Err(Error::Corrupted {
                path: p, position, ..
            }) => {
                assert_eq!((p, position), (seg.clone(), last.position));
            }
            Err(e) => panic!("expected corruption, got {e}"),
            Ok(_) => panic!("expected corruption, got a shard"),
        }
        // The default mode cuts it, erases the garbage, and appends go on.
        config.recovery = RecoveryMode::TolerateTornTail;
        let (shard, rec) = Wal::open(config.clone()).await.unwrap();
        assert_eq!(rec.batches.len(), 4);
        let torn = rec.report.torn_tail.unwrap();
        assert!(
            torn.bytes >= u64::from(last.length) / 2,
            "cut {} bytes",
            torn.bytes
        );
        append(&shard, 1, &records_for(99)).await.unwrap();
        drop(shard);
        // After the repair, even absolute mode finds a consistent log.
        config.recovery = RecoveryMode::AbsoluteConsistency;
        let (_, rec) = Wal::open(config).await.unwrap();
        assert_eq!(rec.batches.len(), 5);
        assert_eq!(rec.report.torn_tail, None);
    });
}

/// Rewrites the `floor_block` of the batch at `pos` and reseals its CRC, as
/// if it had been appended while the writes before it were in flight.
fn set_floor(bytes: &mut [u8], pos: usize, floor_block: u32, seed: u32) {
    let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
    bytes[pos + 36..pos + 40].copy_from_slice(&floor_block.to_le_bytes());
    let crc = crc32c::crc32c_append(seed, &bytes[pos + 12..pos + len]);
    bytes[pos + 8..pos + 12].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn a_write_torn_in_flight_is_cut_but_damage_to_completed_writes_is_not() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut config = small_config(&path, FsyncPolicy::Always);
        let appended = write_and_abandon(config.clone(), 8).await;
        let seg = corelog_shard::internals::segment_path(&path, appended[0].segment);
        let seed = corelog_shard::internals::crc_seed(config.shard_id, appended[0].segment);
        let original = std::fs::read(&seg).unwrap();
        let hole = appended[4];
        let mut bytes = original.clone();
        // The write holding batch 4 never landed...
        bytes[hole.position as usize..(hole.position + u64::from(hole.length)) as usize].fill(0);
        // ...and batches 5 to 7 were appended while it was in flight.
        let floor = (hole.position / 4096) as u32;
        for a in &appended[5..] {
            set_floor(&mut bytes, a.position as usize, floor, seed);
        }
        std::fs::write(&seg, &bytes).unwrap();
        config.recovery = RecoveryMode::AbsoluteConsistency;
        assert!(matches!(
            Wal::open(config.clone()).await,
            Err(Error::Corrupted { .. })
        ));
        config.recovery = RecoveryMode::TolerateTornTail;
        let (shard, rec) = Wal::open(config.clone()).await.unwrap();
        assert_eq!(
            rec.batches.len(),
            4,
            "batches after the hole were never acknowledged"
        );
        assert_eq!(
            rec.report.torn_tail.as_ref().unwrap().position,
            hole.position
        );
        drop(shard);

        // The same hole, but batch 5 was appended after batch 4's write had
        // completed: that is corruption of acknowledged data.
        let mut bytes = original.clone();
        bytes[hole.position as usize..(hole.position + u64::from(hole.length)) as usize].fill(0);
        for a in &appended[6..] {
            set_floor(&mut bytes, a.position as usize, floor, seed);
        }
        std::fs::write(&seg, &bytes).unwrap();
        match Wal::open(config).await {
            Err(Error::Corrupted {
                position, reason, ..
            }) => {
                assert_eq!(position, hole.position);
                assert!(reason.contains("written completely"), "{reason}");
            }
            Err(e) => panic!("expected corruption, got {e}"),
            Ok(_) => panic!("expected corruption, got a shard"),
        }
    });
}

#[test]
fn flipped_bits_are_detected_and_never_served() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let disk = SimDisk::new(1, Faults::default());
        let mut config = small_config(&path, FsyncPolicy::Always);
        let appended = write_and_abandon_on(disk.clone(), config.clone(), 6).await;
        let seg = corelog_shard::internals::segment_path(&path, appended[0].segment);
        let original = disk.contents(&seg).unwrap();
        for (victim, a) in appended.iter().enumerate() {
            let bits = u64::from(a.length) * 8;
            // Every 13th bit of the batch, so each field gets hit.
            for bit in (0..bits).step_by(13) {
                let mut bytes = original.clone();
                let at = a.position as usize + (bit / 8) as usize;
                bytes[at] ^= 1 << (bit % 8);
                disk.set_contents(&seg, &bytes);

                config.recovery = RecoveryMode::TolerateTornTail;
                match Wal::open_with(disk.clone(), config.clone()).await {
                    Ok((_, rec)) => {
                        // Only the last batch may be cut as a torn tail.
                        assert_eq!(victim, appended.len() - 1);
                        assert_eq!(rec.batches.len(), victim);
                    }
                    Err(Error::Corrupted { position, .. }) => {
                        assert_eq!(position, a.position, "victim {victim} bit {bit}");
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
                disk.set_contents(&seg, &bytes);
                config.recovery = RecoveryMode::TolerateAnyCorruption;
                let (shard, rec) = Wal::open_with(disk.clone(), config.clone()).await.unwrap();
                let kept: Vec<u64> = rec.batches.iter().map(|b| b.header.base_offset).collect();
                let expect: Vec<u64> = appended
                    .iter()
                    .filter(|x| x.position != a.position)
                    .map(|x| x.base_offset)
                    .collect();
                assert_eq!(kept, expect, "victim {victim} bit {bit}");
                assert!(!rec.report.skipped.is_empty());
                disk.set_contents(&seg, &bytes);
                // A direct read of the damaged batch fails its checksum; the
                // last batch was cut, so it lies beyond the end of the log.
                let read = shard.read_batch(a.segment, a.position, a.length).await;
                match read {
                    Err(Error::Corrupted { .. }) => assert!(victim < appended.len() - 1),
                    Err(Error::InvalidArgument(_)) => assert_eq!(victim, appended.len() - 1),
                    other => panic!("victim {victim} bit {bit}: read gave {other:?}"),
                }
                drop(shard);
            }
        }
    });
}

#[test]
fn group_commit_shares_fdatasyncs() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Wal::open(small_config(&path, FsyncPolicy::Always))
            .await
            .unwrap();
        append(&shard, 0, &records_for(0)).await.unwrap(); // opens segment 1
        let before = shard.stats();
        let tasks: Vec<_> = (0..64u64)
            .map(|i| {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    append(&shard, i, &[Record::new(vec![7u8; 100])]).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let after = shard.stats();
        let syncs = after.fdatasyncs - before.fdatasyncs;
        assert_eq!(after.appends - before.appends, 64);
        assert!(syncs <= 8, "64 concurrent appends took {syncs} fdatasyncs");
        assert!(after.max_commit_appends >= 8);
        // Under Always, what is acknowledged is durable.
        assert_eq!(
            (after.durable_segment, after.durable_position),
            (after.active_segment, after.written_position)
        );
        shard.close().await.unwrap();
    });
}

#[test]
fn under_always_each_commit_is_one_durable_write_and_survives_reopen() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(&path, FsyncPolicy::Always);
        let (shard, _) = Wal::open(config.clone()).await.unwrap();
        let before = shard.stats();
        for i in 0..5u64 {
            append(&shard, i, &records_for(i)).await.unwrap();
            // Acknowledged means durable, with no fdatasync of its own.
            let s = shard.stats();
            assert_eq!(
                (s.durable_segment, s.durable_position),
                (s.active_segment, s.written_position)
            );
        }
        let after = shard.stats();
        assert_eq!(after.commits - before.commits, 5);
        assert_eq!(after.writes - before.writes, 5);
        // One sync a commit (its durable write), and one a roll (the seal).
        assert_eq!(
            after.fdatasyncs - before.fdatasyncs,
            5 + after.rolls - before.rolls,
            "{after:?}"
        );
        // Larger groups, across rolls, with several durable writes in flight.
        let big: Vec<Record> = (0..20).map(|_| Record::new(vec![1u8; 7_000])).collect();
        let tasks: Vec<_> = big
            .chunks(2)
            .map(|chunk| {
                let (shard, chunk) = (shard.clone(), chunk.to_vec());
                glommio::spawn_local(async move { append(&shard, 9, &chunk).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        shard.close().await.unwrap();
        let (shard, recovery) = Wal::open(config).await.unwrap();
        assert!(recovery.report.clean_shutdown && recovery.report.skipped.is_empty());
        assert_eq!(recovery.batches.len(), 15);
        shard.close().await.unwrap();
    });
}

#[test]
fn never_policy_syncs_only_on_roll_flush_and_close() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Wal::open(small_config(&path, FsyncPolicy::Never))
            .await
            .unwrap();
        for i in 0..20 {
            append(&shard, 0, &records_for(i)).await.unwrap();
        }
        let s = shard.stats();
        // One sync per sealed segment; a new segment's header was synced
        // with its spare file, off the commit path.
        assert_eq!(s.fdatasyncs, s.rolls - 1, "{s:?}");
        assert!(s.durable_position < s.written_position);
        shard.flush().await.unwrap();
        let s2 = shard.stats();
        assert_eq!(s2.fdatasyncs, s.fdatasyncs + 1);
        assert_eq!(s2.durable_position, s2.written_position);
        shard.close().await.unwrap();
    });
}

#[test]
fn interval_policy_syncs_after_the_interval() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let interval = std::time::Duration::from_millis(20);
        let (shard, _) = Wal::open(small_config(&path, FsyncPolicy::Interval(interval)))
            .await
            .unwrap();
        append(&shard, 0, &records_for(1)).await.unwrap();
        let before = shard.stats().fdatasyncs;
        append(&shard, 0, &records_for(2)).await.unwrap();
        // The append returned after its write, before any sync; one follows.
        glommio::timer::sleep(std::time::Duration::from_millis(500)).await;
        let s = shard.stats();
        assert!(s.fdatasyncs > before, "{s:?}");
        assert_eq!(s.durable_position, s.written_position);
        shard.close().await.unwrap();
    });
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(&path, FsyncPolicy::Always);
        let (shard, _) = Wal::open(config.clone()).await.unwrap();
        append(&shard, 5, &records_for(0)).await.unwrap();
        let before = shard.stats();

        let err = append(&shard, 5, &[]).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let big = Record::new(vec![0u8; config.max_record_bytes]);
        let err = append(&shard, 5, &[big]).await.unwrap_err();
        assert!(
            matches!(err, Error::RecordTooLarge { what: "record", .. }),
            "{err}"
        );
        let many: Vec<Record> = (0..4).map(|_| Record::new(vec![1u8; 5000])).collect();
        let err = append(&shard, 5, &many).await.unwrap_err();
        assert!(
            matches!(err, Error::RecordTooLarge { what: "batch", .. }),
            "{err}"
        );

        assert_eq!(shard.stats(), before);
        shard.close().await.unwrap();
        let err = append(&shard, 5, &records_for(1)).await.unwrap_err();
        assert!(matches!(err, Error::Closed), "{err}");
        assert!(matches!(shard.close().await, Err(Error::Closed)));

        let (_, rec) = Wal::open(config.clone()).await.unwrap();
        assert_eq!(rec.batches.len(), 1);

        // Bad configuration is refused before anything is created.
        let mut bad = config;
        bad.segment_bytes = 1000;
        assert!(matches!(
            Wal::open(bad).await,
            Err(Error::InvalidArgument(_))
        ));
    });
}

#[test]
fn abandoned_shard_keeps_every_acknowledged_batch_under_always() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let config = small_config(&path, FsyncPolicy::Always);
    let config2 = config.clone();
    let acked = run(move || async move {
        let (shard, _) = Wal::open(config).await.unwrap();
        let acked = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = (0..16u64)
            .map(|t| {
                let shard = shard.clone();
                let acked = acked.clone();
                glommio::spawn_local(async move {
                    for i in 0..40u64 {
                        let n = t * 1000 + i;
                        let a = append(&shard, t, &records_for(n)).await.unwrap();
                        acked.borrow_mut().push((n, a));
                    }
                })
            })
            .collect();
        // Keep appending in the background and abandon mid-flight.
        for t in tasks.into_iter().take(8) {
            t.await;
        }
        let acked = acked.borrow().clone();
        acked
        // The shard and the other tasks are dropped with the executor.
    });
    run(move || async move {
        let (shard, rec) = Wal::open(config2).await.unwrap();
        assert!(!rec.report.clean_shutdown);
        for (n, a) in &acked {
            let found = rec
                .batches
                .iter()
                .find(|b| b.segment == a.segment && b.position == a.position)
                .unwrap_or_else(|| panic!("acknowledged batch {n} lost"));
            let batch = shard
                .read_batch(found.segment, found.position, found.header.length)
                .await
                .unwrap();
            assert_batch_holds(&batch, a.base_offset, &records_for(*n));
        }
    });
}

/// Regression (found by the simulation): a commit group ending 1 to 3
/// bytes before a block boundary leaves padding shorter than a batch
/// magic; recovery must still step over it to the next group.
#[test]
fn padding_shorter_than_a_magic_is_still_padding() {
    for gap in 1..=3usize {
        let dir = test_dir();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let config = small_config(&path, FsyncPolicy::Always);
            let (wal, _) = Wal::open(config.clone()).await.unwrap();
            // One record whose batch fills the first data block but `gap`
            // bytes.
            let empty = corelog_shard::internals::encoded_batch_len(&[Record::new(vec![])])
                .unwrap()
                .0;
            let first = vec![Record::new(vec![7u8; 4096 - gap - empty])];
            let a = append(&wal, 1, &first).await.unwrap();
            assert_eq!(a.position, 4096);
            assert_eq!(a.length as usize, 4096 - gap);
            let second = records_for(1);
            append(&wal, 1, &second).await.unwrap();
            drop(wal); // abandoned, as a crash would
            let (wal, rec) = Wal::open(config).await.unwrap();
            assert_eq!(rec.batches.len(), 2, "gap {gap}: {:?}", rec.report);
            assert_eq!(rec.report.torn_tail, None);
            let b = &rec.batches[1];
            let batch = wal
                .read_batch(b.segment, b.position, b.header.length)
                .await
                .unwrap();
            assert_batch_holds(&batch, 1, &second);
        });
    }
}

/// Regression (found by the simulation): a segment whose last batch ends 1
/// to 3 bytes before the end of the file holds no damage when it is
/// scanned on open, as the last segment after a crash or as a sealed one
/// whose sidecar was lost.
#[test]
fn a_batch_ending_just_before_the_segment_end_is_not_damage() {
    for gap in 1..=3usize {
        for sealed in [false, true] {
            let dir = test_dir();
            let path = dir.path().to_path_buf();
            run(move || async move {
                let mut config = small_config(&path, FsyncPolicy::Always);
                config.segment_bytes = 16 << 10;
                config.max_batch_bytes = 12 << 10;
                let (wal, _) = Wal::open(config.clone()).await.unwrap();
                let record = |value: Vec<u8>| Record::new(value).with_timestamp(5);
                let empty =
                    corelog_shard::internals::encoded_batch_len(&[record(vec![]), record(vec![])])
                        .unwrap()
                        .0;
                let fill = (12 << 10) - gap - empty;
                let first = vec![
                    record(vec![7u8; fill / 2]),
                    record(vec![8u8; fill - fill / 2]),
                ];
                let a = append(&wal, 1, &first).await.unwrap();
                assert_eq!(
                    (a.segment, a.position, a.length as usize),
                    (1, 4096, (12 << 10) - gap)
                );
                let mut batches = 1;
                if sealed {
                    // Rolls to segment 2, sealing segment 1.
                    append(&wal, 1, &records_for(1)).await.unwrap();
                    batches = 2;
                }
                drop(wal); // abandoned, as a crash would
                if sealed {
                    std::fs::remove_file(path.join(format!("{:020}.idx", 1))).unwrap();
                }
                let (wal, rec) = Wal::open(config).await.unwrap();
                let report = &rec.report;
                assert_eq!(rec.batches.len(), batches, "gap {gap}: {report:?}");
                assert_eq!(report.torn_tail, None, "gap {gap}");
                assert!(report.skipped.is_empty(), "gap {gap}: {report:?}");
                let b = &rec.batches[0];
                let batch = wal
                    .read_batch(b.segment, b.position, b.header.length)
                    .await
                    .unwrap();
                assert_batch_holds(&batch, 0, &first);
            });
        }
    }
}
