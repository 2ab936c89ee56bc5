//! Log setup: `tracing` lines on stderr, human by default, JSON for collectors.
//! The level comes from `RUST_LOG` (default `info`).
//!
//! A line is formatted on the thread that logs it and appended to that thread's buffer
//! (its lane); a logger thread writes the lanes to stderr every [`FLUSH_INTERVAL`], one
//! `write(2)` for everything gathered. A request so never waits for stderr, pays no
//! syscall for its access-log line (not even a wake-up of the logger thread, which
//! sleeps on a timer rather than on the buffers), takes no lock another core holds,
//! and a busy server writes hundreds of lines per syscall. Lines reach stderr at most
//! about [`FLUSH_INTERVAL`] late.
//!
//! When stderr is read more slowly than lines come in and [`PENDING_BYTES_MAX`] are
//! waiting in a thread's lane, its new lines are dropped rather than making requests
//! wait; [`dropped_lines`] counts them (exported as `caskade_log_lines_dropped_total`).
//! Dropping the [`LogGuard`] (at the end of `serve`, after the runtime has stopped)
//! writes out what is pending; lines logged after that go straight to stderr. A `kill
//! -9` loses at most the last [`FLUSH_INTERVAL`] of lines.
//!
//! (`tracing_appender::non_blocking` was measured first: its logger thread blocks on a
//! channel, so nearly every line paid a futex wake-up on the request's thread, and the
//! thread's spinning cost ~4 % of a GET.)

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// How often the logger thread writes out the pending lines.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes of lines of one thread that may wait for the logger thread before its new
/// lines are dropped (about 40,000 access-log lines).
pub const PENDING_BYTES_MAX: usize = 8 << 20;

/// How long dropping the [`LogGuard`] waits for the last write (stderr may be a pipe
/// nobody reads any more).
const FINAL_WRITE_WAIT: Duration = Duration::from_secs(5);

/// The installed logger's buffer, for [`dropped_lines`] and [`access`].
static INSTALLED: OnceLock<Arc<Shared>> = OnceLock::new();

/// How [`access`] writes its line: set when [`init`] installed a plain (non-ANSI)
/// subscriber of ours; unset means the access line goes through `tracing`.
static ACCESS_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The `target` the access-log line carries (the module that used to log it).
pub const ACCESS_TARGET: &str = "caskade_server::app";

/// Installs the global subscriber. Called once, before anything logs; a second call
/// (as in tests) keeps the first subscriber and returns a guard that does nothing.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let shared = Arc::new(Shared::default());
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter(shared.clone()))
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        return LogGuard { stop: None };
    }
    let _ = INSTALLED.set(shared.clone());
    if !ansi {
        let _ = ACCESS_FORMAT.set(format);
    }
    let (stop_tx, stop_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("caskade-log".into())
        .spawn(move || {
            write_out(&thread_shared, &stop_rx);
            let _ = done_tx.send(());
        });
    if spawned.is_err() {
        // No logger thread: every line is written by the thread that logs it.
        shared.close();
        return LogGuard { stop: None };
    }
    LogGuard {
        stop: Some((stop_tx, done_rx)),
    }
}

/// Log lines dropped so far because stderr was read too slowly.
pub fn dropped_lines() -> u64 {
    INSTALLED
        .get()
        .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
}

thread_local! {
    /// The id of the request this thread is serving without a `tracing` span
    /// ([`with_request`], [`in_request`]); empty otherwise.
    static SPANLESS_REQUEST: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Clears [`SPANLESS_REQUEST`] when dropped, so a panic in the scope cannot leave a
/// stale id behind for the next request on the thread.
struct SpanlessScope;

impl SpanlessScope {
    fn enter(request_id: &str) -> SpanlessScope {
        SPANLESS_REQUEST.with_borrow_mut(|id| {
            id.clear();
            id.push_str(request_id);
        });
        SpanlessScope
    }
}

impl Drop for SpanlessScope {
    fn drop(&mut self) {
        SPANLESS_REQUEST.with_borrow_mut(String::clear);
    }
}

/// Runs `serve` for the request `request_id` without building its `request` span: the
/// dispatcher serves the common GET and PUT this way (a span costs a few allocations
/// and a formatted field per request). An error line logged meanwhile goes through
/// [`in_request_span`], which builds the span then, so it still names the request.
pub fn with_request<T>(request_id: &str, serve: impl FnOnce() -> T) -> T {
    let _scope = SpanlessScope::enter(request_id);
    serve()
}

/// [`with_request`] for a future: the id is set for each poll of `fut` and cleared
/// after it (a runtime thread polls one task at a time, so polls do not nest).
pub async fn in_request<F: Future>(request_id: &str, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        let _scope = SpanlessScope::enter(request_id);
        fut.as_mut().poll(cx)
    })
    .await
}

