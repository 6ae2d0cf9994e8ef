//! Every input a caller can get wrong gets its typed error and changes
//! nothing: configuration values, partitions, offsets, sizes.

use std::time::Duration;

mod common;

use common::{config, test_dir};
use corelog::{Config, Engine, Error, FsyncPolicy, Offsets, Record};
use futures::executor::block_on;

#[test]
fn bad_configuration_is_refused_before_anything_is_created() {
    let dir = test_dir();
    let data = dir.path().join("data");
    let bad: Vec<(&str, Config)> = vec![
        ("no shards", config(&data).shards(0)),
        (
            "segment not block sized",
            config(&data).segment_bytes(10_000),
        ),
        ("segment too small", config(&data).segment_bytes(4096)),
        ("segment over 4 GiB", config(&data).segment_bytes(8 << 30)),
        ("record limit 0", config(&data).max_record_bytes(0)),
        ("batch limit 0", config(&data).max_batch_bytes(0)),
        (
            "batch larger than a segment",
            config(&data).max_batch_bytes(1 << 20),
        ),
        (
            "zero interval",
            config(&data).fsync(FsyncPolicy::Interval(Duration::ZERO)),
        ),
        (
            "io memory past any use",
            config(&data).io_memory(usize::MAX),
        ),
    ];
    for (what, c) in bad {
        match Engine::open(c) {
            Err(Error::InvalidArgument(msg)) => assert!(!msg.is_empty(), "{what}"),
            Err(e) => panic!("{what}: expected InvalidArgument, got {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
        assert!(!data.exists(), "{what}: created the directory");
    }
}

#[test]
fn bad_calls_get_typed_errors_and_change_nothing() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let p = u64::MAX; // any u64 is a partition
    for i in 0..10u8 {
        block_on(log.append(p, vec![Record::new(vec![i; 10])])).unwrap();
    }
    block_on(log.delete_before(p, 3)).unwrap();
    let before = block_on(log.offsets(p)).unwrap();
    assert_eq!((before.start, before.end), (3, 10));
    let out_of_range = |e: Error, offset: u64| match e {
        Error::OffsetOutOfRange {
            partition,
            offset: o,
            start,
            end,
        } => assert_eq!((partition, o, start, end), (p, offset, 3, 10)),
        e => panic!("expected OffsetOutOfRange at {offset}, got {e}"),
    };

    // Appends.
    let e = block_on(log.append(p, vec![])).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let e = block_on(log.append(p, vec![Record::new(vec![0; 17 << 10])])).unwrap_err();
    assert!(
        matches!(e, Error::RecordTooLarge { what: "record", size, max: 16384 } if size > 16384),
        "{e}"
    );
    let many = (0..8).map(|_| Record::new(vec![0; 10 << 10])).collect();
    let e = block_on(log.append(p, many)).unwrap_err();
    assert!(
        matches!(e, Error::RecordTooLarge { what: "batch", .. }),
        "{e}"
    );

    // Reads.
    out_of_range(block_on(log.read(p, 2, 100)).unwrap_err(), 2);
    out_of_range(block_on(log.read(p, 11, 100)).unwrap_err(), 11);
    out_of_range(block_on(log.read_range(p, 2, 5)).unwrap_err(), 2);
    out_of_range(block_on(log.read_range(p, 5, 11)).unwrap_err(), 11);
    out_of_range(block_on(log.read_range(p, 6, 5)).unwrap_err(), 5);
    assert!(block_on(log.read(p, 10, 100)).unwrap().is_empty());
    assert_eq!(block_on(log.read(p, 3, 0)).unwrap().len(), 1, "max_bytes 0");

    // Delete-before and truncate.
    out_of_range(block_on(log.delete_before(p, 11)).unwrap_err(), 11);
    out_of_range(block_on(log.truncate(p, 2)).unwrap_err(), 2);
    out_of_range(block_on(log.truncate(p, 11)).unwrap_err(), 11);
    block_on(log.delete_before(p, 1)).unwrap(); // below the start: nothing
    block_on(log.truncate(p, 10)).unwrap(); // at the end: nothing

    // A partition never written is empty, not an error.
    assert_eq!(block_on(log.offsets(7)).unwrap(), Offsets::default());
    assert!(block_on(log.read(7, 0, 100)).unwrap().is_empty());

    assert_eq!(block_on(log.offsets(p)).unwrap(), before);
    let all = block_on(log.read_range(p, 3, 10)).unwrap();
    assert_eq!(all.len(), 7);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.value(), &[i as u8 + 3; 10]);
    }
    engine.close().unwrap();
}

/// Files of `dir` this process holds open.
fn open_files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[test]
fn closing_releases_every_file() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    for i in 0..200u64 {
        block_on(log.append(i % 5, vec![Record::new(vec![1; 4000])])).unwrap();
    }
    assert!(!open_files_under(dir.path()).is_empty());
    engine.close().unwrap();
    assert_eq!(
        open_files_under(dir.path()),
        Vec::<std::path::PathBuf>::new()
    );
}
