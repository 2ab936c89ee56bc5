//! caskade-server: the HTTP store API of API.md over caskade-engine.

pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod bulk;
pub mod conditional;
pub mod config;
pub mod envelope;
pub mod json;
pub mod kv;
pub mod list;
pub mod logging;
pub mod media;
pub mod meta;
pub mod metrics;
pub mod mutation;
pub mod names;
pub mod openapi;
pub mod problem;
pub mod query;
pub mod reply;
pub mod request_id;
pub mod routes;
pub mod serve;
pub mod state;
pub mod timefmt;