/// Runs `log` (which logs a line) inside a `request{request_id}` span when it is
/// called under [`with_request`] or [`in_request`], so the line names its request as
/// a line logged by a request served through the router does; as it is otherwise.
pub fn in_request_span<T>(log: impl FnOnce() -> T) -> T {
    let id = SPANLESS_REQUEST.with_borrow(|id| (!id.is_empty()).then(|| id.clone()));
    match id {
        Some(id) => {
            tracing::info_span!(target: ACCESS_TARGET, "request", request_id = %id).in_scope(log)
        }
        None => log(),
    }
}

/// One request's access-log line. [`access`] writes exactly what `tracing`'s fmt layer
/// printed for the `request` event (target [`ACCESS_TARGET`]) inside a
/// `request{request_id}` span, in either format, without building the span or the event.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    /// The request id (client-supplied ids are already checked to be plain ASCII).
    pub request_id: &'a str,
    /// The method as sent.
    pub method: &'a str,
    /// The route template, or [`crate::routes::UNMATCHED`].
    pub route: &'a str,
    /// The request path, without the query.
    pub path: &'a str,
    /// The response status.
    pub status: u16,
    /// Time from request head to response head, in microseconds (logged as
    /// milliseconds).
    pub latency_us: u64,
}

impl Access<'_> {
    /// The latency as the `latency_ms` field shows it.
    pub fn latency_ms(&self) -> f64 {
        self.latency_us as f64 / 1000.0
    }
}

/// Writes the access-log line straight into the pending buffer. Returns `false` when
/// it wrote nothing because this logger is not the installed one or colours are on
/// (a terminal): the caller then logs the line through `tracing`. A line that the
/// `RUST_LOG` filter turns off (by target and level) is not written, and `true` is
/// returned.
pub fn access(line: &Access<'_>) -> bool {
    let (Some(format), Some(shared)) = (ACCESS_FORMAT.get(), INSTALLED.get()) else {
        return false;
    };
    if !tracing::event_enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return true;
    }
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with_borrow_mut(|buf| {
        buf.clear();
        format_access(*format, std::time::SystemTime::now(), line, buf);
        let _ = LineWriter(shared).write(buf);
    });
    true
}

/// The bytes of an access-log line written at `now`, newline included.
fn format_access(
    format: LogFormat,
    now: std::time::SystemTime,
    line: &Access<'_>,
    out: &mut Vec<u8>,
) {
    // Writes into a Vec cannot fail.
    match format {
        LogFormat::Text => {
            write_stamp(now, out);
            out.extend_from_slice(b"  INFO request{request_id=");
            out.extend_from_slice(line.request_id.as_bytes());
            out.extend_from_slice(b"}: ");
            out.extend_from_slice(ACCESS_TARGET.as_bytes());
            out.extend_from_slice(b": request method=");
            out.extend_from_slice(line.method.as_bytes());
            out.extend_from_slice(b" route=");
            debug_str(line.route, out);
            out.extend_from_slice(b" path=");
            debug_str(line.path, out);
            out.extend_from_slice(b" status=");
            out.extend_from_slice(itoa::Buffer::new().format(line.status).as_bytes());
            out.extend_from_slice(b" latency_ms=");
            write_latency_ms(line.latency_us, out);
            out.push(b'\n');
        }
        LogFormat::Json => {
            out.extend_from_slice(b"{\"timestamp\":\"");
            write_stamp(now, out);
            out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
            json_str(line.method, out);
            out.extend_from_slice(b",\"route\":");
            json_str(line.route, out);
            out.extend_from_slice(b",\"path\":");
            json_str(line.path, out);
            out.extend_from_slice(b",\"status\":");
            out.extend_from_slice(itoa::Buffer::new().format(line.status).as_bytes());
            out.extend_from_slice(b",\"latency_ms\":");
            let _ = serde_json::to_writer(&mut *out, &line.latency_ms());
            out.extend_from_slice(b",\"target\":");
            json_str(ACCESS_TARGET, out);
            for (open, close) in [
                (&b",\"span\":{\"request_id\":"[..], &b"}"[..]),
                (b",\"spans\":[{\"request_id\":", b"}]"),
            ] {
                out.extend_from_slice(open);
                json_str(line.request_id, out);
                out.extend_from_slice(b",\"name\":\"request\"");
                out.extend_from_slice(close);
            }
            out.extend_from_slice(b"}\n");
        }
    }
}

