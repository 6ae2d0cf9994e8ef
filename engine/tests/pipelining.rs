//! Pipelined appends through `Handle`: the order of the calls is the order
//! of the offsets, whatever the sizes and whenever the futures are polled;
//! the log's backpressure keeps that order; nothing acknowledged is lost.

use std::collections::BTreeMap;

mod common;

use common::{config, test_dir};
use corelog::{Engine, Error, Record};
use futures::executor::block_on;

/// The value of record `i` of append `seq` by `thread`, `len` bytes long.
fn value(thread: u64, seq: u64, i: u64, len: usize) -> Vec<u8> {
    let tag = format!("t{thread}/s{seq}/r{i}/");
    tag.bytes().cycle().take(len.max(tag.len())).collect()
}

/// Checks that every (offset, value) in `expected` reads back from
/// `partition`.
fn check(engine: &Engine, partition: u64, expected: &BTreeMap<u64, Vec<u8>>) {
    let log = engine.handle();
    let end = block_on(log.offsets(partition)).unwrap().end;
    let got = block_on(log.read_range(partition, 0, end)).unwrap();
    let got: BTreeMap<u64, Vec<u8>> = got
        .into_iter()
        .map(|r| (r.offset(), r.value().to_vec()))
        .collect();
    for (offset, v) in expected {
        assert_eq!(
            got.get(offset),
            Some(v),
            "partition {partition} offset {offset}"
        );
    }
}

#[test]
fn futures_awaited_in_reverse_still_get_offsets_in_call_order() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    // Sizes mixed: a small append issued after a large one must not pass it.
    // (records, bytes each): up to 60 KB an append.
    let sizes = [
        (4, 15_000usize),
        (4, 15_000),
        (1, 10),
        (2, 15_000),
        (1, 1),
        (4, 15_000),
    ];
    let mut next = 0;
    let mut expected = Vec::new();
    let futures: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(seq, &(n, len))| {
            expected.push(next);
            next += n;
            let records = (0..n).map(|i| Record::new(value(0, seq as u64, i, len)));
            log.append(3, records.collect())
        })
        .collect();
    // Awaited last call first: the order was fixed by the calls.
    let mut offsets: Vec<u64> = futures
        .into_iter()
        .rev()
        .map(|f| block_on(f).unwrap())
        .collect();
    offsets.reverse();
    assert_eq!(offsets, expected);
    engine.close().unwrap();
}

#[test]
fn threads_pipelining_mixed_sizes_keep_their_order_and_lose_nothing() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    const THREADS: u64 = 4;
    const APPENDS: u64 = 300;
    let shared = 7u64;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = engine.handle();
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                let mut calls = Vec::new();
                for seq in 0..APPENDS {
                    let partition = if rng.bool() { shared } else { 100 + t };
                    let records: Vec<Vec<u8>> = (0..rng.u64(1..4))
                        .map(|i| value(t, seq, i, rng.usize(1..16_000)))
                        .collect();
                    let future = log.append(
                        partition,
                        records.iter().cloned().map(Record::new).collect(),
                    );
                    calls.push((partition, records, future));
                }
                // Awaited newest first.
                let mut done: Vec<_> = calls
                    .into_iter()
                    .rev()
                    .map(|(p, records, f)| (p, records, block_on(f).unwrap()))
                    .collect();
                done.reverse();
                done
            })
        })
        .collect();
    let mut expected: BTreeMap<u64, BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
    for (t, worker) in workers.into_iter().enumerate() {
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for (partition, records, base) in worker.join().unwrap() {
            if let Some(&prev) = last.get(&partition) {
                assert!(
                    base > prev,
                    "thread {t}: partition {partition} offset {base} after {prev}"
                );
            }
            last.insert(partition, base);
            for (i, v) in records.into_iter().enumerate() {
                expected
                    .entry(partition)
                    .or_default()
                    .insert(base + i as u64, v);
            }
        }
    }
    for (p, records) in &expected {
        check(&engine, *p, records);
    }
    engine.close().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    for (p, records) in &expected {
        check(&engine, *p, records);
    }
    engine.close().unwrap();
}

