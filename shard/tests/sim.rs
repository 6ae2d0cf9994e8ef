//! Deterministic simulation: random appends (sequential and concurrent),
//! reads, delete-befores, truncates, flushes, clean reopens and crashes on
//! a simulated faulty disk, checked against a model after every step.
//!
//! Each seed picks a fault profile. What must hold, whatever the seed:
//! - recovery never panics;
//! - no read ever returns a record whose bytes differ from what was
//!   appended at that offset (damage is reported, never served);
//! - after a crash, every partition keeps every offset below the
//!   high-water mark it reported before the crash, with the same bytes, so
//!   under `Always` every acknowledged append survives and offsets are
//!   never reused;
//! - after an I/O error the shard refuses appends, naming the file.
//!
//! `cargo test` runs `CORELOG_SIM_SEEDS` seeds (default 300) from
//! `CORELOG_SIM_FIRST_SEED` (default 0); `CORELOG_SIM_SEED=n` runs one. A
//! failure prints the seed that reproduces it.

mod common;

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    panic::AssertUnwindSafe,
    path::Path,
    rc::Rc,
};

use futures_lite::FutureExt;

use corelog_shard::{
    sim::{CrashKind, FaultCounts, Faults, SimDisk},
    Error, FsyncPolicy, Record, RecoveryMode, Shard, ShardConfig,
};

const DIR: &str = "/sim/shard-000";
const PARTITIONS: [u64; 4] = [0, 1, 7, u64::MAX];
const STEPS: usize = 80;

/// What a seed stresses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Profile {
    /// Crashes keeping only durable data, under `Always`.
    Crash,
    /// Crashes tearing pending writes, with latency that reorders
    /// completions, under `Always`.
    Torn,
    /// `Never`, with latency (writes overlap): only what a flush (or a
    /// roll) covered must survive.
    Never,
    /// EIO on write and fdatasync, ENOSPC on write, under `Always`.
    IoErrors,
    /// Misdirected writes and flipped bits, stored or read.
    Corruption,
}

impl Profile {
    fn of(seed: u64) -> Self {
        [
            Profile::Crash,
            Profile::Torn,
            Profile::Never,
            Profile::IoErrors,
            Profile::Corruption,
        ][(seed % 5) as usize]
    }

    fn faults(self) -> Faults {
        match self {
            Profile::Crash => Faults::default(),
            Profile::Torn | Profile::Never => Faults {
                max_delay: 8,
                ..Faults::default()
            },
            Profile::IoErrors => Faults {
                write_eio: 0.01,
                sync_eio: 0.01,
                write_enospc: 0.005,
                max_delay: 4,
                ..Faults::default()
            },
            Profile::Corruption => Faults {
                misdirect: 0.004,
                stored_flip: 0.004,
                read_flip: 0.01,
                max_delay: 4,
                ..Faults::default()
            },
        }
    }

    fn crash_kind(self, rng: &mut fastrand::Rng) -> CrashKind {
        match self {
            Profile::Crash => CrashKind::DurableOnly,
            _ => [
                CrashKind::Torn,
                CrashKind::DurableOnly,
                CrashKind::AllWritten,
            ][rng.usize(..3)],
        }
    }
}

/// Tallies of one or many seeds, for docs/RELIABILITY.md.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    seeds: u64,
    crashes: u64,
    clean_reopens: u64,
    appends_acked: u64,
    records_verified: u64,
    corruption_detected: u64,
    io_failures: u64,
    faults: FaultCounts,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.seeds += o.seeds;
        self.crashes += o.crashes;
        self.clean_reopens += o.clean_reopens;
        self.appends_acked += o.appends_acked;
        self.records_verified += o.records_verified;
        self.corruption_detected += o.corruption_detected;
        self.io_failures += o.io_failures;
        let (a, b) = (&mut self.faults, &o.faults);
        a.write_eio += b.write_eio;
        a.sync_eio += b.sync_eio;
        a.enospc += b.enospc;
        a.misdirected += b.misdirected;
        a.stored_flips += b.stored_flips;
        a.read_flips += b.read_flips;
        a.torn_sectors += b.torn_sectors;
        a.lost_sectors += b.lost_sectors;
    }
}

