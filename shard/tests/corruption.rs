//! Damage injected into real segment and sidecar files, then a reopen in
//! each recovery mode:
//! - tolerate-torn-tail keeps exactly the batches before damage at the
//!   tail, reports the cut, and refuses damage to data already synced;
//! - absolute consistency refuses any damage, naming file and position;
//! - tolerate-any skips each damaged batch, reports it, serves the rest.
//!
//! The shard under test was abandoned without close (a crash), so its last
//! segment is scanned on open; sealed segments have sidecars.

mod common;
#[path = "corruption/layout.rs"]
mod layout;
#[path = "corruption/reopen.rs"]
mod reopen;

use common::{records_for, run, test_dir};
use corelog_shard::{Error, RecoveryMode, Shard};
use layout::{all_batches, batches_in, cut, overwrite, segments, segments_before, Located};
use reopen::{
    assert_lost_exactly, assert_refused, assert_served_exactly, config, reopen, setup, tail_damage,
};

const MODES: [RecoveryMode; 3] = [
    RecoveryMode::TolerateTornTail,
    RecoveryMode::AbsoluteConsistency,
    RecoveryMode::TolerateAnyCorruption,
];

#[test]
fn random_bytes_appended_after_the_tail() {
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let last = segments(dir.path()).pop().unwrap();
        let batches = all_batches(dir.path());
        let tail = batches.last().unwrap();
        let end = tail.position + tail.length;
        let garbage: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 1) as u8 | 1).collect();
        overwrite(&last, end, &garbage);
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            RecoveryMode::AbsoluteConsistency => assert_refused(result, &last, end),
            _ => {
                let (report, seen) = result.unwrap();
                let damage = tail_damage(mode, &report);
                assert_eq!((damage.path, damage.position), (last.clone(), end));
                assert_served_exactly(&seen, &batches);
            }
        }
    }
}

#[test]
fn bytes_overwritten_in_the_middle_of_the_last_segment() {
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let last = segments(dir.path()).pop().unwrap();
        let in_last = batches_in(&last);
        // The middle one of the batches that are not their partition's
        // last, so that losing it leaves a hole.
        let leave_holes: Vec<_> = in_last
            .iter()
            .copied()
            .filter(|b| {
                in_last
                    .iter()
                    .any(|l| l.partition == b.partition && l.base > b.base)
            })
            .collect();
        let hit = leave_holes[leave_holes.len() / 2];
        overwrite(&last, hit.position + 40, &[0xEE; 16]);
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            // Later batches were appended after this one was synced: the
            // damage is corruption, not a torn write, and cutting there
            // would drop acknowledged data.
            RecoveryMode::TolerateTornTail | RecoveryMode::AbsoluteConsistency => {
                assert_refused(result, &last, hit.position)
            }
            _ => {
                let (report, seen) = result.unwrap();
                // The damaged batch, then the hole it leaves in its
                // partition's offsets.
                assert_eq!(report.skipped.len(), 2, "{report:?}");
                assert_eq!(report.skipped[0].position, hit.position);
                let hole = format!(
                    "partition {} after replay: offsets [{}, {}) are in no batch",
                    hit.partition, hit.base, hit.end
                );
                assert_eq!(report.skipped[1].reason, hole);
                for (p, (served, damaged)) in &seen {
                    if *p == hit.partition {
                        assert_eq!(damaged, &(hit.base..hit.end).collect::<Vec<_>>());
                        assert_eq!(
                            served.len() as u64,
                            expected[p].len() as u64 - (hit.end - hit.base)
                        );
                    } else {
                        assert!(damaged.is_empty());
                        assert_eq!(served.len(), expected[p].len());
                    }
                }
            }
        }
    }
}

#[test]
fn bytes_overwritten_in_a_sealed_segment_are_reported_on_read() {
    // A sealed segment's sidecar spares the scan, so the damage is found
    // by the checksum of the read, in every mode, and never served.
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let first = segments(dir.path())[0].clone();
        let hit = batches_in(&first)[3];
        overwrite(&first, hit.position + 40, &[0xEE; 16]);
        let (_, seen) = reopen(dir.path(), mode, &expected).unwrap();
        let (served, damaged) = &seen[&hit.partition];
        assert_eq!(damaged, &(hit.base..hit.end).collect::<Vec<_>>());
        assert_eq!(
            served.len() as u64,
            expected[&hit.partition].len() as u64 - (hit.end - hit.base)
        );
    }
}

