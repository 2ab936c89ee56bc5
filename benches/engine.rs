//! The engine against its peers (issue 6): caskade, sled, redb, fjall and a `HashMap`
//! behind an `RwLock` (the in-memory ceiling), side by side in one criterion group per
//! workload. 16-byte keys, 100-byte random values, N keys (default 1,000,000;
//! `CASKADE_BENCH_N` overrides; `CASKADE_BENCH_SECS` sets the measurement time of each
//! benchmark, default 3 s). Every store lives in a fresh temp dir (`TMPDIR` chooses
//! the disk).
//!
//! - `w1_fill`: N single puts in random key order into a fresh store, each engine in its
//!   fastest non-durable mode, one sync at the end counted.
//! - `w2_get`: random point gets of existing keys in a warm, filled store; 1 and 2 threads.
//! - `w3_durable_put`: puts of new keys, each durable before it returns; 1, 2, 8, 16, 64
//!   writers (2 and 16 guard the gather rule between the targets' 1, 8 and 64).
//! - `w4_mixed`: 90 % get / 10 % put (overwrites), 2 threads, non-durable mode.
//! - `w5_large_fill` / `w5_large_get`: 64 KiB values, `CASKADE_BENCH_N_LARGE` keys
//!   (default N / 250, at least 100, at most 4000).
//! - `memory` (printed, not timed): each engine filled as in `w1_fill`, in a child process
//!   of its own: index bytes per key (caskade's estimate), growth of peak RSS (`VmHWM`)
//!   and of RSS over the fill, disk bytes per key (allocated blocks, as `du` counts).
//! - `open`: caskade reopening N keys with and without hint files.
//!
//! `cargo bench --features bench-peers --bench engine [-- FILTER]`; `benches/engine-quick.sh`
//! runs everything with a small N; `benches/engine-report.py` turns criterion's results
//! into the tables of `docs/benchmarks.md`, which also describes the machine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, RwLock};
use std::time::{Duration, Instant};

use caskade_engine::{Batch, CompactionOptions, Engine, Options, SyncPolicy, WriteOptions};
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use redb::ReadableDatabase;
use tempfile::TempDir;

const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
const LARGE_VALUE_BYTES: usize = 64 * 1024;
/// Random bytes values are cut from: larger than the largest value, so every value
/// is a different window of incompressible bytes.
const VALUE_POOL_BYTES: usize = 4 * 1024 * 1024;
const REDB_TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

/// How big a run is: from the environment, so CI can run every group quickly.
#[derive(Clone, Copy, Debug)]
struct Config {
    keys: u64,
    large_keys: u64,
    measurement: Duration,
}

impl Config {
    fn from_env() -> Config {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let keys = var("CASKADE_BENCH_N").unwrap_or(1_000_000).max(100);
        let large_keys = var("CASKADE_BENCH_N_LARGE").unwrap_or((keys / 250).clamp(100, 4000));
        let measurement = Duration::from_secs_f64(
            std::env::var("CASKADE_BENCH_SECS")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(3.0),
        );
        Config {
            keys,
            large_keys,
            measurement,
        }
    }
}

/// splitmix64's finalizer: a bijection on `u64`, so distinct inputs give distinct keys.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Key number `i`: 16 bytes that look random, so filling keys 0, 1, 2, … inserts them
/// in random order for every ordered engine.
fn key(i: u64) -> [u8; KEY_BYTES] {
    let mut k = [0u8; KEY_BYTES];
    k[..8].copy_from_slice(&mix(i).to_be_bytes());
    k[8..].copy_from_slice(&mix(i ^ 0x5555_5555_5555_5555).to_be_bytes());
    k
}

/// A small, fast generator for the keys a thread reads or writes next.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Incompressible bytes to cut values from.
struct Values(Vec<u8>);

impl Values {
    fn new() -> Values {
        let mut rng = Rng(42);
        let mut pool = Vec::with_capacity(VALUE_POOL_BYTES + 8);
        while pool.len() < VALUE_POOL_BYTES {
            pool.extend_from_slice(&rng.next().to_le_bytes());
        }
        Values(pool)
    }

