//! The io_uring I/O memory each shard registers, settled against the
//! process's memlock limit before any shard starts.

use crate::{
    config::Config,
    error::{Error, Result},
};

/// Settles each shard's io_uring I/O memory against the memlock limit: a
/// configured amount that does not fit is refused (glommio would silently
/// fall back to slower, unregistered buffers); by default each shard takes
/// its share of the limit, up to 8 MiB, and at least 1 MiB. A process with
/// CAP_IPC_LOCK has no limit.
pub(crate) fn with_io_memory(mut config: Config) -> Result<Config> {
    const MAX_DEFAULT: u64 = 8 << 20;
    const MIN: u64 = 1 << 20;
    /// More than any shard's writes in flight use, by far; anything above
    /// is a mistake (and would overflow the sums below).
    const MAX: u64 = 1 << 32;
    if let Some(bytes) = config.io_memory.filter(|&b| b as u64 > MAX) {
        return Err(Error::InvalidArgument(format!(
            "io_memory of {bytes} bytes per shard is over the {MAX} bytes a shard can use"
        )));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let limit = memlock_limit(&status, &limits);
    let shards = config.shards as u64;
    let per_shard = match (config.io_memory, limit) {
        (Some(bytes), _) => bytes as u64,
        (None, None) => MAX_DEFAULT,
        (None, Some(limit)) => (limit / shards).min(MAX_DEFAULT),
    };
    if let Some(limit) = limit {
        let needed = per_shard.max(MIN).saturating_mul(shards);
        if per_shard.saturating_mul(shards) > limit || per_shard < MIN {
            return Err(Error::MemlockTooLow { limit, needed });
        }
    }
    config.io_memory = Some(per_shard as usize);
    Ok(config)
}

/// The soft memlock limit in bytes from `/proc/self/{status,limits}`, or
/// `None` when unlimited, when the process holds CAP_IPC_LOCK, or when the
/// files cannot be read.
fn memlock_limit(status: &str, limits: &str) -> Option<u64> {
    const CAP_IPC_LOCK: u32 = 14;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())?;
    if cap_eff & (1 << CAP_IPC_LOCK) != 0 {
        return None;
    }
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max locked memory"))?
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::memlock_limit;

    const LIMITS: &str =
        "Max locked memory         8388608              8388608              bytes\n";

    #[test]
    fn memlock_limit_reads_proc() {
        assert_eq!(
            memlock_limit("CapEff:\t0000000000000000\n", LIMITS),
            Some(8 << 20)
        );
        // CAP_IPC_LOCK lifts the limit.
        assert_eq!(memlock_limit("CapEff:\t0000000000004000\n", LIMITS), None);
        let unlimited =
            "Max locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(memlock_limit("CapEff:\t0\n", unlimited), None);
    }
}
