//! Verification: reads every partition back and checks that each
//! producer's acknowledged records each appear exactly once, intact, in the
//! partition they were sent to.

use std::cell::RefCell;

use corelog::{Handle, StoredRecord};
use futures::executor::block_on;

use crate::{
    args::Args,
    workload::{self, Header},
};

/// Most bytes one read returns.
const READ_BYTES: usize = 1 << 20;

/// Reads every partition back; returns a description of each difference.
pub fn verify(args: &Args, log: &Handle, acked: &[u64]) -> Vec<String> {
    let checker = Checker::new(args, acked);
    // Every partition at once: their batches are spread through the whole
    // log, so one reader at a time would wait on one small device read
    // after another.
    block_on(futures::future::join_all(
        (0..args.partitions).map(|p| read_partition(log, &checker, p)),
    ));
    checker.finish()
}

/// Reads partition `p` from its start to its end through `checker`.
async fn read_partition(log: &Handle, checker: &Checker<'_>, p: u64) {
    let o = match log.offsets(p).await {
        Ok(o) => o,
        Err(e) => return checker.problem(format!("partition {p}: offsets failed: {e}")),
    };
    let mut next = o.start;
    while next < o.end {
        let records = match log.read(p, next, READ_BYTES).await {
            Ok(r) => r,
            Err(e) => {
                return checker.problem(format!("partition {p} offset {next}: read failed: {e}"))
            }
        };
        for r in &records {
            checker.check(p, r);
        }
        next += records.len() as u64;
    }
}

/// What the read back has seen so far.
struct Checker<'a> {
    args: &'a Args,
    /// Per producer, per acknowledged sequence: whether it was read.
    seen: RefCell<Vec<Vec<bool>>>,
    problems: RefCell<Vec<String>>,
}

impl<'a> Checker<'a> {
    /// Nothing seen yet of the `acked[p]` acknowledged records of each
    /// producer `p`.
    fn new(args: &'a Args, acked: &[u64]) -> Self {
        Checker {
            args,
            seen: RefCell::new(acked.iter().map(|&n| vec![false; n as usize]).collect()),
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Notes a problem.
    fn problem(&self, what: String) {
        self.problems.borrow_mut().push(what);
    }

    /// Checks record `r` read from partition `p`.
    fn check(&self, p: u64, r: &StoredRecord) {
        let v = r.value();
        if v.len() != self.args.record_bytes {
            return self.problem(format!(
                "partition {p} offset {}: {} bytes, expected {}",
                r.offset(),
                v.len(),
                self.args.record_bytes
            ));
        }
        let Header {
            producer,
            seq,
            partition,
            ..
        } = Header::read(v);
        let body_ok = workload::body_matches(workload::body_key(self.args.seed, producer, seq), v);
        if partition != p || !body_ok {
            return self.problem(format!("partition {p} offset {}: content differs (says producer {producer}, seq {seq}, partition {partition})", r.offset()));
        }
        let mut seen = self.seen.borrow_mut();
        match seen
            .get_mut(producer as usize)
            .and_then(|s| s.get_mut(seq as usize))
        {
            Some(slot) if !*slot => *slot = true,
            Some(_) => self.problem(format!(
                "partition {p} offset {}: producer {producer} seq {seq} stored twice",
                r.offset()
            )),
            // Written but not acknowledged before the run stopped: fine.
            None => {}
        }
    }

    /// Every problem found, with the acknowledged records never read.
    fn finish(self) -> Vec<String> {
        let mut problems = self.problems.into_inner();
        for (producer, s) in self.seen.into_inner().iter().enumerate() {
            if let Some(seq) = s.iter().position(|&x| !x) {
                let missing = s.iter().filter(|&&x| !x).count();
                problems.push(format!("producer {producer}: {missing} acknowledged records missing, the first is seq {seq}"));
            }
        }
        problems
    }
}
