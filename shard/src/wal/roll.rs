//! Segment files under the commit task: the spare segment prepared ahead
//! in the background, the roll that seals the active segment and renames
//! the spare into place, the sidecar a sealed segment gets, and the
//! fdatasyncs and zeroing they need.

use std::{rc::Rc, time::Duration};

use futures_lite::future;

use crate::{
    config::FsyncPolicy,
    error::{Error, Result},
    format::{
        segment::{self, align_up, segment_path, spare_path, SegmentHeader, BLOCK_SIZE},
        sidecar,
    },
    stats::bump,
    storage::{IoBuffer, Storage, StorageFile},
    wal::state::Inner,
};

/// Creates segment `sequence` in the background, under the spare's name:
/// preallocated, its header written, and when configured the rest filled
/// with zeros (so writes into it later neither allocate blocks nor convert
/// extents), then synced. A roll then only renames it. A spare left by a
/// crash is removed on open, whatever it holds.
pub(super) fn prepare_spare<S: Storage>(inner: &Rc<Inner<S>>, sequence: u64) {
    inner.counters.spare_ready.set(false);
    {
        let mut st = inner.state.borrow_mut();
        st.spare_usable = false;
        st.spare_stop = false;
    }
    let task = glommio::spawn_local(make_spare(inner.clone(), sequence)).detach();
    inner.state.borrow_mut().spare = Some(task);
}

/// Prepares the spare for segment `sequence` (see [`prepare_spare`]). A
/// spare that failed (a full disk) is removed, so that the blocks it got do
/// not stay taken.
async fn make_spare<S: Storage>(inner: Rc<Inner<S>>, sequence: u64) -> Result<u64> {
    let made = try_make_spare(&inner, sequence).await;
    if made.is_err() {
        let _ = inner.storage.remove(&spare_path(&inner.config.dir)).await;
    }
    made
}

async fn try_make_spare<S: Storage>(inner: &Rc<Inner<S>>, sequence: u64) -> Result<u64> {
    let (config, storage) = (&inner.config, &inner.storage);
    let file = storage.open(&spare_path(&config.dir), true).await?;
    file.allocate(config.segment_bytes).await?;
    let mut buf = storage.alloc(BLOCK_SIZE as usize);
    let bytes = buf.as_mut_slice();
    bytes.fill(0);
    let header = SegmentHeader::new(config.shard_id, sequence, config.segment_bytes);
    bytes[..std::mem::size_of::<SegmentHeader>()].copy_from_slice(bytemuck::bytes_of(&header));
    write_all(&file, buf, BLOCK_SIZE as usize, 0, false).await?;
    file.fdatasync().await?;
    inner.state.borrow_mut().spare_usable = true;
    if config.prezero_segments && config.fsync != FsyncPolicy::Never {
        zero_fill(inner, &file).await?;
    }
    file.close().await?;
    inner.counters.spare_ready.set(true);
    Ok(sequence)
}

/// Fills the spare past its header with zeros, so that writes into it
/// later neither allocate blocks nor convert unwritten extents (an
/// fdatasync then journals nothing). It gives way to the log: while appends
/// wait to be written it pauses between chunks, and it stops (leaving the
/// rest unwritten, which is correct, only slower to sync) when a roll needs
/// the spare. Invariant: it only ever writes the spare file, never a
/// segment in use.
async fn zero_fill<S: Storage>(inner: &Rc<Inner<S>>, file: &S::File) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    const MAX_PAUSES: u32 = 20;
    let (config, storage) = (&inner.config, &inner.storage);
    let mut pos = BLOCK_SIZE;
    // Pauses before the next chunk: bounded, so that a log that never
    // drains (a failed one) does not keep this task alive.
    let mut paused = 0;
    while pos < config.segment_bytes {
        let (stop, busy) = {
            let st = inner.state.borrow();
            (
                st.spare_stop || st.closing || st.failed.is_some(),
                st.pending_bytes > 0,
            )
        };
        if stop {
            return Ok(());
        }
        if busy && paused < MAX_PAUSES {
            paused += 1;
            storage.sleep(Duration::from_millis(1)).await;
            continue;
        }
        paused = 0;
        let len = CHUNK.min(config.segment_bytes - pos) as usize;
        let mut buf = storage.alloc(len);
        buf.as_mut_slice().fill(0);
        write_all(file, buf, len, pos, false).await?;
        bump(&inner.counters.zeroed_bytes, len as u64);
        pos += len as u64;
    }
    file.fdatasync().await
}

/// Writes zeros over `[from, to)`, with `kept` (the bytes before `from` in
/// its block, which the caller read and verified) written back before them,
/// then syncs. Used to pre-zero segments and to erase the garbage a
/// torn write left after the recovered tail.
pub(super) async fn zero_range<S: Storage>(
    storage: &S,
    file: &S::File,
    from: u64,
    to: u64,
    kept: Option<&[u8]>,
) -> Result<()> {
    if to <= from {
        return Ok(());
    }
    let mut pos = from - from % BLOCK_SIZE;
    let keep = (from - pos) as usize;
    // Invariant: bytes before `from` in its block are written back as the
    // caller read and verified them, never as a second read returns them.
    assert_eq!(
        kept.map_or(0, <[u8]>::len),
        keep,
        "zero_range needs the verified bytes before {from}"
    );
    let chunk_max: u64 = 1 << 20;
    while pos < to {
        let len = chunk_max.min(align_up(to) - pos) as usize;
        let mut buf = storage.alloc(len);
        let bytes = buf.as_mut_slice();
        bytes.fill(0);
        if let Some(kept) = kept.filter(|_| pos < from) {
            bytes[..keep].copy_from_slice(kept);
        }
        write_all(file, buf, len, pos, false).await?;
        pos += len as u64;
    }
    file.fdatasync().await
}

