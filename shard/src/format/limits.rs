//! The limits an append is checked against before anything is written:
//! not empty, no record over `max_record_bytes`, no batch over
//! `max_batch_bytes`, and nothing the format cannot hold.

use crate::{
    config::ShardConfig,
    error::{Error, Result},
    format::{batch::Body, record::Record},
};

/// Checks `records`, one append to `partition`, against `config`'s
/// limits; returns the encoded size of their batch. A shard checks every
/// append with this; a caller may check first to refuse early.
pub fn check_batch(config: &ShardConfig, partition: u64, records: &[Record]) -> Result<usize> {
    check_body(config, partition, Body::Records(records))
}

/// [`check_batch`] for either kind of [`Body`].
pub(crate) fn check_body(config: &ShardConfig, partition: u64, body: Body<'_>) -> Result<usize> {
    if body.count() == 0 {
        return Err(Error::InvalidArgument(format!(
            "empty batch for partition {partition}"
        )));
    }
    let Some((size, largest)) = body.sizes() else {
        return Err(Error::RecordTooLarge {
            what: "record",
            size: usize::MAX,
            max: config.max_record_bytes,
        });
    };
    if largest > config.max_record_bytes {
        return Err(Error::RecordTooLarge {
            what: "record",
            size: largest,
            max: config.max_record_bytes,
        });
    }
    if size > config.max_batch_bytes {
        return Err(Error::RecordTooLarge {
            what: "batch",
            size,
            max: config.max_batch_bytes,
        });
    }
    Ok(size)
}
