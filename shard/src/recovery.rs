//! Recovery: scan every segment on open, verify every batch, decide what to
//! do with damage according to the [`RecoveryMode`], and hand the surviving
//! batches back in log order.
//!
//! The rules, for a segment scanned from its first batch position:
//!
//! | what the scan finds                                 | TolerateTornTail          | AbsoluteConsistency | TolerateAnyCorruption |
//! |-----------------------------------------------------|---------------------------|---------------------|-----------------------|
//! | valid batches, then zeros to the end                | keep all                  | keep all            | keep all              |
//! | damage in the last segment, no later batch proves it corruption | cut at the last good batch, report bytes cut | error | cut, report (or skip to a later valid batch) |
//! | damage, and a later batch whose `floor_block` lies past it | error                | error               | skip it, report, go on |
//! | damage in a sealed (not last) segment               | error                     | error               | skip it, report, go on |
//! | segment header invalid or from another shard        | error (last segment: drop it if it holds nothing valid) | error | skip segment, report |
//!
//! "Damage" is a batch that fails its checks, or non-zero bytes where only
//! zero padding may be.

use std::{path::PathBuf, rc::Rc, time::Instant};

use crate::{
    batch::{decode_batch, BatchHeader, DecodeError, BATCH_HEADER_LEN, BATCH_MAGIC},
    config::{RecoveryMode, ShardConfig},
    error::{Error, Result},
    segment::{align_up, crc_seed, parse_segment_name, segment_path, SegmentHeader, BLOCK_SIZE},
    sidecar,
    storage::{Storage, StorageFile},
};

/// Bytes read from a segment per I/O during recovery.
const SCAN_CHUNK: usize = 1 << 20;

/// A batch that survived recovery, with where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveredBatch {
    /// Sequence of the segment holding the batch.
    pub segment: u64,
    /// Byte position of the batch in its segment.
    pub position: u64,
    /// The batch header (partition, offsets, record count, length).
    pub header: BatchHeader,
}

/// Damage recovery found and dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub path: PathBuf,
    /// Byte position of the damage.
    pub position: u64,
    /// Bytes dropped because of it (cut from the tail, or skipped).
    pub bytes: u64,
    /// What check failed.
    pub reason: String,
}

/// A batch dropped on open because an earlier batch of its partition was
/// lost (see [`RecoveryReport::orphaned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orphan {
    /// Its partition.
    pub partition: u64,
    /// Its first offset.
    pub base_offset: u64,
    /// Where the partition's records ended without it.
    pub partition_end: u64,
    /// Its segment.
    pub segment: u64,
    /// Its byte position in the segment.
    pub position: u64,
}

/// What recovery did on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments found.
    pub segments: usize,
    /// Batches that survived.
    pub batches: u64,
    /// Bytes read from disk while scanning.
    pub bytes_scanned: u64,
    /// Sealed segments whose batches came from their sidecar index, unscanned.
    pub sidecars_loaded: usize,
    /// Sidecars that were missing or damaged and rebuilt by a scan.
    pub sidecars_rebuilt: usize,
    /// The previous run closed cleanly, so the tail needed no probing.
    pub clean_shutdown: bool,
    /// A torn tail cut from the last segment.
    pub torn_tail: Option<Damage>,
    /// Damage skipped under [`RecoveryMode::TolerateAnyCorruption`].
    pub skipped: Vec<Damage>,
    /// Batches of the last segment found past a gap in their partition: a
    /// crash lost an earlier batch of the partition that was still in
    /// flight, while a later write of it reached the disk. They were never
    /// acknowledged as durable; they are not served, a checkpoint written
    /// on open accounts for them, and their offsets go to the next appends.
    pub orphaned: Vec<Orphan>,
    /// Wall-clock time of the scan in microseconds.
    pub duration_us: u64,
}

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
}

