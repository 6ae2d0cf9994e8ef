//! Which shard owns a partition.

/// The shard of `partition` among `shards`: the high 64 bits of the
/// product of the id with a fixed odd constant (Fibonacci hashing), reduced
/// to `0..shards` by multiply-shift. Stable across versions: the mapping is
/// part of the on-disk layout, since each shard keeps its own partitions.
pub fn shard_for(partition: u64, shards: usize) -> usize {
    assert!(shards > 0, "at least one shard");
    let mixed = partition.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(mixed) * shards as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        // If this changes, existing data directories route wrongly.
        assert_eq!(
            (0..8).map(|p| shard_for(p, 4)).collect::<Vec<_>>(),
            vec![0, 2, 0, 3, 1, 0, 2, 1]
        );
        let mut counts = [0usize; 4];
        for p in 0..10_000 {
            counts[shard_for(p, 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 2_000), "{counts:?}");
    }
}
