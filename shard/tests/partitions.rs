//! Partition logs through the shard's public API: offsets, reads from the
//! memtable and from disk, delete-before, truncate, reopen.

mod common;

use std::collections::BTreeMap;

use common::{run, small_config, test_dir};
use corelog_shard::{Error, FsyncPolicy, Offsets, Record, Shard, ShardConfig};

fn config(dir: &std::path::Path) -> ShardConfig {
    let mut c = small_config(dir, FsyncPolicy::Always);
    c.memtable_bytes = 16 << 10;
    c
}

/// The value of record `offset` of `partition`.
fn value(partition: u64, offset: u64) -> Vec<u8> {
    let len = ((partition * 31 + offset * 7) % 200) as usize;
    let mut v = format!("p{partition}-o{offset}-").into_bytes();
    v.resize(v.len() + len, (offset % 251) as u8);
    v
}

fn records(partition: u64, from: u64, n: u64) -> Vec<Record> {
    (from..from + n)
        .map(|o| Record::new(value(partition, o)).with_key(format!("k{o}")))
        .collect()
}

async fn assert_reads_back(shard: &Shard, partition: u64, from: u64, end: u64) {
    let got = shard.read_range(partition, from, end).await.unwrap();
    assert_eq!(got.len() as u64, end - from, "partition {partition}");
    for (i, r) in got.iter().enumerate() {
        let o = from + i as u64;
        assert_eq!(r.offset(), o);
        assert_eq!(
            r.value(),
            value(partition, o),
            "partition {partition} offset {o}"
        );
        assert_eq!(r.key(), Some(format!("k{o}").as_bytes()));
    }
}

#[test]
fn interleaved_partitions_read_back_from_memory_disk_and_after_reopen() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        let mut ends = BTreeMap::new();
        for i in 0..300u64 {
            let p = (i * 7) % 13;
            let end = ends.entry(p).or_insert(0u64);
            let n = 1 + i % 4;
            let base = shard.append(p, &records(p, *end, n)).await.unwrap();
            assert_eq!(base, *end, "dense offsets");
            *end += n;
        }
        let s = shard.stats();
        assert!(s.rolls >= 2, "{s:?}");
        assert!(s.memtable_bytes <= 16 << 10, "memtable over budget: {s:?}");
        // The tail is in memory: reading it does no I/O.
        let (&p, &end) = ends.iter().next().unwrap();
        let before = shard.stats().batch_reads;
        let tail = shard.read(p, end - 1, 1 << 20).await.unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(shard.stats().batch_reads, before, "tail read went to disk");
        // Old records were evicted: they come from disk, verified.
        for (&p, &end) in &ends {
            assert_reads_back(&shard, p, 0, end).await;
            let o = shard.offsets(p);
            assert_eq!(
                o,
                Offsets {
                    start: 0,
                    end,
                    durable_end: end
                }
            );
        }
        assert!(shard.stats().batch_reads > before);
        shard.close().await.unwrap();

        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        for (&p, &end) in &ends {
            assert_eq!(shard.offsets(p).end, end);
            assert_reads_back(&shard, p, 0, end).await;
            // Appends continue where they stopped.
            assert_eq!(shard.append(p, &records(p, end, 1)).await.unwrap(), end);
        }
        assert_eq!(
            shard.offsets(999),
            Offsets::default(),
            "a partition never seen"
        );
        shard.close().await.unwrap();
    });
}

