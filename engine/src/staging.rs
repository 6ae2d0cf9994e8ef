//! Each thread's staged appends: per engine and partition, the open
//! [`Bundle`] that the thread's next appends to that partition join.
//!
//! A bundle is sent to its shard when the thread waits on any append (an
//! [`crate::Append`] polled and not ready), drops an append still staged,
//! makes a conditional or a large append to the partition, calls any other
//! [`crate::Handle`] method, closes the engine, or exits; or when another
//! thread polls one of its appends; or when it reaches its byte limit
//! (under `Always`, a full bundle waits, linked before the next one, for
//! up to 1 MiB: see [`Bundle::follow`]). So
//! an append waits in the bundle only while its thread goes on making
//! appends without waiting for any, and a thread appending one record at a
//! time with a window of appends outstanding sends one request a window.
//!
//! Invariant: a thread has at most one open bundle per engine and
//! partition, and bundles of one thread and partition are sent in the
//! order they were opened (a new one is opened only once the previous one
//! is sent, or linked to go first when the new one is sent), so the
//! appends one thread makes to a partition reach the shard in call order.

use std::{cell::RefCell, sync::Arc};

use corelog_shard::Record;

use crate::bundle::{Bundle, Route};

/// Open bundles a thread keeps at most; past this, the oldest is sent.
const MAX_OPEN: usize = 64;

thread_local! {
    static OPEN: RefCell<Open> = const { RefCell::new(Open(Vec::new())) };
}

/// A thread's open bundles, sent when the thread exits.
struct Open(Vec<Entry>);

struct Entry {
    engine: u64,
    partition: u64,
    bundle: Arc<Bundle>,
}

impl Drop for Open {
    fn drop(&mut self) {
        for e in self.0.drain(..) {
            e.bundle.send();
        }
    }
}

/// Makes an append that passed its checks: `records`, a batch of `bytes`,
/// to `partition` of engine `engine` on `route`, conditional on
/// `expected_end` if given. Staged if unconditional and at most `limit`
/// bytes; else sent at once, after what this thread staged for the
/// partition. Returns its bundle and the place of its first record in it.
pub(crate) fn append(
    (engine, partition, expected_end): (u64, u64, Option<u64>),
    route: impl FnOnce() -> Route,
    records: Vec<Record>,
    bytes: usize,
    (limit, keep): (usize, usize),
) -> (Arc<Bundle>, u64) {
    let open = |records| Bundle::new(route(), partition, expected_end, records, bytes, limit);
    if expected_end.is_none() && bytes <= limit {
        return stage(engine, partition, records, (bytes, limit, keep), open);
    }
    send_partition(engine, partition);
    let bundle = open(records);
    bundle.send();
    (bundle, 0)
}

/// Stages an unconditional append of `records` (a batch of `bytes`, at
/// most `limit`) to `partition` of engine `engine`: it joins this thread's
/// open bundle for them, or a new one made by `open`. The full bundle that
/// one replaces goes with it if fewer than `keep` are kept staged before it
/// (see [`Bundle::follow`]), else it is sent now. Returns the bundle and
/// the place of the append's first record in it.
fn stage(
    engine: u64,
    partition: u64,
    mut records: Vec<Record>,
    (bytes, limit, keep): (usize, usize, usize),
    open: impl FnOnce(Vec<Record>) -> Arc<Bundle>,
) -> (Arc<Bundle>, u64) {
    let joined = OPEN.try_with(|o| {
        let o = o.borrow();
        let e =
            o.0.iter()
                .find(|e| e.engine == engine && e.partition == partition)?;
        let place = e.bundle.join(&mut records, bytes, limit)?;
        Some((e.bundle.clone(), place))
    });
    if let Ok(Some(joined)) = joined {
        return joined;
    }
    let bundle = open(records);
    // The bundle the new one replaces (same partition, full or sent), and
    // the oldest open one, of another partition, if the thread holds too
    // many.
    let replaced = OPEN.try_with(|o| {
        let mut o = o.borrow_mut();
        let entries = &mut o.0;
        let found = entries
            .iter_mut()
            .find(|e| e.engine == engine && e.partition == partition);
        if let Some(e) = found {
            return (Some(std::mem::replace(&mut e.bundle, bundle.clone())), None);
        }
        let oldest = (entries.len() >= MAX_OPEN).then(|| entries.remove(0).bundle);
        entries.push(Entry {
            engine,
            partition,
            bundle: bundle.clone(),
        });
        (None, oldest)
    });
    // Sent outside the borrow (sending wakes a shard, which runs no code
    // of this thread, but nothing here relies on that).
    match replaced {
        Ok((previous, oldest)) => {
            if let Some(previous) = previous.and_then(|p| bundle.follow(p, keep)) {
                previous.send();
            }
            if let Some(oldest) = oldest {
                oldest.send();
            }
        }
        // The thread is exiting: nothing is staged any more.
        Err(_) => bundle.send(),
    }
    (bundle, 0)
}

/// Sends this thread's open bundle for `partition` of engine `engine`, if
/// any: what must precede an append that is not staged.
fn send_partition(engine: u64, partition: u64) {
    let open = OPEN.try_with(|o| {
        let mut o = o.borrow_mut();
        let entries = &mut o.0;
        let found = entries
            .iter()
            .position(|e| e.engine == engine && e.partition == partition);
        found.map(|i| entries.swap_remove(i).bundle)
    });
    if let Ok(Some(bundle)) = open {
        bundle.send();
    }
}

/// Sends every bundle this thread has open.
pub(crate) fn send_all() {
    let open = OPEN.try_with(|o| std::mem::take(&mut o.borrow_mut().0));
    if let Ok(entries) = open {
        for e in entries {
            e.bundle.send();
        }
    }
}
