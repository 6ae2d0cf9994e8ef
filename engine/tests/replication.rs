//! The calls a replicated log makes through `Handle`: conditional appends,
//! reset, metadata, the partition list; and reads that serve acknowledged
//! records only.

mod common;

use common::{config, test_dir};
use corelog::{Engine, Error, Record};
use futures::executor::block_on;

fn records(tag: &str, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record::new(format!("{tag}-{i}").into_bytes()))
        .collect()
}

#[test]
fn conditional_appends_reset_and_metadata_through_the_handle_survive_reopen() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    // Pipelined conditional appends: each expects the end the previous
    // one leaves.
    let a = log.append_at(1, 0, records("a", 2));
    let b = log.append_at(1, 2, records("b", 1));
    let stale = log.append_at(1, 2, records("stale", 1));
    assert_eq!(block_on(a).unwrap(), 0);
    assert_eq!(block_on(b).unwrap(), 2);
    assert!(matches!(
        block_on(stale),
        Err(Error::OffsetMismatch {
            partition: 1,
            expected: 2,
            end: 3
        })
    ));
    block_on(log.put_meta(1, b"vote", b"term 3 node 2".to_vec())).unwrap();
    assert!(matches!(
        block_on(log.put_meta(1, b"big", vec![0; corelog::MAX_META_VALUE_BYTES + 1])),
        Err(Error::RecordTooLarge { .. })
    ));
    block_on(log.reset(2, 500)).unwrap();
    assert_eq!(
        block_on(log.append_at(2, 500, records("c", 1))).unwrap(),
        500
    );
    // Asking about partitions creates none.
    let _ = block_on(log.offsets(40));
    let _ = block_on(log.read(41, 0, 100));
    let _ = block_on(log.get_meta(42, b"vote"));
    engine.close().unwrap();

    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let listed: Vec<(u64, u64, u64)> = block_on(log.partitions())
        .unwrap()
        .into_iter()
        .map(|(p, o)| (p, o.start, o.end))
        .collect();
    assert_eq!(listed, [(1, 0, 3), (2, 500, 501)]);
    assert_eq!(
        block_on(log.get_meta(1, b"vote")).unwrap().as_deref(),
        Some(&b"term 3 node 2"[..])
    );
    assert_eq!(block_on(log.get_meta(1, b"none")).unwrap(), None);
    let got = block_on(log.read_range(2, 500, 501)).unwrap();
    assert_eq!(got[0].value(), b"c-0");
    assert!(matches!(
        block_on(log.append_at(2, 7, records("d", 1))),
        Err(Error::OffsetMismatch { end: 501, .. })
    ));
    engine.close().unwrap();
}

#[test]
fn offsets_end_is_what_reads_serve() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let appends: Vec<_> = (0..50)
        .map(|i| log.append(3, records(&format!("r{i}"), 3)))
        .collect();
    // Whatever a reader sees lies below the end reported after it, and
    // everything below the end reads back in full.
    for _ in 0..20 {
        let seen = block_on(log.read(3, 0, usize::MAX)).unwrap();
        let o = block_on(log.offsets(3)).unwrap();
        assert!(seen.len() as u64 <= o.end);
        assert_eq!(
            block_on(log.read_range(3, 0, o.end)).unwrap().len() as u64,
            o.end
        );
        assert!(o.durable_end <= o.end);
    }
    for a in appends {
        block_on(a).unwrap();
    }
    let o = block_on(log.offsets(3)).unwrap();
    assert_eq!(
        (o.end, o.durable_end),
        (150, 150),
        "Always: durable once acknowledged"
    );
    engine.close().unwrap();
}
