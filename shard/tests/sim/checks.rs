//! The checks a run makes of the shard: after a reopen, every partition
//! against the model; before a crash, the ends that must survive it; after
//! a failure, that the shard stopped and named the file.

use std::collections::BTreeMap;

use corelog_shard::{sim::SimDisk, Error, Shard};

use crate::{
    model::{is_io_failure, Model, Profile, DIR, PARTITIONS},
    run::Run,
    trace::note,
};

impl Run {
    /// Everything the model knows must be there; what is beyond it must be
    /// records that were appended. Then the model adopts what is there.
    /// `required` is each partition's end that must have survived.
    pub(crate) async fn verify(
        &mut self,
        shard: &Shard<SimDisk>,
        required: &BTreeMap<u64, u64>,
    ) -> bool {
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
            if self.profile != Profile::Corruption {
                let survivors: std::collections::HashSet<u64> = records
                    .iter()
                    .filter_map(|r| Model::append_id(r.value()))
                    .collect();
                check_meta(seed, shard, &mut model, p, &survivors);
            }
            let part = model.parts.entry(p).or_default();
            part.start_min = o.start;
            part.start_max = o.start;
            part.acked_end = o.end;
            part.known = records
                .into_iter()
                .map(|r| (r.offset(), r.value().to_vec()))
                .collect();
        }
        self.dependencies_checked();
        true
    }

    /// Forgets the appends issued behind metadata writes: checked.
    pub(crate) fn dependencies_checked(&self) {
        self.model.borrow_mut().dependencies.clear();
    }

    /// The ends that must survive a crash now: what the shard reports as
    /// durable. Under `Always` that covers every acknowledged append.
    pub(crate) fn durable_ends(&self, shard: &Shard<SimDisk>) -> BTreeMap<u64, u64> {
        let model = self.model.borrow();
        PARTITIONS
            .iter()
            .map(|&p| {
                let o = shard.offsets(p);
                if !self.profile.acks_before_sync() {
                    let acked = model.parts.get(&p).map_or(0, |m| m.acked_end);
                    assert!(
                        o.durable_end >= acked.min(o.end),
                        "seed {}: partition {p} acknowledged {acked} under Always but the durable end is {}",
                        self.seed,
                        o.durable_end
                    );
                }
                (p, o.durable_end)
            })
            .collect()
    }

    /// After an append or a control operation failed: the shard must have
    /// stopped, and say which file failed.
    pub(crate) async fn check_stopped(&mut self, shard: &Shard<SimDisk>, e: &Error) {
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
}

/// Checks the metadata of `p` after a reopen: for every key, the last value
/// acknowledged or a later one, and at least the value an append that
/// survived (one of `survivors`) was issued behind. Then the model adopts
/// what is there.
fn check_meta(
    seed: u64,
    shard: &Shard<SimDisk>,
    model: &mut Model,
    p: u64,
    survivors: &std::collections::HashSet<u64>,
) {
    let floors: Vec<(Vec<u8>, usize)> = model
        .dependencies
        .iter()
        .filter(|d| d.partition == p && survivors.contains(&d.append))
        .map(|d| (d.key.clone(), d.value))
        .collect();
    model.tally.meta_orders_checked += floors.len() as u64;
    let part = model.parts.entry(p).or_default();
    for (key, m) in part.meta.iter_mut() {
        let floor = floors
            .iter()
            .filter(|(k, _)| k == key)
            .map(|&(_, v)| v)
            .max()
            .max(m.acked);
        let got = shard.get_meta(p, key);
        note(|| {
            format!(
                "meta {p} {key:?}: {got:?}, at least #{floor:?} of {}",
                m.values.len()
            )
        });
        let found = got
            .as_ref()
            .and_then(|g| m.values.iter().rposition(|v| v == g));
        match floor {
            Some(floor) => assert!(
                found.is_some_and(|i| i >= floor),
                "seed {seed}: partition {p} metadata {key:?} lost value #{floor}: holds {got:?}"
            ),
            None => assert!(
                got.is_none() || found.is_some(),
                "seed {seed}: partition {p} metadata {key:?} holds {got:?}, never put"
            ),
        }
        m.values = got.into_iter().collect();
        m.acked = (!m.values.is_empty()).then_some(0);
    }
}
