//! Admin routes (`/v1/admin/*`, scope `admin`): store statistics, compaction and
//! backup on demand.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use caskade_engine::{BackupReport, CompactionReport, Engine};
use serde::Serialize;
use tracing::{error, info};

use crate::metrics::ENTITIES;
use crate::problem::{ApiError, ErrorCode};
use crate::state::{AppState, Shared};
use crate::timefmt::rfc3339_seconds;

/// The admin routes, merged by the app under its middleware.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/admin/stats", get(stats))
        .route("/v1/admin/compact", post(compact))
        .route("/v1/admin/backup", post(backup))
}

/// `data` of `GET /v1/admin/stats`, field for field as API.md lists it.
#[derive(Debug, Serialize)]
struct StatsData {
    keys: serde_json::Map<String, serde_json::Value>,
    disk_bytes: u64,
    live_bytes: u64,
    dead_bytes: u64,
    segments: u64,
    index_bytes: u64,
    compactions: u64,
    expired_swept: u64,
    uptime_s: u64,
    version: &'static str,
}

#[derive(Debug, Serialize)]
struct Success<T> {
    ok: bool,
    data: T,
}

async fn stats(State(state): State<AppState>, uri: Uri) -> Response {
    let engine = state.engine.clone();
    let uptime_s = state.shared.started_at.elapsed().as_secs();
    // Counting keys per entity may walk the index: keep it off the async threads.
    match tokio::task::spawn_blocking(move || collect(&engine, uptime_s)).await {
        Ok(data) => json(&Success { ok: true, data }, uri.path()),
        Err(_) => ApiError::one(
            uri.path(),
            ErrorCode::Internal,
            "reading the store's statistics failed",
        )
        .into_response(),
    }
}

fn collect(engine: &Engine, uptime_s: u64) -> StatsData {
    let stats = engine.stats();
    let keys = ENTITIES
        .iter()
        .map(|entity| {
            let count = engine.count_prefix(format!("{entity}/").as_bytes());
            ((*entity).to_owned(), serde_json::Value::from(count))
        })
        .collect();
    StatsData {
        keys,
        disk_bytes: stats.disk_bytes,
        live_bytes: stats.live_bytes,
        dead_bytes: stats.dead_bytes,
        segments: stats.segments,
        index_bytes: stats.index_bytes,
        compactions: stats.compactions,
        expired_swept: stats.expired_swept,
        uptime_s,
        version: env!("CARGO_PKG_VERSION"),
    }
}

/// `data` of `POST /v1/admin/compact?wait=true`: what the compaction reclaimed.
#[derive(Debug, Serialize)]
struct Compacted {
    started: bool,
    finished: bool,
    segments_in: u64,
    segments_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    bytes_reclaimed: u64,
    records_kept: u64,
    records_dropped: u64,
    duration_ms: u64,
}

impl From<CompactionReport> for Compacted {
    fn from(r: CompactionReport) -> Self {
        Compacted {
            started: true,
            finished: true,
            segments_in: r.segments_in,
            segments_out: r.segments_out,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            bytes_reclaimed: r.bytes_reclaimed,
            records_kept: r.records_kept,
            records_dropped: r.records_dropped,
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// `POST /v1/admin/compact`: 202 at once with the compaction running in the
/// background, or with `?wait=true` 200 once it has finished, with what it reclaimed.
async fn compact(State(state): State<AppState>, uri: Uri) -> Response {
    let path = uri.path();
    let wait = match wait_param(uri.query()) {
        Ok(wait) => wait,
        Err(detail) => return ApiError::one(path, ErrorCode::InvalidQuery, detail).into_response(),
    };
    let engine = state.engine.clone();
    let running = tokio::task::spawn_blocking(move || engine.compact());
    if !wait {
        tokio::spawn(async move { log_compaction(running.await) });
        let mut response = json(
            &Success {
                ok: true,
                data: serde_json::json!({"started": true}),
            },
            path,
        );
        *response.status_mut() = StatusCode::ACCEPTED;
        return response;
    }
    match running.await {
        Ok(Ok(report)) => json(
            &Success {
                ok: true,
                data: Compacted::from(report),
            },
            path,
        ),
        Ok(Err(e)) => engine_error(path, &e),
        Err(_) => ApiError::one(path, ErrorCode::Internal, "the compaction failed").into_response(),
    }
}

/// `wait` is `true`/`false` (`1`/`0`), at most once; absent or empty means false.
fn wait_param(query: Option<&str>) -> Result<bool, String> {
    let mut wait = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "wait" {
            return Err("the only query parameter here is `wait`".into());
        }
        if wait.is_some() {
            return Err("`wait` is given more than once".into());
        }
        wait = Some(match value {
            "true" | "1" => true,
            "false" | "0" | "" => false,
            _ => return Err("`wait` must be true or false".into()),
        });
    }
    Ok(wait.unwrap_or(false))
}

fn log_compaction(
    result: Result<caskade_engine::Result<CompactionReport>, tokio::task::JoinError>,
) {
    match result {
        Ok(Ok(r)) => info!(
            bytes_reclaimed = r.bytes_reclaimed,
            segments_in = r.segments_in,
            "compaction finished"
        ),
        Ok(Err(e)) => error!("compaction failed: {e}"),
        Err(_) => error!("compaction failed (a bug; see the log above)"),
    }
}

/// An engine failure as the API's problem: never a file path in the detail.
fn engine_error(path: &str, e: &caskade_engine::Error) -> Response {
    use caskade_engine::Error;
    error!("compaction failed: {e}");
    let (code, detail) = match e {
        Error::StorageFull { .. } => (
            ErrorCode::StorageFull,
            "the disk is full; nothing was changed",
        ),
        Error::Closed(_) => (ErrorCode::Unavailable, "the store is closing or has failed"),
        _ => (
            ErrorCode::Internal,
            "the compaction failed; see the server log",
        ),
    };
    ApiError::one(path, code, detail).into_response()
}

/// Serializes a success envelope; serde_json cannot fail on these plain structs, but
/// if it ever did the client gets the 500 envelope rather than a broken body.
fn json(body: &impl Serialize, path: &str) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => ApiError::one(path, ErrorCode::Internal, "encoding the statistics failed")
            .into_response(),
    }
}

