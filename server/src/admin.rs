//! Admin routes (`/v1/admin/*`, scope `admin`): store statistics now; compaction and
//! backup answer 501 until their engine issues land.

use axum::extract::State;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use caskade_engine::Engine;
use serde::Serialize;

use crate::metrics::ENTITIES;
use crate::problem::{ApiError, ErrorCode};
use crate::state::AppState;

/// The admin routes, merged by the app under its middleware.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/v1/admin/stats", get(stats))
        .route("/v1/admin/compact", post(not_built))
        .route("/v1/admin/backup", post(not_built))
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
        compactions: 0,
        expired_swept: 0,
        uptime_s,
        version: env!("CARGO_PKG_VERSION"),
    }
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

async fn not_built(uri: Uri) -> ApiError {
    ApiError::one(
        uri.path(),
        ErrorCode::NotImplemented,
        "this admin operation is not built yet in this version; see docs/operations.md",
    )
}