/// `now` as `humantime::format_rfc3339_micros` (and `tracing`'s timer) writes it,
/// `2026-11-26T15:20:00.134860Z`; the part up to the seconds is formatted once per
/// second per thread. A clock before 1970 (which humantime refuses) shows as 1970.
fn write_stamp(now: std::time::SystemTime, out: &mut Vec<u8>) {
    /// `YYYY-MM-DDTHH:MM:SS` of the second last formatted on this thread.
    type Prefix = (u64, [u8; 19]);
    thread_local! {
        static PREFIX: std::cell::Cell<Prefix> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let (cached, mut prefix) = PREFIX.get();
    if cached != seconds {
        let whole = std::time::UNIX_EPOCH + Duration::from_secs(seconds);
        let mut text = String::new();
        // humantime refuses years past 9999 (an error, not a longer text); the slow way
        // then writes what it can.
        let _ = std::fmt::Write::write_fmt(
            &mut text,
            format_args!("{}", humantime::format_rfc3339_seconds(whole)),
        );
        let Some(head) = text.as_bytes().get(..19).filter(|_| text.len() == 20) else {
            return write_stamp_slowly(now, out);
        };
        prefix.copy_from_slice(head);
        PREFIX.set((seconds, prefix));
    }
    out.extend_from_slice(&prefix);
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(since.subsec_micros()).as_bytes();
    out.push(b'.');
    out.extend_from_slice(&b"000000"[digits.len().min(6)..]);
    out.extend_from_slice(digits);
    out.push(b'Z');
}

/// [`write_stamp`] without the cache, for a clock past year 9999, which humantime
/// refuses with an error: the stamp is then left out, and nothing panics.
fn write_stamp_slowly(now: std::time::SystemTime, out: &mut Vec<u8>) {
    let mut text = String::new();
    let _ = std::fmt::Write::write_fmt(
        &mut text,
        format_args!("{}", humantime::format_rfc3339_micros(now)),
    );
    out.extend_from_slice(text.as_bytes());
}

/// `us` microseconds as milliseconds, exactly as `{:?}` writes `us as f64 / 1000.0`
/// (what the text format did for the field) but with integer digits: the float's
/// shortest round-trip form is the decimal `us / 1000` itself (three decimals at most,
/// trailing zeros dropped, at least one) as long as it has at most 15 significant
/// digits, which an `f64` always tells apart (`f64::DIGITS`); larger values (31 years
/// and more) take the float's way. Formatting the float was ~3 % of the server's
/// instructions per durable PUT and ~6 % per GET (docs/benchmarks.md).
fn write_latency_ms(us: u64, out: &mut Vec<u8>) {
    const DISTINCT_BELOW: u64 = 1_000_000_000_000_000;
    if us >= DISTINCT_BELOW {
        let _ = write!(out, "{:?}", us as f64 / 1000.0);
        return;
    }
    out.extend_from_slice(itoa::Buffer::new().format(us / 1000).as_bytes());
    out.push(b'.');
    let frac = us % 1000;
    let digits = [frac / 100, frac / 10 % 10, frac % 10].map(|d| b'0' + d as u8);
    let shown = if frac.is_multiple_of(100) {
        1
    } else if frac.is_multiple_of(10) {
        2
    } else {
        3
    };
    out.extend_from_slice(&digits[..shown]);
}

/// `s` as Rust's `{:?}` writes it (what the text format does for string fields),
/// without the formatting machinery when nothing needs escaping.
fn debug_str(s: &str, out: &mut Vec<u8>) {
    if is_debug_plain(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// True when `bytes` are printable ASCII but `"` and `\\` (what `{:?}` writes as they
/// are), checked a word at a time in one pass.
fn is_debug_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Each test sets the high bit of a byte lane (or of some lane, when one matches)
    // for: a zero byte (after xor: the byte equals the one xored with); a byte below
    // 0x20; a byte of 0x7f or more ((b & 0x7f) + 1 reaches 0x80 only for 0x7f, and
    // cannot carry into the next lane).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let stops = |w: u64| {
        (zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w)
            | (((w & !HIGH) + ONES) | w))
            & HIGH
    };
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        if stops(u64::from_le_bytes(word)) != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `s` as a JSON string, escaped as `serde_json` does (what the JSON format uses).
fn json_str(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Keeps the logger thread; dropping it writes out every pending line.
#[must_use = "dropping the guard stops the logger thread; keep it until the process exits"]
pub struct LogGuard {
    /// Tells the logger thread to stop; answers when it has written the last lines.
    stop: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some((stop, done)) = self.stop.take() {
            let _ = stop.send(());
            let _ = done.recv_timeout(FINAL_WRITE_WAIT);
        }
    }
}

/// Lines waiting for the logger thread, in one lane per thread that logs: a thread
/// appends its lines to its own lane, under a lock that only the logger thread also
/// takes (once per [`FLUSH_INTERVAL`]). One buffer for every thread bounced its lock
/// between the cores on every line: ~1.5 % of a GET's CPU time on a 2-core machine,
/// and a point where every request met every other on a machine with more cores.
/// The logger thread writes the lanes one after the other, so lines of different
/// threads logged within one [`FLUSH_INTERVAL`] may come out of time order (each line
/// carries its own timestamp); one thread's lines keep their order.
#[derive(Default)]
struct Shared {
    lanes: Mutex<Lanes>,
    dropped: AtomicU64,
    /// Tells this logger's lanes from another's in a thread's [`LANE`] (tests make
    /// several; an address could be reused).
    id: LoggerId,
}

/// A process-unique number for each [`Shared`].
struct LoggerId(u64);

impl Default for LoggerId {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        LoggerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

#[derive(Default)]
struct Lanes {
    list: Vec<Arc<Lane>>,
    /// The logger thread has stopped (or never started): lanes made now start closed.
    closed: bool,
}

/// One thread's pending lines.
#[derive(Default)]
struct Lane {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// At most [`PENDING_BYTES_MAX`].
    lines: Vec<u8>,
    /// The logger thread has stopped (or never started): write lines directly.
    closed: bool,
}

thread_local! {
    /// This thread's lane, and the id of the logger it belongs to.
    static LANE: RefCell<Option<(u64, Arc<Lane>)>> = const { RefCell::new(None) };
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves at worst a partial line behind.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Shared {
    fn lanes(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on this thread's lane, made on the thread's first line; `None` when
    /// the thread is exiting and its lane is gone.
    fn with_lane<R>(&self, f: impl FnOnce(&Lane) -> R) -> Option<R> {
        LANE.try_with(|slot| {
            let mut slot = slot.borrow_mut();
            let lane = match &*slot {
                Some((id, lane)) if *id == self.id.0 => lane,
                _ => {
                    let mut lanes = self.lanes();
                    let lane = Arc::new(Lane::default());
                    lane.lock().closed = lanes.closed;
                    lanes.list.push(lane.clone());
                    &slot.insert((self.id.0, lane)).1
                }
            };
            f(lane)
        })
        .ok()
    }

    /// Moves every lane's lines to the end of `batch`, and forgets the lanes of threads
    /// that have exited (the list then holds their lane's last reference).
    fn take_pending(&self, batch: &mut Vec<u8>) {
        self.lanes().list.retain(|lane| {
            let mut pending = lane.lock();
            batch.extend_from_slice(&pending.lines);
            pending.lines.clear();
            Arc::strong_count(lane) > 1
        });
    }

    /// Marks every lane closed and returns what was pending.
    fn close(&self) -> Vec<u8> {
        let mut lanes = self.lanes();
        lanes.closed = true;
        let mut batch = Vec::new();
        for lane in &lanes.list {
            let mut pending = lane.lock();
            pending.closed = true;
            batch.append(&mut pending.lines);
        }
        batch
    }
}

/// The logger thread: every [`FLUSH_INTERVAL`], swap the pending lines for an empty
/// buffer and write them in one go, until told to stop.
fn write_out(shared: &Shared, stop: &mpsc::Receiver<()>) {
    let mut batch = Vec::new();
    let mut writeback = Writeback::of_stderr();
    loop {
        let stopping = !matches!(
            stop.recv_timeout(FLUSH_INTERVAL),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        if stopping {
            batch = shared.close();
        } else {
            shared.take_pending(&mut batch);
        }
        if !batch.is_empty() {
            // A failed write cannot be reported anywhere but stderr itself: skip it.
            let _ = std::io::stderr().lock().write_all(&batch);
            writeback.wrote(batch.len());
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

/// Bytes of log written to a regular file after which the logger thread starts their
/// writeback itself. Left to the kernel, a busy server's log (~8 MB/s at 40 k requests
/// per second) reaches the disk in one burst when its dirty pages expire (30 s after
/// they were written, by default), and when that file is on the data folder's disk the
/// burst holds up the writer's `fdatasync`: 275–431 ms stalls of every durable write,
/// measured (docs/benchmarks.md, "p99"). Started a mebibyte at a time, the log goes out
/// as a steady trickle instead. PostgreSQL's `*_flush_after` settings do the same.
const LOG_WRITEBACK_AFTER: usize = 1 << 20;

/// Starts the writeback of stderr's written bytes every [`LOG_WRITEBACK_AFTER`], when
/// stderr is a regular file (not a terminal, pipe or journal socket).
struct Writeback {
    regular_file: bool,
    unstarted: usize,
}

impl Writeback {
    fn of_stderr() -> Writeback {
        let regular_file = nix::sys::stat::fstat(std::io::stderr())
            .is_ok_and(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG);
        Writeback {
            regular_file,
            unstarted: 0,
        }
    }

    fn wrote(&mut self, bytes: usize) {
        if !self.regular_file {
            return;
        }
        self.unstarted += bytes;
        if self.unstarted < LOG_WRITEBACK_AFTER {
            return;
        }
        self.unstarted = 0;
        use std::os::fd::AsRawFd;
        let fd = std::io::stderr().as_raw_fd();
        // SAFETY: `sync_file_range` takes only integers and reads no memory of this
        // process; `fd` is stderr's descriptor, open for the process's whole life.
        // With only `SYNC_FILE_RANGE_WRITE` it starts the writeback of the file's dirty
        // pages (offset 0, length 0: all of them) and does not wait for it. Its result
        // is advice taken or not: a failure changes nothing that was written.
        let _ = unsafe { nix::libc::sync_file_range(fd, 0, 0, nix::libc::SYNC_FILE_RANGE_WRITE) };
    }
}

/// What the subscriber writes through: one `write` call per formatted line.
struct LogWriter(Arc<Shared>);

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&self.0)
    }
}

/// Appends lines to the pending buffer, or drops them when it is full.
struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let appended = self.0.with_lane(|lane| {
            let mut pending = lane.lock();
            if pending.closed {
                return false;
            }
            if pending.lines.len() + line.len() > PENDING_BYTES_MAX {
                self.0.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                pending.lines.extend_from_slice(line);
            }
            true
        });
        if appended != Some(true) {
            // No logger thread to write it, or a thread exiting: straight to stderr.
            let _ = std::io::stderr().lock().write_all(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_cap_are_dropped_and_counted() {
        let shared = Shared::default();
        let mut writer = LineWriter(&shared);
        let line = vec![b'x'; PENDING_BYTES_MAX / 2];
        for _ in 0..3 {
            assert_eq!(writer.write(&line).ok(), Some(line.len()));
        }
        let mut batch = Vec::new();
        shared.take_pending(&mut batch);
        assert_eq!(batch.len(), PENDING_BYTES_MAX);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 1);
    }

    /// Every thread's lines reach the batch, each thread's in its order; the lane of
    /// a thread that has exited is forgotten once emptied.
    #[test]
    fn lines_of_every_thread_are_taken_and_lanes_of_exited_threads_forgotten() {
        let shared = Shared::default();
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..3)
                .map(|t| {
                    let shared = &shared;
                    s.spawn(move || {
                        for i in 0..100 {
                            let line = format!("t{t} {i}\n");
                            LineWriter(shared)
                                .write_all(line.as_bytes())
                                .expect("append");
                        }
                    })
                })
                .collect();
            // Joined by hand: `join` returns once a thread has exited, its
            // thread-locals (its hold on its lane) dropped; the scope's own wait may
            // return before that.
            for thread in threads {
                thread.join().expect("thread");
            }
        });
        LineWriter(&shared).write_all(b"main\n").expect("append");
        assert_eq!(shared.lanes().list.len(), 4);
        let mut batch = Vec::new();
        shared.take_pending(&mut batch);
        let text = String::from_utf8(batch).expect("UTF-8");
        for t in 0..3 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let want: Vec<String> = (0..100).map(|i| format!("t{t} {i}")).collect();
            assert_eq!(mine, want);
        }
        assert_eq!(text.lines().filter(|l| *l == "main").count(), 1);
        // The three threads are gone; this one's lane stays.
        assert_eq!(shared.lanes().list.len(), 1);
        LineWriter(&shared).write_all(b"again\n").expect("append");
        let mut batch = Vec::new();
        shared.take_pending(&mut batch);
        assert_eq!(batch, b"again\n");
    }

    /// What the subscriber wrote, for comparing with [`format_access`].
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("capture lock")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;

        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// The access line as `tracing` printed it before [`access`] existed: an event
    /// with these fields inside a `request` span.
    fn through_tracing(format: LogFormat, line: &Access<'_>) -> String {
        let capture = Capture::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(capture.clone())
            .with_ansi(false);
        let emit = || {
            let span = tracing::info_span!(target: ACCESS_TARGET, "request", request_id = %line.request_id);
            span.in_scope(|| {
                tracing::info!(target: ACCESS_TARGET, method = %line.method, route = line.route,
                    path = line.path.to_owned(), status = line.status,
                    latency_ms = line.latency_ms(), "request");
            });
        };
        match format {
            LogFormat::Text => tracing::subscriber::with_default(builder.finish(), emit),
            LogFormat::Json => {
                tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit)
            }
        }
        let bytes = capture.0.lock().expect("capture lock").clone();
        String::from_utf8(bytes).expect("UTF-8 log line")
    }

    /// Splits a line into its timestamp and the rest.
    fn split_stamp(format: LogFormat, line: &str) -> (String, String) {
        let (stamp, rest) = match format {
            LogFormat::Text => line.split_once("  INFO").expect("a level"),
            LogFormat::Json => line
                .strip_prefix("{\"timestamp\":\"")
                .and_then(|l| l.split_once("\",\"level\""))
                .expect("a timestamp first"),
        };
        (stamp.to_owned(), rest.to_owned())
    }

    #[test]
    fn access_lines_are_byte_for_byte_what_tracing_printed() {
        let plain = Access {
            request_id: "3c385bb9c1c74dd1bbcaf9c0eaa27fc2",
            method: "GET",
            route: "/v1/kv/{entity}/{key}",
            path: "/v1/kv/user/alice",
            status: 200,
            latency_us: 101,
        };
        let odd = Access {
            request_id: "client.id:7/+=@-",
            method: "BREW",
            route: crate::routes::UNMATCHED,
            path: "/v1/a\"b\\c/é/\u{7f}/\u{1}",
            status: 404,
            latency_us: 0,
        };
        let slow = Access {
            status: 201,
            latency_us: 12_345_678,
            ..plain
        };
        let tiny = Access {
            latency_us: 1,
            ..plain
        };
        let round = Access {
            latency_us: 3_000,
            ..plain
        };
        for format in [LogFormat::Text, LogFormat::Json] {
            for line in [plain, odd, slow, tiny, round] {
                let before = through_tracing(format, &line);
                let mut mine = Vec::new();
                format_access(format, std::time::SystemTime::now(), &line, &mut mine);
                let mine = String::from_utf8(mine).expect("UTF-8 log line");
                let (their_stamp, theirs) = split_stamp(format, &before);
                let (my_stamp, rest) = split_stamp(format, &mine);
                assert_eq!(rest, theirs, "{format:?}: {mine} vs {before}");
                assert_eq!(my_stamp.len(), their_stamp.len(), "{mine} vs {before}");
                let parse = |s: &str| humantime::parse_rfc3339(s).expect("an RFC 3339 time");
                let apart = parse(&my_stamp)
                    .duration_since(parse(&their_stamp))
                    .unwrap_or_default();
                assert!(apart < Duration::from_secs(60), "{mine} vs {before}");
            }
        }
    }

    #[test]
    fn latencies_are_written_as_the_float_debug_form() {
        let large = [
            999_999_999,
            123_456_789_012,
            999_999_999_999_999,
            1_000_000_000_000_000,
            (1 << 53) - 1,
            u64::MAX,
        ];
        for us in (0..200_000).chain(large) {
            let mut mine = Vec::new();
            write_latency_ms(us, &mut mine);
            assert_eq!(
                String::from_utf8(mine).expect("ASCII"),
                format!("{:?}", us as f64 / 1000.0),
                "{us} µs"
            );
        }
    }

    #[test]
    fn timestamps_are_humantimes_micros() {
        let epoch = std::time::UNIX_EPOCH;
        for micros in [
            0_u64,
            1,
            999_999,
            1_000_000,
            1_795_684_483_000_007,
            1_795_684_483_000_070,
            1_795_684_483_120_000,
            1_795_684_484_999_999,
            253_402_300_799_999_999,
        ] {
            let now = epoch + Duration::from_micros(micros);
            let mut out = Vec::new();
            write_stamp(now, &mut out);
            let expected = humantime::format_rfc3339_micros(now).to_string();
            assert_eq!(String::from_utf8_lossy(&out), expected);
        }
        // A clock past year 9999 (humantime refuses it) must not panic a request.
        write_stamp(
            epoch + Duration::from_secs(253_402_300_800),
            &mut Vec::new(),
        );
        let mut early = Vec::new();
        write_stamp(epoch - Duration::from_secs(1), &mut early);
        assert_eq!(early, b"1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn the_logger_thread_writes_out_what_is_pending_when_stopped() {
        let shared = Shared::default();
        LineWriter(&shared)
            .write_all(b"last words\n")
            .expect("append");
        let (stop_tx, stop_rx) = mpsc::channel();
        stop_tx.send(()).expect("stop");
        write_out(&shared, &stop_rx);
        let lanes = shared.lanes();
        assert!(lanes.closed);
        for lane in &lanes.list {
            let pending = lane.lock();
            assert!(pending.closed && pending.lines.is_empty());
        }
        // A lane made after the close starts closed.
        drop(lanes);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = shared.with_lane(|lane| assert!(lane.lock().closed));
            });
        });
    }

    /// The word-at-a-time check says what a byte-at-a-time one says, for every byte
    /// value in every lane of a word and in the remainder after the words.
    #[test]
    fn the_plain_check_agrees_with_a_bytewise_one() {
        for len in [1, 8, 9, 16, 23] {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let bytewise = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
                    assert_eq!(is_debug_plain(&bytes), bytewise, "{len} {at} {b:#x}");
                }
            }
        }
        assert!(is_debug_plain(b""));
    }

    proptest::proptest! {
        /// The fast path of `debug_str` writes what `{:?}` writes, for paths of any
        /// bytes a client can send (a DEL, quotes, escapes, non-ASCII included).
        #[test]
        fn debug_str_writes_what_debug_formatting_writes(
            s in "(/v1/kv/[a-z]{0,5}|[\\x00-\\x7f]|[\"\\\\\u{7f}\u{80}é☃]|/k[0-9]{0,12}){0,12}"
        ) {
            let mut out = Vec::new();
            debug_str(&s, &mut out);
            proptest::prop_assert_eq!(String::from_utf8(out).expect("UTF-8"), format!("{s:?}"));
        }
    }
}
