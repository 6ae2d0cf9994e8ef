//! What recovery does with each thing it can find on open, under each
//! [`RecoveryMode`]: one table, as data. The segment scan and the replay of
//! partitions classify what they find as a [`Finding`] and do what
//! [`decide`] says; neither matches on the mode itself.
//!
//! | finding                      | TolerateTornTail | AbsoluteConsistency | TolerateAnyCorruption |
//! |------------------------------|------------------|---------------------|-----------------------|
//! | `MissingSegments`            | refuse           | refuse              | skip                  |
//! | `TornSegmentCreation`        | drop             | refuse              | drop                  |
//! | `BadSegmentHeader`           | refuse           | refuse              | skip                  |
//! | `TornTail`                   | cut tail         | refuse              | skip                  |
//! | `ProvenDamage`               | refuse           | refuse              | skip                  |
//! | `SealedDamage`               | refuse           | refuse              | skip                  |
//! | `DamageAfterCleanShutdown`   | refuse           | refuse              | refuse                |
//! | `CheckpointAhead`            | refuse           | refuse              | skip                  |
//! | `Orphan`                     | drop             | refuse              | keep                  |
//! | `OffsetGap`                  | refuse           | refuse              | keep                  |
//! | `DamagedControl`             | refuse           | refuse              | skip                  |
//! | `DamagedCheckpoint`          | refuse           | refuse              | skip                  |

use crate::config::RecoveryMode;

/// Something recovery found on open that is not a healthy log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finding {
    /// Segment sequences are missing between two segments on disk.
    /// Segments are removed oldest first, so a hole is a lost segment.
    MissingSegments,
    /// The last segment's header block is all zeros with nothing after it:
    /// a crash interrupted its creation (a directory written by an earlier
    /// version, which wrote the header after the rename, can hold one).
    TornSegmentCreation,
    /// A segment header that does not decode, or names another shard or
    /// sequence.
    BadSegmentHeader,
    /// Damage in the last segment that no later batch proves was ever
    /// durable: a write torn by a crash.
    TornTail,
    /// Damage followed by a batch appended after the damaged position had
    /// been synced (its `floor_block` lies past it), or an intact batch in
    /// the wrong place (a misdirected write): corruption, not a crash.
    ProvenDamage,
    /// Damage in a sealed segment (any segment but the last).
    SealedDamage,
    /// Damage, or an end that disagrees with the marker, in a log that a
    /// clean shutdown recorded as complete and synced.
    DamageAfterCleanShutdown,
    /// The recovered log ends before the position the partition checkpoint
    /// accounts for: synced data was lost.
    CheckpointAhead,
    /// A batch of the active segment past its partition's end: an earlier
    /// batch of the partition, in flight with it, was lost in a crash, so
    /// it was never acknowledged as durable.
    Orphan,
    /// A batch past its partition's end outside the active segment.
    OffsetGap,
    /// A control batch to replay that cannot be read back or names no
    /// known operation.
    DamagedControl,
    /// The partition checkpoint does not decode. Skipped, the partitions
    /// are replayed from the log alone: starts, truncations and metadata
    /// only the checkpoint held are lost (and reported).
    DamagedCheckpoint,
}

impl Finding {
    /// Every finding, for tests that walk the table.
    #[cfg(test)]
    pub(crate) const ALL: [Finding; 12] = [
        Finding::MissingSegments,
        Finding::TornSegmentCreation,
        Finding::BadSegmentHeader,
        Finding::TornTail,
        Finding::ProvenDamage,
        Finding::SealedDamage,
        Finding::DamageAfterCleanShutdown,
        Finding::CheckpointAhead,
        Finding::Orphan,
        Finding::OffsetGap,
        Finding::DamagedControl,
        Finding::DamagedCheckpoint,
    ];
}

