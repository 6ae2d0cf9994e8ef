//! Bytes on disk, one module per kind of file or record (docs/FORMAT.md is
//! the reference): records and batches, segment files, sidecar indexes,
//! the partition checkpoint and the clean-shutdown marker, and the one
//! little-endian field reader they share. Nothing here knows about commit
//! groups, partitions or recovery decisions.

pub(crate) mod arena;
pub(crate) mod batch;
pub(crate) mod checkpoint;
pub(crate) mod clean_marker;
pub(crate) mod le;
pub(crate) mod limits;
pub(crate) mod record;
pub(crate) mod segment;
pub(crate) mod sidecar;
pub(crate) mod stored_record;
