//! The command line of `caskade`: flags, their `CASKADE_*` environment twins, and the
//! checks that turn them into a configuration the server can trust.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use caskade_engine::{SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SyncPolicy};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::state::{Limits, METADATA_BYTES_MAX_DEFAULT, VALUE_BYTES_MAX_DEFAULT};

/// Default address: loopback only, so a fresh install is never reachable from the network.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7878";
/// Default cap on requests served at once before new ones get 503.
pub const INFLIGHT_REQUESTS_MAX_DEFAULT: usize = 1024;
/// Default time a client has to send a request's headers (slowloris guard).
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default time a connection may move no byte before it is closed.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Default time shutdown waits for in-flight requests before closing anyway.
pub const SHUTDOWN_TIMEOUT_MS_DEFAULT: u64 = 30_000;

/// The `caskade` command line.
#[derive(Debug, Parser)]
#[command(
    name = "caskade",
    version,
    about = "caskade: a small, fast, durable key-value store served over HTTP",
    after_help = "Start a server on 127.0.0.1:7878 storing into ./caskade-data:\n  caskade serve\n\n\
                  Every flag of `caskade serve --help` also reads a CASKADE_* environment variable.",
    propagate_version = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands of `caskade`.
// Parsed once at startup; boxing `ServeArgs` would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the store API over HTTP until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Write every live key of a stopped store as JSON Lines (stdout or a file).
    Export(crate::offline::ExportArgs),
    /// Read JSON Lines of `caskade export` into a stopped store or a running server.
    Import(crate::offline::ImportArgs),
    /// Show what a stopped store holds: keys, segments, bytes, index size.
    Stats(crate::offline::StatsArgs),
    /// Check every segment and hint of a stopped store, offline. Exit 0: clean,
    /// 1: damage found, 2: cannot run (folder missing or locked by a running server).
    Verify(VerifyArgs),
    /// Salvage the intact records of damaged segments of a stopped store so it opens
    /// again; damaged files are moved into DIR/damaged-<time>/, never deleted.
    /// Exit 0: the store is clean now, 1: damage remains, 2: cannot run.
    Repair(RepairArgs),
}

/// Flags of `caskade verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Folder holding the store. Stop the server first: the folder is locked while
    /// it runs.
    #[arg(long, env = "CASKADE_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Print the report as one JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `caskade repair`.
#[derive(Debug, Clone, Args)]
pub struct RepairArgs {
    /// Folder holding the store. Stop the server first: the folder is locked while
    /// it runs.
    #[arg(long, env = "CASKADE_DATA_DIR")]
    pub data_dir: PathBuf,

    /// Print the report as one JSON document on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The size limits a write is checked against, shared by `serve` and `import` so an
/// import accepts exactly what the server would.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Largest stored value, in bytes.
    #[arg(long, env = "CASKADE_MAX_VALUE_BYTES", default_value_t = VALUE_BYTES_MAX_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=caskade_engine::VALUE_BYTES_MAX as u64))]
    pub max_value_bytes: u64,

    /// Largest metadata object, as compact JSON, in bytes.
    #[arg(long, env = "CASKADE_MAX_METADATA_BYTES", default_value_t = METADATA_BYTES_MAX_DEFAULT,
          value_parser = parse_metadata_bytes)]
    pub max_metadata_bytes: usize,
}

impl LimitArgs {
    /// The limits as the request handlers take them.
    pub fn limits(&self) -> Limits {
        Limits {
            value_bytes_max: self.max_value_bytes,
            metadata_bytes_max: self.max_metadata_bytes,
        }
    }
}

