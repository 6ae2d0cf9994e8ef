//! The state one shard's WAL handles and its commit task share: the open
//! commit group that appends encode into, the groups sealed and waiting to
//! be written, the segment files, the written and durable positions, and
//! the sticky failure. Only the shard's thread touches it.

use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    rc::Rc,
    sync::Arc,
};

use glommio::task::JoinHandle;

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{
        batch::RecoveredBatch,
        segment::{align_up, BLOCK_SIZE},
    },
    stats::Counters,
    storage::{IoBuffer, Storage, StorageFile},
    wal::{
        read_cache::ReadCache,
        watermark::{Signal, Watermark},
    },
};

/// State shared by the shard's handles and its commit task.
pub(super) struct Inner<S: Storage> {
    pub(super) config: ShardConfig,
    pub(super) storage: S,
    pub(super) state: RefCell<State<S::File>>,
    /// Id of the last commit group written.
    pub(super) written: Watermark,
    /// Id of the last commit group made durable (by an fdatasync, or under
    /// `Always` by its own durable write).
    pub(super) durable: Watermark,
    /// Wakes the commit task.
    pub(super) work: Signal,
    pub(super) counters: Counters,
    /// Extents of segments recently read from the device.
    pub(super) read_cache: RefCell<ReadCache<<S::File as StorageFile>::ReadBuf>>,
}

/// Appends gathered for one write. Groups are numbered from 1 in the order
/// they are written; a group never spans two segments. Batches are encoded
/// straight into the group's I/O buffer, which the write then takes.
#[derive(Debug)]
pub(super) struct Group<B> {
    pub(super) id: u64,
    pub(super) segment: u64,
    /// Block-aligned position of the group in its segment.
    pub(super) start: u64,
    /// The batches, encoded back to back; allocated by the first append.
    pub(super) buf: Option<B>,
    /// Bytes of `buf` holding batches.
    pub(super) len: usize,
    pub(super) appends: u64,
}

impl<B: IoBuffer> Group<B> {
    /// An empty group at `start` of `segment`.
    pub(super) fn new(id: u64, segment: u64, start: u64) -> Self {
        Group {
            id,
            segment,
            start,
            buf: None,
            len: 0,
            appends: 0,
        }
    }

    /// The group written after this one, in the same segment.
    pub(super) fn successor(&self) -> Self {
        Group::new(
            self.id + 1,
            self.segment,
            align_up(self.start + self.len as u64),
        )
    }

    /// Bytes the buffer can still take.
    pub(super) fn room(&self) -> usize {
        self.buf
            .as_ref()
            .map_or(0, |b| b.as_slice().len() - self.len)
    }
}

/// Mutable shard state; only the shard's thread touches it.
pub(super) struct State<F: StorageFile> {
    /// Open segment files by sequence; the last one is written.
    pub(super) segments: BTreeMap<u64, Rc<F>>,
    /// The group that accepts appends.
    pub(super) open: Group<F::Buffer>,
    /// Groups closed to appends, waiting to be written, oldest first.
    pub(super) sealed: VecDeque<Group<F::Buffer>>,
    /// Bytes in `open` and `sealed`.
    pub(super) pending_bytes: usize,
    /// Highest group id a flush asked to make durable.
    pub(super) sync_target: u64,
    /// The first I/O failure; sticky.
    pub(super) failed: Option<Arc<Error>>,
    /// Set by close: no new appends.
    pub(super) closing: bool,
    /// The spare segment being prepared in the background.
    /// It yields the sequence its header names.
    pub(super) spare: Option<JoinHandle<Result<u64>>>,
    /// The spare's header and blocks are durable: a roll may take it before
    /// its zero-filling finished.
    pub(super) spare_usable: bool,
    /// A roll needs the spare now: its zero-filling stops after the chunk
    /// in flight.
    pub(super) spare_stop: bool,
    /// The commit task.
    pub(super) committer: Option<JoinHandle<()>>,
    /// Batches of the segments that have no sidecar yet (the active one,
    /// and the next when a group waits for the roll), in log order.
    pub(super) unsealed: Vec<RecoveredBatch>,
    /// An empty vector with the capacity of a sealed segment's `unsealed`,
    /// kept for the next segment's list (see `roll::write_sidecar`).
    pub(super) unsealed_spare: Vec<RecoveredBatch>,
    /// A last segment recovery kept despite a damaged header (tolerate-any);
    /// it is never appended to, and a close while it is still the last one
    /// leaves no clean-shutdown marker, so the next open scans it again.
    pub(super) damaged_tail: Option<u64>,
    /// What the open still has to do once its caller accepted what
    /// recovery found (see `Wal::finish_open`).
    pub(super) finish: Option<OpenFinish>,
    /// Segment and position written, and made durable.
    pub(super) written_at: (u64, u64),
    pub(super) durable_at: (u64, u64),
}