/// `data` of `POST /v1/admin/backup`: the new folder's name (under `--backup-dir`,
/// never a full path) and size, and what the copy holds.
#[derive(Debug, Serialize)]
struct BackedUp {
    name: String,
    size_bytes: u64,
    created_at: String,
    last_version: u64,
    segments: u64,
    hints: u64,
    files_linked: u64,
    files_copied: u64,
    duration_ms: u64,
}

impl BackedUp {
    fn of(name: String, created_at_ms: u64, r: &BackupReport) -> Self {
        BackedUp {
            name,
            size_bytes: r.bytes,
            created_at: rfc3339_seconds(created_at_ms),
            last_version: r.last_version,
            segments: r.segments,
            hints: r.hints,
            files_linked: r.files_linked,
            files_copied: r.files_copied,
            duration_ms: u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Marks the one backup that may run; dropping it (when the backup's blocking task
/// ends, answered or not) lets the next one start.
struct BackupSlot(Arc<Shared>);

impl BackupSlot {
    fn take(shared: &Arc<Shared>) -> Option<BackupSlot> {
        shared
            .backup_running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BackupSlot(Arc::clone(shared)))
    }
}

impl Drop for BackupSlot {
    fn drop(&mut self) {
        self.0.backup_running.store(false, Ordering::Release);
    }
}

/// `POST /v1/admin/backup`: a consistent copy of the store in a new folder under
/// `--backup-dir`, named `<UTC time>-<random>`; 200 once it is complete and synced.
async fn backup(State(state): State<AppState>, uri: Uri) -> Response {
    let path = uri.path();
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return ApiError::one(
            path,
            ErrorCode::InvalidQuery,
            "this route takes no query parameters",
        )
        .into_response();
    }
    let Some(dir) = state.shared.backup_dir.clone() else {
        return ApiError::one(
            path,
            ErrorCode::BackupNotConfigured,
            "this server has no backup folder; start it with --backup-dir DIR",
        )
        .into_response();
    };
    let Some(slot) = BackupSlot::take(&state.shared) else {
        return ApiError::one(
            path,
            ErrorCode::BackupInProgress,
            "another backup is running; retry once it has finished",
        )
        .into_response();
    };
    let engine = state.engine.clone();
    let now_ms = engine.clock().now_ms();
    let name = backup_name(now_ms);
    let dest = dir.join(&name);
    let running = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        engine.backup(&dest)
    });
    match running.await {
        Ok(Ok(report)) => {
            info!(
                name = %name,
                bytes = report.bytes,
                files_linked = report.files_linked,
                files_copied = report.files_copied,
                last_version = report.last_version,
                ms = report.duration.as_millis() as u64,
                "backup written"
            );
            json(
                &Success {
                    ok: true,
                    data: BackedUp::of(name, now_ms, &report),
                },
                path,
            )
        }
        Ok(Err(e)) => backup_error(path, &e),
        Err(_) => ApiError::one(path, ErrorCode::Internal, "the backup failed").into_response(),
    }
}

/// `20261126T091443Z-3f9c0d6e`: sorts by time; the random part keeps two backups of
/// the same second apart.
fn backup_name(now_ms: u64) -> String {
    let time: String = rfc3339_seconds(now_ms)
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{time}-{}", &random[..8])
}

/// A failed backup as the API's problem; the log has the path and the cause, the
/// response neither.
fn backup_error(path: &str, e: &caskade_engine::Error) -> Response {
    use caskade_engine::Error;
    error!("backup failed: {e}");
    let (code, detail) = match e {
        Error::StorageFull { .. } => (
            ErrorCode::StorageFull,
            "the disk is full; no backup folder was left behind",
        ),
        Error::Closed(_) => (ErrorCode::Unavailable, "the store is closing or has failed"),
        _ => (
            ErrorCode::BackupFailed,
            "the backup could not be written (is --backup-dir still a writable folder?); \
             no backup folder was left behind; see the server log",
        ),
    };
    ApiError::one(path, code, detail).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        Arc::new(Shared::new(std::time::Instant::now(), None))
    }

    #[test]
    fn only_one_backup_slot_at_a_time() {
        let shared = shared();
        let first = BackupSlot::take(&shared);
        assert!(first.is_some());
        assert!(BackupSlot::take(&shared).is_none(), "a second backup ran");
        drop(first);
        assert!(
            BackupSlot::take(&shared).is_some(),
            "the slot was not freed"
        );
    }

    #[test]
    fn backup_names_sort_by_utc_time_and_differ() {
        let a = backup_name(1_795_684_483_999);
        assert!(a.starts_with("20261126T091443Z-"), "{a}");
        assert_eq!(a.len(), "20261126T091443Z-".len() + 8);
        assert!(
            a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{a}"
        );
        assert_ne!(a, backup_name(1_795_684_483_999));
        assert!(backup_name(1_795_684_484_000) > backup_name(1_795_684_483_000));
    }
}
