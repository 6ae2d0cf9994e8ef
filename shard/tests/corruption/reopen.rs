//! A shard written and abandoned without close, then reopened in a
//! recovery mode: what it was given, what the reopen served or reported as
//! damaged, and the checks of both against the batches on disk.

use std::{collections::BTreeMap, path::Path};

use corelog_shard::{Error, FsyncPolicy, Record, RecoveryMode, RecoveryReport, Shard, ShardConfig};

use crate::{
    common::{records_for, run},
    layout::Located,
};

const PARTITIONS: u64 = 4;
const BATCHES: u64 = 240;

pub(crate) fn config(dir: &Path, mode: RecoveryMode) -> ShardConfig {
    let mut c = ShardConfig::new(dir);
    c.fsync = FsyncPolicy::Always;
    c.segment_bytes = 64 << 10;
    c.max_record_bytes = 8 << 10;
    c.max_batch_bytes = 16 << 10;
    c.max_write_bytes = 32 << 10;
    c.recovery = mode;
    c
}

/// What the shard was given: every partition's records by offset.
pub(crate) type Expected = BTreeMap<u64, Vec<Record>>;

/// Per partition, the offsets a reopened shard served and those it
/// reported as damaged.
pub(crate) type Seen = BTreeMap<u64, (Vec<u64>, Vec<u64>)>;

/// Appends `BATCHES` batches round-robin over the partitions, then drops
/// the shard without closing it.
pub(crate) fn setup(dir: &Path, shard_id: u32) -> Expected {
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

/// Opens the shard in `mode`, reads every offset of every partition one
/// by one, and returns the report and, per partition, which offsets were
/// served and which reported damage. Served records must equal what was
/// appended.
pub(crate) fn reopen(
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
pub(crate) fn assert_lost_exactly(seen: &Seen, lost: &[Located], expected: &Expected) {
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

/// Checks that exactly the offsets of `kept` were served, all of them.
pub(crate) fn assert_served_exactly(seen: &Seen, kept: &[Located]) {
    let want = offsets_of(kept);
    for (p, (served, damaged)) in seen {
        assert!(damaged.is_empty(), "partition {p}: damaged {damaged:?}");
        let want = want.get(p).cloned().unwrap_or_default();
        assert_eq!(served, &want, "partition {p}");
    }
}

pub(crate) fn assert_refused(
    result: Result<impl std::fmt::Debug, Error>,
    file: &Path,
    position: u64,
) {
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
pub(crate) fn tail_damage(mode: RecoveryMode, report: &RecoveryReport) -> corelog_shard::Damage {
    match mode {
        RecoveryMode::TolerateTornTail => report.torn_tail.clone().expect("a cut"),
        _ => report.skipped[0].clone(),
    }
}
