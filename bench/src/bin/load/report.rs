//! The figures of a run: gathered from the producers, consumers, engine and
//! process, printed as the summary, and written as the JSON [`Report`].

use std::path::Path;

use corelog::EngineStats;
use corelog_bench::load_report::{ColdRead, EndToEndLatencyUs, Report, RunConfig};
use hdrhistogram::Histogram;

use crate::{
    args::Args,
    latency::{self, us},
    usage,
};

/// Bytes in a MiB.
const MIB: f64 = (1 << 20) as f64;

/// The build profile of this program: `release` or `debug`.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Counters of the engine, summed over its shards.
pub struct EngineFigures {
    /// Shards.
    pub shards: usize,
    /// fdatasyncs.
    pub fdatasyncs: u64,
    /// Group commits.
    pub commits: u64,
    /// Appends.
    pub appends: u64,
    /// Bytes of encoded batches.
    pub batch_bytes: u64,
    /// Bytes written to disk.
    pub disk_bytes: u64,
    /// Bytes now held in memtables.
    pub memtable_bytes: u64,
    /// Segment rolls.
    pub rolls: u64,
    /// Rolls that took the spare before its zero-fill finished: the rest
    /// of that segment is unwritten extents, which each sync converts.
    pub zeroing_cut: u64,
    /// Bytes of zeros written ahead into spare segments.
    pub zeroed_bytes: u64,
}

impl EngineFigures {
    /// The sums of `stats` over the shards.
    pub fn new(stats: &EngineStats) -> Self {
        let sum = |f: fn(&corelog::ShardStats) -> u64| stats.shards.iter().map(|(s, _)| f(s)).sum();
        EngineFigures {
            shards: stats.shards.len(),
            fdatasyncs: sum(|s| s.fdatasyncs),
            commits: sum(|s| s.commits),
            appends: sum(|s| s.appends),
            batch_bytes: sum(|s| s.bytes),
            disk_bytes: sum(|s| s.bytes_written),
            memtable_bytes: sum(|s| s.memtable_bytes),
            rolls: sum(|s| s.rolls),
            zeroing_cut: sum(|s| s.zeroing_cut),
            zeroed_bytes: sum(|s| s.zeroed_bytes),
        }
    }
}

/// What the load measured.
pub struct Figures {
    /// Seconds from the start until the producers stopped.
    pub elapsed: f64,
    /// Records acknowledged.
    pub records: u64,
    /// Bytes of acknowledged record values.
    pub payload: u64,
    /// Append latencies, ns.
    pub append: Histogram<u64>,
    /// Append-to-read latencies, ns (empty without consumers).
    pub end_to_end: Histogram<u64>,
    /// Throughput over time: (seconds since the start, records/s).
    pub timeline: Vec<(f64, f64)>,
    /// CPU seconds the process used during the load.
    pub cpu: f64,
    /// The engine's counters.
    pub engine: EngineFigures,
    /// Errors of appends and fetches.
    pub errors: Vec<String>,
}

