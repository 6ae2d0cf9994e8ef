//! What a replicated log needs of a partition, through the shard's API:
//! conditional appends, reset to any offset, metadata ordered with the
//! appends, and the list of partitions; each across a reopen and segment
//! deletion.

mod common;

use common::{run, small_config, test_dir};
use corelog_shard::{Error, FsyncPolicy, Record, Shard, ShardConfig, MAX_META_VALUE_BYTES};

fn config(dir: &std::path::Path) -> ShardConfig {
    small_config(dir, FsyncPolicy::Always)
}

fn records(tag: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::new(format!("{tag}-{i}").into_bytes()))
        .collect()
}

#[test]
fn append_at_appends_only_at_the_expected_end() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        assert_eq!(
            shard.append_at(1, Some(0), &records("a", 2)).await.unwrap(),
            0
        );
        let refused = shard.append_at(1, Some(5), &records("b", 1)).await;
        assert!(
            matches!(
                refused,
                Err(Error::OffsetMismatch {
                    partition: 1,
                    expected: 5,
                    end: 2
                })
            ),
            "{refused:?}"
        );
        // The end counts appends submitted and not yet acknowledged.
        let pending = shard.submit(1, &records("c", 3)).await.unwrap();
        let at = shard.submit_at(1, Some(5), &records("d", 1)).await.unwrap();
        assert_eq!((pending.base_offset, at.base_offset), (2, 5));
        shard.wait_committed(at.group).await.unwrap();
        shard.acknowledge(&pending);
        shard.acknowledge(&at);
        assert_eq!(shard.offsets(1).end, 6);
        shard.close().await.unwrap();
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        let values: Vec<Vec<u8>> = shard
            .read_range(1, 0, 6)
            .await
            .unwrap()
            .iter()
            .map(|r| r.value().to_vec())
            .collect();
        assert_eq!(values[5], b"d-0", "nothing of the refused append");
        shard.close().await.unwrap();
    });
}

#[test]
fn reset_moves_start_and_end_anywhere_and_survives_reopen_and_deletion() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        for _ in 0..40 {
            shard.append(1, &records("old", 4)).await.unwrap();
            shard.append(2, &records("other", 4)).await.unwrap();
        }
        // Past the end: a follower that installed a snapshot up to 1000.
        shard.reset(1, 1001).await.unwrap();
        let o = shard.offsets(1);
        assert_eq!((o.start, o.end, o.durable_end), (1001, 1001, 1001));
        assert!(shard.read(1, 1001, 100).await.unwrap().is_empty());
        assert!(matches!(
            shard.read(1, 5, 100).await,
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert_eq!(shard.append(1, &records("new", 2)).await.unwrap(), 1001);
        // Below the old end too.
        shard.reset(2, 3).await.unwrap();
        assert_eq!(shard.append(2, &records("again", 1)).await.unwrap(), 3);
        shard.close().await.unwrap();
        for round in 0..2 {
            let (shard, _) = Shard::open(config(&path)).await.unwrap();
            let o = shard.offsets(1);
            assert_eq!((o.start, o.end), (1001, 1003), "round {round}");
            let got = shard.read_range(1, 1001, 1003).await.unwrap();
            assert_eq!(got[0].value(), b"new-0");
            let o2 = shard.offsets(2);
            assert_eq!((o2.start, o2.end), (3, 4), "round {round}");
            assert_eq!(
                shard.read_range(2, 3, 4).await.unwrap()[0].value(),
                b"again-0"
            );
            // The resets freed the segments holding only old records
            // (through the checkpoint): the reopen did not need them.
            let segments = shard.wal().segments();
            assert!(segments[0] > 1, "old segments freed: {segments:?}");
            shard.close().await.unwrap();
        }
    });
}

