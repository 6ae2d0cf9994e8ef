//! I/O failures injected through the storage seam: they are sticky, they
//! name the operation and the file, and nothing failed is acknowledged.

mod common;

use std::{cell::Cell, io, path::Path, rc::Rc};

use common::{append, assert_batch_holds, records_for, run, small_config, test_dir};
use corelog_shard::{
    internals::{Appended, DmaStorage, DmaStorageFile, Wal},
    Error, FsyncPolicy, Result, Storage, StorageFile,
};

/// What to break next.
#[derive(Default)]
struct Plan {
    /// Fail the next segment write with this errno.
    write_errno: Cell<Option<i32>>,
    /// Fail the next fdatasync with this errno.
    sync_errno: Cell<Option<i32>>,
    /// Report the next write as 512 bytes short.
    short_write: Cell<bool>,
    /// Fail every sidecar write with this errno.
    sidecar_errno: Cell<Option<i32>>,
    /// Flip a bit in what the next segment read at this position returns,
    /// at this index of the read.
    flip_read_at: Cell<Option<(u64, usize)>>,
    /// Hold the next segment fdatasync this long before it runs.
    sync_delay: Cell<Option<std::time::Duration>>,
    /// Segment fdatasyncs running now.
    syncs_running: Cell<u32>,
    /// A segment write was issued while an fdatasync ran.
    wrote_during_sync: Cell<bool>,
}

/// The real disk, with faults injected on demand.
#[derive(Clone)]
struct Faulty {
    real: DmaStorage,
    plan: Rc<Plan>,
}

struct FaultyFile {
    real: DmaStorageFile,
    plan: Rc<Plan>,
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wal")
}

impl Storage for Faulty {
    type File = FaultyFile;

    fn alloc(&self, len: usize) -> <FaultyFile as StorageFile>::Buffer {
        self.real.alloc(len)
    }

    async fn open(&self, path: &Path, create: bool) -> Result<FaultyFile> {
        Ok(FaultyFile {
            real: self.real.open(path, create).await?,
            plan: self.plan.clone(),
        })
    }
    /// The real `O_DSYNC` descriptor; its durable writes go through this
    /// wrapper's write and fdatasync (the trait's default), with their faults.
    async fn open_durable(&self, path: &Path) -> Result<FaultyFile> {
        Ok(FaultyFile {
            real: self.real.open_durable(path).await?,
            plan: self.plan.clone(),
        })
    }
    async fn remove(&self, path: &Path) -> Result<()> {
        self.real.remove(path).await
    }
    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.real.rename(from, to).await
    }
    fn now(&self) -> std::time::Duration {
        self.real.now()
    }
    async fn sleep(&self, d: std::time::Duration) {
        self.real.sleep(d).await
    }
    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.real.sync_dir(dir).await
    }
    async fn prepare_dir(&self, dir: &Path) -> Result<()> {
        self.real.prepare_dir(dir).await
    }
    async fn list(&self, dir: &Path) -> Result<Vec<String>> {
        self.real.list(dir).await
    }
}

impl StorageFile for FaultyFile {
    type Buffer = <DmaStorageFile as StorageFile>::Buffer;
    type ReadBuf = Vec<u8>;

