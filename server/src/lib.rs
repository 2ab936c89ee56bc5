//! caskade-server: the HTTP store API of API.md over caskade-engine.

pub mod problem;
pub mod state;

pub mod body;
pub mod bulk;
pub mod conditional;
pub mod envelope;
pub mod json;
pub mod kv;
pub mod list;
pub mod media;
pub mod meta;
pub mod mutation;
pub mod names;
pub mod query;
pub mod reply;
pub mod timefmt;
