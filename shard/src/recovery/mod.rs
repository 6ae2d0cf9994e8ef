//! Recovery: scan every segment on open, verify every batch, decide what to
//! do with what is wrong by the table in [`rules`] (under the configured
//! [`RecoveryMode`](crate::RecoveryMode)), and hand the surviving batches
//! back in log order. Replaying them into partitions is
//! [`crate::partition::replay`]'s job.
//!
//! "Damage" is a batch that fails its checks, or non-zero bytes where only
//! zero padding may be.

mod report;
mod rules;
mod scan;
mod window;

use std::{path::PathBuf, rc::Rc, time::Instant};

pub use report::{Damage, Orphan, RecoveryReport};
pub(crate) use rules::{decide, Action, Finding};

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{
        batch::RecoveredBatch,
        segment::{self, align_up, parse_segment_name, segment_path, BLOCK_SIZE},
        sidecar,
    },
    recovery::{scan::Scan, window::Window},
    storage::{Storage, StorageFile},
};

/// Where appends continue after recovery.
pub(crate) struct Tail {
    /// Sequence of the last segment.
    pub sequence: u64,
    /// End of the last valid batch in it.
    pub valid_end: u64,
    /// End of the last non-zero block after `valid_end` (garbage left by a
    /// torn write), which must be zeroed before appending.
    pub dirty_end: u64,
    /// Appends may go on in this segment. Not when tolerate-any recovery
    /// kept it despite a damaged header: it is left as found, and the next
    /// append starts a new segment.
    pub writable: bool,
    /// For a file cut short, the length it was created with (its
    /// header's), restored before appends go on in it.
    pub cut_from: Option<u64>,
}

/// Everything recovery hands to the shard.
pub(crate) struct Recovered<F> {
    pub segments: Vec<(u64, Rc<F>)>,
    pub batches: Vec<RecoveredBatch>,
    pub report: RecoveryReport,
    pub tail: Option<Tail>,
    /// Sealed segments scanned for want of a sidecar, with their batches:
    /// their sidecars are written once the open is accepted (recovery
    /// decides before it writes).
    pub sidecars: Vec<(u64, Vec<RecoveredBatch>)>,
    /// Segment files that hold nothing usable, removed once the open is
    /// accepted.
    pub unusable: Vec<PathBuf>,
}

/// Scans the segments in `config.dir`. `clean_end` is the end position of
/// the last segment recorded by a clean shutdown, if there was one.
pub(crate) async fn recover<S: Storage>(
    storage: &S,
    config: &ShardConfig,
    clean_end: Option<(u64, u64)>,
) -> Result<Recovered<S::File>> {
    let started = Instant::now();
    let mut seqs: Vec<u64> = storage
        .list(&config.dir)
        .await?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    seqs.sort_unstable();
    let mut out = Recovered {
        segments: Vec::new(),
        batches: Vec::new(),
        report: RecoveryReport {
            segments: seqs.len(),
            clean_shutdown: clean_end.is_some(),
            ..RecoveryReport::default()
        },
        tail: None,
        sidecars: Vec::new(),
        unusable: Vec::new(),
    };
    let names = storage.list(&config.dir).await?;
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        let path = segment_path(&config.dir, seq);
        // Invariant: segments are removed oldest first, so the sequences
        // on disk are contiguous; a hole is a segment lost to damage.
        if i > 0 && seq != seqs[i - 1] + 1 {
            let missing = segment_path(&config.dir, seqs[i - 1] + 1);
            let reason = format!("segments {} to {} are missing", seqs[i - 1] + 1, seq - 1);
            if decide(Finding::MissingSegments, config.recovery) != Action::Skip {
                return Err(Error::corrupted(&missing, 0, reason));
            }
            out.report.skipped.push(Damage {
                path: missing,
                position: 0,
                bytes: 0,
                reason,
            });
        }
        let file = segment::open(storage, config, &path).await?;
        let clean = clean_end.filter(|&(s, _)| s == seq).map(|(_, end)| end);
        // A sealed segment, or the last one after a clean shutdown, has a
        // sidecar that spares the scan.
        if !is_last || clean.is_some() {
            if let Some(batches) = sidecar::load(storage, config, seq, &names).await? {
                let end = batches
                    .last()
                    .map_or(BLOCK_SIZE, |b| b.position + u64::from(b.header.length));
                // A segment cut short since it was sealed is scanned, so the
                // cut is found and judged by the recovery mode.
                let whole = file.size().await? >= end;
                if whole && clean.is_none_or(|c| c == align_up(end)) {
                    if is_last {
                        out.tail = Some(Tail {
                            sequence: seq,
                            valid_end: end,
                            dirty_end: end,
                            writable: true,
                            cut_from: None,
                        });
                    }
                    out.report.sidecars_loaded += 1;
                    out.batches.extend(batches);
                    out.segments.push((seq, Rc::new(file)));
                    continue;
                }
            }
        }
        let first_batch = out.batches.len();
        let mut scan = Scan {
            config,
            path: path.clone(),
            is_last,
            window: Window::new(&file).await?,
            batches: &mut out.batches,
            report: &mut out.report,
            expected_len: config.segment_bytes,
            header_damaged: false,
        };
        let kept = scan.segment(seq, clean).await?;
        let header_damaged = scan.header_damaged;
        let cut_from = (scan.window.file_len < scan.expected_len).then_some(scan.expected_len);
        drop(scan);
        match kept {
            Some((valid_end, dirty_end)) => {
                if is_last {
                    out.tail = Some(Tail {
                        sequence: seq,
                        valid_end,
                        dirty_end,
                        writable: !header_damaged,
                        cut_from,
                    });
                } else {
                    // The sidecar was missing or damaged: rebuilt once the
                    // open is accepted (under salvage, from what it kept:
                    // its decision stands for later opens in any mode).
                    out.sidecars
                        .push((seq, out.batches[first_batch..].to_vec()));
                    out.report.sidecars_rebuilt += 1;
                }
                out.segments.push((seq, Rc::new(file)));
            }
            None => {
                // The segment holds nothing usable (a header torn while the
                // segment was created, or skipped under TolerateAny).
                file.close().await?;
                out.unusable.push(path);
            }
        }
    }
    if out.tail.is_none() {
        // The last segment was dropped (its creation was torn): appends go
        // on in the last segment kept, after its last batch. Never leave
        // the tail unset while segments exist, or the next roll would reuse
        // a sequence that is still on disk.
        if let Some(&(sequence, _)) = out.segments.last() {
            let end = out
                .batches
                .iter()
                .rev()
                .find(|b| b.segment == sequence)
                .map_or(BLOCK_SIZE, |b| b.position + u64::from(b.header.length));
            out.tail = Some(Tail {
                sequence,
                valid_end: end,
                dirty_end: end,
                writable: true,
                cut_from: None,
            });
        }
    }
    out.report.batches = out.batches.len() as u64;
    out.report.duration_us = started.elapsed().as_micros() as u64;
    Ok(out)
}
