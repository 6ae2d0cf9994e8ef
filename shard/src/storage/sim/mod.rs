//! A simulated disk behind the storage seam: deterministic for a seed, and
//! as unreliable as asked.
//!
//! Every file has two images: what was *written* (what a read sees) and what
//! is *durable* (what an fdatasync covered). Directory entries are durable
//! only once their directory is synced. [`SimDisk::crash`] throws away
//! everything not durable, except that each 512-byte sector of a write
//! still pending may survive by chance: a torn write.
//!
//! [`Faults`] adds, with the probabilities given: EIO on write and on
//! fdatasync, ENOSPC on write, writes landing at the wrong position, bits
//! flipped in what a write stores or in what a read returns, and latency
//! (the operation yields to other tasks before it completes, so concurrent
//! operations complete out of order). A byte capacity makes the disk fill
//! up. Every choice comes from one seeded generator, so a seed replays the
//! same run; [`SimDisk::trace`] is a digest of every operation to prove it.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
    rc::Rc,
    time::Duration,
};

use crate::{
    error::{Error, Result},
    storage::{IoBuffer, Storage},
};

mod faults;
mod file;

pub use faults::{FaultCounts, Faults};

/// Sector size: the unit a crash tears writes at.
pub const SECTOR: usize = 512;

/// What a crash keeps of the writes not yet covered by an fdatasync.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CrashKind {
    /// Only the durable image.
    DurableOnly,
    /// Each pending sector survives with probability one half.
    Torn,
    /// Every pending write and directory change reached the disk (a
    /// process kill).
    AllWritten,
}

/// One file's contents.
#[derive(Debug, Default)]
struct Inode {
    written: Vec<u8>,
    durable: Vec<u8>,
    /// Writes not yet covered by a successful fdatasync.
    pending: Vec<Pending>,
}

/// Panics unless an O_DIRECT operation's position and length are
/// multiples of the block size.
fn assert_aligned(op: &str, path: &Path, pos: u64, len: usize) {
    let block = crate::storage::BLOCK_SIZE;
    assert!(
        pos.is_multiple_of(block) && (len as u64).is_multiple_of(block),
        "{op} of {len} bytes at {pos} in {} is not block-aligned, as O_DIRECT requires",
        path.display()
    );
}

/// A write not yet durable.
#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u64,
    start: usize,
    len: usize,
    /// The write completed (its caller saw the result). An fdatasync
    /// covers only writes completed before it was issued.
    done: bool,
    /// Where the write was aimed (position, length), whatever the
    /// device did with it.
    aimed: (usize, usize),
}

type InodeRef = Rc<RefCell<Inode>>;

struct Disk {
    rng: fastrand::Rng,
    faults: Faults,
    counts: FaultCounts,
    names: BTreeMap<PathBuf, InodeRef>,
    durable_names: BTreeMap<PathBuf, InodeRef>,
    /// Directories `prepare_dir` created, and those whose entry a sync of
    /// their parent made durable. A power loss forgets the files of a
    /// created directory whose entry was not durable. (Directories no one
    /// created, such as the root of the test, always exist.)
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    /// The virtual clock: time advances only when a sleeper wakes.
    clock: Duration,
    /// Set by a crash: the process that used this disk is gone.
    dead: bool,
    trace: u32,
    /// Id of the next write.
    next_write: u64,
}

/// The simulated disk; clones share it.
#[derive(Clone)]
pub struct SimDisk(Rc<RefCell<Disk>>);

/// An open file on a [`SimDisk`].
pub struct SimFile {
    disk: SimDisk,
    inode: InodeRef,
    path: PathBuf,
}

/// A write buffer of the simulated disk.
#[derive(Debug)]
pub struct SimBuffer(Vec<u8>);

impl IoBuffer for SimBuffer {
    fn as_slice(&self) -> &[u8] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.0
    }
    fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

fn os_error(op: &'static str, path: &Path, errno: i32) -> Error {
    Error::io(op, path, io::Error::from_raw_os_error(errno))
}