/// Everything recovery hands to the shard.
pub(crate) struct Recovered<F> {
    pub segments: Vec<(u64, Rc<F>)>,
    pub batches: Vec<RecoveredBatch>,
    pub report: RecoveryReport,
    pub tail: Option<Tail>,
    /// The last segment scanned had a damaged header (tolerate-any).
    last_header_damaged: bool,
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
        .list(&config.dir)?
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
        last_header_damaged: false,
    };
    let names = storage.list(&config.dir)?;
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        let path = segment_path(&config.dir, seq);
        // Invariant: segments are removed oldest first, so the sequences
        // on disk are contiguous; a hole is a segment lost to damage.
        if i > 0 && seq != seqs[i - 1] + 1 {
            let missing = segment_path(&config.dir, seqs[i - 1] + 1);
            let reason = format!("segments {} to {} are missing", seqs[i - 1] + 1, seq - 1);
            if config.recovery != RecoveryMode::TolerateAnyCorruption {
                return Err(Error::corrupted(&missing, 0, reason));
            }
            out.report.skipped.push(Damage {
                path: missing,
                position: 0,
                bytes: 0,
                reason,
            });
        }
        let file = storage.open(&path, false).await?;
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
        let kept = Scan {
            config,
            path: path.clone(),
            is_last,
            window: Window::new(&file).await?,
            out: &mut out,
            expected_len: config.segment_bytes,
        }
        .segment(seq, clean)
        .await?;
        match kept {
            Some((valid_end, dirty_end)) => {
                if is_last {
                    out.tail = Some(Tail {
                        sequence: seq,
                        valid_end,
                        dirty_end,
                        writable: !out.last_header_damaged,
                    });
                } else {
                    // The sidecar was missing or damaged: rebuild it.
                    sidecar::write(storage, config, seq, &out.batches[first_batch..]).await?;
                    out.report.sidecars_rebuilt += 1;
                }
                out.segments.push((seq, Rc::new(file)));
            }
            None => {
                // The segment holds nothing usable (a header torn while the
                // segment was created, or skipped under TolerateAny).
                file.close().await?;
                storage.remove(&path).await?;
                storage.sync_dir(&config.dir).await?;
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
            });
        }
    }
    out.report.batches = out.batches.len() as u64;
    out.report.duration_us = started.elapsed().as_micros() as u64;
    Ok(out)
}

