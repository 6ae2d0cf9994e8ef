//! The embedding API from plain threads and from tokio.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

mod common;

use common::{config, test_dir};
use corelog::{Engine, Error, FsyncPolicy, Record};
use futures::executor::block_on;

fn value(partition: u64, producer: u64, seq: u64) -> Vec<u8> {
    format!("p{partition}/w{producer}/s{seq}").into_bytes()
}

/// Acknowledged appends: partition -> offset -> value.
type Acked = Arc<Mutex<BTreeMap<u64, BTreeMap<u64, Vec<u8>>>>>;

fn check_acked(engine: &Engine, acked: &Acked) {
    let log = engine.handle();
    for (&p, records) in acked.lock().unwrap().iter() {
        let end = *records.keys().last().unwrap() + 1;
        assert_eq!(
            records.len() as u64,
            end,
            "offsets of partition {p} are dense"
        );
        let got = block_on(log.read_range(p, 0, end)).unwrap();
        for r in got {
            assert_eq!(
                r.value(),
                records[&r.offset()].as_slice(),
                "partition {p} offset {}",
                r.offset()
            );
        }
    }
}

#[test]
fn eight_threads_two_hundred_partitions_then_reopen() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let acked: Acked = Arc::default();
    let threads: Vec<_> = (0..8u64)
        .map(|w| {
            let log = engine.handle();
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut last: BTreeMap<u64, u64> = BTreeMap::new();
                for seq in 0..150u64 {
                    let p = (w * 37 + seq * 13) % 200;
                    let recs = vec![
                        Record::new(value(p, w, seq)),
                        Record::new(value(p, w, seq + 1000)),
                    ];
                    let base = block_on(log.append(p, recs)).unwrap();
                    // Per partition, this caller's appends land in its order.
                    if let Some(&prev) = last.get(&p) {
                        assert!(base > prev);
                    }
                    last.insert(p, base);
                    let mut a = acked.lock().unwrap();
                    let m = a.entry(p).or_default();
                    assert!(m.insert(base, value(p, w, seq)).is_none(), "offset reused");
                    assert!(
                        m.insert(base + 1, value(p, w, seq + 1000)).is_none(),
                        "offset reused"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    check_acked(&engine, &acked);
    engine.close().unwrap();

    let engine = Engine::open(config(dir.path())).unwrap();
    check_acked(&engine, &acked);
    // A clean close let every shard skip the scan.
    for (stats, report) in engine.stats().unwrap().shards {
        assert!(report.clean_shutdown);
        assert_eq!(report.bytes_scanned, 0, "{report:?}");
        assert!(stats.segments >= 1, "{stats:?}");
    }
    engine.close().unwrap();
}

#[test]
fn appends_from_a_tokio_runtime() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path()).fsync(FsyncPolicy::Never)).unwrap();
    let log = engine.handle();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Acked = Arc::default();
    rt.block_on(async {
        let tasks: Vec<_> = (0..16u64)
            .map(|w| {
                let (log, acked) = (log.clone(), acked.clone());
                tokio::spawn(async move {
                    for seq in 0..50u64 {
                        let p = (w + seq) % 20;
                        let base = log
                            .append(p, vec![Record::new(value(p, w, seq))])
                            .await
                            .unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .entry(p)
                            .or_default()
                            .insert(base, value(p, w, seq));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        log.flush().await.unwrap();
    });
    check_acked(&engine, &acked);
    drop(engine); // Drop closes too.
    let engine = Engine::open(config(dir.path())).unwrap();
    check_acked(&engine, &acked);
    engine.close().unwrap();
}

#[test]
fn wait_for_wakes_on_append_and_times_out() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let waiter = {
        let log = log.clone();
        std::thread::spawn(move || {
            let passed = block_on(log.wait_for(9, 0, Duration::from_secs(10))).unwrap();
            (passed, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    block_on(log.append(9, vec![Record::new(b"x".to_vec())])).unwrap();
    let acked_at = Instant::now();
    let (passed, woke_at) = waiter.join().unwrap();
    assert!(passed);
    // Generous bound for a shared machine; the bench measures the real figure.
    let late = woke_at.saturating_duration_since(acked_at);
    assert!(
        late < Duration::from_millis(500),
        "woke {late:?} after the append"
    );
    // Nothing past offset 0 arrives: it times out cleanly.
    let started = Instant::now();
    assert!(!block_on(log.wait_for(9, 1, Duration::from_millis(50))).unwrap());
    assert!(started.elapsed() >= Duration::from_millis(50));
    engine.close().unwrap();
}

#[test]
fn fetch_returns_records_once_appended_and_nothing_on_timeout() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    // A follower parked at the tail gets the records of the next append.
    let follower = {
        let log = log.clone();
        std::thread::spawn(move || block_on(log.fetch(4, 0, 1 << 20, Duration::from_secs(10))))
    };
    std::thread::sleep(Duration::from_millis(100));
    let records = vec![Record::new(b"a".to_vec()), Record::new(b"b".to_vec())];
    block_on(log.append(4, records)).unwrap();
    let got = follower.join().unwrap().unwrap();
    let values: Vec<&[u8]> = got.iter().map(|r| r.value()).collect();
    assert_eq!(values, [b"a".as_slice(), b"b".as_slice()]);
    assert_eq!(got[0].offset(), 0);
    // Records already there come back at once, from the offset asked.
    let got = block_on(log.fetch(4, 1, 1 << 20, Duration::from_secs(10))).unwrap();
    assert_eq!((got.len(), got[0].offset()), (1, 1));
    // At the end, nothing arrives: empty after the timeout.
    let started = Instant::now();
    assert!(
        block_on(log.fetch(4, 2, 1 << 20, Duration::from_millis(50)))
            .unwrap()
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    // Past the end is an error at once, not a wait.
    assert!(matches!(
        block_on(log.fetch(4, 3, 1 << 20, Duration::from_secs(10))),
        Err(Error::OffsetOutOfRange { .. })
    ));
    engine.close().unwrap();
}

#[test]
fn close_releases_followers_parked_in_long_polls() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let follower = {
        let log = log.clone();
        std::thread::spawn(move || block_on(log.fetch(3, 0, 1 << 20, Duration::from_secs(60))))
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    engine.close().unwrap();
    // Without the release, the close would wait out the 60 s poll.
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(matches!(follower.join().unwrap(), Err(Error::Closed)));
}

#[test]
fn errors_a_caller_can_act_on() {
    let dir = test_dir();
    assert!(matches!(
        Engine::open(config(dir.path()).shards(0)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Engine::open(config(dir.path()).segment_bytes(1000)),
        Err(Error::InvalidArgument(_))
    ));
    let engine = Engine::open(config(dir.path())).unwrap();
    // The directory is locked while open.
    assert!(matches!(
        Engine::open(config(dir.path())),
        Err(Error::Locked { .. })
    ));
    let log = engine.handle();
    assert!(matches!(
        block_on(log.append(1, vec![])),
        Err(Error::InvalidArgument(_))
    ));
    let big = vec![Record::new(vec![0u8; 20 << 10])];
    assert!(matches!(
        block_on(log.append(1, big)),
        Err(Error::RecordTooLarge { what: "record", .. })
    ));
    assert!(matches!(
        block_on(log.read(1, 5, 100)),
        Err(Error::OffsetOutOfRange {
            partition: 1,
            offset: 5,
            start: 0,
            end: 0
        })
    ));
    assert_eq!(
        block_on(log.offsets(1)).unwrap(),
        corelog::Offsets::default()
    );
    engine.close().unwrap();
    // A closed engine refuses work.
    assert!(matches!(
        block_on(log.append(1, vec![Record::new(b"x".to_vec())])),
        Err(Error::Closed)
    ));
    // Another shard count is refused, naming the fix.
    match Engine::open(config(dir.path()).shards(3)) {
        Err(Error::ShardCountMismatch {
            found: 2,
            configured: 3,
            ..
        }) => {}
        Err(e) => panic!("expected a shard count mismatch, got {e}"),
        Ok(_) => panic!("expected a shard count mismatch"),
    }
}

#[test]
fn code_on_a_shard_uses_the_local_fast_path() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    // Runs on partition 3's shard: appends and reads without crossing threads.
    let (first, read_back) = block_on(log.run_on_shard(3, |shard| async move {
        let first = shard
            .append(3, &[Record::new(b"local".to_vec())])
            .await
            .unwrap();
        shard
            .append(3, &[Record::new(b"again".to_vec())])
            .await
            .unwrap();
        let values: Vec<Vec<u8>> = shard
            .read(3, first, 1 << 20)
            .await
            .unwrap()
            .iter()
            .map(|r| r.value().to_vec())
            .collect();
        (first, values)
    }))
    .unwrap();
    assert_eq!(first, 0);
    assert_eq!(read_back, vec![b"local".to_vec(), b"again".to_vec()]);
    // The same data seen through the handle.
    assert_eq!(block_on(log.offsets(3)).unwrap().end, 2);
    // A partition another shard owns is refused: written there, no handle
    // would ever find it.
    let shards = 2; // as common::config sets
    let foreign = (0..64u64)
        .find(|&p| corelog::shard_for(p, shards) != corelog::shard_for(3, shards))
        .expect("more than one shard");
    let refused = block_on(log.run_on_shard(3, move |shard| async move {
        shard.append(foreign, &[Record::new(b"x".to_vec())]).await
    }))
    .unwrap();
    assert!(
        matches!(&refused, Err(Error::InvalidArgument(why)) if why.contains(&format!("partition {foreign}"))),
        "{refused:?}"
    );
    assert_eq!(block_on(log.offsets(foreign)).unwrap().end, 0);
    engine.close().unwrap();
}

/// The layout file is written atomically, with a magic, a version and the
/// routing scheme. An empty one, which a crash during the first open could
/// leave before it was written atomically, no longer makes every later
/// open fail; the first format (`shards=N`) still opens.
#[test]
fn the_layout_file_is_atomic_versioned_and_read_in_both_formats() {
    // Empty, or its length in NULs (what writeback can leave).
    let nuls = test_dir();
    std::fs::write(nuls.path().join("engine.layout"), [0u8; 9]).unwrap();
    Engine::open(config(nuls.path())).unwrap().close().unwrap();
    let dir = test_dir();
    std::fs::write(dir.path().join("engine.layout"), b"").unwrap();
    Engine::open(config(dir.path())).unwrap().close().unwrap();
    let text = std::fs::read_to_string(dir.path().join("engine.layout")).unwrap();
    assert_eq!(
        text,
        "corelog-layout 1\nshards=2\nrouting=fibonacci-multiply-shift\n"
    );
    assert!(!dir.path().join("engine.layout.tmp").exists());
    // An empty layout beside shard directories is damage, named as such.
    std::fs::write(dir.path().join("engine.layout"), b"").unwrap();
    assert!(matches!(
        Engine::open(config(dir.path())),
        Err(Error::Corrupted { path, .. }) if path.ends_with("engine.layout")
    ));
    std::fs::write(dir.path().join("engine.layout"), b"shards=2\n").unwrap();
    Engine::open(config(dir.path())).unwrap().close().unwrap();
}

/// A panic in a shard's task (a bug) leaves no caller waiting: the call
/// that hit it, every later call to that shard and `close` get an error
/// naming the shard; the other shards go on.
#[test]
fn a_panic_on_a_shard_fails_its_callers_and_close_with_the_shard_named() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let shard = corelog::shard_for(1, 2);
    let other = (0..64u64)
        .find(|&p| corelog::shard_for(p, 2) != shard)
        .unwrap();
    let hit = block_on(log.run_on_shard(1, |_| async {
        if true {
            panic!("a bug in the shard");
        }
    }));
    let named = |r: &Result<(), Error>| matches!(r, Err(Error::ShardPanicked { shard: s, message }) if *s == shard && message.contains("a bug in the shard"));
    assert!(named(&hit), "{hit:?}");
    let later = block_on(log.append(1, vec![Record::new(b"x".to_vec())])).map(|_| ());
    assert!(named(&later), "{later:?}");
    // The other shard still serves.
    block_on(log.append(other, vec![Record::new(b"y".to_vec())])).unwrap();
    let closed = engine.close();
    assert!(named(&closed), "{closed:?}");
}

/// A panic in a task a shard runs apart from any request (here a task a
/// `run_on_shard` closure leaves behind; the commit task is another) stops
/// the shard with its callers told so, not left waiting forever, and the
/// close names it.
#[test]
fn a_panic_in_a_detached_task_of_a_shard_fails_its_callers() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    block_on(log.run_on_shard(1, |_| async {
        glommio::spawn_local(async {
            // After the request that spawned it has been answered.
            glommio::timer::sleep(Duration::from_millis(20)).await;
            if true {
                panic!("a bug in a task of the shard");
            }
        })
        .detach();
    }))
    .unwrap();
    let (answer, answered) = std::sync::mpsc::channel();
    let caller = log.clone();
    std::thread::spawn(move || loop {
        match block_on(caller.offsets(1)) {
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => break answer.send(e).unwrap(),
        }
    });
    let e = answered
        .recv_timeout(Duration::from_secs(20))
        .expect("a call to the stopped shard hung");
    assert!(matches!(e, Error::ShardPanicked { .. }), "{e:?}");
    let closed = engine.close();
    assert!(
        matches!(closed, Err(Error::ShardPanicked { .. })),
        "{closed:?}"
    );
}

/// A long poll with a timeout the clock cannot represent waits without
/// one, instead of overflowing the shard's timer (which stopped the shard).
#[test]
fn a_long_poll_with_duration_max_waits_for_the_append() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let appender = log.clone();
    let append = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        block_on(appender.append(1, vec![Record::new(b"x".to_vec())])).unwrap();
    });
    assert!(block_on(log.wait_for(1, 0, Duration::MAX)).unwrap());
    let fetched = block_on(log.fetch(1, 1, 1024, Duration::from_millis(1))).unwrap();
    assert!(fetched.is_empty());
    append.join().unwrap();
    block_on(log.append(1, vec![Record::new(b"y".to_vec())])).unwrap();
    engine.close().unwrap();
}

/// A follower's loop on the shard (`run_on_shard`) learns that the engine
/// is closing from `wait_for`, so the close does not wait on it forever.
#[test]
fn a_follower_loop_on_the_shard_ends_when_the_engine_closes() {
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let (started, running) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        block_on(log.run_on_shard(1, move |shard| async move {
            started.send(()).unwrap();
            loop {
                match shard.wait_for(1, 0, Duration::from_millis(5)).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e) => return Err(e),
                }
            }
        }))
    });
    running.recv().unwrap();
    let (closed, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || closed.send(engine.close()).unwrap());
    done.recv_timeout(Duration::from_secs(20))
        .expect("close waited on the follower's loop")
        .unwrap();
    let ended = follower.join().unwrap();
    assert!(
        matches!(ended, Ok(Err(Error::Closed)) | Err(_)),
        "{ended:?}"
    );
}

