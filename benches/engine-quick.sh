#!/usr/bin/env bash
# Every group of the engine benchmark (benches/engine.rs) with a small N and short
# measurements, so the benchmark keeps compiling and running; the numbers mean little.
# Needs Rust 1.90+ (the latest fjall and redb). Extra arguments go to criterion,
# e.g. a filter: benches/engine-quick.sh w2_get
set -euo pipefail
cd "$(dirname "$0")/.."
export CASKADE_BENCH_N=${CASKADE_BENCH_N:-20000}
export CASKADE_BENCH_N_LARGE=${CASKADE_BENCH_N_LARGE:-100}
export CASKADE_BENCH_SECS=${CASKADE_BENCH_SECS:-0.3}
cargo bench --locked --features bench-peers --bench engine -- --noplot "$@"