    fn path(&self) -> &Path {
        self.real.path()
    }
    async fn write_at(&self, buf: Self::Buffer, pos: u64) -> Result<usize> {
        if self.path().extension().is_some_and(|e| e == "idx") {
            if let Some(errno) = self.plan.sidecar_errno.get() {
                return Err(Error::io(
                    "write",
                    self.path(),
                    io::Error::from_raw_os_error(errno),
                ));
            }
        }
        if is_segment(self.path()) && pos > 0 {
            if self.plan.syncs_running.get() > 0 {
                self.plan.wrote_during_sync.set(true);
            }
            if let Some(errno) = self.plan.write_errno.take() {
                return Err(Error::io(
                    "write",
                    self.path(),
                    io::Error::from_raw_os_error(errno),
                ));
            }
            if self.plan.short_write.take() {
                let n = self.real.write_at(buf, pos).await?;
                return Ok(n - 512);
            }
        }
        self.real.write_at(buf, pos).await
    }
    async fn read_at(&self, pos: u64, len: usize) -> Result<Self::ReadBuf> {
        let mut bytes = self.real.read_at(pos, len).await?.to_vec();
        if let Some((at, index)) = self.plan.flip_read_at.get() {
            if is_segment(self.path()) && at == pos {
                // The bytes the read returns are damaged, not the stored ones.
                self.plan.flip_read_at.set(None);
                bytes[index] ^= 0x10;
            }
        }
        Ok(bytes)
    }
    async fn fdatasync(&self) -> Result<()> {
        if !is_segment(self.path()) {
            return self.real.fdatasync().await;
        }
        if let Some(errno) = self.plan.sync_errno.take() {
            return Err(Error::io(
                "fdatasync",
                self.path(),
                io::Error::from_raw_os_error(errno),
            ));
        }
        let running = &self.plan.syncs_running;
        running.set(running.get() + 1);
        if let Some(d) = self.plan.sync_delay.take() {
            glommio::timer::sleep(d).await;
        }
        let done = self.real.fdatasync().await;
        running.set(running.get() - 1);
        done
    }
    async fn allocate(&self, len: u64) -> Result<()> {
        self.real.allocate(len).await
    }
    async fn size(&self) -> Result<u64> {
        self.real.size().await
    }
    async fn close(self) -> Result<()> {
        self.real.close().await
    }
}

/// Opens a shard on faulty storage, appends one good batch, arms the fault
/// with `arm`, and returns the error of the next append, what later calls
/// got, and the first batch's location.
fn inject(fsync: FsyncPolicy, arm: impl FnOnce(&Plan) + Send + 'static) -> (Error, Vec<Error>) {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let config = small_config(&path, fsync);
    let config2 = config.clone();
    let (first, later, good) = run(move || async move {
        let plan = Rc::new(Plan::default());
        let storage = Faulty {
            real: DmaStorage,
            plan: plan.clone(),
        };
        let (shard, _) = Wal::open_with(storage, config).await.unwrap();
        let good = append(&shard, 1, &records_for(1)).await.unwrap();
        arm(&plan);
        let before = shard.stats();
        let first = append(&shard, 1, &records_for(2)).await.unwrap_err();
        let later = vec![
            append(&shard, 1, &records_for(3)).await.unwrap_err(),
            shard.flush().await.unwrap_err(),
            shard.close().await.unwrap_err(),
        ];
        // A failed fdatasync never moves the durable position.
        let after = shard.stats();
        assert_eq!(
            (after.durable_segment, after.durable_position),
            (before.durable_segment, before.durable_position)
        );
        (first, later, good)
    });
    // The failed shard's close released every file it had open.
    let held: Vec<_> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(&path))
        .collect();
    assert!(held.is_empty(), "still open after close: {held:?}");
    // The acknowledged batch survives, and appends work again after reopening.
    run(move || async move {
        let (shard, rec) = Wal::open(config2).await.unwrap();
        assert!(rec.batches.iter().any(|b| b.position == good.position));
        append(&shard, 1, &records_for(4)).await.unwrap();
        shard.close().await.unwrap();
    });
    (first, later)
}

fn assert_names(err: &Error, op: &str) {
    let text = err.to_string();
    assert!(text.contains(op), "{text}");
    assert!(
        text.contains(".wal"),
        "error does not name the file: {text}"
    );
}

#[test]
fn eio_on_write_is_sticky_and_names_the_file() {
    let (first, later) = inject(FsyncPolicy::Never, |p| p.write_errno.set(Some(5)));
    assert_names(&first, "write failed");
    let Error::Failed(inner) = &first else {
        panic!("{first}")
    };
    assert!(matches!(**inner, Error::Io { op: "write", .. }));
    for e in &later {
        assert!(matches!(e, Error::Failed(_)), "{e}");
        assert_names(e, "write failed");
    }
}

#[test]
fn eio_on_fdatasync_is_sticky_under_always() {
    let (first, later) = inject(FsyncPolicy::Always, |p| p.sync_errno.set(Some(5)));
    assert_names(&first, "fdatasync failed");
    for e in &later {
        assert_names(e, "fdatasync failed");
    }
}

#[test]
fn enospc_is_its_own_error() {
    let (first, _) = inject(FsyncPolicy::Always, |p| p.write_errno.set(Some(28)));
    let Error::Failed(inner) = &first else {
        panic!("{first}")
    };
    assert!(
        matches!(**inner, Error::NoSpace { op: "write", .. }),
        "{inner}"
    );
    assert_names(&first, "no space left");
}