#[test]
fn max_bytes_and_range_rules() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        shard
            .append(
                1,
                &[Record::new(vec![1u8; 100]), Record::new(vec![2u8; 100])],
            )
            .await
            .unwrap();
        shard
            .append(1, &[Record::new(vec![3u8; 5000])])
            .await
            .unwrap();
        shard
            .append(1, &[Record::new(vec![4u8; 10])])
            .await
            .unwrap();
        // Trimmed to the first requested record, then up to max_bytes.
        let r = shard.read(1, 1, 150).await.unwrap();
        assert_eq!(r.iter().map(|r| r.offset()).collect::<Vec<_>>(), vec![1]);
        // One record larger than max_bytes still comes back alone.
        let r = shard.read(1, 2, 10).await.unwrap();
        assert_eq!((r.len(), r[0].value().len()), (1, 5000));
        let r = shard.read(1, 0, 1 << 20).await.unwrap();
        assert_eq!(r.len(), 4);
        // At the end: empty. Past it, or below the start: out of range.
        assert!(shard.read(1, 4, 100).await.unwrap().is_empty());
        let err = shard.read(1, 5, 100).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::OffsetOutOfRange {
                    partition: 1,
                    offset: 5,
                    start: 0,
                    end: 4
                }
            ),
            "{err}"
        );
        assert!(shard.read(2, 0, 100).await.unwrap().is_empty());
        assert!(matches!(
            shard.read(2, 1, 100).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert_eq!(shard.read_range(1, 1, 3).await.unwrap().len(), 2);
        assert!(matches!(
            shard.read_range(1, 3, 9).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
        shard.close().await.unwrap();
    });
}

#[test]
fn delete_before_survives_reopen_and_frees_segments() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        let mut end = 0;
        for _ in 0..200 {
            shard.append(3, &records(3, end, 2)).await.unwrap();
            shard.append(4, &records(4, end, 2)).await.unwrap();
            end += 2;
        }
        let segments_before = shard.wal().segments();
        assert!(segments_before.len() >= 4, "{segments_before:?}");
        let first = segments_before[0];
        let first_path = shard.wal().segment_path(first);
        shard.delete_before(3, 300).await.unwrap();
        // Partition 4 still needs the old segments.
        assert!(first_path.exists());
        shard.delete_before(4, 300).await.unwrap();
        assert!(!first_path.exists(), "segment {first} should be gone");
        assert!(shard.wal().segments().len() < segments_before.len());
        assert!(matches!(
            shard.read(3, 299, 10).await,
            Err(Error::OffsetOutOfRange { start: 300, .. })
        ));
        assert_reads_back(&shard, 3, 300, end).await;
        assert!(matches!(
            shard.delete_before(3, end + 1).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
        drop(shard); // a crash: no clean close

        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        for p in [3, 4] {
            assert_eq!(
                shard.offsets(p),
                Offsets {
                    start: 300,
                    end,
                    durable_end: end
                }
            );
            assert_reads_back(&shard, p, 300, end).await;
        }
        // Everything deleted: the offsets are still not reused.
        shard.delete_before(3, end).await.unwrap();
        shard.delete_before(4, end).await.unwrap();
        shard.close().await.unwrap();
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        assert_eq!(
            shard.offsets(3),
            Offsets {
                start: end,
                end,
                durable_end: end
            }
        );
        assert_eq!(shard.append(3, &records(3, end, 1)).await.unwrap(), end);
        shard.close().await.unwrap();
    });
}

#[test]
fn truncate_survives_reopen_and_appends_continue() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        shard.append(7, &records(7, 0, 5)).await.unwrap();
        shard.append(7, &records(7, 5, 5)).await.unwrap();
        // Cut in the middle of the second batch.
        shard.truncate(7, 7).await.unwrap();
        assert_eq!(shard.offsets(7).end, 7);
        assert_reads_back(&shard, 7, 0, 7).await;
        // New records at 7.. differ from the old ones.
        let fresh = [
            Record::new(b"new-7".to_vec()),
            Record::new(b"new-8".to_vec()),
        ];
        assert_eq!(shard.append(7, &fresh).await.unwrap(), 7);
        let check = |r: Vec<corelog_shard::StoredRecord>| {
            assert_eq!(r.len(), 9);
            assert_eq!(r[6].value(), value(7, 6));
            assert_eq!(r[7].value(), b"new-7");
            assert_eq!(r[8].value(), b"new-8");
        };
        check(shard.read_range(7, 0, 9).await.unwrap());
        assert!(matches!(
            shard.truncate(7, 10).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
        drop(shard);

        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.offsets(7).end, 9);
        check(shard.read_range(7, 0, 9).await.unwrap());
        // And from disk only, with an empty memtable after reopen.
        check(shard.read(7, 0, 1 << 20).await.unwrap());
        assert_eq!(shard.append(7, &records(7, 9, 1)).await.unwrap(), 9);
        shard.close().await.unwrap();
    });
}