#[test]
fn a_segment_truncated_inside_a_batch() {
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let last = segments(dir.path()).pop().unwrap();
        let in_last = batches_in(&last);
        let hit = in_last[in_last.len() / 2];
        cut(&last, hit.position + hit.length / 2);
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            RecoveryMode::AbsoluteConsistency => assert_refused(result, &last, hit.position),
            _ => {
                let (report, seen) = result.unwrap();
                let damage = tail_damage(mode, &report);
                assert_eq!((damage.path, damage.position), (last.clone(), hit.position));
                let before: Vec<Located> = segments_before(dir.path(), &last)
                    .into_iter()
                    .chain(
                        in_last
                            .iter()
                            .copied()
                            .filter(|b| b.position < hit.position),
                    )
                    .collect();
                assert_served_exactly(&seen, &before);
            }
        }
    }
}

#[test]
fn a_sealed_segment_truncated_is_scanned_despite_its_sidecar() {
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let segs = segments(dir.path());
        let victim = segs[1].clone();
        let in_victim = batches_in(&victim);
        let hit = in_victim[in_victim.len() / 2];
        cut(&victim, hit.position + hit.length / 2);
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            RecoveryMode::TolerateAnyCorruption => {
                let (report, seen) = result.unwrap();
                assert_eq!(report.skipped[0].path, victim);
                assert_eq!(report.skipped[0].position, hit.position);
                // The rest of the segment is gone; every other batch stays.
                let lost: Vec<Located> = in_victim
                    .iter()
                    .copied()
                    .filter(|b| b.position >= hit.position)
                    .collect();
                assert_lost_exactly(&seen, &lost, &expected);
            }
            // Damage before the last segment is never a torn tail.
            _ => assert_refused(result, &victim, hit.position),
        }
    }
}

#[test]
fn sidecars_deleted_or_garbled_are_rebuilt_in_every_mode() {
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let segs = segments(dir.path());
        assert!(segs.len() >= 4, "{segs:?}");
        std::fs::remove_file(segs[0].with_extension("idx")).unwrap();
        overwrite(&segs[1].with_extension("idx"), 100, &[0x55; 64]);
        let batches = all_batches(dir.path());
        let (report, seen) = reopen(dir.path(), mode, &expected).unwrap();
        assert_eq!(report.sidecars_rebuilt, 2, "{report:?}");
        assert_served_exactly(&seen, &batches);
    }
}

#[test]
fn a_segment_from_another_shard_copied_in() {
    let other = test_dir();
    setup(other.path(), 1);
    let foreign = segments(other.path())[0].clone();
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let ours = all_batches(dir.path());
        // Copied in as the next segment of this shard.
        let last = segments(dir.path()).pop().unwrap();
        let seq: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let copied = dir.path().join(format!("{:020}.wal", seq + 1));
        std::fs::copy(&foreign, &copied).unwrap();
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            RecoveryMode::TolerateAnyCorruption => {
                let (report, seen) = result.unwrap();
                assert!(
                    report
                        .skipped
                        .iter()
                        .any(|d| d.path == copied && d.position == 0),
                    "{report:?}"
                );
                assert_served_exactly(&seen, &ours);
                // The foreign file was left as found (appends went to a new
                // segment); the default mode opens the directory again.
                assert_eq!(
                    std::fs::read(&copied).unwrap(),
                    std::fs::read(&foreign).unwrap()
                );
                let mut after = expected.clone();
                after.get_mut(&0).unwrap().extend(records_for(9_999));
                let (_, seen) = reopen(dir.path(), RecoveryMode::TolerateTornTail, &after).unwrap();
                for (p, (served, damaged)) in &seen {
                    assert!(damaged.is_empty());
                    assert_eq!(served.len(), after[p].len());
                }
            }
            _ => assert_refused(result, &copied, 0),
        }
    }
}

#[test]
fn a_misdirected_write_is_caught_by_the_batch_position() {
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let last = segments(dir.path()).pop().unwrap();
        let aligned: Vec<Located> = batches_in(&last)
            .into_iter()
            .filter(|b| b.position % 4096 == 0)
            .collect();
        assert!(aligned.len() >= 3, "{aligned:?}");
        let (from, to) = (aligned[0].position, aligned[aligned.len() / 2].position);
        // The block written at `from` lands again at `to`: intact batches
        // in the wrong place.
        let bytes = std::fs::read(&last).unwrap();
        overwrite(&last, to, &bytes[from as usize..from as usize + 4096]);
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            RecoveryMode::TolerateAnyCorruption => {
                let (report, _) = result.unwrap();
                assert_eq!(report.skipped[0].position, to, "{report:?}");
                assert!(report.skipped[0].reason.contains("misdirected"));
            }
            _ => match result {
                Err(Error::Corrupted {
                    path,
                    position,
                    reason,
                }) => {
                    assert_eq!((path, position), (last.clone(), to));
                    assert!(reason.contains("misdirected"), "{reason}");
                }
                other => panic!("{other:?}"),
            },
        }
    }
}