/// The writes an open defers until its caller accepted what recovery found.
#[derive(Debug)]
pub(super) struct OpenFinish {
    /// A clean-shutdown marker was read; it is removed.
    pub(super) clean_marker: bool,
    /// The last segment, appended to again.
    pub(super) tail: Option<TailFinish>,
    /// Sidecars recovery rebuilt, to write (see `Recovered::sidecars`).
    pub(super) sidecars: Vec<(u64, Vec<RecoveredBatch>)>,
    /// Segment files holding nothing usable, to remove.
    pub(super) unusable: Vec<PathBuf>,
}

/// The last segment as recovery left it.
#[derive(Debug)]
pub(super) struct TailFinish {
    pub(super) sequence: u64,
    /// End of the last valid batch.
    pub(super) valid_end: u64,
    /// End of the non-zero bytes after it, to erase.
    pub(super) dirty_end: u64,
    /// Appends go on in it; else it is left as found.
    pub(super) writable: bool,
    /// Cut short: the length it was created with, to restore.
    pub(super) cut_from: Option<u64>,
    /// Positions of the segment's valid batches that reach into the block
    /// holding `valid_end`, in order: the bytes of that block a torn tail's
    /// erasure writes back, all of which it verifies first.
    pub(super) tail_batches: Vec<u64>,
}

/// Bytes at the end of every segment that only control batches may use:
/// room for two delete-befores (each its own commit, a block each) when the
/// disk has no room for a new segment.
pub(super) const CONTROL_RESERVE: u64 = 2 * BLOCK_SIZE;

/// Bytes queued for writing beyond which appends wait.
pub(super) fn max_pending_bytes(config: &ShardConfig) -> usize {
    (config.max_write_bytes * 16).max(config.max_batch_bytes * 2)
}

/// Makes sure the open group can take a batch of `size` bytes: seals it when
/// its buffer is full or the batch would cross the end of its segment. An
/// empty group keeps its buffer for its successor.
pub(super) fn make_room<F: StorageFile>(
    st: &mut State<F>,
    config: &ShardConfig,
    size: usize,
    control: bool,
) {
    let open = &st.open;
    let full = open.len > 0 && open.room() < size;
    // Where the batch would start: after the group's batches, or at the
    // start of the next group when this one's buffer is full.
    let (start, len) = if full {
        (align_up(open.start + open.len as u64), 0)
    } else {
        (open.start, open.len)
    };
    let end = start + (len + size) as u64;
    // Data leaves the last blocks of a segment to control batches, so that
    // a delete-before on a full disk needs no new segment to free space. A
    // batch alone at the start of a segment may use it all (any batch the
    // configuration allows fits there).
    let at_segment_start = start == BLOCK_SIZE && len == 0;
    let limit = if control || at_segment_start {
        config.segment_bytes
    } else {
        config.segment_bytes - CONTROL_RESERVE
    };
    let crosses_segment = open.segment == 0 || end > limit;
    if !crosses_segment && !full {
        return;
    }
    let mut next = open.successor();
    if crosses_segment {
        next.segment = open.segment + 1;
        next.start = BLOCK_SIZE;
    }
    let mut old = std::mem::replace(&mut st.open, next);
    if old.len == 0 {
        // Nothing to write: the new group takes the old one's id and buffer.
        st.open.id = old.id;
        st.open.buf = old.buf.take();
    } else {
        st.sealed.push_back(old);
    }
}

/// Takes the oldest group waiting to be written: a sealed one, or the open
/// one if it holds anything.
pub(super) fn take_group<S: Storage>(
    inner: &Inner<S>,
) -> Option<Group<<S::File as StorageFile>::Buffer>> {
    let mut st = inner.state.borrow_mut();
    let group = match st.sealed.pop_front() {
        Some(g) => Some(g),
        None if st.open.len > 0 => {
            let next = st.open.successor();
            Some(std::mem::replace(&mut st.open, next))
        }
        None => None,
    };
    if let Some(g) = &group {
        st.pending_bytes -= g.len;
    }
    group
}

/// Records the first failure and releases every waiter with it.
pub(super) fn fail<S: Storage>(inner: &Rc<Inner<S>>, error: Error) {
    inner
        .state
        .borrow_mut()
        .failed
        .get_or_insert(Arc::new(error));
    inner.written.stop();
    inner.durable.stop();
}
