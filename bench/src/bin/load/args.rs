//! The load generator's command line.

use std::{fmt, path::PathBuf, time::Duration};

use clap::Parser;
use corelog::FsyncPolicy;

use crate::workload::HEADER;

/// Drive an embedded corelog engine and report what it does on this disk.
#[derive(Parser, Debug, Clone)]
#[command(name = "cargo xtask load")]
pub struct Args {
    /// Data directory to use and keep (default: a temporary directory under
    /// the current one, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Shards (default: one per core).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Partitions written.
    #[arg(long, default_value_t = 64)]
    pub partitions: u64,
    /// Concurrent appenders, each with one append in flight.
    #[arg(long, default_value_t = 64)]
    pub producers: u64,
    /// Bytes per record value (at least 32).
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per append.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// always, never, or interval:<ms>.
    #[arg(long, default_value = "always", value_parser = Fsync::parse)]
    pub fsync: Fsync,
    /// Seconds to run (ignored with --records).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many records instead of after --duration.
    #[arg(long)]
    pub records: Option<u64>,
    /// Tail readers following every partition with `fetch` long polls, measuring append-to-read latency.
    #[arg(long, default_value_t = 0)]
    pub consumers: u64,
    /// Write every figure and the configuration to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw throughput over time and latency CDFs to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Seed of the record contents.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Skip reading everything back.
    #[arg(long)]
    pub no_verify: bool,
    /// After the writes, close and reopen the engine (empty memtables) and
    /// time reading every partition from its start: the cold-read rate.
    #[arg(long)]
    pub read_from_start: bool,
    /// Memtable budget per shard, bytes (default: the engine's, 64 MiB).
    #[arg(long)]
    pub memtable_bytes: Option<usize>,
    /// Client threads the producers run on.
    #[arg(long, default_value_t = 2)]
    pub threads: u64,
    /// Offered load, records/s over all producers (default: as fast as the
    /// engine takes them). Each producer sends on a fixed schedule.
    #[arg(long)]
    pub rate: Option<f64>,
}

impl Args {
    /// Checks what clap cannot: the bounds that depend on the workload.
    pub fn validate(&self) -> Result<(), String> {
        if self.record_bytes < HEADER
            || self.batch == 0
            || self.producers == 0
            || self.partitions == 0
            || self.threads == 0
        {
            return Err(format!("--record-bytes must be at least {HEADER}; --batch, --producers, --partitions and --threads at least 1"));
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number of records per second".into());
        }
        Ok(())
    }
}

/// The `--fsync` policy as given on the command line; displays as it is
/// spelled there (`always`, `never` or `interval:<ms>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fsync(pub FsyncPolicy);

impl Fsync {
    /// Parses `always`, `never` or `interval:<ms>` with `ms` at least 1.
    pub fn parse(s: &str) -> Result<Fsync, String> {
        match s {
            "always" => Ok(Fsync(FsyncPolicy::Always)),
            "never" => Ok(Fsync(FsyncPolicy::Never)),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| Fsync(FsyncPolicy::Interval(Duration::from_millis(ms))))
                .ok_or_else(|| "expected always, never or interval:<ms>".to_string()),
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_spellings_parse_and_display_as_given() {
        for s in ["always", "never", "interval:5", "interval:1000"] {
            assert_eq!(Fsync::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Fsync::parse("interval:20").unwrap().0,
            FsyncPolicy::Interval(Duration::from_millis(20))
        );
        for bad in [
            "",
            "Always",
            "interval",
            "interval:",
            "interval:0",
            "interval:x",
            "sometimes",
        ] {
            assert!(Fsync::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn fsync_defaults_to_always_and_clap_rejects_a_bad_one() {
        let args = Args::try_parse_from(["load"]).unwrap();
        assert_eq!(args.fsync.0, FsyncPolicy::Always);
        let args = Args::try_parse_from(["load", "--fsync", "interval:7"]).unwrap();
        assert_eq!(args.fsync.to_string(), "interval:7");
        assert!(Args::try_parse_from(["load", "--fsync", "bogus"]).is_err());
    }
}