/// A record value that says where it belongs: partition, append id, index
/// in the append, then bytes derived from them.
fn value(partition: u64, id: u64, idx: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + len);
    v.extend_from_slice(&partition.to_le_bytes());
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&idx.to_le_bytes());
    v.extend((0..len).map(|i| (id as usize * 131 + idx as usize * 31 + i) as u8));
    v
}

/// Decodes a value made by [`value`], or `None` if it is not one.
fn parse(v: &[u8]) -> Option<(u64, u64, u32)> {
    if v.len() < 20 {
        return None;
    }
    let p = u64::from_le_bytes(v[..8].try_into().unwrap());
    let id = u64::from_le_bytes(v[8..16].try_into().unwrap());
    let idx = u32::from_le_bytes(v[16..20].try_into().unwrap());
    (value(p, id, idx, v.len() - 20) == v).then_some((p, id, idx))
}

#[derive(Debug, Default)]
struct PartModel {
    /// The start is in `[start_min, start_max]` (a failed delete-before
    /// may or may not have reached the disk).
    start_min: u64,
    start_max: u64,
    /// Values known at each offset: acknowledged or read back.
    known: BTreeMap<u64, Vec<u8>>,
    /// End of the acknowledged appends.
    acked_end: u64,
}

#[derive(Default)]
struct Model {
    parts: BTreeMap<u64, PartModel>,
    /// Every append issued: id -> (partition, record count).
    issued: HashMap<u64, (u64, u32)>,
    next_id: u64,
    tally: Tally,
}

impl Model {
    /// Records for a new append to `partition`.
    fn issue(&mut self, partition: u64, rng: &mut fastrand::Rng) -> (u64, Vec<Record>) {
        let id = self.next_id;
        self.next_id += 1;
        let n = rng.u32(1..=4);
        self.issued.insert(id, (partition, n));
        let records = (0..n)
            .map(|i| {
                let len = if rng.u8(..) < 8 {
                    rng.usize(2000..4000)
                } else {
                    rng.usize(0..400)
                };
                Record::new(value(partition, id, i, len)).with_timestamp(1_000 + id as i64)
            })
            .collect();
        (id, records)
    }

    fn acked(&mut self, partition: u64, base: u64, records: &[Record]) {
        let part = self.parts.entry(partition).or_default();
        for (i, r) in records.iter().enumerate() {
            part.known.insert(base + i as u64, r.value().to_vec());
        }
        part.acked_end = part.acked_end.max(base + records.len() as u64);
        self.tally.appends_acked += 1;
    }

    /// Checks one record read from `partition` at `offset`: it is intact,
    /// was appended to `partition`, and is the value known there, if any.
    fn check_record(&self, seed: u64, partition: u64, offset: u64, v: &[u8]) {
        self.check_intact(seed, partition, offset, v);
        if let Some(known) = self
            .parts
            .get(&partition)
            .and_then(|m| m.known.get(&offset))
        {
            assert!(
                known == v,
                "seed {seed}: partition {partition} offset {offset} changed: {:?} became {:?}",
                parse(known),
                parse(v)
            );
        }
    }

    /// Checks that a record read from `partition` is one appended there
    /// (what tolerate-any recovery promises: intact batches, though a lost
    /// control batch can bring truncated or deleted ones back).
    fn check_intact(&self, seed: u64, partition: u64, offset: u64, v: &[u8]) {
        let Some((p, id, idx)) = parse(v) else {
            panic!(
                "seed {seed}: partition {partition} offset {offset} holds bytes nobody appended"
            );
        };
        assert_eq!(
            p, partition,
            "seed {seed}: offset {offset} belongs to partition {p}"
        );
        let (ip, n) = self.issued[&id];
        assert!(
            ip == partition && idx < n,
            "seed {seed}: record {id}/{idx} misplaced"
        );
    }
}

