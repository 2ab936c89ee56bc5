//! Importing through a running server: checked lines become `put` operations of
//! `POST /v1/bulk` requests, each one atomic on the server, in chunks well inside
//! API.md's bulk limits.

use std::time::Duration;

use super::Failure;
use super::line::Record;
use crate::envelope::{TTL_SECONDS_MAX, TTL_SECONDS_MIN};
use crate::reply::JsonWriter;
use crate::state::{BULK_BODY_BYTES_MAX, BULK_OPS_MAX};

/// Operations per bulk request.
pub const CHUNK_OPS_MAX: usize = 1000;
/// Body bytes per bulk request before it is sent (one larger operation goes alone).
pub const CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;
const _: () = assert!(CHUNK_OPS_MAX <= BULK_OPS_MAX && CHUNK_BYTES_MAX < BULK_BODY_BYTES_MAX);

/// Tries of one request while the server answers 503 (busy, not ready yet).
const SEND_ATTEMPTS_MAX: u32 = 5;
/// First pause after a 503; doubled after each.
const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(200);
/// How long one bulk request may take, sending and answering.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A bulk client filling one chunk at a time.
pub struct BulkClient {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    /// The operations of the chunk, comma-separated JSON objects.
    ops: Vec<u8>,
    /// The line number of each operation in the chunk.
    lines: Vec<u64>,
    /// Keys the server has acknowledged.
    pub imported: u64,
    /// Keys whose remaining life was under the shortest ttl and got that ttl.
    pub ttl_raised: u64,
    /// Whether the server has accepted the token (see [`BulkClient::check_access`]).
    access_checked: bool,
}

