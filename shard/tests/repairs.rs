//! What an open repairs in a damaged log, and when: a cut last segment
//! gets its length back; salvage writes back a tail block around a batch
//! it skipped; rebuilt sidecars are written only once the open is
//! accepted, so a refused open changes nothing; a damaged checkpoint is
//! salvage's to skip; a sidecar that cannot be read is scanned around.

mod common;
// Shared with `corruption.rs`, which uses all of them.
#[allow(dead_code)]
#[path = "corruption/layout.rs"]
mod layout;
#[allow(dead_code)]
#[path = "corruption/reopen.rs"]
mod reopen;

use common::{run, test_dir};
use corelog_shard::{Error, RecoveryMode, Shard};
use layout::{batches_in, cut, overwrite, segments};
use reopen::{config, setup};

const MODES: [RecoveryMode; 3] = [
    RecoveryMode::TolerateTornTail,
    RecoveryMode::AbsoluteConsistency,
    RecoveryMode::TolerateAnyCorruption,
];

/// Opens the shard in `mode` and closes it cleanly, returning the report.
fn open_and_close(
    dir: &std::path::Path,
    mode: RecoveryMode,
) -> Result<corelog_shard::RecoveryReport, Error> {
    let dir = dir.to_path_buf();
    run(move || async move {
        let (shard, report) = Shard::open(config(&dir, mode)).await?;
        shard.close().await?;
        Ok(report)
    })
}

/// A last segment cut short is kept up to the cut and given its length
/// back: the cut is reported once, not found again by every later open,
/// and a clean shutdown whose tail sidecar was lost does not leave a log
/// that no mode opens (it found the same cut and took it for damage after
/// a clean shutdown).
#[test]
fn a_cut_last_segment_gets_its_length_back() {
    let dir = test_dir();
    setup(dir.path(), 0);
    let last = segments(dir.path()).pop().unwrap();
    let in_last = batches_in(&last);
    let hit = in_last[in_last.len() / 2];
    cut(&last, hit.position + hit.length / 2);
    let first = open_and_close(dir.path(), RecoveryMode::TolerateTornTail).unwrap();
    assert_eq!(first.torn_tail.unwrap().position, hit.position);
    let length = config(dir.path(), RecoveryMode::TolerateTornTail).segment_bytes;
    assert_eq!(std::fs::metadata(&last).unwrap().len(), length);
    // A power loss after the clean close dropped the tail's sidecar.
    let _ = std::fs::remove_file(last.with_extension("idx"));
    for mode in MODES {
        let report = open_and_close(dir.path(), mode)
            .unwrap_or_else(|e| panic!("{mode:?} refused the repaired log: {e}"));
        assert!(
            report.torn_tail.is_none() && report.skipped.is_empty(),
            "{mode:?}: {report:?}"
        );
    }
}

/// Salvage keeps the batches on both sides of a damaged one; when they
/// share the block a torn tail's erasure writes back, the open verifies
/// each and writes the skipped bytes back as they were, instead of
/// refusing a log that salvage can open.
#[test]
fn salvage_opens_a_tail_block_holding_a_skipped_batch() {
    let dir = test_dir();
    let records = |i: u64| vec![corelog_shard::Record::new(vec![i as u8 + 1; 150])];
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, _) = Shard::open(config(&path, RecoveryMode::TolerateTornTail))
            .await
            .unwrap();
        // Three small batches in one commit group (nothing yields between
        // the submits, so the commit task takes them together): one block.
        let mut last = None;
        for i in 0..3 {
            last = Some(shard.submit(i, &records(i)).await.unwrap());
        }
        shard.wait_committed(last.unwrap().group).await.unwrap();
    });
    let last = segments(dir.path()).pop().unwrap();
    let in_last = batches_in(&last);
    assert_eq!(in_last.len(), 3, "{in_last:?}");
    let (middle, end) = (in_last[1], in_last[2].position + in_last[2].length);
    overwrite(&last, middle.position + 70, &[0xEE; 4]);
    // A torn later write: garbage after the last batch, in the same block.
    overwrite(&last, end, &[0x5A; 100]);
    let report = open_and_close(dir.path(), RecoveryMode::TolerateAnyCorruption).unwrap();
    assert_eq!(report.skipped.len(), 2, "{report:?}");
    assert_eq!(report.skipped[0].position, middle.position);
    let served = run({
        let path = dir.path().to_path_buf();
        move || async move {
            let (shard, _) = Shard::open(config(&path, RecoveryMode::TolerateAnyCorruption))
                .await
                .unwrap();
            let first = shard.read(0, 0, 1).await.unwrap()[0].value().to_vec();
            let third = shard.read(2, 0, 1).await.unwrap()[0].value().to_vec();
            shard.close().await.unwrap();
            (first, third)
        }
    });
    assert_eq!(
        served,
        (
            records(0)[0].value().to_vec(),
            records(2)[0].value().to_vec()
        )
    );
}

