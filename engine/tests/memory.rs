//! What staged appends hold in memory, counted by a global allocator that
//! tracks live bytes (this test binary's own).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

mod common;

use common::{config, test_dir};
use corelog::{Append, Engine, Record};
use futures::executor::block_on;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator with the same layout;
// the counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A producer that keeps one small append outstanding on each of many
/// partitions (a fan-out) holds memory in proportion to what it appended,
/// not a bundle's worth of room per partition.
#[test]
fn one_small_append_staged_per_partition_holds_little_memory() {
    const PARTITIONS: u64 = 2_000;
    let dir = test_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    let log = engine.handle();
    let before = LIVE.load(Ordering::Relaxed);
    let appends: Vec<Append> = (0..PARTITIONS)
        .map(|p| log.append(p, vec![Record::new(vec![1])]))
        .collect();
    let held = LIVE.load(Ordering::Relaxed).saturating_sub(before);
    let per_append = held / PARTITIONS as usize;
    assert!(
        per_append < 8 << 10,
        "{per_append} bytes held per staged 1-byte append"
    );
    for a in appends {
        block_on(a).unwrap();
    }
    engine.close().unwrap();
}
