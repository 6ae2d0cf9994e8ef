//! A shard's pool of spent bundle buffers: the memory the appending
//! threads encode their records into, handed back by the shard once the
//! records are in the log.

use std::sync::{Mutex, MutexGuard};

/// Most spent buffers a shard keeps for the next bundles.
const KEPT_BUFFERS: usize = 32;
/// Largest buffer kept: a full bundle's, grown by doubling.
const LARGEST_KEPT: usize = 128 << 10;

/// A shard's spent bundle buffers: the shard hands each bundle's buffer
/// back once its records are in the log, and new bundles take them. A
/// bundle's buffer is allocated on the appending thread and done with on
/// the shard's; freed there, it made the allocator give memory back and
/// fault it in again (the main job took 2.7 times the page faults before
/// buffers were kept here). At most [`KEPT_BUFFERS`] of at most
/// [`LARGEST_KEPT`] bytes each: 4 MiB a shard.
#[derive(Default)]
pub(crate) struct Buffers(Mutex<Vec<Vec<u8>>>);

impl Buffers {
    /// An empty buffer with room for `room` bytes: a spent one if one is
    /// kept that is not much larger (a bundle of one small append must
    /// not hold a full bundle's memory), else a new one.
    pub(crate) fn take(&self, room: usize) -> Vec<u8> {
        let spent = lock(&self.0).pop();
        match spent {
            Some(mut buffer) if buffer.capacity() <= 4 * room.max(4 << 10) => {
                buffer.reserve(room);
                buffer
            }
            _ => Vec::with_capacity(room),
        }
    }

    /// Keeps `buffer`, emptied, for a later bundle, unless enough are kept
    /// or it is too large to keep.
    pub(crate) fn give(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > LARGEST_KEPT {
            return;
        }
        buffer.clear();
        let mut kept = lock(&self.0);
        if kept.len() < KEPT_BUFFERS {
            kept.push(buffer);
        }
    }
}

/// Locks `m`; every critical section is a push or a pop.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spent buffers are reused only by bundles they fit without holding
    /// much more memory than asked, and the shard keeps a bounded number of
    /// bounded size.
    #[test]
    fn spent_buffers_are_reused_within_bounds() {
        let buffers = Buffers::default();
        buffers.give(Vec::with_capacity(64 << 10));
        // A one-record bundle does not take a full bundle's buffer.
        let small = buffers.take(100);
        assert!(small.capacity() < 64 << 10);
        // Nor is the large one kept for later: it was dropped.
        assert!(lock(&buffers.0).is_empty());
        buffers.give(Vec::with_capacity(64 << 10));
        let large = buffers.take(50 << 10);
        assert!(large.capacity() >= 64 << 10 && large.is_empty());
        // Too large to keep.
        buffers.give(Vec::with_capacity(LARGEST_KEPT + 1));
        assert!(lock(&buffers.0).is_empty());
        for _ in 0..KEPT_BUFFERS + 5 {
            buffers.give(Vec::with_capacity(1 << 10));
        }
        assert_eq!(lock(&buffers.0).len(), KEPT_BUFFERS);
    }
}
