//! Replay: the partitions rebuilt from the recovered log, as a pure
//! function of what recovery found (the checkpoint, the surviving batches
//! and the operations of their control batches). No I/O happens here; what
//! is wrong is classified as a [`Finding`] and handled as [`decide`] says.

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
};

use crate::{
    config::RecoveryMode,
    error::{Error, Result},
    format::{
        batch::{RecoveredBatch, FLAG_CONTROL},
        checkpoint::Checkpoint,
        segment::segment_path,
    },
    partition::{index::IndexEntry, Control, ControlRecord, Partition, PartitionMap},
    recovery::{decide, Action, Damage, Finding, Orphan},
};

/// What replay starts from.
pub(crate) struct ReplayInput<'a> {
    /// The shard directory, to name segment files in errors.
    pub(crate) dir: &'a Path,
    /// The recovery mode the shard was opened with.
    pub(crate) mode: RecoveryMode,
    /// The partition checkpoint (empty when there is none).
    pub(crate) checkpoint: Checkpoint,
    /// Where the recovered log ends: (segment, position) of the next batch.
    pub(crate) log_end: (u64, u64),
    /// The segment appends continue in; writes in flight at a crash are
    /// all there.
    pub(crate) active_segment: u64,
    /// Every surviving batch, in log order.
    pub(crate) batches: &'a [RecoveredBatch],
    /// The record of every control batch at or past the checkpoint's log
    /// end, by (segment, position) (`None` when its value is empty), or why
    /// it could not be read: the error is raised only if replay applies
    /// that batch.
    pub(crate) controls: &'a HashMap<(u64, u64), Result<Option<ControlRecord>>>,
}

/// The partitions replay rebuilt, and what it reports.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Every partition named by the checkpoint or a batch.
    pub(crate) partitions: PartitionMap<Partition>,
    /// Newest record timestamp in each segment, for retention by age.
    pub(crate) segment_max_ts: BTreeMap<u64, i64>,
    /// Batches dropped because an earlier batch of their partition was
    /// lost in a crash.
    pub(crate) orphaned: Vec<Orphan>,
    /// Damage skipped under tolerate-any.
    pub(crate) skipped: Vec<Damage>,
}

