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
};

use crate::{
    error::{Error, Result},
    storage::{IoBuffer, Storage, StorageFile},
};

mod faults;

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

    async fn list(&self, dir: &Path) -> Result<Vec<String>> {
        self.begin("list", dir, 0, 0)?;
        let d = self.0.borrow();
        Ok(in_dir(&d.names, dir)
            .filter_map(|(p, _)| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
}

impl StorageFile for SimFile {
    type Buffer = SimBuffer;
    type ReadBuf = Vec<u8>;

    fn path(&self) -> &Path {
        &self.path
    }

    /// The data reaches the written image when the write is issued, as a
    /// submitted io_uring write reaches the device even if its submitter
    /// dies before the completion; it completes after the delay.
    async fn write_at(&self, buf: SimBuffer, pos: u64) -> Result<usize> {
        let disk = &self.disk;
        // The strictest disk: O_DIRECT wants block-aligned positions and
        // lengths, and no two writes in flight may overlap.
        assert_aligned("write", &self.path, pos, buf.0.len());
        let aimed = (pos as usize, buf.0.len());
        if let Some(other) =
            self.inode.borrow().pending.iter().find(|p| {
                !p.done && p.aimed.0 < aimed.0 + aimed.1 && aimed.0 < p.aimed.0 + p.aimed.1
            })
        {
            panic!(
                "two writes in flight overlap in {}: [{}, +{}) and [{}, +{})",
                self.path.display(),
                other.aimed.0,
                other.aimed.1,
                aimed.0,
                aimed.1
            );
        }
        disk.begin("write", &self.path, pos, buf.0.len() as u64)?;
        if disk.chance(|f| f.write_eio) {
            disk.0.borrow_mut().counts.write_eio += 1;
            return Err(os_error("write", &self.path, EIO));
        }
        let full = {
            let d = disk.0.borrow();
            let grow =
                (pos as usize + buf.0.len()).saturating_sub(self.inode.borrow().written.len());
            d.faults
                .capacity
                .is_some_and(|cap| SimDisk::used(&d) + grow as u64 > cap)
        };
        if full || disk.chance(|f| f.write_enospc) {
            disk.0.borrow_mut().counts.enospc += 1;
            return Err(os_error("write", &self.path, ENOSPC));
        }
        let mut data = buf.0;
        let mut at = pos as usize;
        let id = {
            let mut d = disk.0.borrow_mut();
            d.next_write += 1;
            d.next_write
        };
        {
            let mut d = disk.0.borrow_mut();
            let d = &mut *d;
            if d.faults.misdirect > 0.0 && d.rng.f64() < d.faults.misdirect {
                d.counts.misdirected += 1;
                let shift = d.rng.usize(1..=4) * crate::storage::BLOCK_SIZE as usize;
                at = if d.rng.bool() {
                    at + shift
                } else {
                    at.saturating_sub(shift)
                };
            }
            if d.faults.stored_flip > 0.0 && d.rng.f64() < d.faults.stored_flip && !data.is_empty()
            {
                d.counts.stored_flips += 1;
                let bit = d.rng.usize(..data.len() * 8);
                data[bit / 8] ^= 1 << (bit % 8);
            }
            let mut inode = self.inode.borrow_mut();
            if inode.written.len() < at + data.len() {
                inode.written.resize(at + data.len(), 0);
            }
            inode.written[at..at + data.len()].copy_from_slice(&data);
            inode.pending.push(Pending {
                id,
                start: at,
                len: data.len(),
                aimed,
                done: false,
            });
        }
        disk.delay().await;
        if let Some(p) = self
            .inode
            .borrow_mut()
            .pending
            .iter_mut()
            .find(|p| p.id == id)
        {
            p.done = true;
        }
        Ok(data.len())
    }

    async fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        assert_aligned("read", &self.path, pos, len);
        self.disk.begin("read", &self.path, pos, len as u64)?;
        self.disk.delay().await;
        let mut data = {
            let inode = self.inode.borrow();
            let start = (pos as usize).min(inode.written.len());
            let end = (start + len).min(inode.written.len());
            inode.written[start..end].to_vec()
        };
        if !data.is_empty() && self.disk.chance(|f| f.read_flip) {
            let mut d = self.disk.0.borrow_mut();
            d.counts.read_flips += 1;
            let bit = d.rng.usize(..data.len() * 8);
            data[bit / 8] ^= 1 << (bit % 8);
        }
        Ok(data)
    }

    async fn fdatasync(&self) -> Result<()> {
        self.disk.begin("fdatasync", &self.path, 0, 0)?;
        let covered: Vec<u64> = {
            let inode = self.inode.borrow();
            inode
                .pending
                .iter()
                .filter(|p| p.done)
                .map(|p| p.id)
                .collect()
        };
        self.disk.delay().await;
        // The disk may have died while this sync was in flight.
        self.disk.begin("fdatasync done", &self.path, 0, 0)?;
        if self.disk.chance(|f| f.sync_eio) {
            self.disk.0.borrow_mut().counts.sync_eio += 1;
            return Err(os_error("fdatasync", &self.path, EIO));
        }
        let mut inode = self.inode.borrow_mut();
        let inode = &mut *inode;
        // The file's size is durable; of the data, the writes that had
        // completed when the sync was issued.
        let len = inode.written.len();
        inode.durable.resize(len, 0);
        for p in inode.pending.iter().filter(|p| covered.contains(&p.id)) {
            let end = (p.start + p.len).min(len);
            if p.start < end {
                inode.durable[p.start..end].copy_from_slice(&inode.written[p.start..end]);
            }
        }
        inode.pending.retain(|p| !covered.contains(&p.id));
        Ok(())
    }

    async fn allocate(&self, len: u64) -> Result<()> {
        self.disk.begin("allocate", &self.path, len, 0)?;
        let grow = len.saturating_sub(self.inode.borrow().written.len() as u64);
        let full = {
            let d = self.disk.0.borrow();
            d.faults
                .capacity
                .is_some_and(|cap| SimDisk::used(&d) + grow > cap)
        };
        if full {
            self.disk.0.borrow_mut().counts.enospc += 1;
            return Err(os_error("fallocate", &self.path, ENOSPC));
        }
        let mut inode = self.inode.borrow_mut();
        if (inode.written.len() as u64) < len {
            inode.written.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn size(&self) -> Result<u64> {
        self.disk.begin("size", &self.path, 0, 0)?;
        Ok(self.inode.borrow().written.len() as u64)
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}
