//! Log setup: `tracing` lines on stderr, human by default, JSON for collectors.
//! The level comes from `RUST_LOG` (default `info`).
//!
//! A line is formatted on the thread that logs it and appended to a shared buffer; a
//! logger thread writes the buffer to stderr every [`FLUSH_INTERVAL`], one `write(2)`
//! for everything gathered. A request so never waits for stderr, pays no syscall for
//! its access-log line (not even a wake-up of the logger thread, which sleeps on a
//! timer rather than on the buffer), and a busy server writes hundreds of lines per
//! syscall. Lines reach stderr at most about [`FLUSH_INTERVAL`] late.
//!
//! When stderr is read more slowly than lines come in and [`PENDING_BYTES_MAX`] are
//! waiting, new lines are dropped rather than making requests wait; [`dropped_lines`]
//! counts them (exported as `caskade_log_lines_dropped_total`). Dropping the
//! [`LogGuard`] (at the end of `serve`, after the runtime has stopped) writes out what
//! is pending; lines logged after that go straight to stderr. A `kill -9` loses at most
//! the last [`FLUSH_INTERVAL`] of lines.
//!
//! (`tracing_appender::non_blocking` was measured first: its logger thread blocks on a
//! channel, so nearly every line paid a futex wake-up on the request's thread, and the
//! thread's spinning cost ~4 % of a GET.)

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, mpsc};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// How often the logger thread writes out the pending lines.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes of lines that may wait for the logger thread before new lines are dropped
/// (about 40,000 access-log lines).
pub const PENDING_BYTES_MAX: usize = 8 << 20;

/// How long dropping the [`LogGuard`] waits for the last write (stderr may be a pipe
/// nobody reads any more).
const FINAL_WRITE_WAIT: Duration = Duration::from_secs(5);

/// The installed logger's buffer, for [`dropped_lines`].
static INSTALLED: OnceLock<Arc<Shared>> = OnceLock::new();

/// Installs the global subscriber. Called once, before anything logs; a second call
/// (as in tests) keeps the first subscriber and returns a guard that does nothing.
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let shared = Arc::new(Shared::default());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogWriter(shared.clone()))
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        return LogGuard { stop: None };
    }
    let _ = INSTALLED.set(shared.clone());
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

/// Lines waiting for the logger thread.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// The logger thread has stopped (or never started): write lines directly.
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves at worst a partial line behind.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the buffer closed and returns what was pending.
    fn close(&self) -> Vec<u8> {
        let mut pending = self.lock();
        pending.closed = true;
        std::mem::take(&mut pending.lines)
    }
}

/// The logger thread: every [`FLUSH_INTERVAL`], swap the pending lines for an empty
/// buffer and write them in one go, until told to stop.
fn write_out(shared: &Shared, stop: &mpsc::Receiver<()>) {
    let mut batch = Vec::new();
    loop {
        let stopping = !matches!(
            stop.recv_timeout(FLUSH_INTERVAL),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        if stopping {
            batch = shared.close();
        } else {
            std::mem::swap(&mut shared.lock().lines, &mut batch);
        }
        if !batch.is_empty() {
            // A failed write cannot be reported anywhere but stderr itself: skip it.
            let _ = std::io::stderr().lock().write_all(&batch);
            batch.clear();
        }
        if stopping {
            return;
        }
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
        let mut pending = self.0.lock();
        if pending.closed {
            // Ordered after what the logger thread wrote last, as it is under the lock.
            let _ = std::io::stderr().lock().write_all(line);
        } else if pending.lines.len() + line.len() > PENDING_BYTES_MAX {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.lines.extend_from_slice(line);
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
        assert_eq!(shared.lock().lines.len(), PENDING_BYTES_MAX);
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 1);
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
        let pending = shared.lock();
        assert!(pending.closed && pending.lines.is_empty());
    }
}
