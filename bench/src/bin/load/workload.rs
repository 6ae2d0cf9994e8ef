//! What the load writes: which partitions each producer appends to, and the
//! record values, whose contents can be checked without a copy.
//!
//! Every record's value starts with a [`HEADER`]-byte header (producer,
//! sequence, partition, send time in ns since the start) followed by bytes
//! derived from the seed, producer and sequence.

/// Bytes of the header at the start of every record value.
pub const HEADER: usize = 32;

/// The header of a record value: who sent it, where, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The producer that sent the record.
    pub producer: u64,
    /// The record's sequence number among its producer's records, from 0.
    pub seq: u64,
    /// The partition the record was sent to.
    pub partition: u64,
    /// When its append was due, ns since the start of the load.
    pub sent_ns: u64,
}

impl Header {
    /// Reads the header of `value`, which is at least [`HEADER`] bytes.
    pub fn read(value: &[u8]) -> Header {
        let field = |i: usize| u64::from_le_bytes(value[i * 8..i * 8 + 8].try_into().unwrap());
        Header {
            producer: field(0),
            seq: field(1),
            partition: field(2),
            sent_ns: field(3),
        }
    }
}

/// The partitions producer `producer` (of `producers`) appends to, in turn:
/// producers split the partitions; with fewer partitions, they share.
pub fn partitions_of(producer: u64, producers: u64, partitions: u64) -> Vec<u64> {
    if partitions >= producers {
        (0..partitions)
            .filter(|p| p % producers == producer)
            .collect()
    } else {
        vec![producer % partitions]
    }
}

/// A 64-bit mix (splitmix64), for record contents.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The key of the body bytes of record (`producer`, `seq`).
pub fn body_key(seed: u64, producer: u64, seq: u64) -> u64 {
    mix(seed ^ (producer << 40) ^ seq)
}

/// Byte `i` of a record body with key `key`.
fn body_byte(key: u64, i: usize) -> u8 {
    (key >> ((i % 8) * 8)) as u8 ^ (i / 8) as u8
}

/// The eight body bytes from `8 * j` on, as [`body_byte`] defines them.
fn body_word(key: u64, j: usize) -> [u8; 8] {
    (key ^ u64::from(j as u8).wrapping_mul(0x0101_0101_0101_0101)).to_le_bytes()
}

/// Appends the body bytes `[HEADER, len)` of a record with key `key`.
fn fill_body(key: u64, len: usize, out: &mut Vec<u8>) {
    // Invariant: the header is a whole number of words.
    const _: () = assert!(HEADER.is_multiple_of(8));
    for j in HEADER / 8..len / 8 {
        out.extend_from_slice(&body_word(key, j));
    }
    out.extend((len / 8 * 8..len).map(|i| body_byte(key, i)));
}

/// True when `value[HEADER..]` is the body of a record with key `key`.
pub fn body_matches(key: u64, value: &[u8]) -> bool {
    let len = value.len();
    value[HEADER..len / 8 * 8]
        .chunks_exact(8)
        .enumerate()
        .all(|(k, w)| w == body_word(key, HEADER / 8 + k))
        && (len / 8 * 8..len).all(|i| value[i] == body_byte(key, i))
}

/// The `record_bytes`-byte value of the record with header `h` under
/// `seed`.
pub fn value(seed: u64, record_bytes: usize, h: Header) -> Vec<u8> {
    let mut v = Vec::with_capacity(record_bytes);
    for x in [h.producer, h.seq, h.partition, h.sent_ns] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fill_body(body_key(seed, h.producer, h.seq), record_bytes, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_and_byte_bodies_agree() {
        for len in [HEADER, 33, 40, 1000, 4096 + 3, 8 * 300 + 5] {
            let mut v = vec![0u8; HEADER];
            fill_body(0xDEAD_BEEF, len, &mut v);
            assert_eq!(v.len(), len);
            assert!((HEADER..len).all(|i| v[i] == body_byte(0xDEAD_BEEF, i)));
            assert!(body_matches(0xDEAD_BEEF, &v));
            if len > HEADER {
                v[len - 1] ^= 1;
                assert!(!body_matches(0xDEAD_BEEF, &v));
            }
        }
    }

    #[test]
    fn a_value_carries_its_header_and_a_matching_body() {
        let h = Header {
            producer: 3,
            seq: 77,
            partition: 5,
            sent_ns: 123_456,
        };
        let v = value(9, 100, h);
        assert_eq!(v.len(), 100);
        assert_eq!(Header::read(&v), h);
        assert!(body_matches(body_key(9, 3, 77), &v));
        assert!(!body_matches(body_key(9, 3, 78), &v));
    }

    #[test]
    fn producers_split_or_share_the_partitions() {
        assert_eq!(partitions_of(1, 4, 10), vec![1, 5, 9]);
        assert_eq!(partitions_of(5, 8, 3), vec![2]);
    }
}