/// The seed's defect: a read on a reopened segment moved the file position
/// and the next append overwrote a record.
#[test]
fn reads_after_reopen_do_not_disturb_appends() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        shard.append(1, &records(1, 0, 3)).await.unwrap();
        shard.close().await.unwrap();
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        assert_reads_back(&shard, 1, 0, 3).await;
        shard.append(1, &records(1, 3, 3)).await.unwrap();
        assert_reads_back(&shard, 1, 0, 6).await;
        shard.close().await.unwrap();
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        assert_reads_back(&shard, 1, 0, 6).await;
        shard.close().await.unwrap();
    });
}

#[test]
fn sidecars_spare_the_scan_and_are_rebuilt_when_missing_or_damaged() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        for i in 0..150 {
            shard
                .append(i % 3, &records(i % 3, i / 3, 1))
                .await
                .unwrap();
        }
        let segments = shard.wal().segments();
        assert!(segments.len() >= 3, "{segments:?}");
        shard.close().await.unwrap();

        // Clean close: every segment has a sidecar, nothing is scanned.
        let (shard, report) = Shard::open(config(&path)).await.unwrap();
        assert!(report.clean_shutdown);
        assert_eq!(report.sidecars_loaded, segments.len());
        assert_eq!(report.bytes_scanned, 0);
        assert_eq!(shard.offsets(1).end, 50);
        drop(shard); // a crash

        // Crash: sealed segments come from sidecars, the last is scanned.
        let (shard, report) = Shard::open(config(&path)).await.unwrap();
        assert!(!report.clean_shutdown);
        assert_eq!(report.sidecars_loaded, segments.len() - 1);
        assert!(report.bytes_scanned > 0);
        drop(shard);

        // One sidecar deleted, another garbled: both rebuilt by scanning.
        let idx = |s: u64| path.join(format!("{s:020}.idx"));
        std::fs::remove_file(idx(segments[0])).unwrap();
        let mut garbled = std::fs::read(idx(segments[1])).unwrap();
        garbled[40] ^= 0xFF;
        std::fs::write(idx(segments[1]), &garbled).unwrap();
        let (shard, report) = Shard::open(config(&path)).await.unwrap();
        assert_eq!(report.sidecars_rebuilt, 2);
        for p in 0..3 {
            assert_reads_back(&shard, p, 0, 50).await;
        }
        drop(shard);
        let (_, report) = Shard::open(config(&path)).await.unwrap();
        assert_eq!(report.sidecars_rebuilt, 0, "the rebuilt sidecars are used");
    });
}

#[test]
fn retention_by_bytes_and_by_age_drops_the_oldest_segments() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut c = config(&path);
        c.retention_bytes = Some(3 * c.segment_bytes);
        let (shard, _) = Shard::open(c.clone()).await.unwrap();
        for i in 0..600u64 {
            shard
                .append(i % 2, &records(i % 2, i / 2, 1))
                .await
                .unwrap();
        }
        let segments = shard.wal().segments();
        assert!(segments.len() <= 4, "retention kept {segments:?}");
        assert!(segments[0] > 1, "the oldest segments are gone");
        for p in 0..2 {
            let o = shard.offsets(p);
            assert!(o.start > 0 && o.end == 300, "{o:?}");
            assert!(matches!(
                shard.read(p, o.start - 1, 10).await,
                Err(Error::OffsetOutOfRange { .. })
            ));
            assert_reads_back(&shard, p, o.start, o.end).await;
        }
        let starts = [shard.offsets(0).start, shard.offsets(1).start];
        drop(shard);
        let (shard, _) = Shard::open(c).await.unwrap();
        assert_eq!([shard.offsets(0).start, shard.offsets(1).start], starts);
        shard.close().await.unwrap();
    });

    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut c = config(&path);
        c.retention_age = Some(std::time::Duration::from_secs(3600));
        let (shard, _) = Shard::open(c.clone()).await.unwrap();
        let day_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
            - 86_400_000;
        // Old records fill the first segments, then fresh ones follow.
        for i in 0..200u64 {
            let r = Record::new(value(5, i))
                .with_key(format!("k{i}"))
                .with_timestamp(day_ago);
            shard.append(5, &[r]).await.unwrap();
        }
        let old_end = 200;
        for i in 0..200u64 {
            shard.append(5, &records(5, old_end + i, 1)).await.unwrap();
        }
        shard.enforce_retention().await.unwrap();
        let o = shard.offsets(5);
        assert!(o.start > 0 && o.start <= old_end, "{o:?}");
        assert_reads_back(&shard, 5, old_end, o.end).await;
        shard.close().await.unwrap();
    });
}