/// What recovery does about a [`Finding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Keep what was found as it is and go on.
    Keep,
    /// Cut the log at the damage; report it as the torn tail.
    CutTail,
    /// Report the damage in `RecoveryReport::skipped`, pass over it, go on.
    Skip,
    /// Drop what was found (a segment, a batch), report it, go on.
    Drop,
    /// Refuse to open: `Error::Corrupted` naming the file and position.
    Refuse,
}

/// The action for `finding` under `mode`: the table of this module.
pub(crate) fn decide(finding: Finding, mode: RecoveryMode) -> Action {
    use Action::*;
    use Finding::*;
    use RecoveryMode::*;
    match (finding, mode) {
        (DamageAfterCleanShutdown, _) => Refuse,
        (_, AbsoluteConsistency) => Refuse,
        (TornSegmentCreation, TolerateTornTail | TolerateAnyCorruption) => Drop,
        (TornTail, TolerateTornTail) => CutTail,
        (Orphan, TolerateTornTail) => Drop,
        (_, TolerateTornTail) => Refuse,
        (Orphan | OffsetGap, TolerateAnyCorruption) => Keep,
        (_, TolerateAnyCorruption) => Skip,
    }
}

/// Not a test: a compile-time guard. A new `Finding` variant must be added
/// to `ALL` (and so to the tested table): this match has no wildcard, so it
/// stops compiling until it is.
#[cfg(test)]
#[expect(dead_code, reason = "only compiled, for its exhaustive match")]
fn every_finding_is_in_all(f: Finding) {
    use Finding::*;
    match f {
        MissingSegments
        | TornSegmentCreation
        | BadSegmentHeader
        | TornTail
        | ProvenDamage
        | SealedDamage
        | DamageAfterCleanShutdown
        | CheckpointAhead
        | Orphan
        | OffsetGap
        | DamagedControl
        | DamagedCheckpoint => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Finding::*;
    use RecoveryMode::*;

    /// The table in the module documentation, row by row: (finding,
    /// [TolerateTornTail, AbsoluteConsistency, TolerateAnyCorruption]).
    const TABLE: [(Finding, [Action; 3]); 12] = [
        (MissingSegments, [Refuse, Refuse, Skip]),
        (TornSegmentCreation, [Drop, Refuse, Drop]),
        (BadSegmentHeader, [Refuse, Refuse, Skip]),
        (TornTail, [CutTail, Refuse, Skip]),
        (ProvenDamage, [Refuse, Refuse, Skip]),
        (SealedDamage, [Refuse, Refuse, Skip]),
        (DamageAfterCleanShutdown, [Refuse, Refuse, Refuse]),
        (CheckpointAhead, [Refuse, Refuse, Skip]),
        (Orphan, [Drop, Refuse, Keep]),
        (OffsetGap, [Refuse, Refuse, Keep]),
        (DamagedControl, [Refuse, Refuse, Skip]),
        (DamagedCheckpoint, [Refuse, Refuse, Skip]),
    ];

    #[test]
    fn every_finding_under_every_mode_follows_the_documented_table() {
        let modes = [TolerateTornTail, AbsoluteConsistency, TolerateAnyCorruption];
        assert_eq!(
            TABLE.map(|(f, _)| f),
            Finding::ALL,
            "the table lists every finding once"
        );
        for (finding, actions) in TABLE {
            for (mode, want) in modes.into_iter().zip(actions) {
                assert_eq!(decide(finding, mode), want, "{finding:?} under {mode:?}");
            }
        }
    }

    /// The promises the modes make, independent of the table's rows.
    #[test]
    fn the_modes_keep_their_promises() {
        for finding in Finding::ALL {
            // Absolute consistency never opens a log with anything wrong.
            assert_eq!(decide(finding, AbsoluteConsistency), Refuse);
            // The default mode forgives only what a crash can cause.
            let crash_only = matches!(finding, TornTail | TornSegmentCreation | Orphan);
            assert_eq!(
                decide(finding, TolerateTornTail) != Refuse,
                crash_only,
                "{finding:?}"
            );
        }
    }
}