fn config(profile: Profile, mode: RecoveryMode) -> ShardConfig {
    let mut c = ShardConfig::new(DIR);
    c.fsync = if profile == Profile::Never {
        FsyncPolicy::Never
    } else {
        FsyncPolicy::Always
    };
    c.segment_bytes = 64 << 10;
    c.max_record_bytes = 4 << 10;
    c.max_batch_bytes = 16 << 10;
    c.max_write_bytes = 16 << 10;
    c.memtable_bytes = 8 << 10;
    c.recovery = mode;
    c
}

/// An error the injected I/O faults explain.
fn is_io_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. } | Error::NoSpace { .. } | Error::ShortWrite { .. } | Error::Failed(_)
    )
}

/// Why a seed stopped early.
enum Stop {
    /// Recovery refused damaged data (corruption profile only).
    Refused,
}

struct Run {
    seed: u64,
    profile: Profile,
    rng: fastrand::Rng,
    model: Rc<RefCell<Model>>,
    disk: SimDisk,
}

impl Run {
    fn fail_ok(&self, e: &Error) -> bool {
        match self.profile {
            Profile::IoErrors => is_io_failure(e),
            Profile::Corruption => is_io_failure(e) || matches!(e, Error::Corrupted { .. }),
            _ => false,
        }
    }

    /// Opens the shard on the current disk; after a failure the disk
    /// crashes again and the open is retried, at last without faults.
    async fn open(&mut self) -> Result<Shard<SimDisk>, Stop> {
        for attempt in 0..4 {
            if attempt == 3 {
                self.disk.set_faults(Faults::default());
            }
            match Shard::open_with(
                self.disk.clone(),
                config(self.profile, RecoveryMode::TolerateTornTail),
            )
            .await
            {
                Ok((shard, report)) => {
                    note(|| format!("open: {report:?}"));
                    self.disk.set_faults(self.profile.faults());
                    return Ok(shard);
                }
                Err(e) if is_io_failure(&e) && self.fail_ok(&e) => {
                    note(|| format!("open failed: {e}"));
                    let kind = self.profile.crash_kind(&mut self.rng);
                    self.crash_disk(kind);
                }
                Err(e @ Error::Corrupted { .. }) if self.profile == Profile::Corruption => {
                    note(|| format!("open refused: {e}"));
                    assert!(
                        e.to_string().contains(DIR),
                        "seed {}: {e} names no file",
                        self.seed
                    );
                    self.model.borrow_mut().tally.corruption_detected += 1;
                    self.disk.set_faults(Faults::default());
                    return self.open_salvage().await;
                }
                Err(e) => panic!("seed {}: open failed: {e}", self.seed),
            }
        }
        unreachable!("the last attempt has no faults")
    }

    /// After recovery refused damage: tolerate-any mode must open (or
    /// refuse a damaged checkpoint) and serve only intact records.
    async fn open_salvage(&mut self) -> Result<Shard<SimDisk>, Stop> {
        match Shard::open_with(
            self.disk.clone(),
            config(self.profile, RecoveryMode::TolerateAnyCorruption),
        )
        .await
        {
            Ok((shard, _)) => {
                for p in PARTITIONS {
                    let o = shard.offsets(p);
                    for offset in o.start..o.end {
                        match shard.read(p, offset, 1).await {
                            Ok(records) => {
                                for r in &records {
                                    self.model.borrow().check_intact(
                                        self.seed,
                                        p,
                                        r.offset(),
                                        r.value(),
                                    );
                                }
                            }
                            Err(Error::Corrupted { .. }) => {}
                            Err(e) => panic!("seed {}: salvage read: {e}", self.seed),
                        }
                    }
                }
                Err(Stop::Refused)
            }
            Err(Error::Corrupted { .. }) => Err(Stop::Refused),
            Err(e) => panic!("seed {}: salvage open failed: {e}", self.seed),
        }
    }

    fn crash_disk(&mut self, kind: CrashKind) {
        note(|| format!("faults before crash: {:?}", self.disk.counts()));
        self.disk = self.disk.crash(kind);
    }

