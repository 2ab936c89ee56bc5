//! Entities and keys: API.md's "Names and limits", and the path segments they come from.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::problem::{ErrorCode, Problem};

/// Longest key, in characters (all ASCII, so also bytes).
pub const KEY_CHARS_MAX: usize = 256;

/// The namespaces a key lives in. Exact and case-sensitive, as API.md says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Entity {
    /// `user`.
    User,
    /// `event`.
    Event,
}

impl Entity {
    /// Every entity.
    pub const ALL: [Entity; 2] = [Entity::User, Entity::Event];

    /// The entity's name in paths, bodies and engine keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::User => "user",
            Entity::Event => "event",
        }
    }

    /// Parses an exact entity name.
    pub fn parse(name: &str) -> Option<Entity> {
        match name {
            "user" => Some(Entity::User),
            "event" => Some(Entity::Event),
            _ => None,
        }
    }

    /// The engine key of `key` in this entity: `{entity}/{key}`.
    pub fn engine_key(self, key: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.as_str().len() + 1 + key.len());
        out.extend_from_slice(self.as_str().as_bytes());
        out.push(b'/');
        out.extend_from_slice(key.as_bytes());
        out
    }

    /// Calls `f` with [`Entity::engine_key`] of `key` built on the stack: a read needs
    /// the engine key only for its lookup, and a GET then allocates nothing for it. A
    /// key longer than the rule allows (callers check keys first) takes the heap.
    pub fn with_engine_key<R>(self, key: &str, f: impl FnOnce(&[u8]) -> R) -> R {
        const ENGINE_KEY_MAX: usize = "event/".len() + KEY_CHARS_MAX;
        let entity = self.as_str().as_bytes();
        let len = entity.len() + 1 + key.len();
        if len > ENGINE_KEY_MAX {
            return f(&self.engine_key(key));
        }
        let mut buf = [0u8; ENGINE_KEY_MAX];
        buf[..entity.len()].copy_from_slice(entity);
        buf[entity.len()] = b'/';
        buf[entity.len() + 1..len].copy_from_slice(key.as_bytes());
        f(&buf[..len])
    }
}

/// True for a key API.md accepts: `^[A-Za-z0-9_-]{1,256}$`.
pub fn is_valid_key(key: &str) -> bool {
    (1..=KEY_CHARS_MAX).contains(&key.len()) && is_key_text(key)
}

/// True when every character is one a key may hold (any length, the empty text too):
/// the rule for list prefixes.
pub fn is_key_text(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The problem of a key that fails the rule.
pub fn key_problem(pointer: Option<String>) -> Problem {
    let detail = format!(
        "a key must be 1 to {KEY_CHARS_MAX} characters of A-Z, a-z, 0-9, '_' and '-' (after percent-decoding)"
    );
    match pointer {
        Some(p) => Problem::at(ErrorCode::InvalidKey, p, detail),
        None => Problem::new(ErrorCode::InvalidKey, detail),
    }
}

/// The problem of an entity that is not `user` or `event`.
pub fn entity_problem(pointer: Option<String>) -> Problem {
    let detail = "the entity must be `user` or `event`";
    match pointer {
        Some(p) => Problem::at(ErrorCode::InvalidEntity, p, detail),
        None => Problem::new(ErrorCode::InvalidEntity, detail),
    }
}

/// Percent-decodes a path segment; `None` when it does not decode to UTF-8. A `%`
/// not followed by two hex digits stays as it is, and then fails the name rules.
pub fn decode_segment(raw: &str) -> Option<Cow<'_, str>> {
    // Most segments hold no escape: then they are their own decoding, already UTF-8.
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    percent_decode_str(raw).decode_utf8().ok()
}

/// An entity and key taken from a request path, with every problem they have.
pub struct KeyPath<'a> {
    /// The entity, when valid.
    pub entity: Option<Entity>,
    /// The decoded key, when valid: a slice of the path unless it was percent-encoded.
    pub key: Option<Cow<'a, str>>,
}

impl<'a> KeyPath<'a> {
    /// Decodes and checks the raw segments, pushing a problem for each bad one.
    pub fn parse(raw_entity: &str, raw_key: &'a str, problems: &mut Vec<Problem>) -> KeyPath<'a> {
        let entity = decode_segment(raw_entity).and_then(|e| Entity::parse(&e));
        if entity.is_none() {
            problems.push(entity_problem(None));
        }
        let key = decode_segment(raw_key).filter(|k| is_valid_key(k));
        if key.is_none() {
            problems.push(key_problem(None));
        }
        KeyPath { entity, key }
    }

    /// Checks the first two raw segments of `path` after `/v1/kv/` (missing ones are
    /// invalid; a path that does not start so has none).
    pub fn from_path(path: &'a str, problems: &mut Vec<Problem>) -> KeyPath<'a> {
        let mut segments = path.strip_prefix("/v1/kv/").unwrap_or_default().split('/');
        let entity = segments.next().unwrap_or_default();
        let key = segments.next().unwrap_or_default();
        KeyPath::parse(entity, key, problems)
    }

    /// Both parts, when both are valid.
    pub fn valid(self) -> Option<(Entity, Cow<'a, str>)> {
        Some((self.entity?, self.key?))
    }
}

/// The raw (still percent-encoded) segments of the path after `/v1/kv/`.
pub fn kv_segments(path: &str) -> Vec<&str> {
    path.strip_prefix("/v1/kv/")
        .map(|rest| rest.split('/').collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_rule() {
        assert!(is_valid_key("alice_01-X"));
        assert!(is_valid_key(&"k".repeat(256)));
        assert!(!is_valid_key(&"k".repeat(257)));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key("a.b"));
        assert!(!is_valid_key("a b"));
        assert!(!is_valid_key("café"));
    }

    #[test]
    fn segments_are_percent_decoded() {
        assert!(matches!(
            decode_segment("plain_key-1"),
            Some(Cow::Borrowed("plain_key-1"))
        ));
        assert_eq!(decode_segment("a%2Db").as_deref(), Some("a-b"));
        assert_eq!(decode_segment("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(decode_segment("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode_segment("%ff"), None);
    }

    #[test]
    fn entities_are_exact() {
        for entity in Entity::ALL {
            assert_eq!(Entity::parse(entity.as_str()), Some(entity));
        }
        assert_eq!(Entity::parse("user"), Some(Entity::User));
        assert_eq!(Entity::parse("User"), None);
        assert_eq!(Entity::parse("users"), None);
        assert_eq!(Entity::Event.engine_key("k"), b"event/k".to_vec());
        for key in [
            "",
            "k",
            &"k".repeat(KEY_CHARS_MAX),
            &"k".repeat(KEY_CHARS_MAX + 10),
        ] {
            for entity in [Entity::User, Entity::Event] {
                let on_stack = entity.with_engine_key(key, <[u8]>::to_vec);
                assert_eq!(on_stack, entity.engine_key(key), "{entity:?} {}", key.len());
            }
        }
    }
}