    /// The value written for key `i` (`seed` varies it between overwrites).
    fn get(&self, seed: u64, len: usize) -> &[u8] {
        let start = (mix(seed) % (self.0.len() - len) as u64) as usize;
        &self.0[start..start + len]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Caskade,
    Sled,
    Redb,
    Fjall,
    HashMap,
}

const KINDS: [Kind; 5] = [
    Kind::Caskade,
    Kind::Sled,
    Kind::Redb,
    Kind::Fjall,
    Kind::HashMap,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Caskade => "caskade",
            Kind::Sled => "sled",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
            Kind::HashMap => "hashmap",
        }
    }
}

/// Fastest non-durable (`Fast`) or every put durable before it returns (`Durable`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Fast,
    Durable,
}

/// What every workload needs of an engine. Panics on errors: this is bench code.
trait Store: Send + Sync {
    fn put(&self, key: &[u8], value: &[u8]);
    /// The length of the value of `key`, which must exist.
    fn get(&self, key: &[u8]) -> usize;
    /// Makes every put so far durable.
    fn sync(&self);
    /// caskade's own estimate of its index memory.
    fn index_bytes(&self) -> Option<u64> {
        None
    }
}

struct Caskade(Engine);

impl Store for Caskade {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.0
            .put(key.to_vec(), value.to_vec(), WriteOptions::default())
            .expect("caskade put");
    }
    fn get(&self, key: &[u8]) -> usize {
        let entry = self.0.get(key).expect("caskade get").expect("key present");
        entry.value.len()
    }
    fn sync(&self) {
        self.0.sync().expect("caskade sync");
    }
    fn index_bytes(&self) -> Option<u64> {
        Some(self.0.stats().index_bytes)
    }
}

struct Sled {
    db: sled::Db,
    durable: bool,
}

impl Store for Sled {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.db.insert(key, value).expect("sled insert");
        if self.durable {
            self.db.flush().expect("sled flush");
        }
    }
    fn get(&self, key: &[u8]) -> usize {
        self.db
            .get(key)
            .expect("sled get")
            .expect("key present")
            .len()
    }
    fn sync(&self) {
        self.db.flush().expect("sled flush");
    }
}

struct Redb {
    db: redb::Database,
    durability: redb::Durability,
}

impl Redb {
    fn commit(&self, durability: redb::Durability, key_value: Option<(&[u8], &[u8])>) {
        let mut tx = self.db.begin_write().expect("redb begin_write");
        tx.set_durability(durability).expect("redb durability");
        {
            let mut table = tx.open_table(REDB_TABLE).expect("redb open_table");
            if let Some((key, value)) = key_value {
                table.insert(key, value).expect("redb insert");
            }
        }
        tx.commit().expect("redb commit");
    }
}

impl Store for Redb {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.commit(self.durability, Some((key, value)));
    }
    fn get(&self, key: &[u8]) -> usize {
        let tx = self.db.begin_read().expect("redb begin_read");
        let table = tx.open_table(REDB_TABLE).expect("redb open_table");
        let value = table.get(key).expect("redb get").expect("key present");
        value.value().len()
    }
    fn sync(&self) {
        self.commit(redb::Durability::Immediate, None);
    }
}

struct Fjall {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
    durable: bool,
}

impl Store for Fjall {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.keyspace.insert(key, value).expect("fjall insert");
        if self.durable {
            self.db
                .persist(fjall::PersistMode::SyncData)
                .expect("fjall persist");
        }
    }
    fn get(&self, key: &[u8]) -> usize {
        let value = self.keyspace.get(key).expect("fjall get");
        value.expect("key present").len()
    }
    fn sync(&self) {
        self.db
            .persist(fjall::PersistMode::SyncData)
            .expect("fjall persist");
    }
}

/// Keys and values of the in-memory ceiling, owned and exactly sized.
type MemoryMap = HashMap<Box<[u8]>, Box<[u8]>>;

