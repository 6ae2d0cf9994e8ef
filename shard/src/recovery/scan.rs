//! The scan of one segment: walk its batches, classify what is not a
//! healthy batch as a [`Finding`], and do what [`decide`] says.

use std::path::PathBuf;

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{
        batch::{
            decode_batch, peek_header, BatchHeader, DecodeError, RecoveredBatch, BATCH_HEADER_LEN,
            BATCH_MAGIC,
        },
        segment::{align_up, crc_seed, SegmentHeader, BLOCK_SIZE},
    },
    recovery::{
        report::{Damage, RecoveryReport},
        rules::{decide, Action, Finding},
        window::Window,
    },
    storage::StorageFile,
};

/// Scanning state for one segment.
pub(super) struct Scan<'a, F: StorageFile> {
    pub(super) config: &'a ShardConfig,
    pub(super) path: PathBuf,
    pub(super) is_last: bool,
    pub(super) window: Window<'a, F>,
    /// Where surviving batches go, in log order.
    pub(super) batches: &'a mut Vec<RecoveredBatch>,
    pub(super) report: &'a mut RecoveryReport,
    /// The size the segment was created with (from its header). Segments
    /// are preallocated, so a shorter file was cut after the fact.
    pub(super) expected_len: u64,
    /// Set when the segment's header was damaged and skipped
    /// (tolerate-any): the segment is never appended to.
    pub(super) header_damaged: bool,
}

/// What lies after damage.
struct Probe {
    /// The first valid batch after the damage.
    first_valid: Option<u64>,
    /// Where proof was found that the damage is corruption, not a torn
    /// write: a valid batch appended after the damaged position was synced,
    /// or an intact batch in the wrong place (a misdirected write).
    proof: Option<u64>,
    /// End of the last block holding a non-zero byte.
    dirty_end: u64,
}

/// Outcome of looking at one position.
enum Step {
    Batch(BatchHeader),
    Padding(u64),
    End,
    Damage(String),
    /// An intact batch written for another position: a misdirected write.
    /// A crash never produces one, so finding one proves that damage near
    /// it is corruption, not a torn write.
    Misplaced(String),
}

