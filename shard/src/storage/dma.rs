//! [`Storage`] over glommio's `DmaFile`: O_DIRECT files driven by io_uring.
//!
//! Invariant: nothing here blocks the shard's thread on the device. Reads,
//! writes, fdatasyncs and directory syncs go through io_uring (a file's
//! size is an `fstat` of its descriptor, answered from memory); renames and
//! removals run on glommio's blocking pool (an unlink of a 64 MiB segment
//! frees its extents, which can take milliseconds); directory listing and
//! creation go there too.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

use crate::{
    error::{Error, Result},
    storage::{IoBuffer, Storage, StorageFile, BLOCK_SIZE},
};

/// Name of the file [`DmaStorage::prepare_dir`] keeps in a shard directory.
pub const IOPOLL_PROBE: &str = "iopoll-probe";

/// The real disk: O_DIRECT files through the executor's io_uring.
#[derive(Debug, Clone, Copy, Default)]
pub struct DmaStorage;

/// An O_DIRECT file and the path it was opened at.
#[derive(Debug)]
pub struct DmaStorageFile {
    file: DmaFile,
    path: PathBuf,
    /// Opened with `O_DSYNC` ([`Storage::open_durable`]): every write is
    /// durable when it completes.
    durable: bool,
}

impl DmaStorageFile {
    /// Opens `path` for reading and writing, creating it when `create`,
    /// with `O_DSYNC` when `durable`.
    async fn open(path: &Path, create: bool, durable: bool) -> Result<Self> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(create);
        if durable {
            options.custom_flags(libc::O_DSYNC);
        }
        let file = options.dma_open(path).await.map_err(io_err("open", path))?;
        Ok(DmaStorageFile {
            file,
            path: path.to_path_buf(),
            durable,
        })
    }
}

impl IoBuffer for DmaBuffer {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }

    fn truncate(&mut self, len: usize) {
        self.trim_to_size(len);
    }
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(glommio::GlommioError<()>) -> Error + 'a {
    move |e| Error::io(op, path, io::Error::from(e))
}

/// [`io_err`] for a read or a write at `position`.
fn io_err_at<'a>(
    op: &'static str,
    path: &'a Path,
    position: u64,
) -> impl FnOnce(glommio::GlommioError<()>) -> Error + 'a {
    move |e| Error::io_at(op, path, position, io::Error::from(e))
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;

    /// From the executor's registered I/O memory when it has room, else
    /// from the heap (still aligned for O_DIRECT).
    fn alloc(&self, len: usize) -> DmaBuffer {
        glommio::allocate_dma_buffer(len)
    }

    async fn open(&self, path: &Path, create: bool) -> Result<DmaStorageFile> {
        DmaStorageFile::open(path, create, false).await
    }

    async fn open_durable(&self, path: &Path) -> Result<DmaStorageFile> {
        DmaStorageFile::open(path, false, true).await
    }

    async fn remove(&self, path: &Path) -> Result<()> {
        glommio::io::remove(path)
            .await
            .map_err(io_err("remove", path))
    }

    async fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        glommio::io::rename(from, to)
            .await
            .map_err(io_err("rename", from))
    }

    async fn sync_dir(&self, dir: &Path) -> Result<()> {
        let d = glommio::io::Directory::open(dir)
            .await
            .map_err(io_err("open directory", dir))?;
        d.sync().await.map_err(io_err("fsync directory", dir))?;
        d.close().await.map_err(io_err("close directory", dir))
    }

    /// Creates the directory, then opens a file holding data there with
    /// O_DIRECT before any other.
    ///
    /// glommio decides whether a device supports polled I/O by reading offset
    /// 0 of the first O_DIRECT file it opens on that device, and remembers the
    /// answer for the process. On an empty file that read succeeds without
    /// touching the device, glommio enables polled I/O, and every later read
    /// fails with EOPNOTSUPP on devices without poll queues (virtio disks,
    /// most cloud volumes). A probe file with a real block makes the test
    /// real.
    async fn prepare_dir(&self, dir: &Path) -> Result<()> {
        let probe = dir.join(IOPOLL_PROBE);
        let (dir_owned, probe_owned) = (dir.to_path_buf(), probe.clone());
        glommio::executor()
            .spawn_blocking(move || {
                std::fs::create_dir_all(&dir_owned)
                    .map_err(|e| Error::io("create directory", &dir_owned, e))?;
                let block = vec![0xA5u8; BLOCK_SIZE as usize];
                std::fs::write(&probe_owned, &block)
                    .and_then(|()| std::fs::File::open(&probe_owned)?.sync_all())
                    .map_err(|e| Error::io("write", &probe_owned, e))
            })
            .await?;
        let file = DmaFile::open(&probe)
            .await
            .map_err(io_err("open", &probe))?;
        file.close().await.map_err(io_err("close", &probe))
    }

    fn now(&self) -> Duration {
        CLOCK_START.get_or_init(std::time::Instant::now).elapsed()
    }

    async fn sleep(&self, d: Duration) {
        glommio::timer::sleep(d).await;
    }

    async fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let dir = dir.to_path_buf();
        glommio::executor()
            .spawn_blocking(move || {
                let mut names = Vec::new();
                let entries =
                    std::fs::read_dir(&dir).map_err(|e| Error::io("list directory", &dir, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io("list directory", &dir, e))?;
                    if let Ok(name) = entry.file_name().into_string() {
                        names.push(name);
                    }
                }
                Ok(names)
            })
            .await
    }
}

