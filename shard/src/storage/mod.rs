//! The storage seam: every file operation the shard performs goes through
//! these two traits, so the same write path runs on a real disk
//! ([`dma::DmaStorage`]) or on a simulated, faulty one ([`sim`], behind the
//! `sim` feature).
//!
//! Invariant: no method blocks the shard's thread on the device. What the
//! kernel cannot do asynchronously runs on the executor's blocking pool.
//!
//! Methods return the shard's [`Error`](crate::Error) with the operation and
//! path already attached. Futures are not `Send`: a shard lives on one core.

use std::{ops::Deref, path::Path, time::Duration};

use crate::error::Result;

pub(crate) mod dma;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

/// Unit of O_DIRECT I/O, and so of commit alignment, in bytes.
pub const BLOCK_SIZE: u64 = 4096;

/// A buffer the storage can write from; its length is a multiple of the block
/// size and it is aligned for O_DIRECT.
pub trait IoBuffer {
    /// The bytes.
    fn as_slice(&self) -> &[u8];
    /// The bytes to fill.
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Shortens the buffer to `len` bytes (a multiple of the block size).
    fn truncate(&mut self, len: usize);
}

/// Opens, lists, renames and removes files in a directory tree.
#[allow(
    async_fn_in_trait,
    reason = "a shard and its futures live on one thread"
)]
pub trait Storage: Clone + 'static {
    /// An open file.
    type File: StorageFile;

    /// A buffer of `len` bytes, `len` a multiple of the block size, for
    /// [`StorageFile::write_at`]. Its contents are unspecified: the caller
    /// fills every byte it writes.
    fn alloc(&self, len: usize) -> <Self::File as StorageFile>::Buffer;
    /// Opens `path` for reading and writing, creating it when `create`.
    async fn open(&self, path: &Path, create: bool) -> Result<Self::File>;
    /// Opens the existing file at `path` for reading and for writes that
    /// are durable when they complete (`O_DSYNC` on the real disk), so that
    /// [`StorageFile::write_durable_at`] on it costs one write. The
    /// segments of an `Always` log are opened this way.
    async fn open_durable(&self, path: &Path) -> Result<Self::File> {
        self.open(path, false).await
    }
    /// Removes the file at `path`.
    async fn remove(&self, path: &Path) -> Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    async fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    async fn sync_dir(&self, dir: &Path) -> Result<()>;
    /// Creates `dir` and its parents if missing, and readies the storage for
    /// use there. Called once, before any other operation in `dir`.
    async fn prepare_dir(&self, dir: &Path) -> Result<()>;
    /// Names of the files in `dir`.
    async fn list(&self, dir: &Path) -> Result<Vec<String>>;
    /// Time since an arbitrary start on this storage's clock: the
    /// `Interval` policy's deadlines. The simulated disk keeps a virtual
    /// clock, so that its runs replay exactly.
    fn now(&self) -> Duration;
    /// Completes once `d` has passed on [`Storage::now`]'s clock.
    async fn sleep(&self, d: Duration);
}

/// One open file, read and written at explicit positions.
#[allow(
    async_fn_in_trait,
    reason = "a shard and its futures live on one thread"
)]
pub trait StorageFile: 'static {
    /// Buffer type accepted by [`StorageFile::write_at`].
    type Buffer: IoBuffer;
    /// Bytes returned by [`StorageFile::read_at`].
    type ReadBuf: Deref<Target = [u8]>;

    /// The path the file was opened at.
    fn path(&self) -> &Path;
    /// Writes the whole buffer at `pos` (block aligned); returns the bytes the
    /// kernel reports written, which the caller checks.
    async fn write_at(&self, buf: Self::Buffer, pos: u64) -> Result<usize>;
    /// Reads up to `len` bytes at `pos` (both block aligned); fewer at the end
    /// of the file.
    async fn read_at(&self, pos: u64, len: usize) -> Result<Self::ReadBuf>;
    /// Makes written data durable (fdatasync).
    async fn fdatasync(&self) -> Result<()>;
    /// Writes the whole buffer at `pos` (block aligned) and makes it and
    /// everything written before it durable, as [`StorageFile::write_at`]
    /// then [`StorageFile::fdatasync`] would; returns the bytes written.
    /// On a file from [`Storage::open_durable`] the real disk does it in
    /// one io_uring write, so several can be in flight at once.
    async fn write_durable_at(&self, buf: Self::Buffer, pos: u64) -> Result<usize> {
        let written = self.write_at(buf, pos).await?;
        self.fdatasync().await?;
        Ok(written)
    }
    /// Reserves blocks so the file is at least `len` bytes long.
    async fn allocate(&self, len: u64) -> Result<()>;
    /// Current file size in bytes.
    async fn size(&self) -> Result<u64>;
    /// Closes the file.
    async fn close(self) -> Result<()>;
}