/// The ceiling: no persistence, no encoding, one lock.
#[derive(Default)]
struct Memory(RwLock<MemoryMap>);

impl Store for Memory {
    fn put(&self, key: &[u8], value: &[u8]) {
        let mut map = self.0.write().expect("lock");
        map.insert(key.into(), value.into());
    }
    fn get(&self, key: &[u8]) -> usize {
        let map = self.0.read().expect("lock");
        map.get(key).expect("key present").len()
    }
    fn sync(&self) {}
}

fn caskade_options(sync: SyncPolicy) -> Options {
    Options {
        sync,
        ..Options::default()
    }
}

/// Opens `kind` in `dir`; `None` for the in-memory map in durable mode (it has none).
fn open(kind: Kind, dir: &Path, mode: Mode) -> Option<Box<dyn Store>> {
    let durable = mode == Mode::Durable;
    let store: Box<dyn Store> = match kind {
        Kind::Caskade => {
            let sync = if durable {
                SyncPolicy::Always
            } else {
                SyncPolicy::Never
            };
            let engine = Engine::open(dir, caskade_options(sync)).expect("caskade open");
            Box::new(Caskade(engine))
        }
        Kind::Sled => {
            let config = sled::Config::new().path(dir).flush_every_ms(None);
            let config = if durable {
                config
            } else {
                config.mode(sled::Mode::HighThroughput)
            };
            let db = config.open().expect("sled open");
            Box::new(Sled { db, durable })
        }
        Kind::Redb => {
            let db = redb::Database::create(dir.join("db.redb")).expect("redb create");
            let durability = if durable {
                redb::Durability::Immediate
            } else {
                redb::Durability::None
            };
            Box::new(Redb { db, durability })
        }
        Kind::Fjall => {
            // Non-durable: the journal stays in user space until `persist`; durable:
            // every put is followed by `persist(SyncData)` (fdatasync, as caskade does).
            let db = fjall::Database::builder(dir)
                .manual_journal_persist(!durable)
                .open()
                .expect("fjall open");
            let keyspace = db
                .keyspace("kv", fjall::KeyspaceCreateOptions::default)
                .expect("fjall keyspace");
            Box::new(Fjall {
                db,
                keyspace,
                durable,
            })
        }
        Kind::HashMap if durable => return None,
        Kind::HashMap => Box::<Memory>::default(),
    };
    Some(store)
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("caskade-bench-")
        .tempdir()
        .expect("temp dir")
}

/// Puts keys `0..keys` with `value_bytes` values, then syncs; returns the time taken.
fn fill(store: &dyn Store, values: &Values, keys: u64, value_bytes: usize) -> Duration {
    let started = Instant::now();
    for i in 0..keys {
        store.put(&key(i), values.get(i, value_bytes));
    }
    store.sync();
    started.elapsed()
}

/// Runs `work(thread, ops)` on `threads` threads, `ops` each, and times them from the
/// moment all are ready to the moment the last is done.
fn timed_threads(threads: u64, ops: u64, work: impl Fn(u64, u64) + Sync) -> Duration {
    if threads == 1 {
        let started = Instant::now();
        work(0, ops);
        return started.elapsed();
    }
    let ready = Barrier::new(threads as usize + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (ready, work) = (&ready, &work);
                scope.spawn(move || {
                    ready.wait();
                    work(t, ops);
                })
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        for handle in handles {
            handle.join().expect("bench thread");
        }
        started.elapsed()
    })
}

/// `iters` operations spread over `threads`: the time, scaled to exactly `iters` when
/// they do not divide evenly.
fn per_op_time(iters: u64, threads: u64, run: impl Fn(u64) -> Duration) -> Duration {
    let ops = iters.div_ceil(threads).max(1);
    let elapsed = run(ops);
    elapsed.mul_f64(iters as f64 / (ops * threads) as f64)
}

