//! corelog against its peers on the common embedding: a plain service
//! thread (or four) appending one record at a time. One invocation runs
//! every workload on every system, one after another on the same disk, and
//! prints records/s, MB/s, CPU per record and corelog's ratio to each peer.
//!
//! `cargo bench -p corelog-bench --bench peers` (add `-- --runs 1` for a
//! quick look, `--filter "100 B"` for some workloads, `--only corelog` to
//! profile one system). The systems:
//! - corelog: `Handle::append` from plain threads, one partition per thread,
//!   a window of appends in flight (1,024 without sync, under `Never`, then
//!   one `flush`; 64 for a sync per 64 records and 1 for a sync per record,
//!   under `Always`, where group commit does the syncing);
//! - the disk: each thread frames its records as the `BufWriter` log does
//!   into an aligned buffer and writes it with O_DIRECT to a file written
//!   in full beforehand, padded to the block, at each sync point (then
//!   `fdatasync`) or when 1 MiB is full: what a log on this disk cannot
//!   beat, with no index, no memtable, no reads and no second thread;
//! - a plain `BufWriter` log: length + CRC32C framing, `sync_data`;
//! - okaywal: an entry is its unit of durability (a commit syncs), so a
//!   sync per N records is an entry of N chunks;
//! - fjall: a keyspace with manual journal persistence, a key per record,
//!   `persist(SyncData)` every N.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use corelog::{Config, Engine, FsyncPolicy, Record};
use futures::executor::block_on;

/// When a workload syncs.
#[derive(Clone, Copy, PartialEq)]
enum Syncs {
    /// Once, at the end.
    AtEnd,
    /// After every N records of a thread.
    Every(usize),
}

#[derive(Clone, Copy)]
struct Workload {
    bytes: usize,
    sync: Syncs,
    /// Records per thread.
    records: usize,
    threads: usize,
}

impl Workload {
    fn name(&self) -> String {
        let size = if self.bytes >= 1024 {
            format!("{} KiB", self.bytes / 1024)
        } else {
            format!("{} B", self.bytes)
        };
        let sync = match self.sync {
            Syncs::AtEnd => "no sync".to_string(),
            Syncs::Every(1) => "sync per record".to_string(),
            Syncs::Every(n) => format!("sync per {n}"),
        };
        let threads = if self.threads > 1 {
            format!(", {} threads", self.threads)
        } else {
            String::new()
        };
        format!("{size}, {sync}{threads}")
    }
}

/// What one run measured.
#[derive(Clone, Copy)]
struct Figures {
    wall: Duration,
    /// User + system CPU of the whole process (every thread) while the
    /// producers ran: opening and closing the system are left out.
    cpu: Duration,
}

type System = fn(&Path, Workload) -> Figures;

const SYSTEMS: [(&str, System); 5] = [
    ("disk", disk),
    ("BufWriter", bufwriter),
    ("okaywal", okaywal),
    ("fjall", fjall),
    ("corelog", corelog),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3usize);
    // `--only corelog`: one system, for profiling; `--filter "100 B"`: the
    // workloads whose name contains the text.
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only = arg("--only");
    let filter = arg("--filter").unwrap_or_default();
    let workloads = [
        (100, Syncs::AtEnd, 200_000, 1),
        (100, Syncs::Every(64), 64_000, 1),
        (100, Syncs::Every(1), 2_000, 1),
        (4096, Syncs::AtEnd, 50_000, 1),
        (4096, Syncs::Every(64), 160_000, 1),
        (4096, Syncs::Every(1), 2_000, 1),
        (100, Syncs::AtEnd, 100_000, 4),
        (100, Syncs::Every(64), 32_000, 4),
    ]
    .map(|(bytes, sync, records, threads)| Workload {
        bytes,
        sync,
        records,
        threads,
    });
    println!(
        "median of {runs} runs; records/s (MB/s); corelog's CPU per record, all threads summed, while the producers run (open and close left out)\n"
    );
    println!("| workload | disk | BufWriter | okaywal | fjall | corelog | corelog CPU/record | ÷ disk | ÷ BufWriter | ÷ okaywal | ÷ fjall |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for w in workloads.into_iter().filter(|w| w.name().contains(&filter)) {
        let mut rates = Vec::new();
        let mut corelog_cpu = Duration::ZERO;
        for (name, system) in SYSTEMS {
            if only.as_ref().is_some_and(|o| o != name) {
                rates.push(f64::NAN);
                continue;
            }
            let mut figures: Vec<Figures> = (0..runs).map(|_| measure(system, w)).collect();
            figures.sort_by_key(|f| f.wall);
            let median = figures[figures.len() / 2];
            let total = (w.records * w.threads) as f64;
            rates.push(total / median.wall.as_secs_f64());
            if name == "corelog" {
                corelog_cpu = median.cpu;
            }
        }
        let total = (w.records * w.threads) as f64;
        let cell = |r: f64| format!("{} ({:.0})", human(r), r * w.bytes as f64 / 1e6);
        let corelog_rate = rates[4];
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} µs | {:.2}× | {:.2}× | {:.2}× | {:.2}× |",
            w.name(),
            cell(rates[0]),
            cell(rates[1]),
            cell(rates[2]),
            cell(rates[3]),
            cell(corelog_rate),
            corelog_cpu.as_secs_f64() * 1e6 / total,
            corelog_rate / rates[0],
            corelog_rate / rates[1],
            corelog_rate / rates[2],
            corelog_rate / rates[3],
        );
    }
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else {
        format!("{:.0} k", rate / 1e3)
    }
}