/// The engine's blocking methods on a shard's own thread (in a
/// `run_on_shard` task) do not deadlock it: `stats` is refused, and a close
/// there goes on in the background once the task returns.
#[test]
fn blocking_engine_calls_on_a_shard_thread_neither_deadlock_nor_join_it() {
    let dir = test_dir();
    let engine = std::sync::Arc::new(std::sync::Mutex::new(Some(
        Engine::open(config(dir.path())).unwrap(),
    )));
    let log = engine.lock().unwrap().as_ref().unwrap().handle();
    let on_shard = engine.clone();
    let stats = block_on(log.run_on_shard(1, move |_| async move {
        on_shard
            .lock()
            .unwrap()
            .as_ref()
            .unwrap()
            .stats()
            .map(|_| ())
    }))
    .unwrap();
    assert!(matches!(stats, Err(Error::InvalidArgument(_))), "{stats:?}");
    let on_shard = engine.clone();
    let closed = block_on(log.run_on_shard(1, move |_| async move {
        let engine = on_shard.lock().unwrap().take().unwrap();
        engine.close()
    }))
    .unwrap();
    assert!(
        matches!(closed, Err(Error::InvalidArgument(_))),
        "{closed:?}"
    );
    // The background close ends and releases the directory.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let reopened = loop {
        match Engine::open(config(dir.path())) {
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => break other,
        }
    };
    reopened.unwrap().close().unwrap();
}
