//! caskade-server: the HTTP store API of API.md over caskade-engine.

pub mod problem;
pub mod state;

pub mod json;
pub mod media;
pub mod meta;
pub mod timefmt;