/// Flags of `caskade serve`; every flag also reads a `CASKADE_*` environment variable.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Folder holding the store; created if missing. One server per folder (locked).
    #[arg(long, env = "CASKADE_DATA_DIR", default_value = "./caskade-data")]
    pub data_dir: PathBuf,

    /// Address to listen on, `IP:PORT` or `localhost:PORT`. Port 0 picks a free port.
    #[arg(long, env = "CASKADE_LISTEN", default_value = LISTEN_DEFAULT, value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// When writes reach the disk: `always` (acknowledged = on disk), `interval:<ms>`
    /// (at most that window is lost in a crash) or `never` (the OS decides).
    #[arg(long, env = "CASKADE_SYNC", default_value = "always", value_parser = parse_sync)]
    pub sync: SyncArg,

    /// Seal a segment file and start a new one at this size, in bytes.
    #[arg(long, env = "CASKADE_SEGMENT_BYTES", default_value_t = SEGMENT_BYTES_DEFAULT,
          value_parser = clap::value_parser!(u64).range(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX))]
    pub segment_bytes: u64,

    /// Size limits of values and metadata.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Token file: one `<token> read|write|admin` per line. Without it, /v1 is open and
    /// only loopback addresses are served.
    #[arg(long, env = "CASKADE_AUTH_TOKENS", value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,

    /// Serve a non-loopback address without tokens (anyone who can connect can write).
    #[arg(long, env = "CASKADE_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// Folder under which `POST /v1/admin/backup` writes its copies: an existing,
    /// writable folder outside the data folder, ideally on the same file system (sealed
    /// segments are then hard-linked instead of copied).
    #[arg(long, env = "CASKADE_BACKUP_DIR", value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,

    /// Log line format on stderr.
    #[arg(long, env = "CASKADE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Requests served at once; beyond it /v1 answers 503 instead of queueing.
    #[arg(long, env = "CASKADE_MAX_INFLIGHT_REQUESTS", default_value_t = INFLIGHT_REQUESTS_MAX_DEFAULT,
          value_parser = parse_inflight)]
    pub max_inflight_requests: usize,

    /// Milliseconds a client has to send a request's headers, counted from when the
    /// server starts waiting for them (idle keep-alive time included).
    #[arg(long, env = "CASKADE_HEADER_READ_TIMEOUT_MS", default_value_t = HEADER_READ_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// Milliseconds a connection may move no byte in either direction before it is closed.
    #[arg(long, env = "CASKADE_IDLE_TIMEOUT_MS", default_value_t = IDLE_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// Milliseconds shutdown waits for in-flight requests before closing the store anyway.
    #[arg(long, env = "CASKADE_SHUTDOWN_TIMEOUT_MS", default_value_t = SHUTDOWN_TIMEOUT_MS_DEFAULT)]
    pub shutdown_timeout_ms: u64,

    /// Background compaction: `auto` runs it by the thresholds below, `off` only on
    /// `POST /v1/admin/compact`.
    #[arg(long, env = "CASKADE_COMPACTION", value_enum, default_value_t = CompactionMode::Auto)]
    pub compaction: CompactionMode,

    /// Compact a sealed segment once this share of its bytes is dead (0 < ratio ≤ 1).
    #[arg(long, env = "CASKADE_COMPACTION_DEAD_RATIO", default_value_t = 0.5,
          value_parser = parse_ratio)]
    pub compaction_dead_ratio: f64,

    /// Compact every segment with dead bytes once all sealed segments together hold
    /// this many dead bytes.
    #[arg(long, env = "CASKADE_COMPACTION_DEAD_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub compaction_dead_bytes: u64,

    /// How often background compaction looks for work, e.g. `60s`, `5m`.
    #[arg(long, env = "CASKADE_COMPACTION_INTERVAL", default_value = "60s",
          value_parser = parse_duration)]
    pub compaction_interval: Duration,

    /// Most bytes per second compaction copies, so foreground requests keep the disk;
    /// 0 = unlimited.
    #[arg(long, env = "CASKADE_COMPACTION_BYTES_PER_SEC", default_value_t = 64 * 1024 * 1024)]
    pub compaction_bytes_per_sec: u64,

    /// How often expired keys are swept from the index, e.g. `1s`, `500ms` (at most
    /// 10 000 keys per sweep; reads never return an expired key either way).
    #[arg(long, env = "CASKADE_SWEEP_INTERVAL", default_value = "1s",
          value_parser = parse_duration)]
    pub sweep_interval: Duration,
}

/// Whether compaction runs in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompactionMode {
    /// By the dead-bytes thresholds, every `--compaction-interval`.
    Auto,
    /// Only when asked through the admin route.
    Off,
}

