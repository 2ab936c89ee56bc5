//! Query strings, read by hand so every problem is a 422 `invalid-query` of API.md and
//! never a framework's plain-text rejection.

use percent_encoding::percent_decode_str;

use crate::problem::{ErrorCode, Problem};

/// The parameters of one request: name → decoded value. An empty value counts as
/// absent (API.md: `limit=` counts as absent).
#[derive(Debug, Default)]
pub struct Query {
    params: Vec<(String, String)>,
    given: Vec<String>,
}

impl Query {
    /// Parses `query` (without `?`), accepting only the names in `allowed`. Repeated,
    /// unknown and undecodable parameters are problems.
    pub fn parse(query: Option<&str>, allowed: &[&str], problems: &mut Vec<Problem>) -> Query {
        let mut params: Vec<(String, String)> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(name), Some(value)) = (decode(raw_name), decode(raw_value)) else {
                problems.push(Problem::new(
                    ErrorCode::InvalidQuery,
                    "a query parameter is not valid percent-encoded UTF-8",
                ));
                continue;
            };
            if !allowed.contains(&name.as_str()) {
                problems.push(unknown(&name, allowed));
                continue;
            }
            if seen.contains(&name) {
                problems.push(Problem::new(
                    ErrorCode::InvalidQuery,
                    format!("the query parameter `{name}` may be given only once"),
                ));
                params.retain(|(n, _)| *n != name);
                continue;
            }
            seen.push(name.clone());
            if !value.is_empty() {
                params.push((name, value));
            }
        }
        Query {
            params,
            given: seen,
        }
    }

    /// True when `name` was given at all, even with an empty value.
    pub fn given(&self, name: &str) -> bool {
        self.given.iter().any(|n| n == name)
    }

    /// The value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes one name or value of `application/x-www-form-urlencoded` (`+` is a space).
fn decode(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn unknown(name: &str, allowed: &[&str]) -> Problem {
    let shown: String = name.chars().take(64).collect();
    let detail = if allowed.is_empty() {
        format!("this route takes no query parameters; got `{shown}`")
    } else {
        format!(
            "unknown query parameter `{shown}`; this route takes only {}",
            allowed
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Problem::new(ErrorCode::InvalidQuery, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_absent_and_repeats_are_problems() {
        let mut problems = Vec::new();
        let q = Query::parse(
            Some("limit=&prefix=a%2Db"),
            &["limit", "prefix"],
            &mut problems,
        );
        assert!(problems.is_empty());
        assert_eq!(q.get("limit"), None);
        assert_eq!(q.get("prefix"), Some("a-b"));
        Query::parse(Some("limit=1&limit=2&x=1"), &["limit"], &mut problems);
        assert_eq!(problems.len(), 2);
        assert!(problems.iter().all(|p| p.code == ErrorCode::InvalidQuery));
    }
}
