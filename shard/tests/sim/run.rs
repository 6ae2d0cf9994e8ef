//! One seed's run: the shard opened (and reopened, salvaged after refused
//! damage) on the simulated disk, the loop of random steps with its clean
//! reopens and crashes, and the tallies it ends with.

use std::{cell::RefCell, rc::Rc};

use corelog_shard::{
    sim::{CrashKind, Faults, SimDisk},
    Error, RecoveryMode, Shard,
};

use crate::{
    model::{config, is_io_failure, Model, Profile, Tally, DIR, PARTITIONS},
    trace::{dump, note},
};

const STEPS: usize = 80;

/// Why a seed stopped early.
pub(crate) enum Stop {
    /// Recovery refused damaged data (corruption profile only).
    Refused,
}

pub(crate) struct Run {
    pub(crate) seed: u64,
    pub(crate) profile: Profile,
    pub(crate) rng: fastrand::Rng,
    pub(crate) model: Rc<RefCell<Model>>,
    pub(crate) disk: SimDisk,
}

impl Run {
    pub(crate) fn fail_ok(&self, e: &Error) -> bool {
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

    pub(crate) async fn run(mut self) -> (Tally, u32) {
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
                65..=67 => self.control(&shard, false).await,
                68..=69 => self.put_meta(&shard).await,
                70..=72 => self.control(&shard, true).await,
                73..=74 => self.reset(&shard).await,
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
