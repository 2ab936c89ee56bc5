//! Whether this machine lets a writer hide its own work behind an `fdatasync`: the
//! bound of W3 (`benches/engine.rs`, `w3_durable_put`). A round writes one group's
//! records (`RECORDS` × 116 bytes, default 28: W3's group at 64 writers), makes them
//! durable, and spends `CPU_US` µs (default 60: the writer's staging, index updates
//! and answers for such a group, by `w3_probe`) of CPU work, in one of four ways:
//!
//! - `serial`: `pwrite`, `fdatasync`, then the work, on one thread (the engine today);
//! - `thread`: the `fdatasync` handed to a second thread that sleeps between rounds;
//! - `thread-spin`: the same, both threads polling (yielding) instead of sleeping;
//! - `uring`: the `fdatasync` submitted through io_uring while the work runs.
//!
//! Prints µs per round for each. With perfect overlap a round would take
//! max(fsync, work) instead of their sum. The file is written with zeros and synced
//! first, as the engine prepares its segments under `always` (`crate::append`).
//!
//! `ROUNDS=3000 CPU_US=60 cargo run --release -p caskade-engine --example fsync_overlap [DIR]`
//!
//! Bench code: it panics on errors. Linux only.

#[allow(dead_code)]
mod common;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use common::var;

const FILE_BYTES: usize = 64 << 20;
const RECORD_BYTES: usize = 116;

/// Spins on arithmetic for `us` microseconds.
fn work(us: u64) {
    let started = Instant::now();
    let mut x = 0u64;
    while started.elapsed() < Duration::from_micros(us) {
        for i in 0..64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
}

/// Receives, sleeping (`poll` false) or polling with `sched_yield` (`poll` true).
fn receive(rx: &Receiver<()>, poll: bool) -> bool {
    if !poll {
        return rx.recv().is_ok();
    }
    loop {
        match rx.try_recv() {
            Ok(()) => return true,
            Err(TryRecvError::Empty) => std::thread::yield_now(),
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

/// `rounds` rounds the `mode` way; the time per round.
fn run(mode: &str, file: &File, rounds: u64, records: usize, cpu_us: u64) -> Duration {
    let group = vec![1u8; records * RECORD_BYTES];
    let mut offset = 0u64;
    let mut append = || {
        file.write_all_at(&group, offset).expect("pwrite");
        offset = (offset + group.len() as u64) % (FILE_BYTES - group.len()) as u64;
    };
    let started = Instant::now();
    match mode {
        "serial" => {
            for _ in 0..rounds {
                append();
                file.sync_data().expect("fdatasync");
                work(cpu_us);
            }
        }
        "thread" | "thread-spin" => {
            let poll = mode == "thread-spin";
            let (sync_tx, sync_rx): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    while receive(&sync_rx, poll) {
                        file.sync_data().expect("fdatasync");
                        done_tx.send(()).expect("send");
                    }
                });
                for _ in 0..rounds {
                    append();
                    sync_tx.send(()).expect("send");
                    work(cpu_us);
                    assert!(receive(&done_rx, poll), "the sync thread stopped");
                }
                drop(sync_tx);
            });
        }
        "uring" => {
            let mut ring = io_uring::IoUring::new(8).expect("io_uring");
            let fd = io_uring::types::Fd(file.as_raw_fd());
            for _ in 0..rounds {
                append();
                let fsync = io_uring::opcode::Fsync::new(fd)
                    .flags(io_uring::types::FsyncFlags::DATASYNC)
                    .build();
                // SAFETY: the entry refers to `file`'s descriptor only (no buffer),
                // and `file` outlives the ring, which is waited on below each round.
                unsafe { ring.submission().push(&fsync).expect("queue full") };
                ring.submit().expect("submit");
                work(cpu_us);
                ring.submit_and_wait(1).expect("wait");
                let done = ring.completion().next().expect("a completion");
                assert!(done.result() >= 0, "fdatasync: {}", done.result());
            }
        }
        other => panic!("unknown mode {other}"),
    }
    started.elapsed() / rounds as u32
}

fn main() {
    let rounds = var("ROUNDS", 3000).max(1);
    let cpu_us = var("CPU_US", 60);
    let records = var("RECORDS", 28).max(1) as usize;
    let dir = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let scratch = tempfile::tempdir_in(Path::new(&dir)).expect("temp dir");
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(scratch.path().join("overlap.probe"))
        .expect("probe file");
    file.write_all_at(&vec![0u8; FILE_BYTES], 0).expect("zeros");
    file.sync_all().expect("sync");
    for mode in ["serial", "thread", "thread-spin", "uring"] {
        let fsync_only = run(mode, &file, rounds, records, 0);
        let with_work = run(mode, &file, rounds, records, cpu_us);
        println!(
            "{mode:12} µs per round: fsync alone {:6.1}, with {cpu_us} µs of work {:6.1}",
            fsync_only.as_secs_f64() * 1e6,
            with_work.as_secs_f64() * 1e6,
        );
    }
}
