//! A model-based randomized test: random appends, reads, delete-befores,
//! truncates and reopens (clean and abandoned) against a `BTreeMap` model.

mod common;

use std::collections::BTreeMap;

use common::{run, small_config, test_dir};
use corelog_shard::{Error, FsyncPolicy, Offsets, Record, Shard};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: u64,
        count: u8,
        len: u16,
    },
    Read {
        partition: u64,
        at: u8,
        max_bytes: u16,
    },
    DeleteBefore {
        partition: u64,
        at: u8,
    },
    Truncate {
        partition: u64,
        at: u8,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0u64..4;
    prop_oneof![
        6 => (p.clone(), 1u8..6, 0u16..600).prop_map(|(partition, count, len)| Op::Append { partition, count, len }),
        3 => (p.clone(), any::<u8>(), 1u16..2000).prop_map(|(partition, at, max_bytes)| Op::Read { partition, at, max_bytes }),
        1 => (p.clone(), any::<u8>()).prop_map(|(partition, at)| Op::DeleteBefore { partition, at }),
        1 => (p, any::<u8>()).prop_map(|(partition, at)| Op::Truncate { partition, at }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

/// The model of one partition.
#[derive(Debug, Default, Clone)]
struct Model {
    start: u64,
    records: BTreeMap<u64, Vec<u8>>,
    end: u64,
}

/// Picks an offset in `[lo, hi]` from a byte.
fn pick(at: u8, lo: u64, hi: u64) -> u64 {
    lo + u64::from(at) * (hi - lo) / 255
}

fn check(ops: Vec<Op>) {
    let dir = test_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let config = small_config(&path, FsyncPolicy::Always);
        let (mut shard, _) = Shard::open(config.clone()).await.unwrap();
        let mut model: BTreeMap<u64, Model> = BTreeMap::new();
        let mut stamp = 0u64;
        for op in ops {
            match op {
                Op::Append {
                    partition,
                    count,
                    len,
                } => {
                    let m = model.entry(partition).or_default();
                    let recs: Vec<Record> = (0..count)
                        .map(|_| {
                            stamp += 1;
                            let mut v = stamp.to_le_bytes().to_vec();
                            v.resize(8 + len as usize, stamp as u8);
                            Record::new(v)
                        })
                        .collect();
                    let base = shard.append(partition, &recs).await.unwrap();
                    assert_eq!(base, m.end);
                    for r in &recs {
                        m.records.insert(m.end, r.value().to_vec());
                        m.end += 1;
                    }
                }
                Op::Read {
                    partition,
                    at,
                    max_bytes,
                } => {
                    let m = model.get(&partition).cloned().unwrap_or_default();
                    let offset = pick(at, m.start, m.end);
                    let got = shard
                        .read(partition, offset, max_bytes as usize)
                        .await
                        .unwrap();
                    let expect: Vec<_> = m.records.range(offset..).take(got.len()).collect();
                    assert_eq!(got.len(), expect.len());
                    if offset < m.end {
                        assert!(
                            !got.is_empty(),
                            "read at {offset} below end {} returned nothing",
                            m.end
                        );
                    }
                    for (r, (o, v)) in got.iter().zip(expect) {
                        assert_eq!((r.offset(), r.value()), (*o, v.as_slice()));
                    }
                    let past = shard.read(partition, m.end + 1, 10).await;
                    assert!(matches!(past, Err(Error::OffsetOutOfRange { .. })));
                }
                Op::DeleteBefore { partition, at } => {
                    let m = model.entry(partition).or_default();
                    let offset = pick(at, 0, m.end);
                    shard.delete_before(partition, offset).await.unwrap();
                    m.start = m.start.max(offset);
                    m.records = m.records.split_off(&m.start);
                }
                Op::Truncate { partition, at } => {
                    let m = model.entry(partition).or_default();
                    let from = pick(at, m.start, m.end);
                    shard.truncate(partition, from).await.unwrap();
                    m.records.split_off(&from);
                    m.end = from;
                }
                Op::Reopen { clean } => {
                    if clean {
                        shard.close().await.unwrap();
                    }
                    drop(shard);
                    shard = Shard::open(config.clone()).await.unwrap().0;
                }
            }
            for (&p, m) in &model {
                let o = shard.offsets(p);
                assert_eq!((o.start, o.end), (m.start, m.end), "partition {p}");
                assert_eq!(
                    o.durable_end, m.end,
                    "Always: everything acknowledged is durable"
                );
            }
        }
        // Finally every partition reads back exactly.
        for (&p, m) in &model {
            let got = shard.read_range(p, m.start, m.end).await.unwrap();
            let expect: Vec<_> = m.records.iter().collect();
            assert_eq!(got.len(), expect.len());
            for (r, (o, v)) in got.iter().zip(expect) {
                assert_eq!((r.offset(), r.value()), (*o, v.as_slice()));
            }
        }
        assert_eq!(shard.offsets(99), Offsets::default());
        shard.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn shard_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
        check(ops);
    }
}
