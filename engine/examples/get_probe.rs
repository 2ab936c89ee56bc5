//! CPU time per point get on a store filled like the engine benchmark's `w2_get`
//! (16-byte keys, 100-byte values, every key read once before), measured by the calling
//! thread's CPU clock: time the thread spends descheduled on a busy machine does not
//! count, unlike criterion's wall clock. For A/B runs of two builds, alternated.
//!
//! `N` keys (default 1,000,000), `GETS` random gets (default 3,000,000):
//! `N=1000000 GETS=3000000 cargo run --release -p caskade-engine --example get_probe`
//!
//! Bench code: it panics on errors.

mod common;

use caskade_engine::{Engine, Options, SyncPolicy, WriteOptions};
use common::{cpu_ns, key, mix, var};

fn main() {
    let n = var("N", 1_000_000).max(1);
    let gets = var("GETS", 3_000_000).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        sync: SyncPolicy::Never,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options).expect("open");
    let mut pool = Vec::new();
    let mut s = 42u64;
    while pool.len() < 1 << 20 {
        s = mix(s);
        pool.extend_from_slice(&s.to_le_bytes());
    }
    for i in 0..n {
        let start = (mix(i) % (pool.len() as u64 - 100)) as usize;
        let value = pool[start..start + 100].to_vec();
        engine
            .put(key(i).to_vec(), value, WriteOptions::default())
            .expect("put");
    }
    engine.sync().expect("sync");
    let read = |i: u64| {
        let entry = engine.get(&key(i)).expect("get").expect("key present");
        std::hint::black_box(entry.value.len());
    };
    (0..n).for_each(read);
    let mut rng = 7u64;
    let cpu = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID);
    let wall = std::time::Instant::now();
    for _ in 0..gets {
        rng = rng.wrapping_add(1);
        read(mix(rng.wrapping_mul(0x2545_f491_4f6c_dd1d)) % n);
    }
    let cpu = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID) - cpu;
    let wall = wall.elapsed().as_nanos() as f64;
    println!(
        "cpu_ns_per_get {:.1} wall_ns_per_get {:.1}",
        cpu as f64 / gets as f64,
        wall / gets as f64
    );
}