#[test]
fn short_write_is_detected() {
    let (first, _) = inject(FsyncPolicy::Always, |p| p.short_write.set(true));
    let Error::Failed(inner) = &first else {
        panic!("{first}")
    };
    assert!(matches!(**inner, Error::ShortWrite { .. }), "{inner}");
    assert_names(&first, "short write");
}

/// A sidecar is a cache: one that cannot be written (here ENOSPC) at a roll
/// or at close costs the next open a scan, never the shard or the data.
#[test]
fn a_sidecar_that_cannot_be_written_stops_nothing() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let config = small_config(&path, FsyncPolicy::Always);
    let config2 = config.clone();
    let appended = run(move || async move {
        let plan = Rc::new(Plan::default());
        plan.sidecar_errno.set(Some(28)); // ENOSPC
        let storage = Faulty {
            real: DmaStorage,
            plan,
        };
        let (wal, _) = Wal::open_with(storage, config).await.unwrap();
        let mut appended = 0;
        // Enough to roll segments (64 KiB each) several times.
        for i in 0..400 {
            append(&wal, 1, &records_for(i)).await.unwrap();
            appended += 1;
        }
        let stats = wal.stats();
        assert!(stats.rolls >= 2, "{stats:?}");
        assert!(stats.sidecar_failures >= 2, "{stats:?}");
        wal.close().await.unwrap();
        appended
    });
    run(move || async move {
        let (wal, rec) = Wal::open(config2).await.unwrap();
        assert_eq!(rec.batches.len(), appended);
        assert_eq!(rec.report.sidecars_loaded, 0, "none was written");
        wal.close().await.unwrap();
    });
}

/// The block holding the end of the last batch is written back, when a
/// torn tail after it is erased, only from a read of that batch that
/// passed its checksum: a bit flipped by the read fails the open and is
/// never made durable over acknowledged data.
#[test]
fn a_torn_tail_is_erased_only_after_the_last_batch_read_back_intact() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let config = small_config(&path, FsyncPolicy::Always);
    let (config2, config3) = (config.clone(), config.clone());
    let last = run(move || async move {
        let (wal, _) = Wal::open(config).await.unwrap();
        let mut last = None;
        for i in 0..5 {
            last = Some(append(&wal, 1, &records_for(i)).await.unwrap());
        }
        // Abandoned, as a crash would leave it.
        drop(wal);
        last.unwrap()
    });
    // Garbage after the last batch, in its block: a write torn in flight.
    let segment = corelog_shard::internals::segment_path(&path, last.segment);
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = (last.position + u64::from(last.length)) as usize;
    assert!(
        !end.is_multiple_of(4096),
        "the last batch ends inside a block"
    );
    bytes[end..end + 16].fill(0xAB);
    std::fs::write(&segment, &bytes).unwrap();
    let block = last.position - last.position % 4096;
    let refused = run(move || async move {
        let plan = Rc::new(Plan::default());
        // Inside the last batch's records.
        plan.flip_read_at
            .set(Some((block, (last.position - block) as usize + 80)));
        let storage = Faulty {
            real: DmaStorage,
            plan,
        };
        Wal::open_with(storage, config2).await.err()
    });
    assert!(
        matches!(&refused, Some(Error::Corrupted { reason, .. }) if reason.contains("did not read back intact")),
        "{refused:?}"
    );
    // Nothing was written over the last batch: a clean open keeps it.
    run(move || async move {
        let (wal, rec) = Wal::open(config3).await.unwrap();
        assert_eq!(rec.batches.len(), 5, "{:?}", rec.report);
        assert!(rec.report.torn_tail.is_some());
        wal.close().await.unwrap();
    });
}