#[test]
fn metadata_is_durable_bounded_and_survives_reopen_and_deletion() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        assert_eq!(shard.get_meta(1, b"vote"), None);
        shard.put_meta(1, b"vote", b"term 1").await.unwrap();
        shard.append(1, &records("a", 2)).await.unwrap();
        shard.put_meta(1, b"vote", b"term 2").await.unwrap();
        shard.put_meta(1, b"committed", b"1").await.unwrap();
        // A partition with metadata only exists.
        shard.put_meta(9, b"vote", b"x").await.unwrap();
        assert_eq!(shard.get_meta(1, b"vote").as_deref(), Some(&b"term 2"[..]));
        let too_big = vec![0u8; MAX_META_VALUE_BYTES + 1];
        assert!(matches!(
            shard.put_meta(1, b"big", &too_big).await,
            Err(Error::RecordTooLarge { .. })
        ));
        for i in 0..63 {
            shard
                .put_meta(3, format!("k{i}").as_bytes(), b"v")
                .await
                .unwrap();
        }
        shard.put_meta(3, b"last", b"v").await.unwrap();
        assert!(matches!(
            shard.put_meta(3, b"one too many", b"v").await,
            Err(Error::InvalidArgument(_))
        ));
        // Metadata takes no offset.
        assert_eq!(shard.offsets(1).end, 2);
        let listed: Vec<u64> = shard.partitions().iter().map(|&(p, _)| p).collect();
        assert_eq!(listed, [1, 3, 9]);
        shard.close().await.unwrap();
        for round in 0..2 {
            let (shard, _) = Shard::open(config(&path)).await.unwrap();
            assert_eq!(shard.get_meta(1, b"vote").as_deref(), Some(&b"term 2"[..]));
            assert_eq!(shard.get_meta(1, b"committed").as_deref(), Some(&b"1"[..]));
            assert_eq!(shard.get_meta(9, b"vote").as_deref(), Some(&b"x"[..]));
            assert_eq!(shard.get_meta(3, b"k62").as_deref(), Some(&b"v"[..]));
            assert_eq!(shard.offsets(1).end, 2, "round {round}");
            if round == 0 {
                // Roll past the segments holding the metadata, then delete
                // them: the checkpoint keeps it.
                for _ in 0..60 {
                    shard.append(5, &records("filler", 4)).await.unwrap();
                }
                shard.delete_before(1, 2).await.unwrap();
                shard.delete_before(5, shard.offsets(5).end).await.unwrap();
                let segments = shard.wal().segments();
                assert!(segments[0] > 1, "metadata's segment deleted: {segments:?}");
            }
            shard.close().await.unwrap();
        }
    });
}

#[test]
fn partitions_lists_written_partitions_only() {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        shard.append(4, &records("a", 3)).await.unwrap();
        shard.append(2, &records("b", 1)).await.unwrap();
        let _ = shard.offsets(77);
        let _ = shard.read(78, 0, 10).await;
        let _ = shard
            .wait_for(79, 0, std::time::Duration::from_millis(1))
            .await;
        let listed = shard.partitions();
        assert_eq!(
            listed.iter().map(|&(p, o)| (p, o.end)).collect::<Vec<_>>(),
            [(2, 1), (4, 3)]
        );
        shard.close().await.unwrap();
    });
}

/// A long poll that ends without the end passing (a timeout, or a caller
/// that gives up) leaves no waker behind: a follower polling a quiet
/// partition does not pile them up until the next append.
#[test]
fn a_long_poll_that_ends_leaves_no_waker_behind() {
    use std::{
        future::Future,
        pin::pin,
        sync::Arc,
        task::{Context, Wake, Waker},
    };
    struct Task;
    impl Wake for Task {
        fn wake(self: Arc<Self>) {}
    }
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path)).await.unwrap();
        let tasks: Vec<Arc<Task>> = (0..100).map(|_| Arc::new(Task)).collect();
        for task in &tasks {
            let waker = Waker::from(task.clone());
            let mut wait = pin!(shard.wait_for(7, 0, std::time::Duration::from_secs(60)));
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        // And one that times out.
        assert!(
            !shard
                .wait_for(7, 0, std::time::Duration::from_millis(1))
                .await
        );
        for (i, task) in tasks.iter().enumerate() {
            assert_eq!(Arc::strong_count(task), 1, "waiter {i} left its waker");
        }
        // The partition the waits named is not kept.
        shard.append(8, &records("x", 1)).await.unwrap();
        assert_eq!(shard.partitions().len(), 1);
        shard.close().await.unwrap();
    });
}
