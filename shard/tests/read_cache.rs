//! The read cache through the shard's public API: a batch read recently
//! from disk is served again without a device read, a read of newer batches
//! in the segment being written never sees a stale extent, and retention
//! that removes a segment drops its extents.

mod common;

use common::{run, small_config, test_dir};
use corelog_shard::{FsyncPolicy, Record, Shard, ShardConfig};

fn config(dir: &std::path::Path, read_cache_bytes: usize) -> ShardConfig {
    let mut c = small_config(dir, FsyncPolicy::Always);
    // A memtable too small for the batches below: reads go to the segments.
    c.memtable_bytes = 1;
    c.read_cache_bytes = read_cache_bytes;
    c
}

fn value(offset: u64) -> Vec<u8> {
    format!("value-{offset}-{}", "x".repeat((offset % 97) as usize)).into_bytes()
}

async fn append(shard: &Shard, partition: u64, from: u64, n: u64) {
    for o in from..from + n {
        shard
            .append(partition, &[Record::new(value(o))])
            .await
            .unwrap();
    }
}

async fn assert_reads(shard: &Shard, partition: u64, from: u64, end: u64) {
    let got = shard.read_range(partition, from, end).await.unwrap();
    let values: Vec<Vec<u8>> = got.iter().map(|r| r.value().to_vec()).collect();
    let want: Vec<Vec<u8>> = (from..end).map(value).collect();
    assert_eq!(values, want, "partition {partition} [{from}, {end})");
}

#[test]
fn a_recent_read_is_served_again_without_the_device_and_never_stale() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path, 1 << 20)).await.unwrap();
        append(&shard, 0, 0, 10).await;
        assert_reads(&shard, 0, 0, 10).await;
        let after_first = shard.stats();
        assert!(after_first.batch_reads > 0, "the memtable held nothing");
        assert_eq!(after_first.cache_hits, 0, "nothing was read before");
        // Read again: the extent the first read left serves every batch.
        assert_reads(&shard, 0, 0, 10).await;
        let again = shard.stats();
        assert_eq!(
            again.cache_hits - after_first.cache_hits,
            again.batch_reads - after_first.batch_reads,
            "every batch of the second read came from the cache"
        );
        // Newer batches in the same segment lie past the cached extent,
        // which ended at the written end: they are read, not taken stale.
        append(&shard, 0, 10, 10).await;
        assert_reads(&shard, 0, 0, 20).await;
        shard.close().await.unwrap();
    });
}

#[test]
fn with_the_cache_off_every_read_goes_to_the_device() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path, 0)).await.unwrap();
        append(&shard, 0, 0, 10).await;
        assert_reads(&shard, 0, 0, 10).await;
        assert_reads(&shard, 0, 0, 10).await;
        let stats = shard.stats();
        assert!(stats.batch_reads >= 20);
        assert_eq!(stats.cache_hits, 0);
        shard.close().await.unwrap();
    });
}

#[test]
fn reads_after_retention_removed_segments_are_correct() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let mut c = config(&path, 1 << 20);
        c.retention_bytes = Some(3 * c.segment_bytes);
        let (shard, _) = Shard::open(c).await.unwrap();
        // Several segments' worth, read as they go so the cache holds
        // extents of segments that retention then removes.
        let mut end = 0;
        for _ in 0..30 {
            append(&shard, 0, end, 40).await;
            end += 40;
            let start = shard.offsets(0).start;
            assert_reads(&shard, 0, start, end).await;
            // Again: from the cache now.
            assert_reads(&shard, 0, start, end).await;
        }
        assert!(shard.offsets(0).start > 0, "retention removed segments");
        assert!(shard.stats().cache_hits > 0);
        shard.close().await.unwrap();
    });
}

/// A reader far behind the tail of a partition written interleaved with
/// others reads ahead by offset: several device reads at once, across
/// segments, each batch verified and in order, whatever the read size.
#[test]
fn catch_up_reads_of_interleaved_partitions_return_every_record_in_order() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path, 0)).await.unwrap();
        // 16 partitions, one batch each in turn, a 4 KiB block a commit:
        // a partition's batches lie 64 KiB apart (too far to share a device
        // read), one or two to a 64 KiB segment.
        for o in 0..30 {
            for p in 0..16 {
                append(&shard, p, o, 1).await;
            }
        }
        assert!(shard.stats().rolls >= 3, "{:?}", shard.stats());
        for p in 0..16 {
            assert_reads(&shard, p, 0, 30).await;
            // Reads of a few records at a time walk the same batches.
            let mut next = 0;
            while next < 30 {
                let got = shard.read(p, next, 200).await.unwrap();
                assert!(!got.is_empty());
                for r in &got {
                    assert_eq!((r.offset(), r.value()), (next, &value(next)[..]));
                    next += 1;
                }
            }
        }
        shard.close().await.unwrap();
    });
}

/// A read from disk never reads ahead into a batch of its partition that
/// is encoded but not written yet (it is in the index already): the read
/// of the acknowledged batch before it succeeds, and returns only that.
#[test]
fn a_cold_read_stops_before_a_batch_not_written_yet() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path, 1 << 20)).await.unwrap();
        append(&shard, 0, 0, 3).await;
        // Offset 3, submitted, not committed: its group is not written.
        let pending = shard.submit(0, &[Record::new(value(3))]).await.unwrap();
        assert!(pending.group > shard.committed_group());
        let got = shard.read(0, 2, 1 << 20).await.unwrap();
        let offsets: Vec<u64> = got.iter().map(|r| r.offset()).collect();
        assert_eq!(offsets, vec![2], "only the acknowledged record");
        assert_reads(&shard, 0, 0, 3).await;
        shard.wait_committed(pending.group).await.unwrap();
        shard.acknowledge(&pending);
        assert_reads(&shard, 0, 0, 4).await;
        shard.close().await.unwrap();
    });
}