/// A crash inside a roll, after the prepared segment was renamed into place
/// but before its header was written, leaves an all-zero last segment.
/// Recovery drops it; appends must go on in the last good segment and later
/// rolls must never reuse a sequence that holds data.
#[test]
fn crash_between_rename_and_header_of_a_new_segment() {
    // The same in tolerate-any mode: a torn creation is not damage, and a
    // stricter mode opens the directory afterwards.
    for salvage in [false, true] {
        let dir = test_dir();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let (shard, _) = Shard::open(config(&path)).await.unwrap();
            for i in 0..150u64 {
                shard.append(1, &records(1, i, 1)).await.unwrap();
            }
            let segments = shard.wal().segments();
            let next = segments.last().unwrap() + 1;
            let size = shard.config().segment_bytes as usize;
            drop(shard);
            std::fs::write(shard_path(&path, next), vec![0u8; size]).unwrap();

            let mut c = config(&path);
            if salvage {
                c.recovery = corelog_shard::RecoveryMode::TolerateAnyCorruption;
            }
            let (shard, report) = Shard::open(c).await.unwrap();
            assert!(report.torn_tail.is_some(), "the empty segment is reported");
            assert!(report.skipped.is_empty(), "{report:?}");
            assert_eq!(shard.offsets(1).end, 150);
            for i in 150..400u64 {
                shard.append(1, &records(1, i, 1)).await.unwrap();
            }
            assert_reads_back(&shard, 1, 0, 400).await;
            drop(shard);
            let (shard, _) = Shard::open(config(&path)).await.unwrap();
            assert_reads_back(&shard, 1, 0, 400).await;
            shard.close().await.unwrap();
        });
    }
}

fn shard_path(dir: &std::path::Path, sequence: u64) -> std::path::PathBuf {
    corelog_shard::internals::segment_path(dir, sequence)
}

/// Regression (from review): a partition truncated without its offsets
/// being read in between, then a checkpoint written because another
/// partition's segments were deleted, then a crash. The checkpoint must
/// hold the truncated partition's real end, and its records survive.
#[test]
fn a_checkpoint_after_a_truncation_keeps_the_truncated_partition() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        // Partition 2 fills the first segments.
        let mut end2 = 0;
        while shard.wal().segments().len() < 4 {
            shard.append(2, &records(2, end2, 4)).await.unwrap();
            end2 += 4;
        }
        // Partition 1 lives only in the newest segment: one batch, cut in
        // the middle.
        shard.append(1, &records(1, 0, 10)).await.unwrap();
        shard.truncate(1, 5).await.unwrap();
        let before = shard.wal().segments();
        shard.delete_before(2, end2).await.unwrap();
        assert!(
            shard.wal().segments().len() < before.len(),
            "no segment was deleted, so no checkpoint was written"
        );
        drop(shard); // a crash
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        assert_eq!((shard.offsets(1).start, shard.offsets(1).end), (0, 5));
        assert_reads_back(&shard, 1, 0, 5).await;
        assert_eq!(shard.append(1, &records(1, 5, 1)).await.unwrap(), 5);
        assert_eq!(shard.offsets(2).start, end2);
        shard.close().await.unwrap();
    });
}