/// The `--sync` policy as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncArg(pub SyncPolicy);

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl ServeArgs {
    /// The header read timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    /// The idle connection timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// The engine options these flags describe.
    pub fn engine_options(&self) -> caskade_engine::Options {
        caskade_engine::Options {
            segment_bytes: self.segment_bytes,
            sync: self.sync.0,
            compaction: caskade_engine::CompactionOptions {
                enabled: self.compaction == CompactionMode::Auto,
                dead_ratio: self.compaction_dead_ratio,
                dead_bytes_trigger: self.compaction_dead_bytes,
                interval: self.compaction_interval,
                bytes_per_sec: (self.compaction_bytes_per_sec > 0)
                    .then_some(self.compaction_bytes_per_sec),
            },
            sweep_interval: self.sweep_interval,
            ..caskade_engine::Options::default()
        }
    }

    /// Refuses a `--backup-dir` that backups could not use: it must be an existing,
    /// writable folder (never created here: a missing one is more likely a typo or an
    /// unmounted disk than a wish) and must not lie inside the data folder.
    pub fn check_backup_dir(&self) -> Result<(), String> {
        let Some(dir) = &self.backup_dir else {
            return Ok(());
        };
        let shown = dir.display();
        let canonical = std::fs::canonicalize(dir)
            .map_err(|e| format!("--backup-dir {shown}: cannot use it: {e}"))?;
        if !canonical.is_dir() {
            return Err(format!("--backup-dir {shown}: not a folder"));
        }
        use nix::unistd::{AccessFlags, access};
        // Read too: a backup syncs the folder after naming the new backup in it.
        access(
            &canonical,
            AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK,
        )
        .map_err(|e| format!("--backup-dir {shown}: not writable: {}", e.desc()))?;
        if let Ok(data) = std::fs::canonicalize(&self.data_dir)
            && canonical.starts_with(&data)
        {
            return Err(format!(
                "--backup-dir {shown} lies inside --data-dir {}; put backups elsewhere",
                self.data_dir.display()
            ));
        }
        Ok(())
    }

    /// Refuses an open server on a reachable address: without tokens only loopback is
    /// served unless the operator said `--allow-unauthenticated` (Redis's protected mode).
    pub fn check_exposure(&self) -> Result<(), String> {
        if self.auth_tokens.is_some()
            || self.allow_unauthenticated
            || self.listen.ip().is_loopback()
        {
            return Ok(());
        }
        Err(format!(
            "refusing to listen on {} without authentication: give --auth-tokens FILE, \
             listen on a loopback address (127.0.0.1), or pass --allow-unauthenticated",
            self.listen
        ))
    }
}

/// Parses `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT` (which means 127.0.0.1).
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = SocketAddr::from_str(text) {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("`{port}` is not a port number (0-65535)"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    Err(format!(
        "`{text}` is not an address; expected IP:PORT like 127.0.0.1:7878 or [::1]:7878"
    ))
}

/// Parses `always`, `never` or `interval:<ms>` with 1 ≤ ms ≤ 60000.
fn parse_sync(text: &str) -> Result<SyncArg, String> {
    const INTERVAL_MS_MAX: u64 = 60_000;
    match text {
        "always" => return Ok(SyncArg(SyncPolicy::Always)),
        "never" => return Ok(SyncArg(SyncPolicy::Never)),
        _ => {}
    }
    let expected = "expected `always`, `never` or `interval:<ms>` (e.g. interval:100)";
    let ms = text
        .strip_prefix("interval:")
        .ok_or_else(|| format!("`{text}` is not a sync policy; {expected}"))?;
    let ms: u64 = ms
        .parse()
        .map_err(|_| format!("`{ms}` is not a number of milliseconds; {expected}"))?;
    if !(1..=INTERVAL_MS_MAX).contains(&ms) {
        return Err(format!(
            "the sync interval must be 1 to {INTERVAL_MS_MAX} ms; got {ms}"
        ));
    }
    Ok(SyncArg(SyncPolicy::Interval(Duration::from_millis(ms))))
}

/// Metadata is stored in the engine's metadata section beside timestamps and the
/// content type, so it must leave room below the engine's own limit.
fn parse_metadata_bytes(text: &str) -> Result<usize, String> {
    let limit = caskade_engine::META_BYTES_MAX / 2;
    let n: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of bytes"))?;
    if !(1..=limit).contains(&n) {
        return Err(format!("must be 1 to {limit} bytes; got {n}"));
    }
    Ok(n)
}

/// A share of a segment: more than 0, at most 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    let r: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !(r > 0.0 && r <= 1.0) {
        return Err(format!("must be more than 0 and at most 1; got {text}"));
    }
    Ok(r)
}

