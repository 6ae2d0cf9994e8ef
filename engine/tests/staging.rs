//! Appends made without anyone waiting are staged per partition and sent
//! to their shard together: when a thread waits on one of them, when the
//! thread that made them exits, when a flush or the engine's close sends
//! everything. None is ever left behind, and the order of the calls holds
//! across threads.

use std::{sync::mpsc, time::Duration};

mod common;

use common::{config, test_dir};
use corelog::{shard_for, Append, Engine, FsyncPolicy, Handle, Record};
use futures::executor::block_on;

fn record(i: u64) -> Vec<Record> {
    vec![Record::new(format!("record {i}").into_bytes())]
}

/// A thread that made one append and then parks, never waiting on an
/// append, until this is dropped.
struct Parked {
    release: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        let _ = self.release.send(());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Appends `records` to `partition` on a new thread that then parks. The
/// future is handed back, or, with `keep`, kept on the parked thread.
fn append_on_parked_thread(
    log: &Handle,
    partition: u64,
    records: Vec<Record>,
    keep: bool,
) -> (Option<Append>, Parked) {
    let log = log.clone();
    let (futures_tx, futures_rx) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let append = log.append(partition, records);
        let kept = if keep {
            futures_tx.send(None).unwrap();
            Some(append)
        } else {
            futures_tx.send(Some(append)).unwrap();
            None
        };
        let _ = released.recv();
        drop(kept);
    });
    let append = futures_rx.recv().unwrap();
    let parked = Parked {
        release,
        thread: Some(thread),
    };
    (append, parked)
}

/// Batches submitted by every shard so far.
fn batches(engine: &Engine) -> u64 {
    engine
        .stats()
        .unwrap()
        .shards
        .iter()
        .map(|(s, _)| s.appends)
        .sum()
}

#[test]
fn appends_made_without_waiting_go_to_the_shard_as_one_request() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let appends: Vec<_> = (0..1_000).map(|i| log.append(3, record(i))).collect();
    let offsets: Vec<u64> = appends.into_iter().map(|a| block_on(a).unwrap()).collect();
    assert_eq!(offsets, (0..1_000).collect::<Vec<_>>());
    // About 30 KiB of records: one bundle, one batch (a second or third
    // only if the engine's periodic send of what stays staged struck
    // while the loop ran). Sent one by one, the shard coalesced them into
    // 24 to 54.
    let batches = batches(&engine);
    assert!(
        batches <= 3,
        "{batches} batches for 1,000 appends made together"
    );
    engine.close().unwrap();
}

#[test]
fn an_append_is_sent_when_another_thread_waits_on_it() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let (append, parked) = append_on_parked_thread(&log, 4, record(0), false);
    assert_eq!(block_on(append.unwrap()).unwrap(), 0);
    drop(parked);
    engine.close().unwrap();
}

#[test]
fn a_thread_that_exits_sends_what_it_staged() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let stager = log.clone();
    std::thread::spawn(move || {
        for i in 0..10 {
            // Neither polled nor dropped: only the thread's exit sends it.
            std::mem::forget(stager.append(5, record(i)));
        }
    })
    .join()
    .unwrap();
    // The end passes offset 9: all ten arrived.
    assert!(block_on(log.wait_for(5, 9, Duration::from_secs(10))).unwrap());
    let got = block_on(log.read_range(5, 0, 10)).unwrap();
    assert_eq!(got[9].value(), b"record 9");
    engine.close().unwrap();
}

#[test]
fn closing_the_engine_sends_what_the_closing_thread_staged() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let appends: Vec<_> = (0..10).map(|i| log.append(6, record(i))).collect();
    engine.close().unwrap();
    for (i, a) in appends.into_iter().enumerate() {
        assert_eq!(block_on(a).unwrap(), i as u64);
    }
    let engine = Engine::open(config(dir.path())).unwrap();
    let got = block_on(engine.handle().read_range(6, 0, 10)).unwrap();
    assert_eq!(got.len(), 10);
    engine.close().unwrap();
}

#[test]
fn closing_the_engine_sends_what_other_threads_staged() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let (append, parked) = append_on_parked_thread(&log, 7, record(0), false);
    // The stager never waits: the close sends what it staged.
    engine.close().unwrap();
    assert_eq!(block_on(append.unwrap()).unwrap(), 0);
    drop(parked);
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(block_on(engine.handle().offsets(7)).unwrap().end, 1);
    engine.close().unwrap();
}

/// The place of an append is fixed when the call returns, whatever thread
/// makes the next one: an append staged by one thread that never waits
/// goes before one made later on another thread, and a conditional append
/// counts it. So does a task that moves between threads.
#[test]
fn an_append_made_after_another_returned_gets_a_later_offset_on_any_thread() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let (first, parked) = append_on_parked_thread(&log, 9, record(0), false);
    let first = first.unwrap();
    assert_eq!(block_on(log.append(9, record(1))).unwrap(), 1);
    assert_eq!(block_on(log.append_at(9, 2, record(2))).unwrap(), 2);
    assert_eq!(block_on(first).unwrap(), 0);
    // A task that stages on one thread and goes on on another.
    let a = log.append(9, record(3));
    let b = std::thread::scope(|s| s.spawn(|| block_on(log.append(9, record(4)))).join());
    assert_eq!(b.unwrap().unwrap(), 4);
    assert_eq!(block_on(a).unwrap(), 3);
    drop(parked);
    let got = block_on(log.read_range(9, 0, 5)).unwrap();
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.value(), format!("record {i}").as_bytes());
    }
    engine.close().unwrap();
}

