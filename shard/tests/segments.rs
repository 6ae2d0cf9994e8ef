//! Segments on the real disk: the first one, made by the open, and rolls
//! under a stream of large appends.

mod common;

use common::{append, run, small_config, test_dir};
use corelog_shard::{internals::Wal, FsyncPolicy, Record};

/// The open makes a fresh shard's first segment, so that the first append
/// does not wait for it; rolls under a stream of large appends lose nothing.
#[test]
fn the_first_segment_is_made_by_the_open() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut config = small_config(&path, FsyncPolicy::Always);
        config.segment_bytes = 8 << 20;
        config.max_batch_bytes = 1 << 20;
        config.max_record_bytes = 1 << 20;
        let (shard, _) = Wal::open(config.clone()).await.unwrap();
        let s = shard.stats();
        assert_eq!((s.active_segment, s.segments, s.rolls), (1, 1, 1), "{s:?}");
        let big = vec![Record::new(vec![3u8; 1_000_000])];
        for i in 0..40 {
            append(&shard, i, &big).await.unwrap();
        }
        assert!(shard.stats().rolls >= 5, "{:?}", shard.stats());
        shard.close().await.unwrap();
        let (shard, recovery) = Wal::open(config).await.unwrap();
        assert_eq!(recovery.batches.len(), 40);
        assert!(recovery.report.skipped.is_empty());
        shard.close().await.unwrap();
    });
}