    /// Everything the model knows must be there; what is beyond it must be
    /// records that were appended. Then the model adopts what is there.
    /// `required` is each partition's end that must have survived.
    async fn verify(&mut self, shard: &Shard<SimDisk>, required: &BTreeMap<u64, u64>) -> bool {
        let seed = self.seed;
        for p in PARTITIONS {
            let o = shard.offsets(p);
            note(|| format!("verify {p}: {o:?}, need {:?}", required.get(&p)));
            // Misdirected or flipped writes may destroy acknowledged data;
            // then only "never serve damage" holds.
            let need = match self.profile {
                Profile::Corruption => 0,
                _ => required.get(&p).copied().unwrap_or(0),
            };
            {
                let model = self.model.borrow();
                let part = model.parts.get(&p);
                let (mut lo, hi) = part.map_or((0, 0), |m| (m.start_min, m.start_max));
                if self.profile == Profile::Corruption {
                    // A bit flipped in the last batch of the log reads as a
                    // torn write and is cut: an acknowledged delete-before
                    // can be lost that way, bringing back intact records.
                    lo = 0;
                }
                assert!(
                    lo <= o.start && o.start <= hi.max(lo),
                    "seed {seed}: partition {p} start {} not in [{lo}, {hi}]",
                    o.start
                );
                assert!(
                    o.end >= need,
                    "seed {seed}: partition {p} lost offsets {}..{need} (offsets would be reused)",
                    o.end
                );
            }
            let records = match shard.read_range(p, o.start, o.end).await {
                Ok(r) => r,
                Err(e @ Error::Corrupted { .. }) if self.profile == Profile::Corruption => {
                    let _ = e;
                    self.model.borrow_mut().tally.corruption_detected += 1;
                    return false;
                }
                Err(e) => panic!("seed {seed}: partition {p} read_range: {e}"),
            };
            assert_eq!(
                records.len() as u64,
                o.end - o.start,
                "seed {seed}: partition {p}"
            );
            let mut model = self.model.borrow_mut();
            for (i, r) in records.iter().enumerate() {
                let offset = o.start + i as u64;
                assert_eq!(r.offset(), offset, "seed {seed}: partition {p}");
                model.check_record(seed, p, offset, r.value());
            }
            model.tally.records_verified += records.len() as u64;
            let part = model.parts.entry(p).or_default();
            part.start_min = o.start;
            part.start_max = o.start;
            part.acked_end = o.end;
            part.known = records
                .into_iter()
                .map(|r| (r.offset(), r.value().to_vec()))
                .collect();
        }
        true
    }

    /// The ends that must survive a crash now: what the shard reports as
    /// durable. Under `Always` that covers every acknowledged append.
    fn durable_ends(&self, shard: &Shard<SimDisk>) -> BTreeMap<u64, u64> {
        let model = self.model.borrow();
        PARTITIONS
            .iter()
            .map(|&p| {
                let o = shard.offsets(p);
                if self.profile != Profile::Never {
                    let acked = model.parts.get(&p).map_or(0, |m| m.acked_end);
                    assert!(
                        o.high_watermark >= acked.min(o.end),
                        "seed {}: partition {p} acknowledged {acked} under Always but the high-water mark is {}",
                        self.seed,
                        o.high_watermark
                    );
                }
                (p, o.high_watermark)
            })
            .collect()
    }

    /// After an append or a control operation failed: the shard must have
    /// stopped, and say which file failed.
    async fn check_stopped(&mut self, shard: &Shard<SimDisk>, e: &Error) {
        assert!(self.fail_ok(e), "seed {}: unexpected error {e}", self.seed);
        assert!(
            e.to_string().contains(DIR),
            "seed {}: error names no file: {e}",
            self.seed
        );
        self.model.borrow_mut().tally.io_failures += 1;
        // A failure confined to the checkpoint's temporary file leaves the
        // log and the old checkpoint intact: the shard goes on.
        if matches!(e, Error::Corrupted { .. }) || e.to_string().contains("partitions.ckpt.tmp") {
            return;
        }
        let (_, records) = self.model.borrow_mut().issue(0, &mut self.rng);
        match shard.append(0, &records).await {
            Err(e) if is_io_failure(&e) => {}
            other => panic!(
                "seed {}: shard kept accepting appends after {e}: {other:?}",
                self.seed
            ),
        }
    }