/// Scanning state for one segment.
struct Scan<'a, F: StorageFile> {
    config: &'a ShardConfig,
    path: PathBuf,
    is_last: bool,
    window: Window<'a, F>,
    out: &'a mut Recovered<F>,
    /// The size the segment was created with (from its header). Segments
    /// are preallocated, so a shorter file was cut after the fact.
    expected_len: u64,
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
    async fn segment(&mut self, seq: u64, clean_end: Option<u64>) -> Result<Option<(u64, u64)>> {
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
            Err(reason) if self.config.recovery == RecoveryMode::TolerateAnyCorruption => {
                if self.is_last && self.creation_torn(seq).await? {
                    return self.bad_header(seq, reason).await;
                }
                // The body may still hold intact batches: report the header
                // and scan on with the seed the file name implies.
                self.out.last_header_damaged = self.is_last;
                self.out.report.skipped.push(Damage {
                    path: self.path.clone(),
                    position: 0,
                    bytes: BLOCK_SIZE,
                    reason,
                });
                crc_seed(self.config.shard_id, seq)
            }
            Err(reason) => return self.bad_header(seq, reason).await,
        };
        let mut pos = BLOCK_SIZE;
        let mut valid_end = BLOCK_SIZE;
        loop {
            let step = self.step(pos, seed).await?;
            match step {
                Step::Batch(h) => {
                    self.out.batches.push(RecoveredBatch {
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
                    if clean_end.is_some() {
                        // Everything was synced before the clean shutdown:
                        // damage here is corruption, never a torn write.
                        return Err(Error::corrupted(&self.path, pos, damage.reason));
                    }
                    match self.config.recovery {
                        RecoveryMode::TolerateAnyCorruption => {
                            if let Some(next) = probe.first_valid {
                                damage.bytes = next - pos;
                                self.out.report.skipped.push(damage);
                                pos = next;
                            } else {
                                self.out.report.skipped.push(damage);
                                return Ok(Some((valid_end, dirty_end)));
                            }
                        }
                        RecoveryMode::TolerateTornTail if self.is_last && probe.proof.is_none() => {
                            self.out.report.torn_tail = Some(damage);
                            return Ok(Some((valid_end, dirty_end)));
                        }
                        _ => {
                            let why = match probe.proof {
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
        let want = crate::batch::peek_header(head)
            .map_or(BATCH_HEADER_LEN, |h| h.length as usize)
            .clamp(
                BATCH_HEADER_LEN,
                self.config.max_batch_bytes.max(BATCH_HEADER_LEN),
            );
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

    /// Handles a segment whose header is unreadable or foreign.
    async fn bad_header(&mut self, seq: u64, reason: String) -> Result<Option<(u64, u64)>> {
        let len = self.window.file_len;
        let damage = Damage {
            path: self.path.clone(),
            position: 0,
            bytes: len,
            reason: reason.clone(),
        };
        match self.config.recovery {
            // A crash while the last segment was being created (by an
            // earlier version: see `creation_torn`) leaves a header that
            // never reached the disk and nothing after it.
            RecoveryMode::TolerateTornTail | RecoveryMode::TolerateAnyCorruption
                if self.is_last =>
            {
                if self.creation_torn(seq).await? {
                    self.out.report.torn_tail = Some(damage);
                    Ok(None)
                } else {
                    Err(Error::corrupted(&self.path, 0, reason))
                }
            }
            _ => Err(Error::corrupted(&self.path, 0, reason)),
        }
    }
}

/// A forward-moving window over a file, filled by large aligned reads.
struct Window<'a, F: StorageFile> {
    file: &'a F,
    file_len: u64,
    /// File position of `bytes[0]`; block aligned.
    start: u64,
    bytes: Vec<u8>,
    /// Bytes read from disk so far.
    read: u64,
}

impl<'a, F: StorageFile> Window<'a, F> {
    async fn new(file: &'a F) -> Result<Self> {
        Ok(Window {
            file_len: file.size().await?,
            file,
            start: 0,
            bytes: Vec::with_capacity(SCAN_CHUNK * 2),
            read: 0,
        })
    }

    /// Up to `len` bytes at `pos`: fewer only at the end of the file.
    async fn get(&mut self, pos: u64, len: usize) -> Result<&[u8]> {
        let want_end = (pos + len as u64).min(self.file_len).max(pos);
        let have_end = self.start + self.bytes.len() as u64;
        if pos < self.start || want_end > have_end {
            let keep_from = pos - pos % BLOCK_SIZE;
            if keep_from >= self.start && keep_from <= have_end {
                self.bytes.drain(..(keep_from - self.start) as usize);
            } else {
                self.bytes.clear();
            }
            self.start = keep_from;
            while self.start + (self.bytes.len() as u64) < want_end {
                let at = self.start + self.bytes.len() as u64;
                let n = (align_up(want_end - at) as usize).max(SCAN_CHUNK);
                let chunk = self.file.read_at(at, n).await?;
                if chunk.is_empty() {
                    break;
                }
                self.read += chunk.len() as u64;
                self.bytes.extend_from_slice(&chunk);
            }
        }
        let from = ((pos - self.start) as usize).min(self.bytes.len());
        let to = ((want_end - self.start) as usize).min(self.bytes.len());
        Ok(&self.bytes[from..to])
    }
}

impl<F: StorageFile> Drop for Scan<'_, F> {
    fn drop(&mut self) {
        self.out.report.bytes_scanned += self.window.read;
    }
}