impl SimDisk {
    /// An empty disk whose every random choice follows `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        SimDisk(Rc::new(RefCell::new(Disk {
            rng: fastrand::Rng::with_seed(seed),
            faults,
            counts: FaultCounts::default(),
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            dirs: BTreeSet::new(),
            durable_dirs: BTreeSet::new(),
            clock: Duration::ZERO,
            dead: false,
            trace: 0,
            next_write: 0,
        })))
    }

    /// Replaces the fault probabilities from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.0.borrow_mut().faults = faults;
    }

    /// Faults injected so far on this disk (not counting earlier disks a
    /// crash came from).
    pub fn counts(&self) -> FaultCounts {
        self.0.borrow().counts
    }

    /// A digest of every operation so far and its outcome: two runs of one
    /// seed have the same.
    pub fn trace(&self) -> u32 {
        self.0.borrow().trace
    }

    /// Power loss: returns the disk as it comes back, holding the durable
    /// images and directory entries plus what `kind` keeps of pending
    /// writes. This disk stops working: every later operation on it (from
    /// tasks of the dead process) fails with EIO.
    pub fn crash(&self, kind: CrashKind) -> SimDisk {
        let mut d = self.0.borrow_mut();
        d.dead = true;
        let mut rng = fastrand::Rng::with_seed(d.rng.u64(..));
        let mut counts = d.counts;
        let mut names = BTreeMap::new();
        // Several names can point at one inode (a rename not yet durable
        // leaves the old name durable); they keep sharing it.
        let mut copies: Vec<(InodeRef, InodeRef)> = Vec::new();
        // A process kill loses nothing the kernel was told; power loss
        // keeps only the directory entries a directory sync covered.
        let (entries, dirs) = match kind {
            CrashKind::AllWritten => (&d.names, &d.dirs),
            _ => (&d.durable_names, &d.durable_dirs),
        };
        let lost_dir = |path: &Path| {
            path.parent()
                .is_some_and(|dir| d.dirs.contains(dir) && !dirs.contains(dir))
        };
        for (path, inode) in entries.iter().filter(|(p, _)| !lost_dir(p)) {
            let copy = match copies.iter().find(|(old, _)| Rc::ptr_eq(old, inode)) {
                Some((_, copy)) => copy.clone(),
                None => {
                    let image = survivor(&inode.borrow(), kind, &mut rng, &mut counts);
                    let copy = Rc::new(RefCell::new(Inode {
                        written: image.clone(),
                        durable: image,
                        pending: Vec::new(),
                    }));
                    copies.push((inode.clone(), copy.clone()));
                    copy
                }
            };
            names.insert(path.clone(), copy);
        }
        let seed = rng.u64(..);
        let after = Disk {
            rng: fastrand::Rng::with_seed(seed),
            faults: d.faults.clone(),
            counts,
            durable_names: names.clone(),
            names,
            dirs: dirs.clone(),
            durable_dirs: dirs.clone(),
            clock: d.clock,
            dead: false,
            trace: d.trace,
            next_write: 0,
        };
        SimDisk(Rc::new(RefCell::new(after)))
    }

    /// Creates (or replaces) the file at `path` holding `bytes`, durably,
    /// as if it had been written and synced long ago.
    pub fn set_contents(&self, path: &Path, bytes: &[u8]) {
        let inode = Rc::new(RefCell::new(Inode {
            written: bytes.to_vec(),
            durable: bytes.to_vec(),
            pending: Vec::new(),
        }));
        let mut d = self.0.borrow_mut();
        d.names.insert(path.to_path_buf(), inode.clone());
        d.durable_names.insert(path.to_path_buf(), inode);
    }

    /// The written bytes of the file at `path`, if it exists.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let d = self.0.borrow();
        d.names.get(path).map(|i| i.borrow().written.clone())
    }

    /// Total bytes the files hold.
    fn used(d: &Disk) -> u64 {
        let mut seen: Vec<*const RefCell<Inode>> = Vec::new();
        let mut total = 0;
        for inode in d.names.values().chain(d.durable_names.values()) {
            if !seen.contains(&Rc::as_ptr(inode)) {
                seen.push(Rc::as_ptr(inode));
                total += inode.borrow().written.len() as u64;
            }
        }
        total
    }

    /// Mixes an operation into the trace and fails when the disk is dead.
    fn begin(&self, op: &'static str, path: &Path, a: u64, b: u64) -> Result<()> {
        let mut d = self.0.borrow_mut();
        let mut h = crc32c::crc32c_append(d.trace, op.as_bytes());
        h = crc32c::crc32c_append(h, path.as_os_str().as_encoded_bytes());
        h = crc32c::crc32c_append(h, &a.to_le_bytes());
        d.trace = crc32c::crc32c_append(h, &b.to_le_bytes());
        if d.dead {
            return Err(os_error(op, path, EIO));
        }
        Ok(())
    }

    /// Yields to other tasks a random number of times.
    async fn delay(&self) {
        let n = {
            let mut d = self.0.borrow_mut();
            let max = d.faults.max_delay;
            if max == 0 {
                0
            } else {
                d.rng.u32(0..=max)
            }
        };
        for _ in 0..n {
            futures_lite::future::yield_now().await;
        }
    }

    fn chance(&self, p: impl Fn(&Faults) -> f64) -> bool {
        let mut d = self.0.borrow_mut();
        let p = p(&d.faults);
        p > 0.0 && d.rng.f64() < p
    }
}