/// A thread's next append to a partition goes straight to the bundle it
/// staged into last, but not once another thread's append replaced that
/// bundle: under `Always` the replaced bundle stays staged, with room for
/// a small append, and joining it would put this later call before the
/// other thread's, which returned first.
#[test]
fn a_thread_does_not_join_its_last_bundle_once_another_replaced_it() {
    let dir = test_dir();
    // The default policy: `Always`.
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let big = |i: u8| vec![Record::new(vec![i; 4096])];
    // 15 records of 4 KiB: a bundle of about 61.6 KiB of its 64.
    let mine: Vec<Append> = (0..15).map(|i| log.append(6, big(i))).collect();
    // Another thread's 4 KiB does not fit: it opens the next bundle, and
    // keeps it staged while it parks.
    let (theirs, parked) = append_on_parked_thread(&log, 6, big(15), false);
    // This later call must come after it, although it would fit the first.
    let later = log.append(6, vec![Record::new(vec![16])]);
    assert_eq!(
        block_on(later).unwrap(),
        16,
        "a later call overtook one that returned"
    );
    assert_eq!(block_on(theirs.unwrap()).unwrap(), 15);
    for (i, a) in mine.into_iter().enumerate() {
        assert_eq!(block_on(a).unwrap(), i as u64);
    }
    drop(parked);
    engine.close().unwrap();
}

/// A thread that appends to two engines without waiting keeps each
/// append in its own engine: the bundle it staged into last belongs to
/// the other engine, even for the same partition number.
#[test]
fn a_thread_appending_to_two_engines_keeps_each_append_in_its_engine() {
    let (a_dir, b_dir) = (test_dir(), test_dir());
    let a = Engine::open(config(a_dir.path())).unwrap();
    let b = Engine::open(config(b_dir.path())).unwrap();
    let (a_log, b_log) = (a.handle(), b.handle());
    let to_a = a_log.append(5, record(0));
    let to_b = b_log.append(5, record(1));
    assert_eq!(block_on(to_b).unwrap(), 0);
    assert_eq!(block_on(to_a).unwrap(), 0);
    for (log, i) in [(&a_log, 0), (&b_log, 1)] {
        let got = block_on(log.read_range(5, 0, 1)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value(), format!("record {i}").as_bytes());
    }
    a.close().unwrap();
    b.close().unwrap();
}

/// Under `Always` a thread's full bundles wait, linked, for the rest of its
/// window; another thread that sends one of them by waiting on it sends
/// the ones before it first, so the offsets keep the calls' order.
#[test]
fn a_bundle_sent_by_another_thread_never_overtakes_the_ones_before_it() {
    let dir = test_dir();
    // The default policy: `Always`.
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    // 4 KiB records: about 15 to a 64 KiB bundle, so these fill several.
    let mut appends: Vec<_> = (0..60)
        .map(|i| Some(log.append(8, vec![Record::new(vec![i as u8; 4096])])))
        .collect();
    let middle = appends[40].take().unwrap();
    let waited = std::thread::spawn(move || block_on(middle).unwrap())
        .join()
        .unwrap();
    assert_eq!(waited, 40, "a later bundle was queued first");
    for (i, a) in appends.into_iter().enumerate() {
        if let Some(a) = a {
            assert_eq!(block_on(a).unwrap(), i as u64);
        }
    }
    let got = block_on(log.read_range(8, 0, 60)).unwrap();
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.value()[0], i as u8, "offset {i}");
    }
    engine.close().unwrap();
}

/// An append whose future is kept, neither awaited nor dropped, on a
/// thread that goes on with other work still reaches its shard (the
/// engine sends what stays staged every few milliseconds).
#[test]
fn an_append_nobody_waits_on_is_written_anyway() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let (_, parked) = append_on_parked_thread(&log, 10, record(0), true);
    // The end passes offset 0: the append was written and acknowledged.
    assert!(block_on(log.wait_for(10, 0, Duration::from_secs(10))).unwrap());
    drop(parked);
    engine.close().unwrap();
}

/// The send of what stays staged goes on when a shard stops after a panic
/// (a bug): an append to another shard that nobody waits on is still
/// written.
#[test]
fn an_append_nobody_waits_on_is_written_after_another_shard_panicked() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let on_shard = |shard| (0..64u64).find(|&p| shard_for(p, 2) == shard).unwrap();
    let (first, second) = (on_shard(0), on_shard(1));
    let hit = block_on(log.run_on_shard(first, |_| async {
        if true {
            panic!("a bug in shard 0");
        }
    }));
    assert!(hit.is_err());
    let (_, parked) = append_on_parked_thread(&log, second, record(0), true);
    assert!(block_on(log.wait_for(second, 0, Duration::from_secs(10))).unwrap());
    drop(parked);
    assert!(engine.close().is_err(), "close names the panicked shard");
}

/// A flush makes durable every append made before it, also those still
/// queued for their shard behind the log's backpressure (more than the 16
/// MiB the log lets wait to be written).
#[test]
fn a_flush_covers_every_append_made_before_it() {
    const APPENDS: u64 = 640;
    let dir = test_dir();
    let engine = Engine::open(
        config(dir.path())
            .fsync(FsyncPolicy::Never)
            .segment_bytes(256 << 20)
            .max_record_bytes(64 << 10),
    )
    .unwrap();
    let log = engine.handle();
    let appends: Vec<Append> = (0..APPENDS)
        .map(|i| log.append(0, vec![Record::new(vec![i as u8; 60 << 10])]))
        .collect();
    block_on(log.flush()).unwrap();
    let offsets = block_on(log.offsets(0)).unwrap();
    assert_eq!(
        offsets.durable_end, APPENDS,
        "the flush returned before every earlier append was durable: {offsets:?}"
    );
    for (i, a) in appends.into_iter().enumerate() {
        assert_eq!(block_on(a).unwrap(), i as u64);
    }
    engine.close().unwrap();
}
