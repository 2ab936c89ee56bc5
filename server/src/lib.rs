//! caskade-server: the HTTP store API of API.md over caskade-engine.

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod request_id;
pub mod routes;
pub mod serve;
pub mod state;