    async fn append(&mut self, shard: &Shard<SimDisk>) -> bool {
        let p = PARTITIONS[self.rng.usize(..PARTITIONS.len())];
        let (_, records) = self.model.borrow_mut().issue(p, &mut self.rng);
        match shard.append(p, &records).await {
            Ok(base) => {
                note(|| format!("append {p}@{base} +{}", records.len()));
                self.model.borrow_mut().acked(p, base, &records);
                true
            }
            Err(e) => {
                self.check_stopped(shard, &e).await;
                false
            }
        }
    }

    /// Several appenders at once; returns the tasks still running after
    /// `yields` scheduling rounds (all of them finished when `None`).
    /// Dropping a task cancels it, as a crash would.
    async fn burst(
        &mut self,
        shard: &Shard<SimDisk>,
        yields: Option<u32>,
    ) -> (Vec<glommio::Task<()>>, bool) {
        let failed = Rc::new(RefCell::new(None::<Error>));
        let mut tasks = Vec::new();
        for _ in 0..self.rng.usize(2..=8) {
            let appends: Vec<(u64, Vec<Record>)> = (0..self.rng.usize(1..=3))
                .map(|_| {
                    let p = PARTITIONS[self.rng.usize(..PARTITIONS.len())];
                    (p, self.model.borrow_mut().issue(p, &mut self.rng).1)
                })
                .collect();
            let shard = shard.clone();
            let model = self.model.clone();
            let failed = failed.clone();
            tasks.push(glommio::spawn_local(async move {
                for (p, records) in appends {
                    match shard.append(p, &records).await {
                        Ok(base) => {
                            note(|| format!("burst append {p}@{base} +{}", records.len()));
                            model.borrow_mut().acked(p, base, &records)
                        }
                        Err(e) => {
                            failed.borrow_mut().get_or_insert(e);
                            return;
                        }
                    }
                }
            }));
        }
        match yields {
            Some(n) => {
                for _ in 0..n {
                    futures_lite::future::yield_now().await;
                }
            }
            None => {
                for t in tasks.drain(..) {
                    t.await;
                }
            }
        }
        let err = failed.borrow_mut().take();
        let ok = match err {
            Some(e) if yields.is_none() => {
                self.check_stopped(shard, &e).await;
                false
            }
            _ => true,
        };
        (tasks, ok)
    }