#[test]
fn more_than_the_commit_buffer_in_flight_waits_in_order() {
    let dir = test_dir();
    // The log holds at most 16 MiB waiting to be written; 24 large appends
    // of about 1 MiB and small ones between them overflow it, so submits
    // wait for room while the queue behind them keeps its order.
    let config = || {
        config(dir.path())
            .segment_bytes(8 << 20)
            .max_batch_bytes(1 << 20)
    };
    let engine = Engine::open(config()).unwrap();
    let log = engine.handle();
    let mut calls = Vec::new();
    for seq in 0..48u64 {
        let records: Vec<Vec<u8>> = if seq % 2 == 0 {
            (0..60).map(|i| value(0, seq, i, 16_000)).collect()
        } else {
            vec![value(0, seq, 0, 3)]
        };
        let future = log.append(1, records.iter().cloned().map(Record::new).collect());
        calls.push((records, future));
    }
    let mut expected = BTreeMap::new();
    let mut next = 0;
    for (records, future) in calls {
        let base = block_on(future).unwrap();
        assert_eq!(base, next, "offsets follow the calls");
        next += records.len() as u64;
        for (i, v) in records.into_iter().enumerate() {
            expected.insert(base + i as u64, v);
        }
    }
    engine.close().unwrap();
    let engine = Engine::open(config()).unwrap();
    check(&engine, 1, &expected);
    engine.close().unwrap();
}

#[test]
fn a_dropped_future_does_not_withdraw_its_append() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    drop(log.append(5, vec![Record::new(b"first".to_vec())]));
    let second = block_on(log.append(5, vec![Record::new(b"second".to_vec())])).unwrap();
    assert_eq!(second, 1, "the dropped append was queued first");
    let got = block_on(log.read_range(5, 0, 2)).unwrap();
    assert_eq!(got[0].value(), b"first");
    engine.close().unwrap();
}

#[test]
fn appends_after_close_and_bad_appends_fail_alone() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    // A bad append between good ones fails alone; its neighbours keep
    // consecutive offsets.
    let a = log.append(2, vec![Record::new(b"a".to_vec())]);
    let bad = log.append(2, vec![]);
    let b = log.append(2, vec![Record::new(b"b".to_vec())]);
    assert!(matches!(block_on(bad), Err(Error::InvalidArgument(_))));
    assert_eq!(block_on(a).unwrap(), 0);
    assert_eq!(block_on(b).unwrap(), 1);
    engine.close().unwrap();
    assert!(matches!(
        block_on(log.append(2, vec![Record::new(b"c".to_vec())])),
        Err(Error::Closed)
    ));
}

/// Single-record appends queued together to one partition are coalesced
/// into shared batches, and each still gets its own offset in call order;
/// a bad append, a conditional append and appends to another partition
/// among them are served as if alone.
#[test]
fn appends_queued_together_share_batches_and_keep_their_own_offsets() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let mut calls = Vec::new();
    let mut expected: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut next = 0;
    for seq in 0..2_000u64 {
        let v = value(0, seq, 0, 20 + (seq % 300) as usize);
        match seq % 500 {
            // Too large alone (max_record_bytes is 16 KiB): refused alone.
            7 => calls.push((None, log.append(1, vec![Record::new(vec![0; 20 << 10])]))),
            // Conditional on the right end: joins nothing, gets that end.
            11 => {
                calls.push((
                    Some(next),
                    log.append_at(1, next, vec![Record::new(v.clone())]),
                ));
                expected.insert(next, v);
                next += 1;
            }
            // Conditional on a wrong end: refused, takes no offset.
            13 => calls.push((None, log.append_at(1, next + 5, vec![Record::new(v)]))),
            // Another partition, between appends to this one.
            17 => calls.push((Some(seq / 500), log.append(2, vec![Record::new(v)]))),
            _ => {
                calls.push((Some(next), log.append(1, vec![Record::new(v.clone())])));
                expected.insert(next, v);
                next += 1;
            }
        }
    }
    for (seq, (offset, call)) in calls.into_iter().enumerate() {
        match (offset, block_on(call)) {
            (Some(want), Ok(got)) => assert_eq!(got, want, "append {seq}"),
            (None, Err(Error::RecordTooLarge { .. } | Error::OffsetMismatch { .. })) => {}
            (want, got) => panic!("append {seq}: wanted {want:?}, got {got:?}"),
        }
    }
    check(&engine, 1, &expected);
    let stats = engine.stats().unwrap();
    let batches: u64 = stats.shards.iter().map(|(s, _)| s.appends).sum();
    assert!(
        batches < 2_000 / 4,
        "{batches} batches for 2,000 appends queued together: too few coalesced"
    );
    engine.close().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    check(&engine, 1, &expected);
    engine.close().unwrap();
}
