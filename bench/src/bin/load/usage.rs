//! What the process uses: CPU time and peak resident memory.

use std::time::Duration;

/// CPU time this process has used so far (user + system, every thread).
pub fn cpu_time() -> Duration {
    // SAFETY: an all-zero `rusage` (integers and `timeval`s) is a valid
    // value of the type.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage` for the duration of the
    // call, which only writes to it; RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    // Invariant: getrusage fails only for an invalid `who` or pointer.
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF)");
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Peak resident memory in bytes (VmHWM), or 0 where /proc does not say.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = cpu_time();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        // Until 20 ms of CPU time show, however busy the machine is.
        while cpu_time() - before < Duration::from_millis(20) {
            assert!(
                spin.elapsed() < Duration::from_secs(30),
                "no CPU time counted"
            );
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(cpu_time() >= before);
        assert!(peak_rss() > 0);
    }
}
