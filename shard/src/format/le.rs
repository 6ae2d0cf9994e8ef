//! Little-endian fixed-width fields at byte positions: the one reader and
//! writer of integers that every on-disk format in [`crate::format`] uses.
//!
//! Invariant: callers check that `at + size` lies within the slice before
//! they read or write a field; a broken check panics on the slice bound, it
//! never reads the wrong bytes.

/// The `N` bytes at `at`.
#[inline]
fn bytes_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// The `u16` at `at`.
#[inline]
pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(bytes_at(b, at))
}

/// The `u32` at `at`.
#[inline]
pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes_at(b, at))
}

/// The `u64` at `at`.
#[inline]
pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes_at(b, at))
}

/// The `i64` at `at`.
#[inline]
pub(crate) fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(bytes_at(b, at))
}

/// Writes `v` at `at`.
#[inline]
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` at `at`.
#[inline]
pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_at_any_position() {
        let mut b = [0u8; 20];
        put_u64(&mut b, 3, 0x0102_0304_0506_0708);
        put_u32(&mut b, 11, 0xA1B2_C3D4);
        assert_eq!(u64_at(&b, 3), 0x0102_0304_0506_0708);
        assert_eq!(u32_at(&b, 11), 0xA1B2_C3D4);
        assert_eq!(u16_at(&b, 11), 0xC3D4);
        assert_eq!(b[3], 0x08, "little-endian: the low byte first");
        assert_eq!(i64_at(&[0xFF; 8], 0), -1);
    }
}