fn new_group<'a>(
    c: &'a mut Criterion,
    name: &str,
    config: &Config,
    slow: bool,
) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(config.measurement / 3)
        .measurement_time(config.measurement);
    if slow {
        // One iteration is a whole fill: as few as criterion allows.
        group
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(1));
    }
    group
}

fn w1_fill(c: &mut Criterion, config: &Config, values: &Values) {
    let mut group = new_group(c, "w1_fill", config, true);
    group.throughput(Throughput::Elements(config.keys));
    for kind in KINDS {
        group.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let dir = temp_dir();
                        let store = open(kind, dir.path(), Mode::Fast).expect("fast mode");
                        fill(store.as_ref(), values, config.keys, VALUE_BYTES)
                    })
                    .sum()
            });
        });
    }
    group.finish();
}

/// What one engine took for N keys: the `memory` table.
struct Footprint {
    kind: Kind,
    index_bytes: Option<u64>,
    rss_peak_growth_bytes: u64,
    rss_growth_bytes: u64,
    disk_bytes: u64,
}

/// A status line of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`).
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Bytes the files under `dir` take on disk (allocated blocks, as `du` counts).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            disk_bytes(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// A filled store for the read workloads.
struct Filled {
    kind: Kind,
    _dir: TempDir,
    store: Box<dyn Store>,
}

fn filled(kind: Kind, config: &Config, values: &Values) -> Filled {
    let dir = temp_dir();
    let store = open(kind, dir.path(), Mode::Fast).expect("fast mode");
    let took = fill(store.as_ref(), values, config.keys, VALUE_BYTES);
    eprintln!(
        "filled {} with {} keys in {took:.2?}",
        kind.name(),
        config.keys
    );
    // Warm: every key read once, so the gets measure a warm store.
    for i in 0..config.keys {
        store.get(&key(i));
    }
    Filled {
        kind,
        _dir: dir,
        store,
    }
}

/// The environment variable that makes this program a child that fills one engine
/// and prints its footprint: each engine's RSS is measured in a fresh process, so no
/// engine inherits memory another one freed.
const MEMORY_CHILD_VAR: &str = "CASKADE_BENCH_MEMORY_CHILD";

/// In the child: fill `kind` (as `w1_fill` does) and print one footprint line.
fn memory_child(kind_name: &str, config: &Config, values: &Values) {
    let kind = KINDS
        .into_iter()
        .find(|k| k.name() == kind_name)
        .expect("known engine");
    let dir = temp_dir();
    let rss_before = proc_status_bytes("VmRSS");
    let store = open(kind, dir.path(), Mode::Fast).expect("fast mode");
    fill(store.as_ref(), values, config.keys, VALUE_BYTES);
    let index = store.index_bytes().map_or(-1, |b| b as i64);
    let peak = proc_status_bytes("VmHWM").saturating_sub(rss_before);
    let rss = proc_status_bytes("VmRSS").saturating_sub(rss_before);
    println!("{index} {peak} {rss} {}", disk_bytes(dir.path()));
}

fn footprint(kind: Kind) -> Footprint {
    let exe = std::env::current_exe().expect("current exe");
    let out = std::process::Command::new(exe)
        .env(MEMORY_CHILD_VAR, kind.name())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("memory child");
    assert!(out.status.success(), "memory child of {}", kind.name());
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<i64> = line
        .split_whitespace()
        .map(|f| f.parse().expect("a number"))
        .collect();
    let bytes = |i: usize| u64::try_from(fields[i]).unwrap_or(0);
    Footprint {
        kind,
        index_bytes: u64::try_from(fields[0]).ok(),
        rss_peak_growth_bytes: bytes(1),
        rss_growth_bytes: bytes(2),
        disk_bytes: bytes(3),
    }
}

fn print_memory(config: &Config) {
    let per_key = |bytes: u64| bytes as f64 / config.keys as f64;
    println!(
        "\nmemory after filling {} keys ({KEY_BYTES} B keys, {VALUE_BYTES} B values, \
         raw {} B/key), bytes per key:",
        config.keys,
        KEY_BYTES + VALUE_BYTES
    );
    println!("engine   index  rss-peak-growth  rss-growth  disk  disk/raw");
    for kind in KINDS {
        let p = footprint(kind);
        let index = p
            .index_bytes
            .map_or_else(|| "-".to_string(), |b| format!("{:.1}", per_key(b)));
        println!(
            "{:<8} {index:>5}  {:>15.1}  {:>10.1}  {:>4.1}  {:>8.2}",
            p.kind.name(),
            per_key(p.rss_peak_growth_bytes),
            per_key(p.rss_growth_bytes),
            per_key(p.disk_bytes),
            per_key(p.disk_bytes) / (KEY_BYTES + VALUE_BYTES) as f64
        );
    }
    println!();
}

fn w2_get(c: &mut Criterion, config: &Config, filled: &[Filled]) {
    let mut group = new_group(c, "w2_get", config, false);
    group.throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        for f in filled {
            let id = format!("{}/{threads}t", f.kind.name());
            let store = f.store.as_ref();
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    per_op_time(iters, threads, |ops| {
                        timed_threads(threads, ops, |t, ops| {
                            let mut rng = Rng(mix(t ^ iters));
                            for _ in 0..ops {
                                std::hint::black_box(store.get(&key(rng.below(config.keys))));
                            }
                        })
                    })
                });
            });
        }
    }
    group.finish();
}