    async fn read(&mut self, shard: &Shard<SimDisk>) -> bool {
        let seed = self.seed;
        let p = PARTITIONS[self.rng.usize(..PARTITIONS.len())];
        let o = shard.offsets(p);
        if self.rng.u8(..) < 16 {
            let bad = if o.start > 0 && self.rng.bool() {
                o.start - 1
            } else {
                o.end + 1
            };
            match shard.read(p, bad, 100).await {
                Err(Error::OffsetOutOfRange {
                    partition, offset, ..
                }) => assert!(partition == p && offset == bad, "seed {seed}"),
                other => panic!(
                    "seed {seed}: read at {bad} of [{}, {}]: {other:?}",
                    o.start, o.end
                ),
            }
            return true;
        }
        let offset = self.rng.u64(o.start..=o.end);
        let max_bytes = self.rng.usize(0..6000);
        // A third of the reads are a follower's fetch (chosen without a
        // draw, so seeds keep their sequences): acknowledged records only,
        // and nothing after a zero timeout when none is there yet.
        let follow = max_bytes % 3 == 0;
        note(|| format!("read {p}@{offset} max {max_bytes} fetch {follow}"));
        let read = if follow {
            shard
                .fetch(p, offset, max_bytes, std::time::Duration::ZERO)
                .await
        } else {
            shard.read(p, offset, max_bytes).await
        };
        let records = match read {
            Ok(r) => r,
            // A fetch reports a failure of the shard (a read serves on).
            Err(e @ Error::Failed(_)) if follow && self.fail_ok(&e) => {
                self.check_stopped(shard, &e).await;
                return false;
            }
            Err(e @ Error::Corrupted { .. }) if self.profile == Profile::Corruption => {
                assert!(
                    e.to_string().contains(DIR),
                    "seed {seed}: {e} names no file"
                );
                self.model.borrow_mut().tally.corruption_detected += 1;
                return true;
            }
            Err(e) => panic!("seed {seed}: read {p}@{offset}: {e}"),
        };
        if follow {
            assert!(
                records.len() as u64 <= o.end - offset,
                "seed {seed}: fetch {p}@{offset} returned past the end {}",
                o.end
            );
        } else {
            assert_eq!(
                records.is_empty(),
                offset == o.end,
                "seed {seed}: read {p}@{offset}"
            );
        }
        let payload: usize = records.iter().map(|r| r.value().len()).sum();
        assert!(
            records.len() <= 1 || payload <= max_bytes,
            "seed {seed}: read returned {payload} bytes for max {max_bytes}"
        );
        let model = self.model.borrow();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset(), offset + i as u64, "seed {seed}");
            model.check_record(seed, p, r.offset(), r.value());
        }
        true
    }

    async fn control(&mut self, shard: &Shard<SimDisk>, truncate: bool) -> bool {
        let p = PARTITIONS[self.rng.usize(..PARTITIONS.len())];
        let o = shard.offsets(p);
        let at = self.rng.u64(o.start..=o.end);
        let result = if truncate {
            shard.truncate(p, at).await
        } else {
            shard.delete_before(p, at).await
        };
        note(|| format!("truncate={truncate} {p}@{at}: {result:?}"));
        {
            let mut model = self.model.borrow_mut();
            let part = model.parts.entry(p).or_default();
            if truncate {
                if result.is_ok() {
                    part.known.retain(|&k, _| k < at);
                    part.acked_end = part.acked_end.min(at);
                }
            } else {
                part.start_max = part.start_max.max(at);
                if result.is_ok() {
                    part.start_min = part.start_min.max(at);
                    part.known.retain(|&k, _| k >= at);
                }
            }
        }
        match result {
            Ok(()) => true,
            Err(e) => {
                self.check_stopped(shard, &e).await;
                false
            }
        }
    }

    async fn run(mut self) -> (Tally, u32) {
        let mut shard = match self.open().await {
            Ok(s) => s,
            Err(Stop::Refused) => return self.finish(),
        };
        for _ in 0..STEPS {
            let roll = self.rng.u8(..100);
            let healthy = match roll {
                0..=29 => self.append(&shard).await,
                30..=44 => self.burst(&shard, None).await.1,
                45..=64 => self.read(&shard).await,
                65..=69 => self.control(&shard, false).await,
                70..=74 => self.control(&shard, true).await,
                75..=79 => match shard.flush().await {
                    Ok(()) => true,
                    Err(e) => {
                        self.check_stopped(&shard, &e).await;
                        false
                    }
                },
                80..=85 => {
                    // Clean close and reopen: everything acknowledged stays.
                    let closed = shard.close().await;
                    let required = if closed.is_ok() {
                        self.model
                            .borrow()
                            .parts
                            .iter()
                            .map(|(&p, m)| (p, m.acked_end))
                            .collect()
                    } else {
                        self.durable_ends(&shard)
                    };
                    drop(shard);
                    if closed.is_err() {
                        let kind = self.profile.crash_kind(&mut self.rng);
                        self.crash_disk(kind);
                    }
                    self.model.borrow_mut().tally.clean_reopens += 1;
                    shard = match self.open().await {
                        Ok(s) => s,
                        Err(Stop::Refused) => return self.finish(),
                    };
                    if !self.verify(&shard, &required).await {
                        return self.finish();
                    }
                    continue;
                }
                _ => {
                    // Crash, possibly with appends in flight.
                    let (tasks, _) = if self.rng.bool() {
                        let yields = self.rng.u32(0..40);
                        self.burst(&shard, Some(yields)).await
                    } else {
                        (Vec::new(), true)
                    };
                    let required = self.durable_ends(&shard);
                    let kind = self.profile.crash_kind(&mut self.rng);
                    note(|| format!("crash {kind:?}, durable ends {required:?}"));
                    self.crash_disk(kind);
                    dump(&self.disk);
                    drop(tasks);
                    drop(shard);
                    self.model.borrow_mut().tally.crashes += 1;
                    shard = match self.open().await {
                        Ok(s) => s,
                        Err(Stop::Refused) => return self.finish(),
                    };
                    if !self.verify(&shard, &required).await {
                        return self.finish();
                    }
                    continue;
                }
            };
            if !healthy {
                // The shard stopped: crash and recover what was durable.
                let required = self.durable_ends(&shard);
                let kind = self.profile.crash_kind(&mut self.rng);
                self.crash_disk(kind);
                drop(shard);
                self.model.borrow_mut().tally.crashes += 1;
                shard = match self.open().await {
                    Ok(s) => s,
                    Err(Stop::Refused) => return self.finish(),
                };
                if !self.verify(&shard, &required).await {
                    return self.finish();
                }
            }
        }
        // The end: close cleanly and check everything once more.
        let required = self.durable_ends(&shard);
        let _ = shard.close().await;
        drop(shard);
        if let Ok(shard) = self.open().await {
            self.verify(&shard, &required).await;
        }
        self.finish()
    }

    fn finish(self) -> (Tally, u32) {
        let mut tally = self.model.borrow().tally;
        tally.seeds = 1;
        // A crashed disk hands its counts to the next one.
        tally.faults = self.disk.counts();
        (tally, self.disk.trace())
    }
}

