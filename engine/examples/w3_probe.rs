//! CPU time per put of W3's durable puts (`benches/engine.rs`, `w3_durable_put`):
//! `WRITERS` threads (default 64) put `PUTS` new keys in all (default 200,000; 16-byte
//! keys, 100-byte values) under `always`, each put durable before it returns. Prints
//! puts/s, puts per fsync, and the CPU time per put of the whole process, of the writer
//! thread and of the answer thread (from `/proc/self/task/*/schedstat`). Wall-clock
//! throughput on a shared two-core VM swings by ±15 % from run to run; the writer's
//! CPU per put is what bounds a round besides the fsync, and it moves far less. For
//! A/B runs of two builds, alternated.
//!
//! `WRITERS=64 PUTS=200000 cargo run --release -p caskade-engine --example w3_probe`
//!
//! Bench code: it panics on errors.

mod common;

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use caskade_engine::{Engine, Options, SyncPolicy, WriteOptions};
use common::{cpu_ns, key, var};

/// On-CPU nanoseconds of each of this process's threads named `name`, summed.
fn thread_cpu_ns(name: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let schedstat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        total += schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

fn main() {
    let writers = var("WRITERS", 64).max(1);
    let puts = var("PUTS", 200_000).max(writers);
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        sync: SyncPolicy::Always,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options).expect("open");
    let value = vec![7u8; 100];
    let next = AtomicU64::new(0);
    let ready = Barrier::new(writers as usize + 1);
    let before = engine.stats();
    let (wall, process_ns, writer_ns, answer_ns) = std::thread::scope(|scope| {
        for _ in 0..writers {
            scope.spawn(|| {
                ready.wait();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= puts {
                        break;
                    }
                    engine
                        .put(key(i).to_vec(), value.clone(), WriteOptions::default())
                        .expect("put");
                }
                ready.wait();
            });
        }
        let counted = || {
            (
                cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
                thread_cpu_ns("caskade-writer"),
                thread_cpu_ns("caskade-answer"),
            )
        };
        ready.wait();
        let (process, writer, answer) = counted();
        let started = Instant::now();
        ready.wait();
        let wall = started.elapsed();
        let (process2, writer2, answer2) = counted();
        (wall, process2 - process, writer2 - writer, answer2 - answer)
    });
    let fsyncs = engine.stats().fsyncs - before.fsyncs;
    let per_put = |ns: u64| ns as f64 / puts as f64 / 1000.0;
    println!(
        "{writers} writers: {:.1} k puts/s, {:.1} puts per fsync; CPU µs per put: \
         process {:.2}, writer {:.2}, answer {:.2}",
        puts as f64 / wall.as_secs_f64() / 1000.0,
        puts as f64 / fsyncs.max(1) as f64,
        per_put(process_ns),
        per_put(writer_ns),
        per_put(answer_ns),
    );
}
