//! Engine configuration: a builder over the shard configuration.

use std::{path::PathBuf, time::Duration};

use corelog_shard::{FsyncPolicy, RecoveryMode, ShardConfig};

/// How to open an engine. `Config::new(dir)` gives defaults for a typical
/// server: one shard per core available to the process, `FsyncPolicy::Always`.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) dir: PathBuf,
    pub(crate) shards: usize,
    pub(crate) shard: ShardConfig,
    /// `None`: as much as fits the memlock limit, up to 8 MiB a shard.
    pub(crate) io_memory: Option<usize>,
    pub(crate) pin_threads: bool,
}

impl Config {
    /// Defaults for data under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let cores = core_affinity::get_core_ids().map_or(1, |c| c.len()).max(1);
        Config {
            shard: ShardConfig::new(&dir),
            dir,
            shards: cores,
            io_memory: None,
            pin_threads: true,
        }
    }

    /// Number of shards (threads); default one per core.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }

    /// Durability of an acknowledged append; default `Always`.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.shard.fsync = policy;
        self
    }

    /// Size of a segment file.
    pub fn segment_bytes(mut self, n: u64) -> Self {
        self.shard.segment_bytes = n;
        self
    }

    /// Memtable budget per shard.
    pub fn memtable_bytes(mut self, n: usize) -> Self {
        self.shard.memtable_bytes = n;
        self
    }

    /// Read cache budget per shard: extents of segment files recently read
    /// from the device, for readers behind the memtable (0: off).
    pub fn read_cache_bytes(mut self, n: usize) -> Self {
        self.shard.read_cache_bytes = n;
        self
    }

    /// Largest record accepted (encoded size).
    pub fn max_record_bytes(mut self, n: usize) -> Self {
        self.shard.max_record_bytes = n;
        self
    }

    /// Largest batch (one `append` call) accepted (encoded size).
    pub fn max_batch_bytes(mut self, n: usize) -> Self {
        self.shard.max_batch_bytes = n;
        self
    }

    /// What recovery does with damaged data.
    pub fn recovery(mut self, mode: RecoveryMode) -> Self {
        self.shard.recovery = mode;
        self
    }

    /// Keep at most this many bytes of segments per shard.
    pub fn retention_bytes(mut self, n: u64) -> Self {
        self.shard.retention_bytes = Some(n);
        self
    }

    /// Drop segments whose newest record is older than this.
    pub fn retention_age(mut self, age: Duration) -> Self {
        self.shard.retention_age = Some(age);
        self
    }

    /// I/O memory each shard's executor registers with io_uring (counts
    /// against the memlock limit). By default, as much as fits the limit
    /// shared by all shards, up to 8 MiB each.
    pub fn io_memory(mut self, bytes: usize) -> Self {
        self.io_memory = Some(bytes);
        self
    }

    /// Pin each shard thread to its own core (default). Unpinned threads
    /// suit tests and machines shared with other work.
    pub fn pin_threads(mut self, pin: bool) -> Self {
        self.pin_threads = pin;
        self
    }

    /// The configuration of shard `id`.
    pub(crate) fn shard_config(&self, id: usize) -> ShardConfig {
        let mut c = self.shard.clone();
        c.dir = self.dir.join(format!("shard-{id:03}"));
        c.shard_id = id as u32;
        c
    }
}
