//! Bearer tokens with scopes (API.md "Access"): loaded once from `--auth-tokens`,
//! compared in constant time, never logged or echoed.

use std::fmt;
use std::path::Path;

use axum::http::{HeaderMap, Method, header};
use subtle::ConstantTimeEq;

use crate::problem::ErrorCode;

/// Longest token accepted in the file: long enough for any generated secret, short
/// enough that comparing against every token stays cheap.
pub const TOKEN_BYTES_MAX: usize = 512;

/// What a token may do. Ordered: each scope includes the ones below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// GET and HEAD of the key-value routes.
    Read,
    /// Read, plus PUT, DELETE and POST /v1/bulk.
    Write,
    /// Write, plus /v1/admin/*.
    Admin,
}

impl Scope {
    /// The scope a request needs: admin routes need `admin`, reads need `read`, every
    /// other method (including ones no route accepts) needs `write`.
    pub fn required(method: &Method, path: &str) -> Scope {
        if path == "/v1/admin" || path.starts_with("/v1/admin/") {
            Scope::Admin
        } else if method == Method::GET || method == Method::HEAD {
            Scope::Read
        } else {
            Scope::Write
        }
    }

    fn parse(word: &str) -> Option<Scope> {
        match word {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// The configured tokens. `Debug` prints only how many there are, so a token can
/// never reach a log line through a `{:?}`.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Scope)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} configured)", self.entries.len())
    }
}

/// Why a request was refused: which problem code, and a detail safe to show.
#[derive(Debug, PartialEq, Eq)]
pub struct Denied {
    /// `Unauthorized` (401) or `Forbidden` (403).
    pub code: ErrorCode,
    /// What the client should do; never contains the token.
    pub detail: String,
}

impl Tokens {
    /// Reads the token file. Errors name the line, never the token on it.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    /// Parses `<token> <scope>` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<(Vec<u8>, Scope)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let entry = parse_line(line).map_err(|e| format!("line {}: {e}", index + 1))?;
            if entries.iter().any(|(t, _)| *t == entry.0) {
                return Err(format!("line {}: this token is listed twice", index + 1));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err("no tokens; add lines like `<token> read|write|admin`".into());
        }
        Ok(Tokens { entries })
    }

    /// Checks the request's `Authorization: Bearer` header against the scope it needs.
    pub fn authorize(&self, headers: &HeaderMap, needed: Scope) -> Result<Scope, Denied> {
        let presented = bearer(headers).ok_or_else(|| Denied {
            code: ErrorCode::Unauthorized,
            detail: "this route needs `Authorization: Bearer <token>`".into(),
        })?;
        let scope = self.lookup(presented).ok_or_else(|| Denied {
            code: ErrorCode::Unauthorized,
            detail: "the bearer token is not valid".into(),
        })?;
        if scope < needed {
            return Err(Denied {
                code: ErrorCode::Forbidden,
                detail: format!(
                    "this request needs a token with scope `{}`; this token has `{}`",
                    needed.name(),
                    scope.name()
                ),
            });
        }
        Ok(scope)
    }

    /// Compares against every token, without stopping at the first match, so the time
    /// taken says nothing about which token (or how much of one) matched.
    fn lookup(&self, presented: &[u8]) -> Option<Scope> {
        let mut found = None;
        for (token, scope) in &self.entries {
            if bool::from(token.as_slice().ct_eq(presented)) {
                found = Some(*scope);
            }
        }
        found
    }
}

fn parse_line(line: &str) -> Result<(Vec<u8>, Scope), String> {
    let mut words = line.split_whitespace();
    let (Some(token), Some(scope), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected `<token> read|write|admin`".into());
    };
    let scope = Scope::parse(scope)
        .ok_or_else(|| format!("unknown scope `{scope}`; expected read, write or admin"))?;
    if token.len() > TOKEN_BYTES_MAX || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "a token must be 1 to {TOKEN_BYTES_MAX} visible ASCII characters"
        ));
    }
    Ok((token.as_bytes().to_vec(), scope))
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tokens() -> Tokens {
        let parsed = Tokens::parse("# comment\nr-tok read\n\nw-tok write\na-tok admin\n");
        parsed.unwrap_or_else(|e| panic!("valid file refused: {e}"))
    }

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(header::AUTHORIZATION, v);
        }
        headers
    }

    #[test]
    fn scopes_include_the_lower_ones() {
        let t = tokens();
        assert!(t.authorize(&with_auth("Bearer a-tok"), Scope::Read).is_ok());
        assert!(t.authorize(&with_auth("bearer w-tok"), Scope::Read).is_ok());
        assert!(
            t.authorize(&with_auth("Bearer w-tok"), Scope::Write)
                .is_ok()
        );
        let denied = t.authorize(&with_auth("Bearer r-tok"), Scope::Write);
        assert_eq!(denied.map_err(|d| d.code), Err(ErrorCode::Forbidden));
        let denied = t.authorize(&with_auth("Bearer w-tok"), Scope::Admin);
        assert_eq!(denied.map_err(|d| d.code), Err(ErrorCode::Forbidden));
    }

    #[test]
    fn missing_or_wrong_tokens_are_unauthorized() {
        let t = tokens();
        for value in [
            "",
            "Bearer",
            "Bearer ",
            "Basic r-tok",
            "Bearer r-to",
            "Bearer r-tokk",
        ] {
            let denied = t.authorize(&with_auth(value), Scope::Read);
            assert_eq!(
                denied.map_err(|d| d.code),
                Err(ErrorCode::Unauthorized),
                "{value:?}"
            );
        }
    }

    #[test]
    fn file_errors_name_the_line_not_the_token() {
        let err = Tokens::parse("s3cret superuser\n")
            .err()
            .unwrap_or_default();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(Tokens::parse("# nothing\n").is_err());
        assert!(Tokens::parse("a read\na write\n").is_err());
    }

    #[test]
    fn debug_never_prints_tokens() {
        assert!(!format!("{:?}", tokens()).contains("tok"));
    }

    #[test]
    fn required_scope_follows_method_and_path() {
        assert_eq!(Scope::required(&Method::GET, "/v1/kv/user/a"), Scope::Read);
        assert_eq!(Scope::required(&Method::HEAD, "/v1/kv/user"), Scope::Read);
        assert_eq!(Scope::required(&Method::PUT, "/v1/kv/user/a"), Scope::Write);
        assert_eq!(Scope::required(&Method::POST, "/v1/bulk"), Scope::Write);
        assert_eq!(
            Scope::required(&Method::GET, "/v1/admin/stats"),
            Scope::Admin
        );
    }
}