fn w4_mixed(c: &mut Criterion, config: &Config, values: &Values, filled: &[Filled]) {
    const THREADS: u64 = 2;
    let mut group = new_group(c, "w4_mixed", config, false);
    group.throughput(Throughput::Elements(1));
    for f in filled {
        let store = f.store.as_ref();
        group.bench_function(format!("{}/{THREADS}t", f.kind.name()), |b| {
            b.iter_custom(|iters| {
                per_op_time(iters, THREADS, |ops| {
                    timed_threads(THREADS, ops, |t, ops| {
                        let mut rng = Rng(mix(t ^ iters ^ 0x77));
                        for _ in 0..ops {
                            let r = rng.next();
                            let k = key((r >> 8) % config.keys);
                            if r.is_multiple_of(10) {
                                store.put(&k, values.get(r, VALUE_BYTES));
                            } else {
                                std::hint::black_box(store.get(&k));
                            }
                        }
                    })
                })
            });
        });
    }
    group.finish();
}

fn w3_durable_put(c: &mut Criterion, config: &Config, values: &Values) {
    let mut group = new_group(c, "w3_durable_put", config, false);
    group.throughput(Throughput::Elements(1));
    for kind in KINDS {
        let dir = temp_dir();
        let Some(store) = open(kind, dir.path(), Mode::Durable) else {
            continue;
        };
        let store = store.as_ref();
        let next_key = AtomicU64::new(0);
        for threads in [1u64, 2, 8, 16, 64] {
            group.bench_function(format!("{}/{threads}w", kind.name()), |b| {
                b.iter_custom(|iters| {
                    per_op_time(iters, threads, |ops| {
                        timed_threads(threads, ops, |_, ops| {
                            for _ in 0..ops {
                                let i = next_key.fetch_add(1, Ordering::Relaxed);
                                store.put(&key(i), values.get(i, VALUE_BYTES));
                            }
                        })
                    })
                });
            });
        }
    }
    group.finish();
}