/// A duration like `60s`, `5m`, `500ms`; at least 1 ms, at most a day.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 60s or 500ms: {e}"))?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(86_400) {
        return Err(format!("must be from 1ms to 24h; got {text}"));
    }
    Ok(d)
}

/// At least one request must be able to run; more than a million is a typo.
fn parse_inflight(text: &str) -> Result<usize, String> {
    const LIMIT: usize = 1_000_000;
    let n: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of requests"))?;
    if !(1..=LIMIT).contains(&n) {
        return Err(format!("must be 1 to {LIMIT}; got {n}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let argv = ["caskade", "serve"].iter().chain(args).copied();
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Serve(args) => args,
            other => panic!("parsed as another command: {other:?}"),
        })
    }

    #[test]
    fn compaction_flags_reach_the_engine_options() -> Result<(), clap::Error> {
        let defaults = serve(&[])?.engine_options();
        assert!(defaults.compaction.enabled);
        assert_eq!(defaults.compaction.dead_ratio, 0.5);
        assert_eq!(defaults.sweep_interval, Duration::from_secs(1));
        let args = serve(&[
            "--compaction",
            "off",
            "--compaction-dead-ratio",
            "0.25",
            "--compaction-interval",
            "5m",
            "--compaction-bytes-per-sec",
            "0",
            "--sweep-interval",
            "250ms",
        ])?;
        let options = args.engine_options();
        assert!(!options.compaction.enabled);
        assert_eq!(options.compaction.dead_ratio, 0.25);
        assert_eq!(options.compaction.interval, Duration::from_secs(300));
        assert_eq!(options.compaction.bytes_per_sec, None);
        assert_eq!(options.sweep_interval, Duration::from_millis(250));
        for bad in [
            &["--compaction-dead-ratio", "0"][..],
            &["--compaction-dead-ratio", "1.5"],
            &["--compaction-interval", "soon"],
            &["--compaction", "sometimes"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?} must be refused");
        }
        Ok(())
    }

    #[test]
    fn defaults_are_loopback_and_always_sync() -> Result<(), clap::Error> {
        let args = serve(&[])?;
        assert_eq!(args.listen.to_string(), LISTEN_DEFAULT);
        assert_eq!(args.sync, SyncArg(SyncPolicy::Always));
        assert_eq!(args.limits.max_value_bytes, VALUE_BYTES_MAX_DEFAULT);
        assert!(args.check_exposure().is_ok());
        Ok(())
    }

    #[test]
    fn sync_interval_parses_milliseconds() -> Result<(), clap::Error> {
        let args = serve(&["--sync", "interval:250"])?;
        assert_eq!(
            args.sync,
            SyncArg(SyncPolicy::Interval(Duration::from_millis(250)))
        );
        Ok(())
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for bad in [
            &["--sync", "sometimes"][..],
            &["--sync", "interval:0"],
            &["--listen", "nowhere"],
            &["--segment-bytes", "10"],
            &["--max-inflight-requests", "0"],
            &["--log-format", "xml"],
        ] {
            let err = serve(bad).err();
            assert!(err.is_some(), "{bad:?} must be refused");
            assert_eq!(err.map(|e| e.exit_code()), Some(2), "{bad:?}");
        }
    }

    #[test]
    fn localhost_means_ipv4_loopback() -> Result<(), clap::Error> {
        let args = serve(&["--listen", "localhost:9000"])?;
        assert_eq!(args.listen.to_string(), "127.0.0.1:9000");
        Ok(())
    }

    #[test]
    fn open_server_on_a_public_address_is_refused_unless_allowed() -> Result<(), clap::Error> {
        let args = serve(&["--listen", "0.0.0.0:0"])?;
        assert!(args.check_exposure().is_err());
        let args = serve(&["--listen", "0.0.0.0:0", "--allow-unauthenticated"])?;
        assert!(args.check_exposure().is_ok());
        Ok(())
    }
}