/// A file whose name is the largest sequence number is refused with a
/// typed error in every mode; salvage, which skips the gap before it,
/// names the file instead of overflowing the sequence of the segment after
/// it (a panic before).
#[test]
fn a_segment_numbered_at_the_end_of_the_sequence_is_refused() {
    for mode in MODES {
        let dir = test_dir();
        setup(dir.path(), 0);
        let foreign = segments(dir.path())
            .pop()
            .unwrap()
            .with_file_name(format!("{:020}.wal", u64::MAX));
        std::fs::write(&foreign, vec![0x41; 8192]).unwrap();
        match open_and_close(dir.path(), mode) {
            // The strict modes refuse the gap before it first; salvage
            // skips the gap and the file's header, and refuses the file.
            Err(Error::Corrupted { path, .. }) => {
                if mode == RecoveryMode::TolerateAnyCorruption {
                    assert_eq!(path, foreign);
                }
            }
            other => panic!("{mode:?}: {other:?}"),
        }
    }
}

/// A sealed segment's missing sidecar is rebuilt from its scan only once
/// the open is accepted: an open refused for damage found later (here in
/// the last segment) leaves the directory as it found it. Before, the
/// sidecar was written during the scan, before the refusal.
#[test]
fn a_refused_open_writes_no_rebuilt_sidecar() {
    let dir = test_dir();
    setup(dir.path(), 0);
    let segs = segments(dir.path());
    let sidecar = segs[0].with_extension("idx");
    std::fs::remove_file(&sidecar).unwrap();
    let last = segs.last().unwrap();
    let in_last = batches_in(last);
    assert!(in_last.len() > 3, "{in_last:?}");
    overwrite(last, in_last[1].position + 40, &[0xEE; 16]);
    let refused = open_and_close(dir.path(), RecoveryMode::AbsoluteConsistency);
    assert!(
        matches!(refused, Err(Error::Corrupted { .. })),
        "{refused:?}"
    );
    assert!(
        !sidecar.exists(),
        "a refused open rebuilt {}",
        sidecar.display()
    );
    // Accepted, the same open writes it.
    let report = open_and_close(dir.path(), RecoveryMode::TolerateAnyCorruption).unwrap();
    assert_eq!(report.sidecars_rebuilt, 1, "{report:?}");
    assert!(sidecar.exists());
}

/// A partition checkpoint that does not decode is refused by the strict
/// modes, naming it; salvage opens the log without it, reports it, and
/// writes a fresh one from what it replayed, which the default mode then
/// opens. Before, no mode opened the shard.
#[test]
fn a_damaged_checkpoint_is_skipped_by_salvage_only() {
    let dir = test_dir();
    setup(dir.path(), 0);
    let path = dir.path().to_path_buf();
    let ends = run(move || async move {
        let (shard, _) = Shard::open(config(&path, RecoveryMode::TolerateTornTail))
            .await
            .unwrap();
        // Deleting up to near each end frees the oldest segments, which
        // writes the checkpoint.
        for p in 0..4 {
            let end = shard.offsets(p).end;
            shard.delete_before(p, end - 1).await.unwrap();
        }
        let ends: Vec<u64> = (0..4).map(|p| shard.offsets(p).end).collect();
        shard.close().await.unwrap();
        ends
    });
    let checkpoint = dir.path().join("partitions.ckpt");
    let mut bytes = std::fs::read(&checkpoint).expect("a checkpoint was written");
    bytes[30] ^= 0xFF;
    std::fs::write(&checkpoint, &bytes).unwrap();
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        match open_and_close(dir.path(), mode) {
            Err(Error::Corrupted { path, .. }) => assert_eq!(path, checkpoint, "{mode:?}"),
            other => panic!("{mode:?}: {other:?}"),
        }
    }
    let report = open_and_close(dir.path(), RecoveryMode::TolerateAnyCorruption).unwrap();
    assert!(
        report.skipped.iter().any(|d| d.path == checkpoint),
        "{report:?}"
    );
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (shard, report) = Shard::open(config(&path, RecoveryMode::TolerateTornTail))
            .await
            .unwrap();
        assert!(report.skipped.is_empty(), "{report:?}");
        for (p, &end) in ends.iter().enumerate() {
            let p = p as u64;
            assert_eq!(shard.offsets(p).end, end);
            let last = shard.read(p, end - 1, 1).await.unwrap();
            assert_eq!(last[0].offset(), end - 1);
        }
        shard.close().await.unwrap();
    });
}

/// A sidecar that cannot be read (here a directory stands where the file
/// should be, so opening it fails) is a cache missed, not a failed open:
/// the segment is scanned and everything is served. Before, the open
/// failed with the sidecar's I/O error.
#[test]
fn a_sidecar_that_cannot_be_read_is_scanned_around() {
    let dir = test_dir();
    let expected = setup(dir.path(), 0);
    let segs = segments(dir.path());
    let sidecar = segs[0].with_extension("idx");
    std::fs::remove_file(&sidecar).unwrap();
    std::fs::create_dir(&sidecar).unwrap();
    let written = layout::all_batches(dir.path());
    let (report, seen) = reopen::reopen(dir.path(), RecoveryMode::TolerateTornTail, &expected)
        .unwrap_or_else(|e| panic!("the open failed on the sidecar: {e}"));
    assert!(
        report.skipped.is_empty() && report.torn_tail.is_none(),
        "{report:?}"
    );
    reopen::assert_served_exactly(&seen, &written);
}