/// A follower's fetch hands out acknowledged records only: an append still
/// in its commit may be read back by `read`, but not fetched.
#[test]
fn fetch_returns_only_acknowledged_records() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        let wait = std::time::Duration::from_secs(10);
        let follower = glommio::spawn_local({
            let shard = shard.clone();
            async move {
                let got = shard.fetch(1, 0, 1 << 20, wait).await;
                (got, shard.offsets(1).end) // acknowledged when it returned
            }
        });
        let first = glommio::spawn_local({
            let shard = shard.clone();
            async move { shard.append(1, &records(1, 0, 2)).await }
        });
        // Once the first append's commit is issued, the second one goes to the next.
        while shard.stats().writes == 0 {
            futures_lite::future::yield_now().await;
        }
        let second = glommio::spawn_local({
            let shard = shard.clone();
            async move { shard.append(1, &records(1, 2, 3)).await }
        });
        let (got, acknowledged) = follower.await;
        let offsets: Vec<u64> = got.unwrap().iter().map(|r| r.offset()).collect();
        assert!(
            offsets == [0, 1] || offsets == [0, 1, 2, 3, 4],
            "whole appends, in order: {offsets:?}"
        );
        assert!(
            offsets.len() as u64 <= acknowledged,
            "fetched {offsets:?} with only {acknowledged} acknowledged"
        );
        assert_eq!(first.await.unwrap(), 0);
        assert_eq!(second.await.unwrap(), 2);
        let got = shard.fetch(1, 2, 1 << 20, wait).await.unwrap();
        assert_eq!(got.len(), 3);
        // Nothing past the end arrives: empty after the timeout.
        let short = std::time::Duration::from_millis(20);
        assert!(shard.fetch(1, 5, 1 << 20, short).await.unwrap().is_empty());
        assert!(matches!(
            shard.fetch(1, 6, 1 << 20, short).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
        shard.close().await.unwrap();
    });
}

/// Read committed: a record whose append is in the log but not yet
/// acknowledged (its commit may still fail) is served by no read, and the
/// offsets' end is the acknowledged end.
#[test]
fn reads_and_offsets_serve_acknowledged_records_only() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        shard.append(4, &records(4, 0, 2)).await.unwrap();
        // Submitted, in the memtable and the index, but not committed: no
        // await has let the commit task run.
        let submitted = shard.submit(4, &records(4, 2, 3)).await.unwrap();
        assert_eq!(submitted.base_offset, 2);
        let o = shard.offsets(4);
        assert_eq!((o.start, o.end), (0, 2), "{o:?}");
        assert!(o.durable_end <= o.end);
        let got = shard.read(4, 0, 1 << 20).await.unwrap();
        assert_eq!(got.iter().map(|r| r.offset()).collect::<Vec<_>>(), [0, 1]);
        assert!(shard.read(4, 2, 1 << 20).await.unwrap().is_empty());
        assert!(matches!(
            shard.read(4, 3, 1 << 20).await,
            Err(Error::OffsetOutOfRange { end: 2, .. })
        ));
        assert!(matches!(
            shard.read_range(4, 0, 5).await,
            Err(Error::OffsetOutOfRange { end: 2, .. })
        ));
        shard.wait_committed(submitted.group).await.unwrap();
        shard.acknowledge(&submitted);
        assert_eq!(shard.offsets(4).end, 5);
        assert_reads_back(&shard, 4, 0, 5).await;
        assert_eq!(
            shard.offsets(4).durable_end,
            5,
            "Always: durable once acknowledged"
        );
        shard.close().await.unwrap();
    });
}

/// Long polls and no-op control calls on partitions that were never
/// written leave nothing on disk: the checkpoint lists written partitions
/// only.
#[test]
fn partitions_never_written_are_not_checkpointed() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        for i in 0..200u32 {
            let value = vec![(i % 251) as u8; 1000];
            shard.append(1, &[Record::new(value)]).await.unwrap();
        }
        assert!(
            !shard
                .wait_for(999, 0, std::time::Duration::from_millis(1))
                .await
        );
        shard.truncate(998, 0).await.unwrap();
        shard.delete_before(997, 0).await.unwrap();
        // Deletes the oldest segments, after a checkpoint.
        shard.delete_before(1, 190).await.unwrap();
        let bytes = std::fs::read(path.join("partitions.ckpt")).unwrap();
        let count = u64::from_le_bytes(bytes[24..32].try_into().unwrap());
        assert_eq!(count, 1, "only partition 1 was written");
        shard.close().await.unwrap();
    });
}
