//! [`Storage`] over glommio's `DmaFile`: O_DIRECT files driven by io_uring.
//!
//! Invariant: nothing here blocks the shard's thread. Reads, writes,
//! fdatasyncs and directory syncs go through io_uring; renames and
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(io_err("open", path))?;
        Ok(DmaStorageFile {
            file,
            path: path.to_path_buf(),
        })
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

    async fn write_durable_at(&self, buf: DmaBuffer, pos: u64) -> Result<usize> {
        use std::os::fd::AsRawFd;
        let bytes = buf.as_bytes();
        let iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let offset = libc::off_t::try_from(pos)
            .map_err(|_| Error::io("pwritev2", &self.path, io::ErrorKind::InvalidInput.into()))?;
        loop {
            // SAFETY: `iov` points at `buf`'s bytes, which live and are not
            // touched elsewhere until the call returns; the fd is open for
            // the life of `self.file`.
            let n =
                unsafe { libc::pwritev2(self.file.as_raw_fd(), &iov, 1, offset, libc::RWF_DSYNC) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io_at("pwritev2(RWF_DSYNC)", &self.path, pos, e));
            }
        }
    }

    async fn allocate(&self, len: u64) -> Result<()> {
        self.file
            .pre_allocate(len, false)
            .await
            .map_err(io_err("fallocate", &self.path))
    }

    async fn size(&self) -> Result<u64> {
        self.file
            .file_size()
            .await
            .map_err(io_err("stat", &self.path))
    }

    async fn close(self) -> Result<()> {
        self.file.close().await.map_err(io_err("close", &self.path))
    }
}