/// EIO (errno values are fixed by the Linux ABI).
const EIO: i32 = 5;
/// ENOSPC.
const ENOSPC: i32 = 28;
/// ENOENT.
const ENOENT: i32 = 2;

/// The image a crash leaves of `inode`.
fn survivor(
    inode: &Inode,
    kind: CrashKind,
    rng: &mut fastrand::Rng,
    counts: &mut FaultCounts,
) -> Vec<u8> {
    let mut image = inode.durable.clone();
    for &Pending { start, len, .. } in &inode.pending {
        for sector in (start..start + len).step_by(SECTOR) {
            let end = (sector + SECTOR).min(start + len).min(inode.written.len());
            if sector >= end {
                continue;
            }
            let keep = match kind {
                CrashKind::DurableOnly => false,
                CrashKind::Torn => rng.bool(),
                CrashKind::AllWritten => true,
            };
            if !keep {
                counts.lost_sectors += 1;
                continue;
            }
            counts.torn_sectors += 1;
            if image.len() < end {
                image.resize(end, 0);
            }
            image[sector..end].copy_from_slice(&inode.written[sector..end]);
        }
    }
    image
}

fn in_dir<'a>(
    names: &'a BTreeMap<PathBuf, InodeRef>,
    dir: &'a Path,
) -> impl Iterator<Item = (&'a PathBuf, &'a InodeRef)> + 'a {
    names.iter().filter(move |(p, _)| p.parent() == Some(dir))
}

impl Storage for SimDisk {
    type File = SimFile;

    fn alloc(&self, len: usize) -> SimBuffer {
        assert_aligned("buffer allocation", Path::new("-"), 0, len);
        SimBuffer(vec![0; len])
    }

    async fn open(&self, path: &Path, create: bool) -> Result<SimFile> {
        self.begin("open", path, u64::from(create), 0)?;
        let mut d = self.0.borrow_mut();
        let inode = match d.names.get(path) {
            Some(inode) => inode.clone(),
            None if create => {
                let inode = InodeRef::default();
                d.names.insert(path.to_path_buf(), inode.clone());
                inode
            }
            None => return Err(os_error("open", path, ENOENT)),
        };
        Ok(SimFile {
            disk: self.clone(),
            inode,
            path: path.to_path_buf(),
        })
    }

    async fn remove(&self, path: &Path) -> Result<()> {
        self.begin("remove", path, 0, 0)?;
        match self.0.borrow_mut().names.remove(path) {
            Some(_) => Ok(()),
            None => Err(os_error("remove", path, ENOENT)),
        }
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.begin("rename", from, 0, 0)?;
        let mut d = self.0.borrow_mut();
        let inode = d
            .names
            .remove(from)
            .ok_or_else(|| os_error("rename", from, ENOENT))?;
        d.names.insert(to.to_path_buf(), inode);
        Ok(())
    }

    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.begin("sync_dir", dir, 0, 0)?;
        self.delay().await;
        let mut d = self.0.borrow_mut();
        let d = &mut *d;
        d.durable_names.retain(|p, _| p.parent() != Some(dir));
        let current: Vec<_> = in_dir(&d.names, dir)
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        d.durable_names.extend(current);
        let created: Vec<PathBuf> = d
            .dirs
            .iter()
            .filter(|x| x.parent() == Some(dir))
            .cloned()
            .collect();
        d.durable_dirs.extend(created);
        Ok(())
    }

    async fn prepare_dir(&self, dir: &Path) -> Result<()> {
        self.begin("prepare_dir", dir, 0, 0)?;
        self.0.borrow_mut().dirs.insert(dir.to_path_buf());
        Ok(())
    }

    fn now(&self) -> Duration {
        self.0.borrow().clock
    }

    /// Yields like any operation, then moves the virtual clock to the
    /// wake-up time: nothing else in a simulation waits for time, so a
    /// sleeper is the next event.
    async fn sleep(&self, d: Duration) {
        let wake = self.now() + d;
        self.delay().await;
        let mut disk = self.0.borrow_mut();
        disk.clock = disk.clock.max(wake);
    }

    async fn list(&self, dir: &Path) -> Result<Vec<String>> {
        self.begin("list", dir, 0, 0)?;
        let d = self.0.borrow();
        Ok(in_dir(&d.names, dir)
            .filter_map(|(p, _)| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
}
