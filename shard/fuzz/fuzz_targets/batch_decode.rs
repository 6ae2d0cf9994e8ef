//! Any bytes, any seed: the batch decoder returns an error or a batch whose
//! records all iterate; it never panics.
#![no_main]

use corelog_shard::internals::{decode_batch, Batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u32, &[u8])| {
    let (seed, bytes) = input;
    if decode_batch(bytes, seed).is_ok() {
        let batch = Batch::decode(bytes.to_vec(), seed).expect("decoded once");
        for r in batch.records() {
            let _ = (r.offset(), r.key(), r.value(), r.headers().count(), r.timestamp());
        }
    }
});
