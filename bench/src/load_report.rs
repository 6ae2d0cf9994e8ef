//! The JSON report of the load generator (`load --json PATH`), one type that
//! the load generator writes and `cargo xtask load --vs-disk` reads back.
//!
//! This file depends on `serde` only: xtask includes it with
//! `#[path = "../../bench/src/load_report.rs"] mod load_report;` so that it
//! need not build the engine. Every field is required when reading: a
//! missing field is an error, never a silent default (an `Option` field may
//! be `null`, but must be present).

use serde::{Deserialize, Serialize};

/// Everything one run of the load generator measured, and how it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Build profile of the load generator: `release` or `debug`.
    pub profile: String,
    /// The run's configuration.
    pub config: RunConfig,
    /// Seconds from the start of the load until the producers stopped.
    pub elapsed_s: f64,
    /// Records acknowledged.
    pub records: u64,
    /// Acknowledged records per second.
    pub records_per_s: f64,
    /// Acknowledged payload (record values), megabytes (10^6 B) per second.
    pub mb_per_s: f64,
    /// Append latency, from when the append was due to its acknowledgement.
    pub append_latency_us: LatencyUs,
    /// Append-to-read latency seen by the tail consumers (all zero, with a
    /// count of 0, when none ran).
    pub end_to_end_latency_us: EndToEndLatencyUs,
    /// fdatasyncs per second, over every shard.
    pub fdatasyncs_per_s: f64,
    /// Appends per group commit, over every shard.
    pub appends_per_commit: f64,
    /// Bytes written to disk per payload byte.
    pub write_amplification: f64,
    /// CPU time (user + system) of the whole process per acknowledged
    /// record, microseconds.
    pub cpu_us_per_record: f64,
    /// Peak resident memory of the process at the end of the run (after
    /// any read back), bytes.
    pub peak_rss_bytes: u64,
    /// Throughput over time: (seconds since the start, records per second
    /// since the previous point).
    pub throughput_timeline: Vec<(f64, f64)>,
    /// The cold-read rate after a reopen (`--read-from-start`), or null.
    #[serde(deserialize_with = "Option::deserialize")]
    pub cold_read: Option<ColdRead>,
    /// Errors that appends or fetches returned.
    pub errors: Vec<String>,
    /// Whether every record was read back and checked (no `--no-verify`).
    pub verified: bool,
    /// What the read back found wrong; empty when it passed or did not run.
    pub verification_problems: Vec<String>,
}

/// How the load generator was configured for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Shards of the engine.
    pub shards: usize,
    /// Partitions written.
    pub partitions: u64,
    /// Concurrent appenders.
    pub producers: u64,
    /// Client threads the producers ran on.
    pub threads: u64,
    /// Tail consumers.
    pub consumers: u64,
    /// Offered load in records per second, or null for as fast as possible.
    #[serde(deserialize_with = "Option::deserialize")]
    pub rate: Option<f64>,
    /// Bytes per record value.
    pub record_bytes: usize,
    /// Records per append.
    pub batch: usize,
    /// The fsync policy: `always`, `never` or `interval:<ms>`.
    pub fsync: String,
    /// Seconds the load was to run (ignored when `records` is set).
    pub duration_s: f64,
    /// Records the load was to write, or null to run for `duration_s`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub records: Option<u64>,
    /// Seed of the record contents.
    pub seed: u64,
    /// Data directory.
    pub dir: String,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyUs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Append-to-read latency percentiles, microseconds, and how many records
/// they cover.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EndToEndLatencyUs {
    /// Records the consumers read.
    pub count: u64,
    /// The percentiles.
    #[serde(flatten)]
    pub latency: LatencyUs,
}

/// The cold-read rate: every partition read from its start after a reopen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColdRead {
    /// Records per second.
    pub records_per_s: f64,
    /// Record values, megabytes (10^6 B) per second.
    pub mb_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let latency = LatencyUs {
            p50: 1.0,
            p90: 2.0,
            p99: 3.0,
            p999: 4.0,
            max: 5.0,
        };
        Report {
            profile: "release".into(),
            config: RunConfig {
                shards: 2,
                partitions: 64,
                producers: 64,
                threads: 2,
                consumers: 0,
                rate: None,
                record_bytes: 1024,
                batch: 16,
                fsync: "interval:5".into(),
                duration_s: 10.0,
                records: None,
                seed: 1,
                dir: "data".into(),
            },
            elapsed_s: 10.1,
            records: 1000,
            records_per_s: 99.0,
            mb_per_s: 0.1,
            append_latency_us: latency,
            end_to_end_latency_us: EndToEndLatencyUs { count: 0, latency },
            fdatasyncs_per_s: 5.0,
            appends_per_commit: 1.5,
            write_amplification: 1.1,
            cpu_us_per_record: 7.0,
            peak_rss_bytes: 1 << 20,
            throughput_timeline: vec![(0.25, 100.0), (0.5, 98.0)],
            cold_read: Some(ColdRead {
                records_per_s: 10.0,
                mb_per_s: 0.01,
            }),
            errors: vec![],
            verified: true,
            verification_problems: vec![],
        }
    }

    #[test]
    fn the_json_has_the_documented_shape_and_reads_back() {
        let r = report();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["append_latency_us"]["p999"], 4.0);
        assert_eq!(json["end_to_end_latency_us"]["count"], 0);
        assert_eq!(json["end_to_end_latency_us"]["max"], 5.0);
        assert_eq!(
            json["throughput_timeline"][1],
            serde_json::json!([0.5, 98.0])
        );
        assert_eq!(json["config"]["rate"], serde_json::Value::Null);
        assert_eq!(json["cold_read"]["mb_per_s"], 0.01);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_missing_field_is_an_error_and_null_is_none() {
        let full = serde_json::to_value(report()).unwrap();
        for path in [
            &["mb_per_s"][..],
            &["cold_read"],
            &["config", "rate"],
            &["config", "records"],
            &["append_latency_us", "p50"],
            &["end_to_end_latency_us", "p99"],
            &["end_to_end_latency_us", "count"],
        ] {
            let mut json = full.clone();
            let (last, parents) = path.split_last().unwrap();
            let mut object = &mut json;
            for p in parents {
                object = &mut object[*p];
            }
            object.as_object_mut().unwrap().remove(*last).unwrap();
            let err = serde_json::from_value::<Report>(json).unwrap_err();
            assert!(err.to_string().contains(last), "{path:?}: {err}");
        }
        let mut json = full;
        json["cold_read"] = serde_json::Value::Null;
        assert_eq!(
            serde_json::from_value::<Report>(json).unwrap().cold_read,
            None
        );
    }
}
