//! Arbitrary records behind a valid header and checksum (what a buggy
//! writer could produce): the record parser returns an error or records
//! that all iterate; it never panics.
#![no_main]

use corelog_shard::internals::{Batch, BATCH_HEADER_LEN, BATCH_MAGIC, BATCH_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u32, u32, &[u8])| {
    let (count, partition, body) = input;
    let mut bytes = vec![0u8; BATCH_HEADER_LEN];
    bytes.extend_from_slice(body);
    let len = bytes.len() as u32;
    bytes[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    bytes[4..8].copy_from_slice(&len.to_le_bytes());
    bytes[12..14].copy_from_slice(&BATCH_VERSION.to_le_bytes());
    bytes[16..24].copy_from_slice(&u64::from(partition).to_le_bytes());
    bytes[32..36].copy_from_slice(&count.to_le_bytes());
    let crc = crc32c::crc32c_append(0, &bytes[12..]);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    if let Ok(batch) = Batch::decode(bytes, 0) {
        for r in batch.records() {
            let _ = (r.offset(), r.key(), r.value(), r.headers().count(), r.timestamp());
        }
    }
});
