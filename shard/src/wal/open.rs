//! Opening a WAL in two steps: recovery, which changes nothing that
//! recovery judged, and the finish, which the caller runs once it accepted
//! what recovery found (the marker removed, the torn tail erased, synced).
//! An open that is refused in between leaves the files for a salvage.

use std::{cell::RefCell, collections::VecDeque, rc::Rc};

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{
        batch::decode_batch,
        clean_marker,
        segment::{align_up, crc_seed, spare_path, BLOCK_SIZE},
        sidecar,
    },
    recovery::recover,
    stats::Counters,
    storage::{Storage, StorageFile},
    wal::{
        committer,
        read_cache::ReadCache,
        roll,
        state::{Group, Inner, OpenFinish, State, TailFinish},
        watermark::{Signal, Watermark},
        Owner, Recovery, Wal,
    },
};

impl<S: Storage> Wal<S> {
    /// Recovers the shard on the given storage without changing what
    /// recovery judged (a refused open must leave it for a salvage): the
    /// clean-shutdown marker stays, and nothing is erased or synced until
    /// [`Wal::finish_open`]. Nothing may be appended before that.
    pub(crate) async fn recover_with(storage: S, config: ShardConfig) -> Result<(Self, Recovery)> {
        config.validate()?;
        storage.prepare_dir(&config.dir).await?;
        // The shard directory's entry in its parent, if the line above
        // created it, is durable only once the parent is synced.
        if let Some(parent) = config.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage.sync_dir(parent).await?;
        }
        let marker = clean_marker::read(&storage, &config).await?;
        let spare = spare_path(&config.dir);
        if storage
            .list(&config.dir)
            .await?
            .iter()
            .any(|n| config.dir.join(n) == spare)
        {
            storage.remove(&spare).await?;
        }
        let recovered = recover(&storage, &config, marker.flatten()).await?;
        let mut finish = OpenFinish {
            clean_marker: marker.is_some(),
            tail: None,
        };
        if let Some(t) = &recovered.tail {
            finish.tail = Some(TailFinish {
                sequence: t.sequence,
                valid_end: t.valid_end,
                dirty_end: t.dirty_end,
                writable: t.writable,
                last_batch: recovered
                    .batches
                    .iter()
                    .rev()
                    .find(|b| b.segment == t.sequence)
                    .map(|b| b.position),
            });
        }
        let (segment, start) = match &recovered.tail {
            Some(t) if t.writable => (t.sequence, align_up(t.valid_end)),
            // Left as found: starting at its end makes the first append
            // roll to a new segment.
            Some(t) => (t.sequence, config.segment_bytes),
            // No segment yet: the first append rolls into segment 1.
            None => (0, 0),
        };
        let unsealed = recovered
            .batches
            .iter()
            .filter(|b| b.segment == segment)
            .copied()
            .collect();
        let state = State {
            unsealed,
            unsealed_spare: Vec::new(),
            segments: recovered.segments.into_iter().collect(),
            open: Group::new(1, segment, start),
            sealed: VecDeque::new(),
            pending_bytes: 0,
            sync_target: 0,
            failed: None,
            closing: false,
            spare: None,
            spare_usable: false,
            spare_stop: false,
            committer: None,
            damaged_tail: recovered
                .tail
                .as_ref()
                .filter(|t| !t.writable)
                .map(|t| t.sequence),
            written_at: (segment, start),
            durable_at: (segment, start),
            finish: Some(finish),
        };
        let read_cache = RefCell::new(ReadCache::new(config.read_cache_bytes));
        let inner = Rc::new(Inner {
            config,
            storage,
            state: RefCell::new(state),
            written: Watermark::default(),
            durable: Watermark::default(),
            work: Signal::default(),
            counters: Counters::default(),
            read_cache,
        });
        committer::start(&inner);
        let recovery = Recovery {
            report: recovered.report,
            batches: recovered.batches,
        };
        let shard = Wal {
            _owner: Rc::new(Owner(inner.clone())),
            inner,
        };
        Ok((shard, recovery))
    }

    /// Starts preparing the next segment in the background. Called once the
    /// open finished, after whatever must have the disk's space first (the
    /// shard's space reserve). A shard with no segment yet makes its first
    /// one now, zero-filled, so that the first append does not wait for it.
    pub(crate) async fn start_spare(&self) -> Result<()> {
        let next = self.inner.state.borrow().open.segment + 1;
        if next > 1 {
            roll::prepare_spare(&self.inner, next);
            return Ok(());
        }
        // Invariant: nothing was appended yet, so the open group is empty
        // and may move to the new segment.
        assert_eq!(
            self.inner.state.borrow().open.len,
            0,
            "appended before the open finished"
        );
        roll::roll(&self.inner, next).await?;
        let mut st = self.inner.state.borrow_mut();
        st.open.segment = next;
        st.open.start = BLOCK_SIZE;
        Ok(())
    }

    /// Finishes an open whose recovery the caller accepted: removes the
    /// clean-shutdown marker, and the sidecar of the last segment (it is
    /// appended to again); erases the garbage a torn write left after the
    /// tail, writing back the block that holds the end of the last batch
    /// only once that batch read back intact; and syncs, so that what
    /// recovery found is durable from here on.
    pub(crate) async fn finish_open(&self) -> Result<()> {
        let Some(finish) = self.inner.state.borrow_mut().finish.take() else {
            return Ok(());
        };
        let (storage, config) = (&self.inner.storage, &self.inner.config);
        if let Some(t) = finish.tail {
            self.finish_tail(t).await?;
        }
        // Last: an open that fails before here keeps the marker.
        if finish.clean_marker {
            clean_marker::remove(storage, config).await?;
        }
        Ok(())
    }

    /// The tail's part of [`Wal::finish_open`].
    async fn finish_tail(&self, t: TailFinish) -> Result<()> {
        let (storage, config) = (&self.inner.storage, &self.inner.config);
        // Invariant: only sealed segments have a sidecar. A sidecar a clean
        // shutdown left for the tail would describe only its old batches;
        // if its successor at the next seal were lost, a restart would
        // trust it and miss the new ones.
        sidecar::remove(storage, config, t.sequence).await?;
        if !t.writable {
            // Left as found (tolerate-any kept it despite a damaged header).
            return Ok(());
        }
        let file = self.inner.state.borrow().segments[&t.sequence].clone();
        let kept = if t.dirty_end > t.valid_end && !t.valid_end.is_multiple_of(BLOCK_SIZE) {
            // Invariant: a valid end inside a block is the end of a batch.
            let position = t
                .last_batch
                .expect("a valid end inside a block ends a batch");
            let start = position - position % BLOCK_SIZE;
            let bytes = file
                .read_at(start, (align_up(t.valid_end) - start) as usize)
                .await?;
            let batch = bytes
                .get((position - start) as usize..(t.valid_end - start) as usize)
                .ok_or_else(|| {
                    Error::corrupted(file.path(), position, "segment ends inside the last batch")
                })?;
            decode_batch(batch, crc_seed(config.shard_id, t.sequence)).map_err(|e| {
                Error::corrupted(
                    file.path(),
                    position,
                    format!("the last batch before a torn tail did not read back intact ({e}); nothing was erased"),
                )
            })?;
            let block = t.valid_end - t.valid_end % BLOCK_SIZE;
            Some(bytes[(block - start) as usize..(t.valid_end - start) as usize].to_vec())
        } else {
            None
        };
        roll::zero_range(storage, &*file, t.valid_end, t.dirty_end, kept.as_deref()).await?;
        file.fdatasync().await
    }
}