/// Writes `buf` (of `len` bytes) at `pos` and checks the count; when
/// `durable`, with [`StorageFile::write_durable_at`], durable when it returns.
pub(super) async fn write_all<F: StorageFile>(
    file: &F,
    buf: F::Buffer,
    len: usize,
    pos: u64,
    durable: bool,
) -> Result<()> {
    let written = if durable {
        file.write_durable_at(buf, pos).await?
    } else {
        file.write_at(buf, pos).await?
    };
    if written != len {
        return Err(Error::ShortWrite {
            path: file.path().to_path_buf(),
            position: pos,
            expected: len,
            written,
        });
    }
    Ok(())
}

/// fdatasync of the active segment; everything written becomes durable.
pub(super) async fn sync<S: Storage>(inner: &Rc<Inner<S>>) -> Result<()> {
    let (file, written_at) = {
        let st = inner.state.borrow();
        (st.segments.get(&st.written_at.0).cloned(), st.written_at)
    };
    let id = inner.written.get();
    if let Some(file) = file {
        file.fdatasync().await?;
        bump(&inner.counters.fdatasyncs, 1);
    }
    mark_durable(inner, written_at, id);
    Ok(())
}

/// Records that everything written up to `written_at`, commit group `id`
/// and those before it, is durable.
pub(super) fn mark_durable<S: Storage>(inner: &Inner<S>, written_at: (u64, u64), id: u64) {
    {
        let mut st = inner.state.borrow_mut();
        // Invariant: the durable position only moves forward, and only
        // after an fdatasync or a durable write covered everything before it.
        assert!(
            written_at >= st.durable_at,
            "durable position would move back from {:?} to {written_at:?}",
            st.durable_at
        );
        st.durable_at = written_at;
    }
    inner.durable.advance(id);
}

/// Seals the active segment (fdatasync) and makes segment `sequence` active
/// from the prepared spare file.
pub(super) async fn roll<S: Storage>(inner: &Rc<Inner<S>>, sequence: u64) -> Result<()> {
    let config = &inner.config;
    // Invariant: a roll never reuses a sequence; the rename below would
    // replace a segment holding data.
    assert!(
        inner.state.borrow().segments.keys().all(|&s| s < sequence),
        "roll to segment {sequence}, which is not past every existing segment"
    );
    sync(inner).await?;
    write_sidecar(inner, sequence - 1).await;
    let spare = inner.state.borrow_mut().spare.take();
    let ready = match spare {
        Some(mut spare) => match future::poll_once(&mut spare).await {
            Some(ready) => ready,
            None => {
                // The segment is needed before it was ready: its
                // zero-filling is cut short, now if it runs, else as soon as
                // the header is synced (a review found that a roll that came
                // before the header waited for the whole zero-fill).
                let usable = {
                    let mut st = inner.state.borrow_mut();
                    st.spare_stop = true;
                    st.spare_usable
                };
                let counter = if usable {
                    &inner.counters.zeroing_cut
                } else {
                    &inner.counters.roll_waits
                };
                bump(counter, 1);
                spare.await
            }
        },
        // None was started (a WAL used before its open finished).
        None => {
            // Made now, while appends wait: no zero-filling.
            inner.state.borrow_mut().spare_stop = true;
            Some(make_spare(inner.clone(), sequence).await)
        }
    };
    let prepared = match ready.unwrap_or(Err(Error::Closed)) {
        // The disk was full when the spare was prepared; space may have been
        // freed since (a delete-before): try once more, now, without the
        // zero-filling.
        Err(Error::NoSpace { .. }) => {
            inner.state.borrow_mut().spare_stop = true;
            make_spare(inner.clone(), sequence).await?
        }
        other => other?,
    };
    // Invariant: the spare was made for the segment that follows the active one.
    assert_eq!(
        prepared, sequence,
        "the spare holds the wrong segment header"
    );
    let path = segment_path(&config.dir, sequence);
    inner
        .storage
        .rename(&spare_path(&config.dir), &path)
        .await?;
    let file = segment::open(&inner.storage, config, &path).await?;
    inner.storage.sync_dir(&config.dir).await?;
    bump(&inner.counters.rolls, 1);
    {
        let mut st = inner.state.borrow_mut();
        st.segments.insert(sequence, Rc::new(file));
        st.written_at = (sequence, BLOCK_SIZE);
        st.durable_at = (sequence, BLOCK_SIZE);
    }
    prepare_spare(inner, sequence + 1);
    Ok(())
}

/// Writes the sidecar of sealed segment `segment` from the batches logged
/// in it (nothing for segment 0, which does not exist). A sidecar is a
/// cache that must validate before use: one that cannot be written (a full
/// disk) costs a scan on the next open, never the shard; it is counted.
pub(super) async fn write_sidecar<S: Storage>(inner: &Rc<Inner<S>>, segment: u64) {
    if segment == 0 {
        return;
    }
    let batches = {
        let mut guard = inner.state.borrow_mut();
        let st = &mut *guard;
        let split = st.unsealed.partition_point(|b| b.segment <= segment);
        // The list of the next segment starts in the vector the previous
        // sidecar used (its pages already faulted in), and this one's
        // batches leave in the old list, with no copy when all of it goes.
        let mut sealed =
            std::mem::replace(&mut st.unsealed, std::mem::take(&mut st.unsealed_spare));
        st.unsealed.extend(sealed.drain(split..));
        sealed
    };
    if sidecar::write(&inner.storage, &inner.config, segment, &batches)
        .await
        .is_err()
    {
        bump(&inner.counters.sidecar_failures, 1);
    }
    let mut batches = batches;
    batches.clear();
    inner.state.borrow_mut().unsealed_spare = batches;
}
