//! The space reserve: a preallocated file in the shard directory that is
//! given back to the file system when a checkpoint cannot be written on a
//! full disk. Freeing space (deleting segments) needs a checkpoint first,
//! and a checkpoint needs new blocks: without the reserve, a full disk
//! could never free itself. It is made again, best effort, after segments
//! are deleted and on open.

use crate::{
    error::Result,
    shard::Shard,
    storage::{Storage, StorageFile},
};

/// Name of the reserve file in a shard directory.
const FILE: &str = "space-reserve";
/// Bytes the reserve holds: a checkpoint of about ten thousand partitions,
/// with room for the file system's own blocks.
const BYTES: u64 = 256 << 10;

impl<S: Storage> Shard<S> {
    /// Makes the reserve if it is missing or short (a crash can leave it
    /// so), durably. Best effort: on a full disk it is simply not made, and
    /// a partial one is removed.
    pub(super) async fn ensure_reserve(&self) {
        let (storage, dir) = (self.wal.storage(), &self.config().dir);
        let path = dir.join(FILE);
        let exists = match storage.list(dir).await {
            Ok(names) => names.iter().any(|n| n == FILE),
            Err(_) => return,
        };
        let made = async {
            let file = storage.open(&path, true).await?;
            let complete = exists && file.size().await? >= BYTES;
            let result = if complete {
                Ok(())
            } else {
                match file.allocate(BYTES).await {
                    Ok(()) => file.fdatasync().await,
                    Err(e) => Err(e),
                }
            };
            file.close().await?;
            result?;
            if !complete {
                storage.sync_dir(dir).await?;
            }
            Ok::<(), crate::error::Error>(())
        }
        .await;
        if made.is_err() {
            let _ = storage.remove(&path).await;
        }
    }

    /// Gives the reserve back to the file system, durably; whether there
    /// was one.
    pub(super) async fn release_reserve(&self) -> Result<bool> {
        let (storage, dir) = (self.wal.storage(), &self.config().dir);
        if !storage.list(dir).await?.iter().any(|n| n == FILE) {
            return Ok(false);
        }
        storage.remove(&dir.join(FILE)).await?;
        storage.sync_dir(dir).await?;
        Ok(true)
    }
}
