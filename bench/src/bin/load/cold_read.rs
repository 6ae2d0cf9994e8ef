//! The cold-read rate (`--read-from-start`): every partition read from its
//! start, one after another, by an engine just reopened (empty memtables).

use std::time::Instant;

use corelog::Handle;
use corelog_bench::load_report::ColdRead;
use futures::executor::block_on;

/// Most bytes one read returns.
const READ_BYTES: usize = 4 << 20;

/// Reads partitions `0..partitions` from their start to their end, prints
/// the rate and returns it.
pub fn measure(log: &Handle, partitions: u64) -> Result<ColdRead, String> {
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut count = 0u64;
    for p in 0..partitions {
        let o = block_on(log.offsets(p)).map_err(|e| e.to_string())?;
        let mut next = o.start;
        while next < o.end {
            let records = block_on(log.read(p, next, READ_BYTES)).map_err(|e| e.to_string())?;
            bytes += records.iter().map(|r| r.value().len() as u64).sum::<u64>();
            count += records.len() as u64;
            next += records.len() as u64;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = ColdRead {
        records_per_s: count as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
    };
    println!(
        "cold read        {:.0} records/s, {:.1} MB/s ({count} records from disk after a reopen)",
        rate.records_per_s, rate.mb_per_s
    );
    Ok(rate)
}