/// Runs `system` on `w` in a fresh directory on the project's disk.
fn measure(system: System, w: Workload) -> Figures {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    system(dir.path(), w)
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is valid.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn payload(w: Workload, thread: usize, i: usize) -> Vec<u8> {
    let mut v = vec![(thread * 31 + i) as u8; w.bytes];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

/// Runs `producer(thread)` on `w.threads` threads and returns the wall
/// and CPU time they took.
fn on_threads(w: Workload, producer: impl Fn(usize) + Send + Sync + 'static) -> Figures {
    let producer = Arc::new(producer);
    let cpu = cpu_time();
    let start = Instant::now();
    let threads: Vec<_> = (0..w.threads)
        .map(|t| {
            let producer = producer.clone();
            std::thread::spawn(move || producer(t))
        })
        .collect();
    for t in threads {
        t.join().expect("producer");
    }
    Figures {
        wall: start.elapsed(),
        cpu: cpu_time() - cpu,
    }
}

fn corelog(dir: &Path, w: Workload) -> Figures {
    let (policy, window) = match w.sync {
        Syncs::AtEnd => (FsyncPolicy::Never, 1024),
        Syncs::Every(n) => (FsyncPolicy::Always, n),
    };
    let engine = Engine::open(Config::new(dir).fsync(policy)).expect("open corelog");
    let log = engine.handle();
    let flusher = log.clone();
    let figures = on_threads(w, move |t| {
        let mut in_flight: VecDeque<corelog::Append> = VecDeque::with_capacity(window);
        for i in 0..w.records {
            if in_flight.len() == window {
                block_on(in_flight.pop_front().expect("full")).expect("append");
            }
            in_flight.push_back(log.append(t as u64, vec![Record::new(payload(w, t, i))]));
        }
        for a in in_flight {
            block_on(a).expect("append");
        }
        if w.sync == Syncs::AtEnd {
            block_on(flusher.flush()).expect("flush");
        }
    });
    engine.close().expect("close");
    figures
}

/// The disk's floor for `w`: see the module's doc.
fn disk(dir: &Path, w: Workload) -> Figures {
    const BLOCK: usize = 4096;
    const BUFFER: usize = 1 << 20;
    let every = match w.sync {
        Syncs::AtEnd => w.records,
        Syncs::Every(n) => n,
    };
    let frame = w.bytes + 8;
    let per_sync = (every * frame).div_ceil(BLOCK) * BLOCK;
    let size = w.records.div_ceil(every) * per_sync + w.records * frame + BUFFER;
    let files: Vec<File> = (0..w.threads)
        .map(|t| {
            let path = dir.join(format!("disk-{t}"));
            std::fs::write(&path, vec![0u8; size]).expect("pre-write");
            File::open(&path)
                .and_then(|f| f.sync_all())
                .expect("sync the pre-written file");
            File::open(dir)
                .and_then(|d| d.sync_all())
                .expect("sync dir");
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .expect("open O_DIRECT")
        })
        .collect();
    let files = Arc::new(files);
    on_threads(w, move |t| {
        let file = &files[t];
        let mut memory = vec![0u8; BUFFER + BLOCK];
        let start = memory.as_ptr().align_offset(BLOCK);
        let buf = &mut memory[start..start + BUFFER];
        let (mut len, mut pos) = (0usize, 0u64);
        let mut write = |buf: &mut [u8], len: &mut usize| {
            let padded = len.div_ceil(BLOCK) * BLOCK;
            buf[*len..padded].fill(0);
            file.write_all_at(&buf[..padded], pos).expect("pwrite");
            pos += padded as u64;
            *len = 0;
        };
        for i in 0..w.records {
            if len + frame > BUFFER {
                write(buf, &mut len);
            }
            let value = payload(w, t, i);
            buf[len..len + 4].copy_from_slice(&(value.len() as u32).to_le_bytes());
            buf[len + 4..len + 8].copy_from_slice(&crc32c::crc32c(&value).to_le_bytes());
            buf[len + 8..len + frame].copy_from_slice(&value);
            len += frame;
            if matches!(w.sync, Syncs::Every(n) if (i + 1) % n == 0) {
                write(buf, &mut len);
                file.sync_data().expect("fdatasync");
            }
        }
        if len > 0 {
            write(buf, &mut len);
        }
        file.sync_data().expect("fdatasync");
    })
}

fn bufwriter(dir: &Path, w: Workload) -> Figures {
    let file = File::create(dir.join("log")).expect("create");
    let log = Arc::new(Mutex::new(BufWriter::with_capacity(1 << 20, file)));
    on_threads(w, move |t| {
        let sync = |log: &mut BufWriter<File>| {
            log.flush().expect("flush");
            log.get_ref().sync_data().expect("sync");
        };
        for i in 0..w.records {
            let value = payload(w, t, i);
            let mut log = log.lock().expect("lock");
            log.write_all(&(value.len() as u32).to_le_bytes())
                .expect("write");
            log.write_all(&crc32c::crc32c(&value).to_le_bytes())
                .expect("write");
            log.write_all(&value).expect("write");
            if matches!(w.sync, Syncs::Every(n) if (i + 1) % n == 0) {
                sync(&mut log);
            }
        }
        sync(&mut log.lock().expect("lock"));
    })
}

#[derive(Debug)]
struct NoCheckpoints;

impl okaywal::LogManager for NoCheckpoints {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last: okaywal::EntryId,
        _entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn okaywal(dir: &Path, w: Workload) -> Figures {
    let wal = okaywal::WriteAheadLog::recover(dir, NoCheckpoints).expect("open okaywal");
    let writer = wal.clone();
    let figures = on_threads(w, move |t| {
        let per_entry = match w.sync {
            Syncs::AtEnd => w.records,
            Syncs::Every(n) => n,
        };
        let mut entry = writer.begin_entry().expect("entry");
        for i in 0..w.records {
            entry.write_chunk(&payload(w, t, i)).expect("chunk");
            if (i + 1) % per_entry == 0 || i + 1 == w.records {
                entry.commit().expect("commit");
                entry = writer.begin_entry().expect("entry");
            }
        }
        entry.rollback().expect("rollback the empty entry");
    });
    wal.shutdown().expect("shutdown");
    figures
}

fn fjall(dir: &Path, w: Workload) -> Figures {
    let db = fjall::Database::builder(dir)
        .manual_journal_persist(true)
        .open()
        .expect("open fjall");
    let keyspace = db
        .keyspace("log", fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    let writer = db.clone();
    on_threads(w, move |t| {
        let sync = || {
            writer
                .persist(fjall::PersistMode::SyncData)
                .expect("persist")
        };
        for i in 0..w.records {
            let key = ((t as u64) << 48 | i as u64).to_be_bytes();
            keyspace.insert(key, payload(w, t, i)).expect("insert");
            if matches!(w.sync, Syncs::Every(n) if (i + 1) % n == 0) {
                sync();
            }
        }
        sync();
    })
}
