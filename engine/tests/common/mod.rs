//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use corelog::Config;

/// A temporary directory on the project's disk (not tmpfs: O_DIRECT).
pub fn test_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

/// A small, test-sized configuration: two unpinned shards.
pub fn config(dir: &std::path::Path) -> Config {
    Config::new(dir)
        .shards(2)
        .pin_threads(false)
        .io_memory(1 << 20)
        .segment_bytes(256 << 10)
        .max_batch_bytes(64 << 10)
        .max_record_bytes(16 << 10)
}
