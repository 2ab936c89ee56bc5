//! The bulk body most clients send, read in one pass without building a JSON tree.
//!
//! A bulk body of a thousand puts spent half its server CPU in the general decoder: the
//! JSON tree (one allocation per operation object), its checks, and the walk that drops
//! it. Nearly every body is of one plain shape, though: `{"operations": [ … ]}` whose
//! operations are objects of `op`, `entity`, `key`, a text `value` and an integer `ttl`,
//! every string free of escapes. [`decode`] reads exactly that shape straight into
//! [`WriteOp`]s, and declines (`None`) at the first thing outside it: another member or
//! value type, an escape, a duplicate name, anything invalid. A declined body goes to
//! the general decoder, which accepts or refuses it and names every problem; so this
//! path never has to report anything, and may decline whatever it likes.
//!
//! What it accepts, it must decode exactly as the general decoder would: the property
//! tests in `bulk.rs` hold every body this path accepts to the general decoder's ops.

use std::borrow::Cow;

use bytes::Bytes;

use crate::envelope::{PutSpec, TTL_SECONDS_MAX, TTL_SECONDS_MIN};
use crate::json::plain_run;
use crate::media::{Kind, TEXT_UTF8};
use crate::mutation::WriteOp;
use crate::names::{Entity, is_valid_key};
use crate::state::{BULK_OPS_MAX, Limits};

/// The operations of `body` when it is of the common shape and valid; `None` otherwise
/// (then the general decoder decides).
pub(super) fn decode<'a>(body: &'a Bytes, limits: &Limits) -> Option<Vec<WriteOp<'a>>> {
    // The general parser refuses a body that is not UTF-8 as a whole; so does this path.
    let text = std::str::from_utf8(body).ok()?;
    let mut at = Cursor { text, pos: 0 };
    at.punct(b'{')?;
    at.skip_ws();
    if !at.eat(b"\"operations\"") {
        return None;
    }
    at.punct(b':')?;
    at.punct(b'[')?;
    let mut ops = Vec::new();
    loop {
        if ops.len() == BULK_OPS_MAX {
            return None;
        }
        let start = at.pos;
        ops.push(operation(&mut at, body, limits)?);
        if ops.len() == 1 {
            // Room for as many more as would fit if all were as long as the first:
            // operations of one body are mostly alike, and the list is then not
            // moved as it grows.
            let first = (at.pos - start).max(1);
            ops.reserve((text.len().saturating_sub(at.pos) / first).min(BULK_OPS_MAX - 1));
        }
        match at.next_punct()? {
            b',' => {}
            b']' => break,
            _ => return None,
        }
    }
    at.punct(b'}')?;
    at.skip_ws();
    (at.pos == text.len()).then_some(ops)
}

/// Member names of an operation, one bit each: a second one of a name declines.
const OP: u8 = 1;
const ENTITY: u8 = 2;
const KEY: u8 = 4;
const VALUE: u8 = 8;
const TTL: u8 = 16;

/// One operation object, from its `{` to its `}`. Names and the words of `op` and
/// `entity` are matched as the bytes they must be (quotes included), not read as
/// strings first: each comparison with a literal compiles to a load or two.
fn operation<'a>(at: &mut Cursor<'a>, body: &Bytes, limits: &Limits) -> Option<WriteOp<'a>> {
    at.punct(b'{')?;
    let mut seen = 0u8;
    let (mut put, mut entity, mut key, mut value, mut ttl) = (false, None, None, None, None);
    loop {
        at.skip_ws();
        let name = if at.eat(b"\"op\"") {
            OP
        } else if at.eat(b"\"entity\"") {
            ENTITY
        } else if at.eat(b"\"key\"") {
            KEY
        } else if at.eat(b"\"value\"") {
            VALUE
        } else if at.eat(b"\"ttl\"") {
            TTL
        } else {
            return None;
        };
        if seen & name != 0 {
            return None;
        }
        seen |= name;
        at.punct(b':')?;
        at.skip_ws();
        match name {
            OP if at.eat(b"\"put\"") => put = true,
            OP if at.eat(b"\"delete\"") => put = false,
            ENTITY if at.eat(b"\"user\"") => entity = Some(Entity::User),
            ENTITY if at.eat(b"\"event\"") => entity = Some(Entity::Event),
            OP | ENTITY => return None,
            KEY => key = Some(at.plain_string()?).filter(|k| is_valid_key(k)),
            VALUE => value = Some(at.plain_string()?),
            _ => ttl = Some(at.ttl()?),
        }
        match at.next_punct()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    let (entity, key) = (entity?, Cow::Borrowed(key?));
    if !put {
        return (seen == OP | ENTITY | KEY).then_some(WriteOp::Delete { entity, key });
    }
    let value = value.filter(|v| v.len() as u64 <= limits.value_bytes_max)?;
    Some(WriteOp::Put {
        entity,
        key,
        spec: PutSpec {
            // `value` is a slice of `text`, which is `body`: a view, not a copy.
            value: body.slice_ref(value.as_bytes()),
            kind: Kind::Text,
            content_type: Cow::Borrowed(TEXT_UTF8),
            metadata: None,
            ttl_seconds: ttl,
        },
    })
}

/// A position in the body.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.as_bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    fn next_punct(&mut self) -> Option<u8> {
        self.skip_ws();
        let b = *self.text.as_bytes().get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// `want` after whitespace.
    fn punct(&mut self, want: u8) -> Option<()> {
        (self.next_punct()? == want).then_some(())
    }

    /// `literal` here (no whitespace skipped), consumed; false if it is not here.
    /// Inlined, so that the comparison with a literal of known length needs no
    /// `memcmp` call.
    #[inline(always)]
    fn eat(&mut self, literal: &'static [u8]) -> bool {
        let rest = self.text.as_bytes().get(self.pos..).unwrap_or_default();
        let found = rest.starts_with(literal);
        if found {
            self.pos += literal.len();
        }
        found
    }

    /// A string without escapes here (no whitespace skipped), as the slice of the body
    /// between its quotes.
    fn plain_string(&mut self) -> Option<&'a str> {
        if self.text.as_bytes().get(self.pos) != Some(&b'"') {
            return None;
        }
        self.pos += 1;
        let start = self.pos;
        let end = start + plain_run(self.text.as_bytes().get(start..)?);
        // `plain_run` stops at a quote, a backslash or a control character: only the
        // quote ends a plain string.
        if self.text.as_bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.pos = end + 1;
        self.text.get(start..end)
    }

    /// A ttl here: an integer in the accepted range, in its plain form (digits only,
    /// no leading zero); a sign, fraction or exponent declines.
    fn ttl(&mut self) -> Option<u64> {
        let rest = self.text.as_bytes().get(self.pos..)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // The longest accepted ttl has 8 digits; more could overflow below.
        if digits == 0 || digits > 8 || rest.first() == Some(&b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = rest.get(digits) {
            return None;
        }
        self.pos += digits;
        let seconds = rest
            .iter()
            .take(digits)
            .fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
        (TTL_SECONDS_MIN..=TTL_SECONDS_MAX)
            .contains(&seconds)
            .then_some(seconds)
    }
}