/// Under `Always` a group's durable write runs while the previous group's
/// is in flight (this wrapper makes a durable write a write, then a held
/// fdatasync); when the later write fails, neither append is acknowledged
/// unless it is durable: the failure is sticky, the durable position does
/// not move, and whatever was acknowledged survives a reopen.
#[test]
fn a_write_failing_while_an_earlier_durable_write_runs_loses_nothing_acknowledged() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let mut config = small_config(&path, FsyncPolicy::Always);
    // A large first group, alone in its commit.
    config.segment_bytes = 8 << 20;
    config.max_record_bytes = 2 << 20;
    config.max_batch_bytes = 2 << 20;
    config.max_write_bytes = 2 << 20;
    let config2 = config.clone();
    let (first, second) = run(move || async move {
        let plan = Rc::new(Plan::default());
        let storage = Faulty {
            real: DmaStorage,
            plan: plan.clone(),
        };
        let (wal, _) = Wal::open_with(storage, config).await.unwrap();
        let before = wal.stats();
        plan.sync_delay
            .set(Some(std::time::Duration::from_millis(200)));
        let big = vec![corelog_shard::Record::new(vec![7u8; 1100 << 10])];
        let first = {
            let wal = wal.clone();
            glommio::spawn_local(async move { wal.append(1, 0, 0, &big).await }).detach()
        };
        // Until the big group's write completed and its sync is held.
        while plan.syncs_running.get() == 0 {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        plan.write_errno.set(Some(5));
        let second = wal.append(1, 1, 0, &records_for(1)).await;
        assert!(
            plan.wrote_during_sync.get(),
            "the second group's write waited for the first group's durable write"
        );
        let first = first.await.unwrap();
        let after = wal.stats();
        if first.is_err() {
            assert_eq!(
                (after.durable_segment, after.durable_position),
                (before.durable_segment, before.durable_position),
                "the durable position moved for an append that failed"
            );
        }
        assert!(wal.close().await.is_err(), "the failure is sticky");
        (first.map(|a| a.position), second.map(|a| a.position))
    });
    let Err(second) = second else {
        panic!("the append whose write failed was acknowledged")
    };
    assert_names(&second, "write failed");
    run(move || async move {
        let (wal, rec) = Wal::open(config2).await.unwrap();
        if let Ok(position) = first {
            assert!(
                rec.batches.iter().any(|b| b.position == position),
                "an acknowledged append was lost"
            );
        }
        assert!(
            rec.batches.iter().all(|b| b.header.base_offset == 0),
            "the failed write left a batch: {:?}",
            rec.batches
        );
        wal.close().await.unwrap();
    });
}

/// A read the device damaged is never kept by the read cache: the same
/// read asked again goes to the device and returns the intact batch, and
/// a damaged read-ahead part is dropped and read again when it is asked
/// for.
#[test]
fn a_damaged_read_is_not_served_again_from_the_read_cache() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    let config = small_config(&path, FsyncPolicy::Always);
    run(move || async move {
        let plan = Rc::new(Plan::default());
        let open = || {
            let storage = Faulty {
                real: DmaStorage,
                plan: plan.clone(),
            };
            Wal::open_with(storage, config.clone())
        };
        let (wal, _) = open().await.unwrap();
        let mut at: Vec<Appended> = Vec::new();
        for i in 0..3 {
            at.push(append(&wal, 1, &records_for(i)).await.unwrap());
        }
        let from = at[0].position - at[0].position % 4096;
        // Within the read-ahead of a read of the first.
        assert!(at[2].position + u64::from(at[2].length) <= from + (64 << 10));
        let inside = |a: &Appended| (a.position - from) as usize + 40;
        // The asked batch is damaged: refused, and not cached.
        plan.flip_read_at.set(Some((from, inside(&at[0]))));
        let a = &at[0];
        let err = wal.read_batch(a.segment, a.position, a.length).await;
        assert!(matches!(err, Err(Error::Corrupted { .. })), "{err:?}");
        let batch = wal.read_batch(a.segment, a.position, a.length).await;
        assert_batch_holds(&batch.expect("read again, intact"), 0, &records_for(0));
        wal.close().await.unwrap();

        // A damaged read-ahead part: the asked batch verifies and the
        // extent is kept; asking for the damaged batch reads it again.
        let (wal, _) = open().await.unwrap();
        plan.flip_read_at.set(Some((from, inside(&at[2]))));
        let a = &at[0];
        wal.read_batch(a.segment, a.position, a.length)
            .await
            .unwrap();
        assert!(
            plan.flip_read_at.get().is_none(),
            "the read-ahead was damaged"
        );
        let a = &at[2];
        let batch = wal.read_batch(a.segment, a.position, a.length).await;
        let base = (records_for(0).len() + records_for(1).len()) as u64;
        assert_batch_holds(&batch.expect("read again, intact"), base, &records_for(2));
        wal.close().await.unwrap();
    });
}