impl<F: StorageFile> Scan<'_, F> {
    /// Scans one segment. Returns `(valid_end, dirty_end)`, or `None` when
    /// the segment should be discarded.
    pub(super) async fn segment(
        &mut self,
        seq: u64,
        clean_end: Option<u64>,
    ) -> Result<Option<(u64, u64)>> {
        let header = match SegmentHeader::decode(self.window.get(0, BLOCK_SIZE as usize).await?) {
            Ok(h) if h.shard_id != self.config.shard_id || h.sequence != seq => Err(format!(
                "segment header names shard {} sequence {}, expected shard {} sequence {seq}",
                h.shard_id, h.sequence, self.config.shard_id
            )),
            other => other,
        };
        let seed = match header {
            Ok(h) => {
                self.expected_len = h.segment_bytes;
                h.crc_seed()
            }
            Err(reason) => {
                // Probing for a torn creation reads the whole segment: only
                // worth it where the two findings are handled differently.
                let mode = self.config.recovery;
                let distinct = decide(Finding::TornSegmentCreation, mode)
                    != decide(Finding::BadSegmentHeader, mode);
                let finding = if self.is_last && distinct && self.creation_torn(seq).await? {
                    Finding::TornSegmentCreation
                } else {
                    Finding::BadSegmentHeader
                };
                let damage = Damage {
                    path: self.path.clone(),
                    position: 0,
                    bytes: self.window.file_len,
                    reason,
                };
                match decide(finding, self.config.recovery) {
                    Action::Drop => {
                        self.report.torn_tail = Some(damage);
                        return Ok(None);
                    }
                    Action::Skip => {
                        // The body may still hold intact batches: report the
                        // header and scan on with the seed the file name
                        // implies.
                        self.header_damaged = true;
                        self.report.skipped.push(Damage {
                            bytes: BLOCK_SIZE,
                            ..damage
                        });
                        crc_seed(self.config.shard_id, seq)
                    }
                    _ => return Err(Error::corrupted(&self.path, 0, damage.reason)),
                }
            }
        };
        let mut pos = BLOCK_SIZE;
        let mut valid_end = BLOCK_SIZE;
        loop {
            let step = self.step(pos, seed).await?;
            match step {
                Step::Batch(h) => {
                    self.batches.push(RecoveredBatch {
                        segment: seq,
                        position: pos,
                        header: h,
                    });
                    pos += u64::from(h.length);
                    valid_end = pos;
                }
                Step::Padding(next) => pos = next,
                Step::End if clean_end.is_some() => {
                    // A clean shutdown recorded where the data ends; the
                    // rest of the segment was never written.
                    if clean_end != Some(align_up(valid_end)) {
                        debug_assert_eq!(
                            decide(Finding::DamageAfterCleanShutdown, self.config.recovery),
                            Action::Refuse
                        );
                        return Err(Error::corrupted(
                            &self.path,
                            valid_end,
                            format!("clean shutdown recorded the end at {clean_end:?}"),
                        ));
                    }
                    return Ok(Some((valid_end, valid_end)));
                }
                Step::End | Step::Damage(_) | Step::Misplaced(_) => {
                    let (reason, misplaced) = match step {
                        Step::Damage(r) => (Some(r), false),
                        Step::Misplaced(r) => (Some(r), true),
                        _ => (None, false),
                    };
                    let probe_from = if reason.is_some() { pos + 1 } else { pos };
                    let mut probe = self.probe(probe_from, pos, seed).await?;
                    if misplaced {
                        probe.proof.get_or_insert(pos);
                    }
                    let Some(reason) = reason.or_else(|| {
                        (probe.dirty_end > pos)
                            .then(|| "non-zero bytes after the end of the log".to_string())
                    }) else {
                        return Ok(Some((valid_end, valid_end)));
                    };
                    let dirty_end = probe.dirty_end.max(valid_end);
                    let mut damage = Damage {
                        path: self.path.clone(),
                        position: pos,
                        bytes: dirty_end.saturating_sub(pos),
                        reason,
                    };
                    let finding = if clean_end.is_some() {
                        // Everything was synced before the clean shutdown:
                        // damage here is corruption, never a torn write.
                        Finding::DamageAfterCleanShutdown
                    } else if probe.proof.is_some() {
                        Finding::ProvenDamage
                    } else if !self.is_last {
                        Finding::SealedDamage
                    } else {
                        Finding::TornTail
                    };
                    match decide(finding, self.config.recovery) {
                        Action::Skip => match probe.first_valid {
                            Some(next) => {
                                damage.bytes = next - pos;
                                self.report.skipped.push(damage);
                                pos = next;
                            }
                            None => {
                                self.report.skipped.push(damage);
                                return Ok(Some((valid_end, dirty_end)));
                            }
                        },
                        Action::CutTail => {
                            self.report.torn_tail = Some(damage);
                            return Ok(Some((valid_end, dirty_end)));
                        }
                        _ => {
                            let why = match probe.proof.filter(|_| finding == Finding::ProvenDamage) {
                                Some(at) => format!(
                                    "{}; the batch at {at} was appended after this position had been written completely",
                                    damage.reason
                                ),
                                None => damage.reason,
                            };
                            return Err(Error::corrupted(&self.path, pos, why));
                        }
                    }
                }
            }
        }
    }

    /// Classifies the bytes at `pos`.
    async fn step(&mut self, pos: u64, seed: u32) -> Result<Step> {
        let block_end = align_up(pos + 1);
        let room = self.window.file_len.saturating_sub(pos) as usize;
        let head = self.window.get(pos, BATCH_HEADER_LEN).await?;
        if head.len() < 4 {
            let len = self.window.file_len;
            return Ok(if len < self.expected_len && pos + 4 > len {
                Step::Damage(format!(
                    "the segment file ends at {len} bytes but was created with {}: it was cut",
                    self.expected_len
                ))
            } else {
                Step::End
            });
        }
        // A batch never starts with a zero byte (its magic); zeros up to
        // the block boundary are commit padding. Padding can be shorter
        // than the magic, so look no further than the boundary.
        let in_block = ((block_end - pos) as usize).min(4);
        if head[..in_block].iter().all(|&b| b == 0) {
            if pos.is_multiple_of(BLOCK_SIZE) {
                return Ok(Step::End);
            }
            // Padding must be zeros up to the block boundary.
            let pad = self.window.get(pos, (block_end - pos) as usize).await?;
            return Ok(if pad.iter().all(|&b| b == 0) {
                Step::Padding(block_end)
            } else {
                Step::Damage("non-zero bytes in commit padding".into())
            });
        }
        // Read any batch the file can hold: `max_batch_bytes` limits new
        // appends only, and an earlier run may have written under a larger
        // limit. (A length past the end of the file reads as cut short.)
        let want = peek_header(head)
            .map_or(BATCH_HEADER_LEN, |h| h.length as usize)
            .clamp(BATCH_HEADER_LEN, room.max(BATCH_HEADER_LEN));
        let bytes = self.window.get(pos, want).await?;
        Ok(match decode_batch(bytes, seed) {
            Ok(h) => match h.check_position(pos) {
                Ok(()) => Step::Batch(h),
                Err(why) => Step::Misplaced(why),
            },
            Err(DecodeError::Truncated { needed, available }) => Step::Damage(format!(
                "batch cut short: needs {needed} bytes, {available} present"
            )),
            Err(e) => Step::Damage(e.to_string()),
        })
    }

    /// Looks past `from` for valid batches and for the end of the last
    /// non-zero block, to judge damage at `damage_at`. Stops early once a
    /// valid batch proves the damaged position had been written completely
    /// (the scan then goes on from that batch).
    async fn probe(&mut self, from: u64, damage_at: u64, seed: u32) -> Result<Probe> {
        let mut probe = Probe {
            first_valid: None,
            proof: None,
            dirty_end: from,
        };
        let mut block = from - from % BLOCK_SIZE;
        let magic = BATCH_MAGIC.to_le_bytes();
        loop {
            // Three bytes more than the block, for a magic across its end.
            let bytes = self.window.get(block, BLOCK_SIZE as usize + 3).await?;
            let len = (bytes.len() as u64).min(BLOCK_SIZE);
            if len == 0 {
                return Ok(probe);
            }
            // Only bytes from `from` on count: the first block may also
            // hold the end of the last valid batch.
            let lo = (from.max(block) - block).min(len) as usize;
            if bytes[lo..len as usize].iter().any(|&b| b != 0) {
                probe.dirty_end = block + len;
                let candidates: Vec<u64> = bytes
                    .windows(4)
                    .enumerate()
                    .map(|(i, w)| (block + i as u64, w))
                    .filter(|&(at, w)| w == magic && at >= from && at < block + len)
                    .map(|(at, _)| at)
                    .collect();
                for at in candidates {
                    match self.step(at, seed).await? {
                        Step::Batch(h) => {
                            probe.first_valid.get_or_insert(at);
                            if u64::from(h.floor_block) * BLOCK_SIZE > damage_at {
                                probe.proof = Some(at);
                                return Ok(probe);
                            }
                        }
                        // Proof, but look on: when no valid batch follows,
                        // `dirty_end` bounds the garbage to erase, and an
                        // early stop would leave the rest of it in place.
                        Step::Misplaced(_) => {
                            probe.proof.get_or_insert(at);
                        }
                        _ => {}
                    }
                }
            }
            block += len;
        }
    }

    /// Whether a segment with a bad header looks like one whose creation a
    /// crash interrupted: a header block of zeros (never written), nothing
    /// valid and no data after it. Segments are now renamed into place only
    /// once their header is synced; a directory written by an earlier
    /// version, which wrote the header after the rename, can hold one.
    async fn creation_torn(&mut self, seq: u64) -> Result<bool> {
        if self
            .window
            .get(0, BLOCK_SIZE as usize)
            .await?
            .iter()
            .any(|&b| b != 0)
        {
            return Ok(false);
        }
        let seed = crc_seed(self.config.shard_id, seq);
        let probe = self.probe(BLOCK_SIZE, 0, seed).await?;
        if probe.proof.is_some() || probe.dirty_end > BLOCK_SIZE {
            return Ok(false);
        }
        let any_data = self
            .window
            .get(BLOCK_SIZE, 4)
            .await?
            .iter()
            .any(|&b| b != 0);
        Ok(probe.first_valid.is_none() && !any_data)
    }
}

impl<F: StorageFile> Drop for Scan<'_, F> {
    fn drop(&mut self) {
        self.report.bytes_scanned += self.window.read;
    }
}
