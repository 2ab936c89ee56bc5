//! `caskade serve`: bind, announce, open the store, serve connections with timeouts,
//! and shut down gracefully on SIGINT or SIGTERM.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use caskade_engine::Engine;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::app::App;
use crate::auth::Tokens;
use crate::config::ServeArgs;
use crate::state::{AppState, Shared};

/// Exit code for a configuration the server refuses (same as clap's usage errors).
pub const EXIT_CONFIG: u8 = 2;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Runs `caskade serve`; the process exits with what this returns.
pub fn run(args: ServeArgs) -> ExitCode {
    // Declared first so it is dropped last: every line logged until the runtime is
    // gone gets written out.
    let _log = crate::logging::init(args.log_format);
    if let Err(e) = ignore_file_size_signal() {
        eprintln!("caskade: error: cannot ignore SIGXFSZ: {e}");
        return ExitCode::FAILURE;
    }
    raise_open_files_limit();
    let tokens = match prepare(&args) {
        Ok(tokens) => tokens,
        Err(message) => {
            eprintln!("caskade: error: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("caskade: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args, tokens))
}

/// Makes a write past the file-size limit (`ulimit -f`, RLIMIT_FSIZE) fail with
/// EFBIG instead of killing the process with SIGXFSZ: the engine then answers 507
/// `storage-full` for that write and keeps serving, as it does for a full disk.
fn ignore_file_size_signal() -> nix::Result<()> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: `SigIgn` installs no handler function, so no code runs in signal
    // context and nothing here can break async-signal safety; the disposition is
    // set once, before the runtime starts any thread.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.map(drop)
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime and nginx's
/// `worker_rlimit_nofile` do: every connection holds a descriptor, and the common soft
/// default of 1024 would let a thousand idle clients lock everyone else out. When the
/// limit is reached anyway, `accept` fails, the accept loop pauses for
/// [`ACCEPT_BACKOFF`] and waiting clients are taken once descriptors free up.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => warn!("cannot read the open-files limit: {e}"),
    }
}

/// Checks that need no network: the exposure rule, the backup folder and the token
/// file.
fn prepare(args: &ServeArgs) -> Result<Option<Tokens>, String> {
    args.check_exposure()?;
    args.check_backup_dir()?;
    args.auth_tokens.as_deref().map(Tokens::load).transpose()
}

/// Limits of one connection.
#[derive(Clone, Copy, Debug)]
struct ConnLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl ConnLimits {
    fn of(args: &ServeArgs) -> ConnLimits {
        ConnLimits {
            header_read_timeout: args.header_read_timeout(),
            idle_timeout: args.idle_timeout(),
        }
    }
}

async fn serve(args: ServeArgs, tokens: Option<Tokens>) -> ExitCode {
    let started_at = Instant::now();
    let (signals, listener) = match listen(&args).await {
        Ok(started) => started,
        Err(message) => {
            error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let app = App::new(tokens, args.max_inflight_requests);
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(
        listener,
        app.clone(),
        ConnLimits::of(&args),
        stop_rx,
    ));
    let opened = open_engine(&args).await;
    match opened {
        Ok(engine) => {
            app.set_ready(app_state(engine, &args, started_at));
            info!(data_dir = %args.data_dir.display(), "ready");
            signals.wait().await;
            shut_down(&app, stop_tx, accept, args.shutdown_timeout()).await;
            close_engine(&app).await
        }
        Err(message) => {
            error!(data_dir = %args.data_dir.display(), "cannot open the store: {message}");
            shut_down(&app, stop_tx, accept, args.shutdown_timeout()).await;
            ExitCode::FAILURE
        }
    }
}

/// Installs the signal handlers, binds and announces. Handlers come first: a SIGTERM
/// right after the announcement must shut down cleanly, not kill the process raw.
async fn listen(args: &ServeArgs) -> Result<(Signals, TcpListener), String> {
    let signals = Signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listening address: {e}"))?;
    announce(addr);
    Ok((signals, listener))
}

/// The one line on stdout that tells scripts and tests where we listen.
fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "caskade listening on http://{addr}").and_then(|()| out.flush());
    if let Err(e) = written {
        warn!("cannot print the listening address: {e}");
    }
    info!(%addr, "listening");
}

fn app_state(engine: Engine, args: &ServeArgs, started_at: Instant) -> AppState {
    AppState {
        engine,
        limits: args.limits.limits(),
        shared: Arc::new(Shared::new(started_at, args.backup_dir.clone())),
    }
}

/// Opens the store on a blocking thread: recovery reads files and may take a while.
async fn open_engine(args: &ServeArgs) -> Result<Engine, String> {
    let dir = args.data_dir.clone();
    let options = args.engine_options();
    info!(data_dir = %dir.display(), "opening the store");
    match tokio::task::spawn_blocking(move || Engine::open(&dir, options)).await {
        Ok(Ok(engine)) => Ok(engine),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the engine failed while opening (a bug; see the log above)".into()),
    }
}

/// Stops accepting, lets connections finish their requests, and gives up on stragglers
/// after `timeout`.
async fn shut_down(
    app: &App,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    timeout: Duration,
) {
    info!("shutting down: no new connections, finishing in-flight requests");
    app.begin_shutdown();
    let _ = stop.send(true);
    let abort = accept.abort_handle();
    if tokio::time::timeout(timeout, accept).await.is_err() {
        warn!(
            timeout_ms = timeout.as_millis() as u64,
            "in-flight requests did not finish in time; closing their connections"
        );
        abort.abort();
    }
}