/// Runs one seed on its own executor; returns its tallies and the disk's
/// trace digest.
fn run_seed(seed: u64) -> (Tally, u32) {
    common::run(move || seed_run(seed))
}

/// One seed's run, on the current executor.
async fn seed_run(seed: u64) -> (Tally, u32) {
    let profile = Profile::of(seed);
    let run = Run {
        seed,
        profile,
        rng: fastrand::Rng::with_seed(seed ^ 0x5eed),
        model: Rc::new(RefCell::new(Model::default())),
        disk: SimDisk::new(seed, profile.faults()),
    };
    run.run().await
}

/// Prints every batch header in the disk's segments (for debugging).
fn dump(disk: &SimDisk) {
    use corelog_shard::Storage;
    if std::env::var_os("CORELOG_SIM_TRACE").is_none() {
        return;
    }
    let dir = Path::new(DIR);
    let mut names = futures_lite::future::block_on(disk.list(dir)).unwrap();
    names.sort();
    for n in names {
        let bytes = disk.contents(&dir.join(&n)).unwrap();
        eprintln!("file {n}: {} bytes", bytes.len());
        if !n.ends_with(".wal") {
            continue;
        }
        let mut pos = 4096;
        while pos + 64 <= bytes.len() {
            match corelog_shard::internals::peek_header(&bytes[pos..]) {
                Some(h) if h.length >= 64 => {
                    eprintln!(
                        "  @{pos} p{} base {} n {} flags {} floor {}",
                        { h.partition },
                        { h.base_offset },
                        { h.record_count },
                        { h.flags },
                        { h.floor_block }
                    );
                    pos += h.length as usize;
                }
                _ => pos = (pos / 4096 + 1) * 4096,
            }
        }
    }
}

