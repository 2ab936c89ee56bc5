//! Placeholder for the key-value routes; the `api` branch replaces this file.

/// The key-value routes of API.md (served by the `api` branch).
pub fn routes() -> axum::Router<crate::state::AppState> {
    axum::Router::new()
}