/// Rebuilds the partitions from `input`.
pub(crate) fn replay(input: ReplayInput<'_>) -> Result<Replayed> {
    let ReplayInput {
        dir,
        mode,
        checkpoint,
        log_end,
        active_segment,
        batches,
        controls,
    } = input;
    let mut out = Replayed::default();
    // Everything before the checkpoint's log end was durable when it was
    // written: a recovered log ending before it lost synced data (a tail
    // cut for damage no later batch could prove).
    if log_end < checkpoint.log_end {
        let (segment, position) = checkpoint.log_end;
        let reason = format!(
            "the log ends at segment {} position {} but the partition checkpoint accounts for it up to segment {segment} position {position}",
            log_end.0, log_end.1
        );
        let path = segment_path(dir, segment);
        if decide(Finding::CheckpointAhead, mode) != Action::Skip {
            return Err(Error::corrupted(path, position, reason));
        }
        out.skipped.push(Damage {
            path,
            position,
            bytes: 0,
            reason,
        });
    }
    out.partitions = checkpoint
        .partitions
        .iter()
        .map(|(&p, &(start, end))| {
            let part = Partition {
                start,
                end,
                durable_end: end,
                meta: checkpoint.meta.get(&p).cloned().unwrap_or_default(),
                ..Partition::default()
            };
            (p, part)
        })
        .collect();
    for b in batches {
        let h = &b.header;
        let part = out.partitions.entry(h.partition).or_default();
        let entry = IndexEntry::new(
            h.base_offset,
            b.segment,
            b.position,
            h.length,
            h.record_count,
        );
        if (b.segment, b.position) < checkpoint.log_end {
            // The checkpoint's offsets account for this batch: it only
            // rebuilds the index. A later batch at the same offsets
            // replaces it (a truncation came in between).
            if h.flags & FLAG_CONTROL == 0
                && h.base_offset < part.end
                && h.end_offset() > part.start
            {
                part.index.truncate(h.base_offset);
                part.index.push(entry);
            }
            continue;
        }
        let control = (h.flags & FLAG_CONTROL != 0)
            .then(|| controls.get(&(b.segment, b.position)))
            .flatten();
        // A reset sets the offsets wherever it says: no gap before it.
        let reset = matches!(control, Some(Ok(Some(c))) if c.byte == Control::Reset.byte());
        // Invariant: a partition's offsets are dense. Writes in flight
        // complete in any order, so a crash can keep a batch and lose an
        // earlier one of its partition; the survivor was never acknowledged
        // as durable (the lost one was not).
        if h.base_offset > part.end && !reset {
            let finding = if b.segment == active_segment {
                Finding::Orphan
            } else {
                Finding::OffsetGap
            };
            match decide(finding, mode) {
                // Kept under tolerate-any: reading inside the gap reports it.
                Action::Keep => {}
                Action::Drop => {
                    out.orphaned.push(Orphan {
                        partition: h.partition,
                        base_offset: h.base_offset,
                        partition_end: part.end,
                        segment: b.segment,
                        position: b.position,
                    });
                    continue;
                }
                _ => {
                    return Err(Error::corrupted(
                        segment_path(dir, b.segment),
                        b.position,
                        format!(
                            "partition {} batch at offset {} follows the partition's end {}: an earlier batch is missing",
                            h.partition, h.base_offset, part.end
                        ),
                    ))
                }
            }
        }
        if h.flags & FLAG_CONTROL != 0 {
            let damage = match control {
                Some(Ok(record)) => match record
                    .as_ref()
                    .and_then(|c| Some((Control::from_byte(c.byte)?, c)))
                {
                    Some((op, c)) => {
                        op.apply(part, h.base_offset, &c.key, &c.arg);
                        continue;
                    }
                    None => Error::corrupted(
                        segment_path(dir, b.segment),
                        b.position,
                        format!(
                            "unknown control batch {:?}",
                            record.as_ref().map(|c| c.byte)
                        ),
                    ),
                },
                Some(Err(e)) => e.clone(),
                None => Error::corrupted(
                    segment_path(dir, b.segment),
                    b.position,
                    "control batch not read before replay",
                ),
            };
            if decide(Finding::DamagedControl, mode) != Action::Skip {
                return Err(damage);
            }
            // Salvage: the operation is lost; the data around it is served.
            out.skipped.push(Damage {
                path: segment_path(dir, b.segment),
                position: b.position,
                bytes: u64::from(h.length),
                reason: damage.to_string(),
            });
            continue;
        }
        part.end = part.end.max(h.end_offset());
        if h.end_offset() > part.start {
            // After a replayed truncation the index may hold batches at or
            // past this one from before it; they were dropped.
            part.index.truncate(h.base_offset);
            part.index.push(entry);
        }
    }
    for (&p, part) in out.partitions.iter_mut() {
        // An accounted batch may straddle the end a truncation set, or end
        // below a start a skipped control batch set.
        part.index.truncate(part.end);
        part.index.remove_before(part.start);
        part.durable_end = part.end;
        part.acked_end = part.end;
        part.logged_start = part.start;
        // Invariant: outside tolerate-any, every offset in [start, end) of
        // a replayed partition is in exactly one indexed batch. Only damage
        // the scan cannot see breaks it (an oldest segment file removed by
        // hand): a gap, refused with the partition named, never served.
        if let Err(why) = part.index.check_covers(part.start, part.end) {
            let reason = format!("partition {p} after replay: {why}");
            if decide(Finding::OffsetGap, mode) != Action::Keep {
                return Err(Error::corrupted(dir, 0, reason));
            }
            out.skipped.push(Damage {
                path: dir.to_path_buf(),
                position: 0,
                bytes: 0,
                reason,
            });
        }
    }
    for b in batches
        .iter()
        .filter(|b| b.header.flags & FLAG_CONTROL == 0)
    {
        let ts = out.segment_max_ts.entry(b.segment).or_insert(i64::MIN);
        *ts = (*ts).max(b.header.max_timestamp);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::format::batch::BatchHeader;

    /// A data (or control) batch of `partition` at `[base, base + count)`,
    /// at `position` in `segment`.
    fn batch(segment: u64, position: u64, partition: u64, base: u64, count: u32) -> RecoveredBatch {
        let mut header: BatchHeader = bytemuck::Zeroable::zeroed();
        header.partition = partition;
        header.base_offset = base;
        header.record_count = count;
        header.length = 100;
        header.max_timestamp = position as i64;
        RecoveredBatch {
            segment,
            position,
            header,
        }
    }

    fn control(segment: u64, position: u64, partition: u64, offset: u64) -> RecoveredBatch {
        let mut b = batch(segment, position, partition, offset, 1);
        b.header.flags = FLAG_CONTROL;
        b
    }

    fn run(
        mode: RecoveryMode,
        checkpoint: Checkpoint,
        batches: &[RecoveredBatch],
        controls: &[((u64, u64), u8)],
    ) -> Result<Replayed> {
        let controls: HashMap<_, _> = controls
            .iter()
            .map(|&(at, byte)| {
                let record = ControlRecord {
                    byte,
                    key: Vec::new(),
                    arg: Vec::new(),
                };
                (at, Ok(Some(record)))
            })
            .collect();
        replay(ReplayInput {
            dir: Path::new("/d"),
            mode,
            checkpoint,
            log_end: (2, 8192),
            active_segment: 2,
            batches,
            controls: &controls,
        })
    }

    #[test]
    fn batches_and_control_operations_rebuild_offsets_and_index() {
        let batches = [
            batch(1, 4096, 7, 0, 10),
            batch(1, 4196, 7, 10, 5),
            control(1, 4296, 7, 12), // truncate at 12
            batch(2, 4096, 7, 12, 3),
            control(2, 4196, 7, 4), // delete before 4
        ];
        let out = run(
            RecoveryMode::TolerateTornTail,
            Checkpoint::default(),
            &batches,
            &[
                ((1, 4296), Control::Truncate.byte()),
                ((2, 4196), Control::DeleteBefore.byte()),
            ],
        )
        .expect("replays");
        let p = &out.partitions[&7];
        assert_eq!(
            (p.start, p.end, p.durable_end, p.acked_end),
            (4, 15, 15, 15)
        );
        assert_eq!(
            p.index.find(11).map(|e| e.record_count),
            Some(2),
            "cut by the truncation"
        );
        assert_eq!(p.index.find(12).map(|e| e.segment), Some(2));
        assert_eq!(out.segment_max_ts, BTreeMap::from([(1, 4196), (2, 4096)]));
        assert!(out.orphaned.is_empty() && out.skipped.is_empty());
    }

    #[test]
    fn a_gap_follows_the_rules_table() {
        // Partition 3 has offsets 0..5; a batch at 8 in the active segment
        // is an orphan, one in a sealed segment a gap.
        let orphan = [batch(1, 4096, 3, 0, 5), batch(2, 4096, 3, 8, 2)];
        let gap = [batch(1, 4096, 3, 0, 5), batch(1, 4196, 3, 8, 2)];
        let ckpt = Checkpoint::default;
        let kept = run(RecoveryMode::TolerateTornTail, ckpt(), &orphan, &[]).expect("drops it");
        assert_eq!(kept.partitions[&3].end, 5);
        assert_eq!(kept.orphaned.len(), 1);
        assert_eq!(kept.orphaned[0].partition_end, 5);
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
        ] {
            assert!(matches!(
                run(mode, ckpt(), &gap, &[]),
                Err(Error::Corrupted { position: 4196, .. })
            ));
        }
        assert!(run(RecoveryMode::AbsoluteConsistency, ckpt(), &orphan, &[]).is_err());
        let salvaged =
            run(RecoveryMode::TolerateAnyCorruption, ckpt(), &gap, &[]).expect("keeps it");
        assert_eq!(salvaged.partitions[&3].end, 10);
    }

    #[test]
    fn a_checkpoint_ahead_of_the_log_or_an_unknown_control_is_refused_unless_salvaging() {
        let ahead = Checkpoint {
            log_end: (3, 4096),
            partitions: BTreeMap::from([(1, (0, 4))]),
            meta: BTreeMap::new(),
        };
        assert!(run(RecoveryMode::TolerateTornTail, ahead.clone(), &[], &[]).is_err());
        let salvaged = run(RecoveryMode::TolerateAnyCorruption, ahead, &[], &[]).expect("skips");
        // Skipped: the checkpoint ahead, then the hole it leaves in
        // partition 1 (offsets 0..4 in no batch).
        assert_eq!(salvaged.skipped.len(), 2);
        assert!(salvaged.skipped[0].reason.contains("checkpoint"));
        assert!(salvaged.skipped[1].reason.contains("partition 1"));
        assert_eq!(salvaged.partitions[&1].end, 4);
        let unknown = [control(1, 4096, 1, 0)];
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
        ] {
            assert!(run(mode, Checkpoint::default(), &unknown, &[((1, 4096), 9)]).is_err());
        }
        let salvaged = run(
            RecoveryMode::TolerateAnyCorruption,
            Checkpoint::default(),
            &unknown,
            &[((1, 4096), 9)],
        )
        .expect("skips it");
        assert!(salvaged.skipped[0].reason.contains("unknown control batch"));
    }

    #[test]
    fn a_reset_past_the_end_is_no_gap_and_the_batches_after_it_count() {
        let batches = [
            batch(1, 4096, 3, 0, 3),
            control(1, 4196, 3, 10), // reset to 10
            batch(1, 4296, 3, 10, 2),
        ];
        let out = run(
            RecoveryMode::AbsoluteConsistency,
            Checkpoint::default(),
            &batches,
            &[((1, 4196), Control::Reset.byte())],
        )
        .expect("replays");
        let p = &out.partitions[&3];
        assert_eq!((p.start, p.end), (10, 12));
        assert!(out.orphaned.is_empty() && out.skipped.is_empty());
        assert!(p.index.check_covers(10, 12).is_ok());
        assert!(p.index.find(1).is_none(), "nothing before the reset");
    }

    #[test]
    fn batches_before_the_checkpoint_only_rebuild_the_index() {
        let checkpoint = Checkpoint {
            log_end: (1, 4196),
            partitions: BTreeMap::from([(5, (2, 10))]),
            meta: BTreeMap::new(),
        };
        // The batch before the log end is accounted for by the checkpoint;
        // its control batch there is not replayed (no entry in `controls`).
        let batches = [batch(1, 4096, 5, 0, 10), batch(1, 4196, 5, 10, 1)];
        let out = run(RecoveryMode::TolerateTornTail, checkpoint, &batches, &[]).expect("replays");
        let p = &out.partitions[&5];
        assert_eq!((p.start, p.end), (2, 11));
        assert!(p.index.check_covers(2, 11).is_ok());
    }

    /// Offsets the checkpoint accounts for whose batches are gone (their
    /// segment file was removed by hand) are refused, naming the partition.
    #[test]
    fn offsets_in_no_batch_are_refused_unless_salvaging() {
        let checkpoint = Checkpoint {
            log_end: (1, 4096),
            partitions: BTreeMap::from([(5, (0, 10))]),
            meta: BTreeMap::new(),
        };
        let refused = run(RecoveryMode::TolerateTornTail, checkpoint.clone(), &[], &[]);
        assert!(
            matches!(&refused, Err(Error::Corrupted { reason, .. }) if reason.contains("partition 5")),
            "{refused:?}"
        );
        let salvaged =
            run(RecoveryMode::TolerateAnyCorruption, checkpoint, &[], &[]).expect("kept");
        assert_eq!(salvaged.partitions[&5].end, 10);
        assert!(
            salvaged.skipped[0].reason.contains("partition 5"),
            "reported"
        );
    }
}
