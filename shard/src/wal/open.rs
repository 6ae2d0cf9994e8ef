//! Opening a WAL in two steps: recovery, which changes nothing that
//! recovery judged, and the finish, which the caller runs once it accepted
//! what recovery found (the marker removed, the torn tail erased, synced).
//! An open that is refused in between leaves the files for a salvage.

use std::{cell::RefCell, collections::VecDeque, rc::Rc};

use crate::{
    config::{RecoveryMode, ShardConfig},
    error::{Error, Result},
    format::{
        batch::{decode_batch, peek_header},
        clean_marker,
        segment::{align_up, crc_seed, spare_path, BLOCK_SIZE},
        sidecar,
    },
    recovery::recover,
    stats::{bump, Counters},
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

/// Largest sequence number the last segment may have at open: 2^62
/// segments of even one block each are more than any disk holds.
const MAX_SEQUENCE: u64 = 1 << 62;

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
        let mut recovered = recover(&storage, &config, marker.flatten()).await?;
        let mut finish = OpenFinish {
            clean_marker: marker.is_some(),
            tail: None,
            sidecars: std::mem::take(&mut recovered.sidecars),
            unusable: std::mem::take(&mut recovered.unusable),
        };
        if let Some(t) = &recovered.tail {
            finish.tail = Some(TailFinish {
                sequence: t.sequence,
                valid_end: t.valid_end,
                dirty_end: t.dirty_end,
                writable: t.writable,
                cut_from: t.cut_from,
                tail_batches: recovered
                    .batches
                    .iter()
                    .filter(|b| {
                        let end = b.position + u64::from(b.header.length);
                        b.segment == t.sequence
                            && end > t.valid_end - t.valid_end % BLOCK_SIZE
                            && end <= t.valid_end
                    })
                    .map(|b| b.position)
                    .collect(),
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
        let last = self.inner.state.borrow().open.segment;
        // Invariant: sequences stay far below `u64::MAX`, so that rolls
        // (one every segment) never overflow; only a foreign or damaged
        // file name gets near it.
        if last >= MAX_SEQUENCE {
            return Err(Error::corrupted(
                self.segment_path(last),
                0,
                format!("the last segment's sequence number is past {MAX_SEQUENCE}: no log gets there, so the file is not one of this log's"),
            ));
        }
        let next = last + 1;
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
        if !finish.unusable.is_empty() {
            for path in &finish.unusable {
                storage.remove(path).await?;
            }
            storage.sync_dir(&config.dir).await?;
        }
        for (segment, batches) in &finish.sidecars {
            // A cache: one that cannot be written (a full disk) costs the
            // next open this scan again, not this open.
            if sidecar::write(storage, config, *segment, batches)
                .await
                .is_err()
            {
                bump(&self.inner.counters.sidecar_failures, 1);
            }
        }
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
            // Invariant: a valid end inside a block is the end of a batch,
            // and the batches reaching into that block lie back to back up
            // to it (groups start on a block boundary).
            let first = *t
                .tail_batches
                .first()
                .expect("a valid end inside a block ends a batch");
            let start = first - first % BLOCK_SIZE;
            let bytes = file
                .read_at(start, (align_up(t.valid_end) - start) as usize)
                .await?;
            // Every byte written back is verified: each batch in the block,
            // not only the last (the others share it when a group held
            // several small batches).
            // Salvage (tolerate-any) kept the batches around damage it
            // skipped; the skipped bytes are written back as they are.
            let gaps = config.recovery == RecoveryMode::TolerateAnyCorruption;
            let mut at = first;
            for &position in &t.tail_batches {
                let intact = (position == at || (gaps && position > at))
                    .then(|| bytes.get((position - start) as usize..))
                    .flatten()
                    .and_then(|rest| peek_header(rest).map(|h| (rest, h.length as usize)))
                    .and_then(|(rest, len)| rest.get(..len))
                    .map(|batch| decode_batch(batch, crc_seed(config.shard_id, t.sequence)));
                match intact {
                    Some(Ok(header)) => at = position + u64::from(header.length),
                    other => {
                        let why = match other {
                            Some(Err(e)) => e.to_string(),
                            _ => "it is not where recovery found it".into(),
                        };
                        return Err(Error::corrupted(
                            file.path(),
                            position,
                            format!("a batch before a torn tail did not read back intact ({why}); nothing was erased"),
                        ));
                    }
                }
            }
            if at != t.valid_end {
                return Err(Error::corrupted(
                    file.path(),
                    at,
                    format!("the batches before a torn tail end at {at}, not at the valid end {}; nothing was erased", t.valid_end),
                ));
            }
            let block = t.valid_end - t.valid_end % BLOCK_SIZE;
            Some(bytes[(block - start) as usize..(t.valid_end - start) as usize].to_vec())
        } else {
            None
        };
        roll::zero_range(storage, &*file, t.valid_end, t.dirty_end, kept.as_deref()).await?;
        // A file cut short (tolerate-torn-tail keeps what precedes the
        // cut) gets its length back: left short, every later scan would
        // find the same cut, and one after a clean shutdown would take it
        // for damage, which no mode opens.
        if let Some(length) = t.cut_from {
            file.allocate(length).await?;
        }
        file.fdatasync().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::FsyncPolicy,
        format::{batch::BatchInfo, batch::Body, record::Record, segment::segment_path},
        storage::sim::{Faults, SimDisk},
    };

    /// Erasing a torn tail writes back the start of the tail's block: it
    /// verifies every batch there first, not only the last, so bytes of an
    /// earlier batch that read back damaged are never written back (a bit
    /// flipped on every read while the open finishes either fails the open,
    /// leaving the segment as found, or changes nothing the batches hold).
    #[test]
    fn a_torn_tail_is_erased_only_from_bytes_that_read_back_intact() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(|| async {
                let mut config = ShardConfig::new("/sim/shard-000");
                config.fsync = FsyncPolicy::Always;
                config.segment_bytes = 1 << 20;
                config.max_batch_bytes = 16 << 10;
                config.max_record_bytes = 8 << 10;
                config.max_write_bytes = 32 << 10;
                let mut refused = 0;
                for seed in 0..64 {
                    let disk = SimDisk::new(seed, Faults::default());
                    let (wal, _) = Wal::recover_with(disk.clone(), config.clone())
                        .await
                        .unwrap();
                    wal.finish_open().await.unwrap();
                    // Two small batches in one commit group, one block.
                    let records = [Record::new(vec![7u8; 300])];
                    let size = wal.check_batch(1, &records).unwrap();
                    let info = |base_offset| BatchInfo {
                        partition: 1,
                        base_offset,
                        ..BatchInfo::default()
                    };
                    let first = wal
                        .encode(info(0), Body::Records(&records), size, |_| {})
                        .unwrap();
                    let second = wal
                        .encode(info(1), Body::Records(&records), size, |_| {})
                        .unwrap();
                    wal.wait_committed(second.group).await.unwrap();
                    let path = segment_path(&config.dir, second.segment);
                    drop(wal);
                    // A torn later write: garbage after the valid end, in
                    // the same block.
                    let valid_end = (second.position + u64::from(second.length)) as usize;
                    let mut bytes = disk.contents(&path).unwrap();
                    bytes[valid_end..valid_end + 64].fill(0xAB);
                    disk.set_contents(&path, &bytes);
                    let (wal, _) = Wal::recover_with(disk.clone(), config.clone())
                        .await
                        .unwrap();
                    disk.set_faults(Faults {
                        read_flip: 1.0,
                        ..Faults::default()
                    });
                    let finished = wal.finish_open().await;
                    disk.set_faults(Faults::default());
                    let after = disk.contents(&path).unwrap();
                    let start = first.position as usize;
                    let end = start + first.length as usize;
                    let intact = decode_batch(&after[start..end], crc_seed(0, first.segment));
                    if finished.is_ok() {
                        assert!(intact.is_ok(), "seed {seed}: the first batch was damaged");
                    } else {
                        refused += 1;
                        assert_eq!(&after[..valid_end], &bytes[..valid_end], "seed {seed}");
                    }
                }
                assert!(refused > 0, "no read flip landed in a batch");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