impl Figures {
    /// Acknowledged records per second.
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed
    }

    /// Acknowledged payload, MB per second.
    fn mb_per_s(&self) -> f64 {
        self.payload as f64 / self.elapsed / 1e6
    }

    /// fdatasyncs per second.
    fn fdatasyncs_per_s(&self) -> f64 {
        self.engine.fdatasyncs as f64 / self.elapsed
    }

    /// Appends per group commit.
    fn appends_per_commit(&self) -> f64 {
        self.engine.appends as f64 / self.engine.commits.max(1) as f64
    }

    /// Disk bytes per payload byte.
    fn write_amplification(&self) -> f64 {
        self.engine.disk_bytes as f64 / self.payload.max(1) as f64
    }

    /// CPU microseconds per acknowledged record.
    fn cpu_us_per_record(&self) -> f64 {
        self.cpu * 1e6 / self.records.max(1) as f64
    }

    /// Prints the summary of the load; `consumers` tells whether to give
    /// the end-to-end latency.
    pub fn print(&self, consumers: bool) {
        let (lat, e2e) = (&self.append, &self.end_to_end);
        println!(
            "throughput       {:.0} records/s, {:.1} MB/s over {:.2} s ({} records)",
            self.records_per_s(),
            self.mb_per_s(),
            self.elapsed,
            self.records
        );
        println!(
            "append latency   p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us",
            us(lat, 0.5), us(lat, 0.9), us(lat, 0.99), us(lat, 0.999), us(lat, 1.0)
        );
        if consumers {
            println!(
                "end to end       p50 {:.0} us  p90 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us  ({} records read)",
                us(e2e, 0.5), us(e2e, 0.9), us(e2e, 0.99), us(e2e, 0.999), us(e2e, 1.0), e2e.len()
            );
        }
        println!(
            "fdatasyncs       {:.0}/s, {:.1} appends per commit",
            self.fdatasyncs_per_s(),
            self.appends_per_commit()
        );
        println!(
            "segments         {} rolls, {} before the spare's zero-fill finished, {:.0} MiB of zeros written ahead",
            self.engine.rolls,
            self.engine.zeroing_cut,
            self.engine.zeroed_bytes as f64 / (1 << 20) as f64
        );
        println!(
            "write amplif.    {:.3} disk bytes per payload byte ({:.3} per encoded byte)",
            self.write_amplification(),
            self.engine.disk_bytes as f64 / self.engine.batch_bytes.max(1) as f64
        );
        println!(
            "cpu              {:.2} us per record ({:.2} s)",
            self.cpu_us_per_record(),
            self.cpu
        );
        println!(
            "memory           peak rss {:.1} MiB, memtables {:.1} MiB",
            usage::peak_rss() as f64 / MIB,
            self.engine.memtable_bytes as f64 / MIB
        );
        for e in &self.errors {
            println!("error            {e}");
        }
    }

    /// The JSON report of the run, with the peak memory as of now.
    pub fn report(
        &self,
        args: &Args,
        dir: &Path,
        cold_read: Option<ColdRead>,
        verification_problems: Vec<String>,
    ) -> Report {
        Report {
            profile: profile().into(),
            config: run_config(args, self.engine.shards, dir),
            elapsed_s: self.elapsed,
            records: self.records,
            records_per_s: self.records_per_s(),
            mb_per_s: self.mb_per_s(),
            append_latency_us: latency::percentiles(&self.append),
            end_to_end_latency_us: EndToEndLatencyUs {
                count: self.end_to_end.len(),
                latency: latency::percentiles(&self.end_to_end),
            },
            fdatasyncs_per_s: self.fdatasyncs_per_s(),
            appends_per_commit: self.appends_per_commit(),
            write_amplification: self.write_amplification(),
            cpu_us_per_record: self.cpu_us_per_record(),
            peak_rss_bytes: usage::peak_rss(),
            throughput_timeline: self.timeline.clone(),
            cold_read,
            errors: self.errors.clone(),
            verified: !args.no_verify,
            verification_problems,
        }
    }
}

/// The configuration part of the report.
fn run_config(args: &Args, shards: usize, dir: &Path) -> RunConfig {
    RunConfig {
        shards,
        partitions: args.partitions,
        producers: args.producers,
        threads: args.threads,
        consumers: args.consumers,
        rate: args.rate,
        record_bytes: args.record_bytes,
        batch: args.batch,
        fsync: args.fsync.to_string(),
        duration_s: args.duration,
        records: args.records,
        seed: args.seed,
        dir: dir.display().to_string(),
    }
}

/// Writes `report` as JSON to `path`.
pub fn write(report: &Report, path: &Path) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| format!("report: {e}"))?;
    std::fs::write(path, json).map_err(|e| format!("write {}: {e}", path.display()))
}
