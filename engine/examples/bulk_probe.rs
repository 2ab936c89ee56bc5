//! CPU time per key of the writer's side of a bulk write, without HTTP: batches of
//! `BULK` puts (default 1000) of random keys over a store of `KEYS` keys (default
//! 100,000; 16-byte keys, 100-byte values), each batch with a detailed answer and a
//! meta carry, as the server's `POST /v1/bulk` sends them. Measured by the process's
//! CPU clock (the writer thread does the work; the submitting thread waits), under
//! `never` so that no fsync adds its noise, with segments large enough that none is
//! sealed (no hint file written meanwhile). For A/B runs of two builds, alternated.
//!
//! `KEYS=100000 BATCHES=300 INFLIGHT=64 cargo run --release -p caskade-engine --example bulk_probe`
//!
//! Bench code: it panics on errors.

mod common;

use caskade_engine::{
    Batch, CompactionOptions, Engine, MetaCarry, Options, SyncPolicy, WriteOptions,
};
use common::{cpu_ns, key, mix, var};

/// Carries the first 8 bytes of the replaced entry's meta over, as the server's
/// `CARRY_CREATED_AT` carries `created_at`.
const CARRY: MetaCarry = MetaCarry {
    word: |entry| {
        let from = entry.meta.get(..8).ok_or("short meta")?;
        Ok(u64::from_le_bytes(
            from.try_into().map_err(|_| "short meta")?,
        ))
    },
    write: |word, meta| {
        meta.get_mut(..8)
            .ok_or("short meta")?
            .copy_from_slice(&word.to_le_bytes());
        Ok(())
    },
};

fn main() {
    let keys = var("KEYS", 100_000).max(1);
    let batches = var("BATCHES", 300).max(1);
    let bulk = var("BULK", 1000).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let options = Options {
        sync: SyncPolicy::Never,
        segment_bytes: 1 << 31,
        compaction: CompactionOptions {
            enabled: false,
            ..CompactionOptions::default()
        },
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options).expect("open");
    let value = bytes::Bytes::from(vec![b'v'; 100]);
    let meta = bytes::Bytes::from(vec![7u8; 10]);
    let write = |batch: Batch| {
        let (tx, rx) = std::sync::mpsc::channel();
        engine.apply_detailed_then(batch, move |result| {
            let _ = tx.send(result.map(|applied| applied.len()));
        });
        rx.recv().expect("answer").expect("batch");
    };
    // As the server builds a bulk batch: every key a slice of one buffer, the value and
    // meta sections shared handles.
    let batch_of = |numbers: &mut dyn Iterator<Item = u64>| {
        let all: Vec<u8> = numbers.flat_map(key).collect();
        let all = bytes::Bytes::from(all);
        let mut batch = Batch::new();
        for at in (0..all.len()).step_by(16) {
            let options = WriteOptions {
                meta: meta.clone(),
                ..WriteOptions::default()
            };
            batch.put(all.slice(at..at + 16), value.clone(), options);
        }
        batch.carry_meta(CARRY);
        batch
    };
    let mut i = 0;
    while i < keys {
        let end = (i + bulk).min(keys);
        write(batch_of(&mut (i..end)));
        i = end;
    }
    // Built before the clock starts: only the writes are measured.
    let mut s = 7u64;
    let prepared: Vec<Batch> = (0..batches)
        .map(|_| {
            let mut numbers = (0..bulk).map(|_| {
                s = mix(s);
                s % keys
            });
            batch_of(&mut numbers)
        })
        .collect();
    // `INFLIGHT` batches submitted before their answers are awaited: the writer takes
    // those queued into one group (the server's 64 connections make groups of ~64).
    let inflight = var("INFLIGHT", 1).max(1) as usize;
    let started = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
    let mut prepared = prepared.into_iter().peekable();
    while prepared.peek().is_some() {
        let (tx, rx) = std::sync::mpsc::channel();
        for batch in prepared.by_ref().take(inflight) {
            let tx = tx.clone();
            engine.apply_detailed_then(batch, move |result| {
                let _ = tx.send(result.map(|applied| applied.len()));
            });
        }
        drop(tx);
        for answer in rx {
            answer.expect("batch");
        }
    }
    let cpu = cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - started;
    let stats = engine.stats();
    println!(
        "keys={keys} batches={batches} bulk={bulk} cpu_ns_per_key={:.1} index_bytes_per_key={:.1}",
        cpu as f64 / (batches * bulk) as f64,
        stats.index_bytes as f64 / stats.keys.max(1) as f64
    );
}
