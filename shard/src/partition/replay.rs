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
    partition::{index::IndexEntry, Control, Partition},
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
    /// The first byte of the value of every control batch at or past the
    /// checkpoint's log end, by (segment, position); `None` when its value
    /// is empty.
    pub(crate) controls: &'a HashMap<(u64, u64), Option<u8>>,
}

/// The partitions replay rebuilt, and what it reports.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Every partition named by the checkpoint or a batch.
    pub(crate) partitions: HashMap<u64, Partition>,
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
                high_watermark: end,
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
        // Invariant: a partition's offsets are dense. Writes in flight
        // complete in any order, so a crash can keep a batch and lose an
        // earlier one of its partition; the survivor was never acknowledged
        // as durable (the lost one was not).
        if h.base_offset > part.end {
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
            let byte = controls.get(&(b.segment, b.position)).copied().flatten();
            let Some(op) = byte.and_then(Control::from_byte) else {
                debug_assert_eq!(decide(Finding::UnknownControl, mode), Action::Refuse);
                return Err(Error::corrupted(
                    segment_path(dir, b.segment),
                    b.position,
                    format!("unknown control batch {byte:?}"),
                ));
            };
            op.apply(part, h.base_offset);
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
        part.high_watermark = part.end;
        part.acked_end = part.end;
        if mode != RecoveryMode::TolerateAnyCorruption {
            // Invariant: outside tolerate-any, every offset in [start, end)
            // of a replayed partition is in exactly one indexed batch.
            if let Err(why) = part.index.check_covers(part.start, part.end) {
                panic!("partition {p} after replay: {why}");
            }
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
