//! An idle engine costs no CPU: the writer's bounded spin after a write ends in a
//! blocking wait. Its own test binary, so no other test's writer thread (they share
//! the name `caskade-writer`) is in this process.

mod common;

use caskade_engine::{Engine, SyncPolicy, WriteOptions};
use common::options;

/// State letter and CPU time (utime + stime, in clock ticks) of this process's thread
/// named `name`, from `/proc/self/task/*/stat`.
fn thread_state(name: &str) -> Option<(char, u64)> {
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("task entry").path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // "pid (comm) S ..." — comm may hold spaces, so split after the last ')'.
        let (head, rest) = stat.rsplit_once(") ").expect("stat has a comm");
        if !head.ends_with(&format!("({name}")) {
            continue;
        }
        let fields: Vec<&str> = rest.split(' ').collect();
        let state = fields[0].chars().next().expect("state letter");
        // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the state.
        let ticks =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        return Some((state, ticks));
    }
    None
}

#[test]
fn an_idle_engine_writer_sleeps_instead_of_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(64 * 1024, SyncPolicy::Never)).unwrap();
    for i in 0..1000 {
        engine
            .put(format!("k{i}"), "v", WriteOptions::default())
            .unwrap();
    }
    // The writer polls its channel for a bounded moment after a write, then blocks:
    // it must be seen asleep well within a second. Under `never` these puts may all be
    // written on this thread, so the writer thread may not have run yet at all — and a
    // thread names itself when it first runs: until then it is not found by its name.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let ticks_before = loop {
        let seen = thread_state("caskade-writer");
        if let Some(('S', ticks)) = seen {
            break ticks;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "writer not asleep 5 s after the last write: {seen:?}"
        );
        std::thread::yield_now();
    };
    // Idle for half a second: a spinning writer would burn ~50 ticks (at 100 Hz).
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (state, ticks_after) = thread_state("caskade-writer").expect("writer thread exists");
    assert_eq!(state, 'S', "an idle writer is blocked");
    assert!(
        ticks_after - ticks_before <= 2,
        "an idle writer used {} CPU ticks in 0.5 s",
        ticks_after - ticks_before
    );
}
