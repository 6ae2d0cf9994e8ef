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

use std::{
    collections::BTreeMap,
    fs::OpenOptions,
    io::{Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use common::{records_for, run, test_dir};
use corelog_shard::{
    internals::peek_header, Error, FsyncPolicy, Record, RecoveryMode, RecoveryReport, Shard,
    ShardConfig,
};

const PARTITIONS: u64 = 4;
const BATCHES: u64 = 240;

fn config(dir: &Path, mode: RecoveryMode) -> ShardConfig {
    let mut c = ShardConfig::new(dir);
    c.fsync = FsyncPolicy::Always;
    c.segment_bytes = 64 << 10;
    c.max_record_bytes = 8 << 10;
    c.max_batch_bytes = 16 << 10;
    c.max_write_bytes = 32 << 10;
    c.recovery = mode;
    c
}

/// A batch found in a segment file: its position, partition, offsets.
#[derive(Debug, Clone, Copy)]
struct Located {
    position: u64,
    length: u64,
    partition: u64,
    base: u64,
    end: u64,
}

/// What the shard was given: every partition's records by offset.
type Expected = BTreeMap<u64, Vec<Record>>;

/// Per partition, the offsets a reopened shard served and those it
/// reported as damaged.
type Seen = BTreeMap<u64, (Vec<u64>, Vec<u64>)>;

/// Appends `BATCHES` batches round-robin over the partitions, then drops
/// the shard without closing it.
fn setup(dir: &Path, shard_id: u32) -> Expected {
    let dir = dir.to_path_buf();
    run(move || async move {
        let mut c = config(&dir, RecoveryMode::TolerateTornTail);
        c.shard_id = shard_id;
        let (shard, _) = Shard::open(c).await.unwrap();
        let mut expected = Expected::new();
        for i in 0..BATCHES {
            let p = i % PARTITIONS;
            let records = records_for(i);
            let base = shard.append(p, &records).await.unwrap();
            let all = expected.entry(p).or_default();
            assert_eq!(base, all.len() as u64);
            all.extend(records);
        }
        expected
    })
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

/// The batches in a segment file, found by walking headers (independent
/// of the recovery code under test).
fn batches_in(path: &Path) -> Vec<Located> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 4096;
    while pos + 64 <= bytes.len() {
        match peek_header(&bytes[pos..]) {
            Some(h) if h.length >= 64 && h.flags == 0 => {
                out.push(Located {
                    position: pos as u64,
                    length: u64::from(h.length),
                    partition: h.partition,
                    base: h.base_offset,
                    end: h.end_offset(),
                });
                pos += h.length as usize;
            }
            _ => pos = (pos / 4096 + 1) * 4096,
        }
    }
    out
}

fn overwrite(path: &Path, at: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// Opens the shard in `mode`, reads every offset of every partition one
/// by one, and returns the report and, per partition, which offsets were
/// served and which reported damage. Served records must equal what was
/// appended.
fn reopen(
    dir: &Path,
    mode: RecoveryMode,
    expected: &Expected,
) -> Result<(RecoveryReport, Seen), Error> {
    let dir = dir.to_path_buf();
    let expected = expected.clone();
    run(move || async move {
        let (shard, report) = Shard::open(config(&dir, mode)).await?;
        let mut seen = BTreeMap::new();
        for (&p, records) in &expected {
            let o = shard.offsets(p);
            let (mut served, mut damaged) = (Vec::new(), Vec::new());
            for offset in o.start..o.end {
                match shard.read(p, offset, 1).await {
                    Ok(got) => {
                        let r = &got[0];
                        assert_eq!(r.offset(), offset);
                        assert_eq!(r.value(), records[offset as usize].value());
                        assert_eq!(r.key(), records[offset as usize].key());
                        served.push(offset);
                    }
                    Err(Error::Corrupted { path, .. }) => {
                        assert!(path.starts_with(&dir), "{path:?}");
                        damaged.push(offset);
                    }
                    Err(e) => panic!("partition {p} offset {offset}: {e}"),
                }
            }
            seen.insert(p, (served, damaged));
        }
        // The log goes on after recovery.
        let base = shard.append(0, &records_for(9_999)).await?;
        assert_eq!(base, shard.offsets(0).end - records_for(9_999).len() as u64);
        shard.close().await?;
        Ok((report, seen))
    })
}

/// Checks that reading every offset reported damage for exactly the
/// offsets of `lost` and served all the others.
fn assert_lost_exactly(seen: &Seen, lost: &[Located], expected: &Expected) {
    for (p, (served, damaged)) in seen {
        let gone: u64 = lost
            .iter()
            .filter(|b| b.partition == *p)
            .map(|b| b.end - b.base)
            .sum();
        assert_eq!(damaged.len() as u64, gone, "partition {p}");
        assert_eq!(served.len() as u64 + gone, expected[p].len() as u64);
    }
}

/// Offsets of each partition held by `batches`.
fn offsets_of(batches: &[Located]) -> BTreeMap<u64, Vec<u64>> {
    let mut m: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for b in batches {
        m.entry(b.partition).or_default().extend(b.base..b.end);
    }
    m
}

/// All batches of the shard in log order.
fn all_batches(dir: &Path) -> Vec<Located> {
    segments(dir).iter().flat_map(|s| batches_in(s)).collect()
}

/// Checks that exactly the offsets of `kept` were served, all of them.
fn assert_served_exactly(seen: &Seen, kept: &[Located]) {
    let want = offsets_of(kept);
    for (p, (served, damaged)) in seen {
        assert!(damaged.is_empty(), "partition {p}: damaged {damaged:?}");
        let want = want.get(p).cloned().unwrap_or_default();
        assert_eq!(served, &want, "partition {p}");
    }
}

fn assert_refused(result: Result<impl std::fmt::Debug, Error>, file: &Path, position: u64) {
    match result {
        Err(Error::Corrupted {
            path,
            position: at,
            reason,
        }) => {
            assert_eq!(path, file, "{reason}");
            assert_eq!(at, position, "{reason}");
        }
        other => panic!("expected a refusal naming {file:?} at {position}, got {other:?}"),
    }
}

/// The damage a reopen in `mode` reported at the tail: cut under
/// tolerate-torn-tail, skipped under tolerate-any.
fn tail_damage(mode: RecoveryMode, report: &RecoveryReport) -> corelog_shard::Damage {
    match mode {
        RecoveryMode::TolerateTornTail => report.torn_tail.clone().expect("a cut"),
        _ => report.skipped[0].clone(),
    }
}

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
        let hit = in_last[in_last.len() / 2];
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
                assert_eq!(report.skipped.len(), 1, "{report:?}");
                assert_eq!(report.skipped[0].position, hit.position);
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
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(hit.position + hit.length / 2).unwrap();
        f.sync_all().unwrap();
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

/// Batches of the segments before `last`.
fn segments_before(dir: &Path, last: &Path) -> Vec<Located> {
    segments(dir)
        .iter()
        .filter(|s| s.as_path() < last)
        .flat_map(|s| batches_in(s))
        .collect()
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
        let f = OpenOptions::new().write(true).open(&victim).unwrap();
        f.set_len(hit.position + hit.length / 2).unwrap();
        f.sync_all().unwrap();
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
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(cut.position).unwrap();
        f.sync_all().unwrap();
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
        let f = OpenOptions::new().write(true).open(&victim).unwrap();
        f.set_len(cut.position).unwrap();
        f.sync_all().unwrap();
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