#[test]
fn segments_cut_at_a_block_boundary_are_reported_not_silently_shortened() {
    for mode in MODES {
        // The last segment, cut where a commit group starts: every byte
        // left is valid, only the file's size tells.
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let last = segments(dir.path()).pop().unwrap();
        let in_last = batches_in(&last);
        let cut = in_last
            .iter()
            .filter(|b| b.position % 4096 == 0 && b.position > 4096)
            .nth(1)
            .copied()
            .expect("a group start");
        let kept: Vec<Located> = segments_before(dir.path(), &last)
            .into_iter()
            .chain(
                in_last
                    .iter()
                    .copied()
                    .filter(|b| b.position < cut.position),
            )
            .collect();
        layout::cut(&last, cut.position);
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            RecoveryMode::AbsoluteConsistency => assert_refused(result, &last, cut.position),
            _ => {
                let (report, seen) = result.unwrap();
                let damage = tail_damage(mode, &report);
                assert_eq!((damage.path, damage.position), (last.clone(), cut.position));
                assert!(damage.reason.contains("cut"), "{}", damage.reason);
                assert_served_exactly(&seen, &kept);
            }
        }

        // A sealed segment cut the same way is refused (or skipped).
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let victim = segments(dir.path())[2].clone();
        let cut = batches_in(&victim)
            .into_iter()
            .filter(|b| b.position % 4096 == 0 && b.position > 4096)
            .nth(1)
            .expect("a group start");
        layout::cut(&victim, cut.position);
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            RecoveryMode::TolerateAnyCorruption => {
                let (report, _) = result.unwrap();
                assert_eq!(report.skipped[0].path, victim);
                assert_eq!(report.skipped[0].position, cut.position);
            }
            _ => assert_refused(result, &victim, cut.position),
        }
    }
}

#[test]
fn a_missing_segment_is_refused_or_reported() {
    for mode in MODES {
        let dir = test_dir();
        let expected = setup(dir.path(), 0);
        let segs = segments(dir.path());
        let gone = segs[3].clone();
        let lost = batches_in(&gone);
        std::fs::remove_file(&gone).unwrap();
        std::fs::remove_file(gone.with_extension("idx")).unwrap();
        let result = reopen(dir.path(), mode, &expected);
        match mode {
            RecoveryMode::TolerateAnyCorruption => {
                let (report, seen) = result.unwrap();
                assert!(report.skipped.iter().any(|d| d.path == gone), "{report:?}");
                // Every batch elsewhere is served; the lost ones report
                // damage when read.
                assert_lost_exactly(&seen, &lost, &expected);
            }
            _ => assert_refused(result, &gone, 0),
        }
    }
}

/// Regression (found by review): tolerate-any zeroes all the garbage after
/// the tail it recovers, even past a second misdirected block, so a later
/// crash and a reopen in tolerate-torn-tail do not find stale batches there
/// and refuse the log.
#[test]
fn garbage_after_a_tolerated_tail_is_all_erased() {
    let dir = test_dir();
    setup(dir.path(), 0);
    let last = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let aligned: Vec<u64> = batches_in(&last)
        .iter()
        .map(|b| b.position)
        .filter(|p| p % 4096 == 0)
        .collect();
    // The log now ends at `end`, four blocks before the end of the file.
    let end = *aligned.iter().rfind(|&&p| p + 4 * 4096 <= len).unwrap();
    assert!(aligned.iter().filter(|&&p| p < end).count() >= 3);
    let bytes = std::fs::read(&last).unwrap();
    overwrite(&last, end, &vec![0u8; (len - end) as usize]);
    let block = |at: u64| bytes[at as usize..at as usize + 4096].to_vec();
    // Three earlier blocks land after it: two in a row, one more after a
    // block of zeros.
    overwrite(&last, end, &block(aligned[0]));
    overwrite(&last, end + 4096, &block(aligned[1]));
    overwrite(&last, end + 3 * 4096, &block(aligned[2]));
    let path = dir.path().to_path_buf();
    run(move || async move {
        let tolerant = config(&path, RecoveryMode::TolerateAnyCorruption);
        let (shard, report) = Shard::open(tolerant).await.unwrap();
        assert_eq!(report.skipped.len(), 1, "{report:?}");
        assert_eq!(report.skipped[0].position, end, "{report:?}");
        shard.append(0, &records_for(1)).await.unwrap();
        drop(shard); // a crash: the next open scans the tail again
        let strict = config(&path, RecoveryMode::TolerateTornTail);
        let (shard, report) = Shard::open(strict).await.unwrap();
        assert!(report.skipped.is_empty(), "{report:?}");
        assert_eq!(report.torn_tail, None, "{report:?}");
        shard.close().await.unwrap();
    });
}
