# Shared by the server benchmark scripts (server.sh, server-cpu.sh, get-ratio.sh, ab-cpu.sh,
# p99.sh, redis-cpu.sh); sourced, not run. Expects ROOT (the repository) to be set.

# bench_setup NAME: a temp dir in TMP (under TMPDIR) for the run's stores and outputs;
# on exit every server started by start_server (or added to PIDS) is stopped and the
# dir removed (KEEP=1 keeps it and says where).
bench_setup() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/caskade-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "raw outputs kept in $TMP" >&2; else rm -rf "$TMP"; fi
}

# build_hello: builds the hyper hello-world (benches/hello, the HTTP ceiling) into
# target/hello and sets HELLO to its binary.
build_hello() {
  cargo build --release --manifest-path "$ROOT/benches/hello/Cargo.toml" \
    --target-dir "$ROOT/target/hello" >&2
  HELLO="$ROOT/target/hello/release/caskade-bench-hello"
}

# start_server NAME CMD...: starts CMD in the background (stdout to $TMP/NAME.out,
# stderr to $TMP/NAME.err), waits for its "listening on http://ADDR" line, sets ADDR
# and PID. Exits the script, with the server's stderr, if it does not start.
start_server() {
  local name=$1; shift
  "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
  PID=$!
  PIDS+=("$PID")
  for _ in $(seq 200); do
    ADDR=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$TMP/$name.out" | head -1)
    [ -n "$ADDR" ] && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "$name did not start:" >&2; cat "$TMP/$name.err" >&2; exit 1
}

stop_server() { kill "$1"; wait "$1" 2>/dev/null || true; }

# thread_cpu PID: one "NAME NANOSECONDS" line per thread name of process PID, the
# on-CPU time of its threads of that name summed (from /proc/PID/task/*/schedstat).
thread_cpu() {
  local t
  for t in /proc/"$1"/task/*; do
    echo "$(tr ' ' '_' <"$t/comm" 2>/dev/null) $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null)"
  done | awk 'NF == 2 {ns[$1] += $2} END {for (name in ns) print name, ns[name]}' | sort
}

# proc_ticks PID: the CPU time process PID has used (utime + stime), in clock ticks
# (`getconf CLK_TCK` a second).
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# free_port: a free loopback TCP port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_redis: Debian's redis-server as the Redis reference (`appendonly yes`,
# `appendfsync always`, no snapshots; its files in $TMP/redis) on a free loopback port.
# Its automatic AOF rewrite is off, as caskade's compaction is in these runs: a rewrite
# (a forked child past 64 MB of log) would land in some slices of a long run and not
# others. Sets REDIS_PORT and REDIS_PID once it answers PING; exits the script, with
# its output, if it does not.
start_redis() {
  REDIS_PORT=$(free_port)
  mkdir -p "$TMP/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" --appendonly yes \
    --appendfsync always --auto-aof-rewrite-percentage 0 --save '' --daemonize no \
    >"$TMP/redis.out" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  echo "redis-server did not start:" >&2; cat "$TMP/redis.out" >&2; exit 1
}