/// Prints a step of the run when `CORELOG_SIM_TRACE` is set.
fn note(msg: impl FnOnce() -> String) {
    if std::env::var_os("CORELOG_SIM_TRACE").is_some() {
        eprintln!("{}", msg());
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

#[test]
fn simulated_seeds_lose_nothing_and_serve_no_damage() {
    let (first, count) = match env_u64("CORELOG_SIM_SEED") {
        Some(seed) => (seed, 1),
        None => (
            env_u64("CORELOG_SIM_FIRST_SEED").unwrap_or(0),
            env_u64("CORELOG_SIM_SEEDS").unwrap_or(300),
        ),
    };
    // One executor for all seeds (an executor per seed exhausts file
    // descriptors over tens of thousands of seeds).
    let outcome = common::run(move || async move {
        let mut total = Tally::default();
        for seed in first..first + count {
            match AssertUnwindSafe(seed_run(seed)).catch_unwind().await {
                Ok((tally, _)) => total.add(&tally),
                Err(_) => return Err(seed),
            }
        }
        Ok(total)
    });
    let total = match outcome {
        Ok(total) => total,
        Err(seed) => panic!(
            "simulation seed {seed} ({:?}) failed; reproduce with CORELOG_SIM_SEED={seed} cargo test -p corelog-shard --test sim",
            Profile::of(seed)
        ),
    };
    println!("simulation: seeds {first}..{}: {total:#?}", first + count);
    assert_eq!(total.seeds, count);
    if count >= 50 {
        assert!(total.crashes > 0 && total.records_verified > 0 && total.io_failures > 0);
        assert!(total.corruption_detected > 0 && total.faults.torn_sectors > 0);
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 4, 11] {
        let (a, trace_a) = run_seed(seed);
        let (b, trace_b) = run_seed(seed);
        assert_eq!(trace_a, trace_b, "seed {seed} diverged");
        assert_eq!(a.records_verified, b.records_verified, "seed {seed}");
    }
}

#[test]
fn simulated_disk_keeps_only_durable_data_and_names() {
    use corelog_shard::{IoBuffer, Storage, StorageFile};
    common::run(|| async {
        let disk = SimDisk::new(1, Faults::default());
        let dir = Path::new("/d");
        let a = dir.join("a");
        let f = disk.open(&a, true).await.unwrap();
        let mut buf = disk.alloc(4096);
        buf.as_mut_slice().fill(7);
        f.write_at(buf, 0).await.unwrap();
        // Name not durable: a kill keeps the file, power loss does not.
        assert_eq!(
            disk.crash(CrashKind::AllWritten).contents(&a).unwrap(),
            vec![7; 4096]
        );
        let after = disk.crash(CrashKind::DurableOnly);
        assert!(after.contents(&a).is_none());
        assert!(disk.list(dir).await.is_err(), "a crashed disk refuses work");

        let f = after.open(&a, true).await.unwrap();
        after.sync_dir(dir).await.unwrap();
        let mut buf = after.alloc(4096);
        buf.as_mut_slice().fill(7);
        f.write_at(buf, 0).await.unwrap();
        f.fdatasync().await.unwrap();
        let mut buf = after.alloc(4096);
        buf.as_mut_slice().fill(9);
        f.write_at(buf, 4096).await.unwrap();
        assert_eq!(
            after.crash(CrashKind::DurableOnly).contents(&a).unwrap(),
            vec![7; 4096]
        );
        // Torn: whole 512-byte sectors of the pending write survive or not.
        let (mut kept, mut lost) = (0, 0);
        for _ in 0..20 {
            let torn = after.crash(CrashKind::Torn).contents(&a).unwrap();
            assert!(torn[..4096].iter().all(|&b| b == 7));
            assert_eq!(torn.len() % 512, 0);
            for sector in torn[4096..].chunks(512) {
                assert!(sector.iter().all(|&b| b == 9) || sector.iter().all(|&b| b == 0));
            }
            let survived = torn[4096..].chunks(512).filter(|s| s[0] == 9).count();
            kept += survived;
            lost += 8 - survived;
        }
        assert!(kept > 0 && lost > 0, "kept {kept} lost {lost}");
    });
}

#[test]
fn tmp_print_digests() {
    let mut out = Vec::new();
    for seed in 0..40 {
        let (t, d) = run_seed(seed);
        out.push(format!("{seed} {d} {t:?}"));
    }
    std::fs::write("/tmp/digests.txt", out.join("\n")).unwrap();
}
