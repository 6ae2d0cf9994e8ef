//! The simulation's model of a shard: what each seed stresses (its fault
//! profile), the tallies it counts, the self-describing record values, and
//! what every partition must hold, checked against what the shard serves.

use std::collections::{BTreeMap, HashMap};

use corelog_shard::{
    sim::{CrashKind, FaultCounts, Faults},
    Error, FsyncPolicy, Record, RecoveryMode, ShardConfig,
};

pub(crate) const DIR: &str = "/sim/shard-000";
pub(crate) const PARTITIONS: [u64; 4] = [0, 1, 7, u64::MAX];

/// What a seed stresses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Profile {
    /// Crashes keeping only durable data, under `Always`.
    Crash,
    /// Crashes tearing pending writes, with latency that reorders
    /// completions, under `Always`.
    Torn,
    /// `Never`, with latency (writes overlap): only what a flush (or a
    /// roll) covered must survive.
    Never,
    /// `Interval`, on the simulated disk's virtual clock, with latency:
    /// only what an fdatasync covered must survive. Half of the seeds that
    /// would be `Never`.
    Interval,
    /// EIO on write and fdatasync, ENOSPC on write, under `Always`.
    IoErrors,
    /// Misdirected writes and flipped bits, stored or read.
    Corruption,
}

impl Profile {
    pub(crate) fn of(seed: u64) -> Self {
        match [
            Profile::Crash,
            Profile::Torn,
            Profile::Never,
            Profile::IoErrors,
            Profile::Corruption,
        ][(seed % 5) as usize]
        {
            Profile::Never if (seed / 5) % 2 == 1 => Profile::Interval,
            profile => profile,
        }
    }

    /// Whether an acknowledged append may be lost in a crash (only what
    /// an fdatasync covered survives).
    pub(crate) fn acks_before_sync(self) -> bool {
        matches!(self, Profile::Never | Profile::Interval)
    }

    pub(crate) fn faults(self) -> Faults {
        match self {
            Profile::Crash => Faults::default(),
            Profile::Torn | Profile::Never | Profile::Interval => Faults {
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

    pub(crate) fn crash_kind(self, rng: &mut fastrand::Rng) -> CrashKind {
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
pub(crate) struct Tally {
    pub(crate) seeds: u64,
    pub(crate) crashes: u64,
    pub(crate) clean_reopens: u64,
    pub(crate) appends_acked: u64,
    pub(crate) records_verified: u64,
    pub(crate) corruption_detected: u64,
    pub(crate) io_failures: u64,
    /// Appends issued behind a metadata write that a crash kept, each
    /// checked to have kept the metadata too.
    pub(crate) meta_orders_checked: u64,
    pub(crate) faults: FaultCounts,
}

impl Tally {
    pub(crate) fn add(&mut self, o: &Tally) {
        self.seeds += o.seeds;
        self.crashes += o.crashes;
        self.clean_reopens += o.clean_reopens;
        self.appends_acked += o.appends_acked;
        self.records_verified += o.records_verified;
        self.corruption_detected += o.corruption_detected;
        self.io_failures += o.io_failures;
        self.meta_orders_checked += o.meta_orders_checked;
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
pub(crate) struct PartModel {
    /// The start is in `[start_min, start_max]` (a failed delete-before
    /// may or may not have reached the disk).
    pub(crate) start_min: u64,
    pub(crate) start_max: u64,
    /// Values known at each offset: acknowledged or read back.
    pub(crate) known: BTreeMap<u64, Vec<u8>>,
    /// End of the acknowledged appends.
    pub(crate) acked_end: u64,
    /// Metadata: every value put to each key.
    pub(crate) meta: BTreeMap<Vec<u8>, MetaModel>,
}

/// The values put to one metadata key, in the order they were logged.
#[derive(Debug, Default)]
pub(crate) struct MetaModel {
    pub(crate) values: Vec<Vec<u8>>,
    /// The last value whose `put_meta` returned `Ok`: it or a later one
    /// must survive.
    pub(crate) acked: Option<usize>,
}

/// An append issued while a `put_meta` to its partition was in flight: if
/// a crash keeps the append, it keeps that value of the key too (or a later
/// one).
#[derive(Debug)]
pub(crate) struct MetaDependency {
    pub(crate) partition: u64,
    pub(crate) key: Vec<u8>,
    /// Index of the value in the key's [`MetaModel::values`].
    pub(crate) value: usize,
    /// The append's id ([`Model::issue`]).
    pub(crate) append: u64,
}

#[derive(Default)]
pub(crate) struct Model {
    pub(crate) parts: BTreeMap<u64, PartModel>,
    /// Every append issued: id -> (partition, record count).
    issued: HashMap<u64, (u64, u32)>,
    next_id: u64,
    pub(crate) tally: Tally,
    /// Appends issued behind a `put_meta`, checked after the next crash.
    pub(crate) dependencies: Vec<MetaDependency>,
}

impl Model {
    /// Records for a new append to `partition`.
    pub(crate) fn issue(&mut self, partition: u64, rng: &mut fastrand::Rng) -> (u64, Vec<Record>) {
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

    pub(crate) fn acked(&mut self, partition: u64, base: u64, records: &[Record]) {
        let part = self.parts.entry(partition).or_default();
        for (i, r) in records.iter().enumerate() {
            part.known.insert(base + i as u64, r.value().to_vec());
        }
        part.acked_end = part.acked_end.max(base + records.len() as u64);
        self.tally.appends_acked += 1;
    }

    /// Records a value about to be put to `key` of `partition`; returns
    /// its index.
    pub(crate) fn meta_issued(&mut self, partition: u64, key: &[u8], value: &[u8]) -> usize {
        let m = self.parts.entry(partition).or_default();
        let m = m.meta.entry(key.to_vec()).or_default();
        m.values.push(value.to_vec());
        m.values.len() - 1
    }

    /// The id of the append that wrote record value `v`.
    pub(crate) fn append_id(v: &[u8]) -> Option<u64> {
        parse(v).map(|(_, id, _)| id)
    }

    /// Checks one record read from `partition` at `offset`: it is intact,
    /// was appended to `partition`, and is the value known there, if any.
    pub(crate) fn check_record(&self, seed: u64, partition: u64, offset: u64, v: &[u8]) {
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
    pub(crate) fn check_intact(&self, seed: u64, partition: u64, offset: u64, v: &[u8]) {
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

pub(crate) fn config(profile: Profile, mode: RecoveryMode) -> ShardConfig {
    let mut c = ShardConfig::new(DIR);
    c.fsync = match profile {
        Profile::Never => FsyncPolicy::Never,
        Profile::Interval => FsyncPolicy::Interval(std::time::Duration::from_millis(5)),
        _ => FsyncPolicy::Always,
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
pub(crate) fn is_io_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Io { .. } | Error::NoSpace { .. } | Error::ShortWrite { .. } | Error::Failed(_)
    )
}
