//! The operations a run's steps draw: appends (one at a time or several
//! appenders at once, some behind a metadata write in flight), reads and
//! follower fetches, delete-befores, truncates, resets and metadata
//! writes, each checked against the model as it completes.

use std::{cell::RefCell, rc::Rc};

use corelog_shard::{sim::SimDisk, Error, Record, Shard};

use crate::{
    model::{MetaDependency, Profile, DIR, PARTITIONS},
    run::Run,
    trace::note,
};

impl Run {
    pub(crate) async fn append(&mut self, shard: &Shard<SimDisk>) -> bool {
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
    pub(crate) async fn burst(
        &mut self,
        shard: &Shard<SimDisk>,
        yields: Option<u32>,
    ) -> (Vec<glommio::Task<()>>, bool) {
        let failed = Rc::new(RefCell::new(None::<Error>));
        let mut tasks = Vec::new();
        if self.rng.u8(..) < 96 {
            // A metadata write with an append to its partition right behind
            // it: the append must not outlive the metadata in a crash.
            let p = PARTITIONS[self.rng.usize(..PARTITIONS.len())];
            let (key, value) = self.meta_value();
            let (id, records) = self.model.borrow_mut().issue(p, &mut self.rng);
            let index = self.model.borrow_mut().meta_issued(p, &key, &value);
            self.model.borrow_mut().dependencies.push(MetaDependency {
                partition: p,
                key: key.clone(),
                value: index,
                append: id,
            });
            let (s, model, f) = (shard.clone(), self.model.clone(), failed.clone());
            tasks.push(glommio::spawn_local(async move {
                match s.put_meta(p, &key, &value).await {
                    Ok(()) => acked_meta(&model, p, &key, index),
                    Err(e) => {
                        f.borrow_mut().get_or_insert(e);
                    }
                }
            }));
            let (s, model, f) = (shard.clone(), self.model.clone(), failed.clone());
            tasks.push(glommio::spawn_local(async move {
                futures_lite::future::yield_now().await;
                match s.append(p, &records).await {
                    Ok(base) => model.borrow_mut().acked(p, base, &records),
                    Err(e) => {
                        f.borrow_mut().get_or_insert(e);
                    }
                }
            }));
        }
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

    pub(crate) async fn read(&mut self, shard: &Shard<SimDisk>) -> bool {
        let seed = self.seed;
        let p = PARTITIONS[self.rng.usize(..PARTITIONS.len())];
        let o = shard.offsets(p);
        // Read committed: reads serve up to the acknowledged end, which
        // under `Always` is durable (a reset in flight may have moved the
        // start past it: nothing is readable then), so no read returns a
        // record a crash can take back (the durable ends are checked after
        // every crash).
        assert!(
            o.end <= o.durable_end.max(o.start) || self.profile.acks_before_sync(),
            "seed {seed}: partition {p} serves records that are not durable: {o:?}"
        );
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
        assert!(
            records.len() as u64 <= o.end - offset,
            "seed {seed}: read {p}@{offset} returned past the acknowledged end {}",
            o.end
        );
        if !follow {
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

    pub(crate) async fn control(&mut self, shard: &Shard<SimDisk>, truncate: bool) -> bool {
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

    /// A reset to anywhere up to a little past the end.
    pub(crate) async fn reset(&mut self, shard: &Shard<SimDisk>) -> bool {
        let p = PARTITIONS[self.rng.usize(..PARTITIONS.len())];
        let o = shard.offsets(p);
        let at = self.rng.u64(0..=o.end + 20);
        let result = shard.reset(p, at).await;
        note(|| format!("reset {p}@{at}: {result:?}"));
        {
            let mut model = self.model.borrow_mut();
            let part = model.parts.entry(p).or_default();
            if result.is_ok() {
                part.start_min = at;
                part.start_max = at;
                part.acked_end = at;
                part.known.clear();
                let o = shard.offsets(p);
                assert_eq!((o.start, o.end), (at, at), "seed {}", self.seed);
            } else {
                // It may or may not have reached the disk.
                part.start_min = part.start_min.min(at);
                part.start_max = part.start_max.max(at);
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

    /// A metadata write, read back at once.
    pub(crate) async fn put_meta(&mut self, shard: &Shard<SimDisk>) -> bool {
        let p = PARTITIONS[self.rng.usize(..PARTITIONS.len())];
        let (key, value) = self.meta_value();
        let index = self.model.borrow_mut().meta_issued(p, &key, &value);
        let result = shard.put_meta(p, &key, &value).await;
        note(|| format!("put_meta {p} {key:?} #{index}: {result:?}"));
        match result {
            Ok(()) => {
                assert_eq!(shard.get_meta(p, &key), Some(value), "seed {}", self.seed);
                acked_meta(&self.model, p, &key, index);
                true
            }
            Err(e) => {
                self.check_stopped(shard, &e).await;
                false
            }
        }
    }

    /// One of a few keys, and a value no other write has.
    fn meta_value(&mut self) -> (Vec<u8>, Vec<u8>) {
        let key = format!("k{}", self.rng.u8(..3)).into_bytes();
        let value = self.rng.u64(..).to_le_bytes().to_vec();
        (key, value)
    }
}

/// Records that the `put_meta` of value `index` of `key` returned `Ok`.
fn acked_meta(model: &RefCell<crate::model::Model>, p: u64, key: &[u8], index: usize) {
    let mut model = model.borrow_mut();
    let m = model.parts.entry(p).or_default();
    let m = m.meta.entry(key.to_vec()).or_default();
    m.acked = m.acked.max(Some(index));
}