/// The start of [`DmaStorage`]'s clock: the first time it is read.
static CLOCK_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

impl StorageFile for DmaStorageFile {
    type Buffer = DmaBuffer;
    type ReadBuf = ReadResult;

    fn path(&self) -> &Path {
        &self.path
    }

    async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<usize> {
        self.file
            .write_at(buf, pos)
            .await
            .map_err(io_err_at("write", &self.path, pos))
    }

    async fn read_at(&self, pos: u64, len: usize) -> Result<ReadResult> {
        self.file
            .read_at_aligned(pos, len)
            .await
            .map_err(io_err_at("read", &self.path, pos))
    }

    async fn fdatasync(&self) -> Result<()> {
        self.file
            .fdatasync()
            .await
            .map_err(io_err("fdatasync", &self.path))
    }

    /// On a file opened with `O_DSYNC`, one io_uring write: the kernel
    /// makes it durable before it completes (it writes through with FUA, or
    /// flushes the device's cache once the data is written), so the shard's
    /// thread never blocks and no fdatasync runs on an io-wq worker. On
    /// another file, a write then an fdatasync.
    ///
    /// A FUA write makes only itself durable, not earlier writes still in
    /// the device's cache. That keeps the trait's promise because under
    /// `Always` a segment, once opened, is written only through its
    /// `O_DSYNC` descriptor, each write durable by itself; its header was
    /// synced while it was the spare. Zeros the spare's zero-fill wrote and
    /// did not sync (a fill cut short) lie past the log's end, where
    /// recovery expects anything.
    async fn write_durable_at(&self, buf: DmaBuffer, pos: u64) -> Result<usize> {
        let written = self.write_at(buf, pos).await?;
        if !self.durable {
            self.fdatasync().await?;
        }
        Ok(written)
    }

    async fn allocate(&self, len: u64) -> Result<()> {
        self.file
            .pre_allocate(len, false)
            .await
            .map_err(io_err("fallocate", &self.path))
    }

    /// `fstat` of the open descriptor, on the shard's thread: the inode is
    /// in memory, so it does not block on the device. glommio's
    /// `file_size` is an `IORING_OP_STATX` of the file's path (so a file
    /// renamed since it was opened reports whatever now has its old name),
    /// which the kernel runs on an io-wq worker; its completion was seen
    /// lost, leaving an open waiting for ever (docs/ARCHITECTURE.md,
    /// "glommio notes").
    async fn size(&self) -> Result<u64> {
        use std::os::fd::AsRawFd;
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `stat` is a writable buffer of the right type, which
        // fstat fills completely when it returns 0; the descriptor is open
        // for the life of `self.file`.
        let rc = unsafe { libc::fstat(self.file.as_raw_fd(), stat.as_mut_ptr()) };
        if rc != 0 {
            return Err(Error::io("fstat", &self.path, io::Error::last_os_error()));
        }
        // SAFETY: fstat returned 0, so it initialized `stat`.
        let stat = unsafe { stat.assume_init() };
        u64::try_from(stat.st_size)
            .map_err(|_| Error::io("fstat", &self.path, io::ErrorKind::InvalidData.into()))
    }

    async fn close(self) -> Result<()> {
        self.file.close().await.map_err(io_err("close", &self.path))
    }
}