/// Syncs and releases the folder's lock; a failure here means acknowledged writes may
/// not be on disk, so it is an error exit.
async fn close_engine(app: &App) -> ExitCode {
    let Some(engine) = app.engine() else {
        return ExitCode::SUCCESS;
    };
    match tokio::task::spawn_blocking(move || engine.close()).await {
        Ok(Ok(())) => {
            info!("store closed; bye");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            error!("closing the store failed: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            error!("closing the store failed (a bug; see the log above)");
            ExitCode::FAILURE
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, app.clone(), limits, stop.clone()));
                }
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    stream: TcpStream,
    app: Arc<App>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!("cannot set TCP_NODELAY: {e}");
    }
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let activity_in_service = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        // The request is busy until hyper drops its response body, i.e. has sent it.
        let busy = Busy::start(&activity_in_service);
        // A read of one key (GET or HEAD, envelope or raw value) is answered at once,
        // before its body is boxed or a future holding the app is made; a PUT of one
        // key skips the router too.
        let answered = app.get_key(&req);
        let app = app.clone();
        async move {
            let response = match answered {
                Some(response) => response,
                None if App::is_put_key(&req) => app.put_key(req).await,
                None => app.handle(req.map(Body::new)).await,
            };
            Ok::<_, Infallible>(response.map(|body| Sending { body, _busy: busy }))
        }
    });
    // No hyper timer: its header read timeout armed a boxed timer-wheel entry for
    // every request, ~1,300 instructions of a GET's ~19,600 and ~10 % of its CPU
    // time. The loop below enforces the same limit on its ticks instead.
    let conn = http1::Builder::new()
        .keep_alive(true)
        // A client that shuts down its sending side after the request (as `nc -N`
        // does) still gets its answer.
        .half_close(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let mut tick = tokio::time::interval(check_period(limits));
    let mut seen = activity.moves();
    let mut quiet_since = Instant::now();
    let mut seen_started = activity.started();
    let mut waiting_since = Some(quiet_since);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!("connection ended: {e}");
                }
                return;
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                let moves = activity.moves();
                if moves != seen {
                    seen = moves;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= limits.idle_timeout {
                    debug!("closing a connection idle for {:?}", limits.idle_timeout);
                    return;
                }
                let started = activity.started();
                if activity.is_busy() {
                    waiting_since = None;
                } else if started != seen_started || waiting_since.is_none() {
                    waiting_since = Some(Instant::now());
                } else if waiting_since.is_some_and(|t| t.elapsed() >= limits.header_read_timeout) {
                    debug!(
                        "closing a connection that sent no request headers for {:?}",
                        limits.header_read_timeout
                    );
                    return;
                }
                seen_started = started;
            }
        }
    }
}

/// How often a connection checks its two timeouts. A wait is timed from the first
/// check that saw it, so a connection is closed between a timeout and 1.125 × it
/// after the wait began (and never before).
///
/// The header read timeout: a connection is waiting for a request's headers when no
/// request of it is busy (from when hyper hands over its head until hyper has sent
/// its response body) — from its start, and after each response, which includes the
/// idle time between keep-alive requests, as with hyper's own timer. Bytes trickling
/// in do not end the wait; only a complete head does.
fn check_period(limits: ConnLimits) -> Duration {
    (limits.idle_timeout.min(limits.header_read_timeout) / 8).max(Duration::from_millis(20))
}

/// Counts reads and writes of a connection that moved bytes, so idle ones can be
/// closed, and its requests started and finished, so one that keeps the server waiting
/// for headers can be. Counters, not clocks: a request pays no clock read for them;
/// the checks in [`serve_connection`] read the clock only on their ticks. Everything
/// that touches them (hyper's connection, the handlers it polls, the checks) runs in
/// the connection's one task, so relaxed atomics suffice.
#[derive(Debug)]
struct Activity {
    moves: AtomicU64,
    started: AtomicU64,
    finished: AtomicU64,
    /// A response body has ended since hyper last flushed the connection: its last
    /// bytes may still wait in hyper's write buffer.
    unflushed: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            moves: AtomicU64::new(0),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            unflushed: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }

    fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// True from a request's head until hyper has written all of its response to the
    /// socket (it flushes only once its write buffer is empty).
    fn is_busy(&self) -> bool {
        self.started.load(Ordering::Relaxed) != self.finished.load(Ordering::Relaxed)
            || self.unflushed.load(Ordering::Relaxed)
    }
}

/// One request of a connection from its head until its response body is dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Busy {
        activity.started.fetch_add(1, Ordering::Relaxed);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.unflushed.store(true, Ordering::Relaxed);
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request [`Busy`] until hyper drops it: once it has
/// taken the body's last bytes into its write buffer, or when the connection goes.
struct Sending {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Sending {
    type Data = <Body as hyper::body::Body>::Data;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream that records activity on every byte read or written.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.activity.unflushed.store(false, Ordering::Relaxed);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// SIGINT and SIGTERM, registered before the server announces itself.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => info!("SIGINT received"),
            _ = self.terminate.recv() => info!("SIGTERM received"),
        }
    }
}