impl BulkClient {
    /// A client for the server at `url` (`http://host:port`).
    pub fn new(url: &str, token: Option<String>) -> Result<BulkClient, Failure> {
        if url.starts_with("https://") {
            return Err(Failure::Usage(
                "https is not supported by `caskade import`; give the server's http:// \
                 address (or an address of a local TLS-terminating proxy)"
                    .to_owned(),
            ));
        }
        if !url.starts_with("http://") || url.len() == "http://".len() {
            return Err(Failure::Usage(format!(
                "`{url}` is not a server address; expected http://HOST:PORT"
            )));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(BulkClient {
            agent,
            endpoint: format!("{}/v1/bulk", url.trim_end_matches('/')),
            token,
            ops: Vec::new(),
            lines: Vec::new(),
            imported: 0,
            ttl_raised: 0,
            access_checked: false,
        })
    }

    /// The first line of the chunk not yet sent, if any.
    pub fn pending_from(&self) -> Option<u64> {
        self.lines.first().copied()
    }

    /// Adds a record from line `line`; sends the chunk when it is full.
    pub fn push(&mut self, line: u64, record: &Record, now_ms: u64) -> Result<(), Failure> {
        let op = self.operation(record, now_ms);
        if !self.lines.is_empty()
            && (self.lines.len() >= CHUNK_OPS_MAX || self.ops.len() + op.len() > CHUNK_BYTES_MAX)
        {
            self.flush()?;
        }
        if !self.ops.is_empty() {
            self.ops.push(b',');
        }
        self.ops.extend_from_slice(&op);
        self.lines.push(line);
        Ok(())
    }

    /// A `put` operation; the expiry becomes the ttl left, rounded up, at least the
    /// shortest ttl the API allows.
    fn operation(&mut self, record: &Record, now_ms: u64) -> Vec<u8> {
        let mut w = JsonWriter::object(record.value_json.len() + 256);
        w.key("op").str("put");
        w.key("entity").str(record.entity.as_str());
        w.key("key").str(&record.key);
        w.key("value").raw(&record.value_json);
        w.key("content_type").str(&record.spec.content_type);
        w.key("metadata");
        match &record.spec.metadata {
            Some(bytes) => w.raw(bytes),
            None => w.null(),
        };
        if let Some(at) = record.expires_at_ms {
            let left = at.saturating_sub(now_ms).div_ceil(1000);
            if left < TTL_SECONDS_MIN {
                self.ttl_raised += 1;
            }
            w.key("ttl")
                .u64(left.clamp(TTL_SECONDS_MIN, TTL_SECONDS_MAX));
        }
        w.finish()
    }

    /// Sends the chunk, if any, as one bulk request.
    pub fn flush(&mut self) -> Result<(), Failure> {
        if self.lines.is_empty() {
            return Ok(());
        }
        if !self.access_checked {
            self.check_access()?;
        }
        let mut body = Vec::with_capacity(self.ops.len() + 20);
        body.extend_from_slice(b"{\"operations\":[");
        body.extend_from_slice(&self.ops);
        body.extend_from_slice(b"]}");
        let (status, answer) = self.send(&body)?;
        if status != 200 {
            return Err(Failure::Failed(self.refusal(status, &answer)));
        }
        self.imported += self.lines.len() as u64;
        self.ops.clear();
        self.lines.clear();
        Ok(())
    }

    /// Asks with an empty operation list, which the server refuses as a 422 once the
    /// token is accepted: a missing or weak token is then told apart from the
    /// connection a server closes when it refuses a large body unread (401, 403).
    fn check_access(&mut self) -> Result<(), Failure> {
        let (status, answer) = self.send(br#"{"operations":[]}"#)?;
        match status {
            422 => {
                self.access_checked = true;
                Ok(())
            }
            _ => {
                let doc: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
                let detail = doc["errors"][0]["detail"].as_str().unwrap_or("no detail");
                Err(Failure::Failed(format!(
                    "the server at {} refused the import (HTTP {status}): {detail}",
                    self.endpoint
                )))
            }
        }
    }

    /// Posts `body`, trying again while the server answers 503.
    fn send(&self, body: &[u8]) -> Result<(u16, Vec<u8>), Failure> {
        let mut pause = RETRY_PAUSE_FIRST;
        for attempt in 1..=SEND_ATTEMPTS_MAX {
            let mut request = self
                .agent
                .post(&self.endpoint)
                .header("content-type", "application/json");
            if let Some(token) = &self.token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let mut response = request
                .send(body)
                .map_err(|e| Failure::Failed(format!("cannot send to {}: {e}", self.endpoint)))?;
            let status = response.status().as_u16();
            if status == 503 && attempt < SEND_ATTEMPTS_MAX {
                // Backoff before the next try; no event to wait on exists.
                std::thread::sleep(pause);
                pause *= 2;
                continue;
            }
            let answer = response.body_mut().read_to_vec().unwrap_or_default();
            return Ok((status, answer));
        }
        Err(Failure::Failed(format!(
            "{} stayed unavailable (503) after {SEND_ATTEMPTS_MAX} tries",
            self.endpoint
        )))
    }

    /// What the server's error answer says, with operations named by their lines.
    fn refusal(&self, status: u16, answer: &[u8]) -> String {
        let doc: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
        let errors = doc["errors"].as_array().cloned().unwrap_or_default();
        let mut parts = Vec::new();
        for error in &errors {
            let detail = error["detail"].as_str().unwrap_or("no detail");
            let instance = error["instance"].as_str().unwrap_or_default();
            match self.line_of(instance) {
                Some(line) => parts.push(format!("line {line}: {detail}")),
                None => parts.push(detail.to_owned()),
            }
        }
        if parts.is_empty() {
            parts.push(String::from_utf8_lossy(answer).chars().take(200).collect());
        }
        let first = self.lines.first().copied().unwrap_or_default();
        let last = self.lines.last().copied().unwrap_or_default();
        format!(
            "the server refused the request holding lines {first} to {last} (HTTP {status}): {}",
            parts.join("; ")
        )
    }

    /// The line of `/v1/bulk#/operations/<i>/…`.
    fn line_of(&self, instance: &str) -> Option<u64> {
        let (_, pointer) = instance.split_once("#/operations/")?;
        let index: usize = pointer.split('/').next()?.parse().ok()?;
        self.lines.get(index).copied()
    }
}