fn w5_large(c: &mut Criterion, config: &Config, values: &Values) {
    let keys = config.large_keys;
    let mut group = new_group(c, "w5_large_fill", config, true);
    group.throughput(Throughput::Elements(keys));
    for kind in KINDS {
        group.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let dir = temp_dir();
                        let store = open(kind, dir.path(), Mode::Fast).expect("fast mode");
                        fill(store.as_ref(), values, keys, LARGE_VALUE_BYTES)
                    })
                    .sum()
            });
        });
    }
    group.finish();

    let mut group = new_group(c, "w5_large_get", config, false);
    group.throughput(Throughput::Elements(1));
    for kind in KINDS {
        let dir = temp_dir();
        let store = open(kind, dir.path(), Mode::Fast).expect("fast mode");
        fill(store.as_ref(), values, keys, LARGE_VALUE_BYTES);
        for i in 0..keys {
            store.get(&key(i));
        }
        let store = store.as_ref();
        group.bench_function(kind.name(), |b| {
            b.iter_custom(|iters| {
                let mut rng = Rng(mix(iters));
                let started = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(store.get(&key(rng.below(keys))));
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

/// caskade as `benches/open.rs` opens it: no background work that would write the
/// missing hints back while the "without hints" case is measured.
fn open_options() -> Options {
    Options {
        sync: SyncPolicy::Never,
        sweep_interval: Duration::from_secs(3600),
        compaction: CompactionOptions {
            enabled: false,
            bytes_per_sec: None,
            ..CompactionOptions::default()
        },
        ..Options::default()
    }
}

fn open_group(c: &mut Criterion, config: &Config, values: &Values) {
    const BATCH_OPS: u64 = 1000;
    let dir = temp_dir();
    let store = dir.path().join("store");
    let aside = dir.path().join("hints-aside");
    std::fs::create_dir_all(&aside).expect("mkdir");
    let engine = Engine::open(&store, open_options()).expect("caskade open");
    for start in (0..config.keys).step_by(BATCH_OPS as usize) {
        let mut batch = Batch::new();
        for i in start..(start + BATCH_OPS).min(config.keys) {
            let value = values.get(i, VALUE_BYTES).to_vec();
            batch.put(key(i).to_vec(), value, WriteOptions::default());
        }
        engine.apply(batch).expect("caskade apply");
    }
    // Compaction writes a hint file beside every segment it writes.
    engine.compact().expect("caskade compact");
    engine.close().expect("caskade close");

    let mut group = new_group(c, "open", config, true);
    group.throughput(Throughput::Elements(config.keys));
    let mut reopen = |name: &str| {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let started = Instant::now();
                        let engine = Engine::open(&store, open_options()).expect("open");
                        let took = started.elapsed();
                        assert_eq!(engine.stats().keys, config.keys);
                        engine.close().expect("close");
                        took
                    })
                    .sum()
            });
        });
    };
    reopen("caskade/hints");
    for entry in std::fs::read_dir(&store).expect("read_dir") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "hint")
            && let Some(name) = path.file_name()
        {
            std::fs::rename(&path, aside.join(name)).expect("move hint aside");
        }
    }
    reopen("caskade/scan");
    group.finish();
}

/// Whether a criterion filter given on the command line can select `group`: the set
/// up of a group (filling N keys per engine) is skipped when it cannot.
fn wanted(group: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    filters.is_empty()
        || filters.iter().any(|f| {
            let prefix = f.split('/').next().unwrap_or(f);
            group.contains(prefix) || prefix.contains(group)
        })
}

fn main() {
    let config = Config::from_env();
    let values = Values::new();
    if let Ok(kind) = std::env::var(MEMORY_CHILD_VAR) {
        memory_child(&kind, &config, &values);
        return;
    }
    eprintln!("engine bench: {config:?}");
    let mut c = Criterion::default().configure_from_args();
    if wanted("w1_fill") {
        w1_fill(&mut c, &config, &values);
    }
    if wanted("memory") {
        print_memory(&config);
    }
    if wanted("w2_get") || wanted("w4_mixed") {
        let filled: Vec<Filled> = KINDS
            .iter()
            .map(|&kind| filled(kind, &config, &values))
            .collect();
        w2_get(&mut c, &config, &filled);
        w4_mixed(&mut c, &config, &values, &filled);
    }
    if wanted("w3_durable_put") {
        w3_durable_put(&mut c, &config, &values);
    }
    if wanted("w5_large") {
        w5_large(&mut c, &config, &values);
    }
    if wanted("open") {
        open_group(&mut c, &config, &values);
    }
    c.final_summary();
}
