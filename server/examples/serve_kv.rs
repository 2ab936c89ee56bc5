//! Serves only the key-value routes on a fresh store, for running the conformance suite
//! against them before the full binary exists:
//! `cargo run -p caskade-server --example serve_kv -- 127.0.0.1:7879`.

use std::sync::Arc;

use caskade_engine::{Engine, Options};
use caskade_server::state::{AppState, Limits, Shared};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let dir = tempfile::tempdir()?;
    let engine = Engine::open(dir.path(), Options::default())?;
    let state = AppState {
        engine,
        limits: Limits::default(),
        shared: Arc::new(Shared::new(std::time::Instant::now(), None)),
    };
    let app = caskade_server::kv::routes().with_state(state);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("serving the kv routes on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
