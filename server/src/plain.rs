//! The bodies most clients send, read in one pass without building a JSON tree.
//!
//! A bulk body of a thousand puts spent half its server CPU in the general decoder: the
//! JSON tree (one allocation per operation object), its checks, and the walk that drops
//! it; an envelope PUT spent ~1,500 instructions and four allocations on it. Nearly
//! every body is of one plain shape, though: an envelope `{"value": …}` with a text
//! `value` and perhaps an integer `ttl`, and a bulk body `{"operations": [ … ]}` whose
//! operations are objects of `op`, `entity`, `key`, a text `value` and an integer
//! `ttl`, every string free of escapes. [`envelope`] and [`bulk`] read exactly those
//! shapes, and decline (`None`) at the first thing outside them: another member or
//! value type, an escape, a duplicate name, anything invalid. A declined body goes to
//! the general decoder, which accepts or refuses it and names every problem; so this
//! path never has to report anything, and may decline whatever it likes.
//!
//! What it accepts, it must decode exactly as the general decoder would: property tests
//! (bulk's in `bulk.rs`, beside its general decoder; the envelope's below) hold every
//! body this path accepts to the general decoder's result.

use std::borrow::Cow;

use bytes::Bytes;

use crate::envelope::{PutSpec, TTL_SECONDS_MAX, TTL_SECONDS_MIN};
use crate::json::plain_run;
use crate::media::{Kind, TEXT_UTF8};
use crate::mutation::WriteOp;
use crate::names::{Entity, is_valid_key};
use crate::state::{BULK_OPS_MAX, Limits};

/// The put of an envelope PUT's `body` when it is of the common shape and valid: `value`
/// a plain string, perhaps `ttl` an integer, nothing else. `None` otherwise (then the
/// general decoder decides).
pub(crate) fn envelope(body: &Bytes, limits: &Limits) -> Option<PutSpec> {
    let text = std::str::from_utf8(body).ok()?;
    let mut at = Cursor { text, pos: 0 };
    at.punct(b'{')?;
    let (mut value, mut ttl) = (None, None);
    loop {
        at.skip_ws();
        // A name a second time declines.
        if at.eat(b"\"value\"") && value.is_none() {
            at.punct(b':')?;
            at.skip_ws();
            value = Some(at.plain_string()?);
        } else if at.eat(b"\"ttl\"") && ttl.is_none() {
            at.punct(b':')?;
            at.skip_ws();
            ttl = Some(at.ttl()?);
        } else {
            return None;
        }
        match at.next_punct()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    at.skip_ws();
    if at.pos != text.len() {
        return None;
    }
    text_put(body, value?, ttl, limits)
}

/// The operations of a bulk `body` when it is of the common shape and valid; `None`
/// otherwise (then the general decoder decides).
pub(crate) fn bulk<'a>(body: &'a Bytes, limits: &Limits) -> Option<Vec<WriteOp<'a>>> {
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
    Some(WriteOp::Put {
        entity,
        key,
        spec: text_put(body, value?, ttl, limits)?,
    })
}

/// The put of a text `value` (a slice of `body`) that lives `ttl` seconds; `None` when
/// the value is over the limit.
fn text_put(body: &Bytes, value: &str, ttl: Option<u64>, limits: &Limits) -> Option<PutSpec> {
    (value.len() as u64 <= limits.value_bytes_max).then(|| PutSpec {
        // `value` is a slice of the body's text: a view, not a copy.
        value: body.slice_ref(value.as_bytes()),
        kind: Kind::Text,
        content_type: Cow::Borrowed(TEXT_UTF8),
        metadata: None,
        ttl_seconds: ttl,
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

#[cfg(test)]
mod tests {
    //! The envelope's one-pass decoder against the general one (the bulk decoder's
    //! tests are in `bulk.rs`, beside its general decoder).
    use proptest::prelude::*;

    use super::*;
    use crate::bulk::tests::{near, push_object, tail, valid_member, value_limit, ws};
    use crate::kv::decode_envelope_tree;

    /// A valid envelope of the common shape, its members in any order.
    fn common_envelope() -> impl Strategy<Value = Vec<(String, String)>> {
        (
            valid_member("value"),
            proptest::option::of(valid_member("ttl")),
        )
            .prop_map(|(v, t)| {
                let mut members = vec![v];
                members.extend(t);
                members
            })
            .prop_shuffle()
    }

    /// An object of `members`, with whitespace from `gaps` between its tokens.
    fn object_of(members: &[(String, String)], gaps: &[&str]) -> String {
        let mut gap = gaps.iter().cycle();
        let mut g = || *gap.next().unwrap_or(&"");
        let mut out = String::new();
        push_object(&mut out, members, &mut g);
        out.push_str(g());
        out
    }

    fn general(body: &Bytes, limits: &Limits) -> Option<PutSpec> {
        let mut problems = Vec::new();
        decode_envelope_tree(body, limits, &mut problems).filter(|_| problems.is_empty())
    }

    proptest! {
        /// The one-pass decoder takes every valid envelope of the common shape, and
        /// gives the general decoder's put.
        #[test]
        fn common_envelopes_take_the_one_pass_decoder(
            members in common_envelope(),
            gaps in prop::collection::vec(ws(), 1..8),
        ) {
            let body = Bytes::from(object_of(&members, &gaps));
            let limits = Limits::default();
            let fast = envelope(&body, &limits);
            prop_assert!(fast.is_some(), "declined {:?}", body);
            prop_assert_eq!(fast, general(&body, &limits));
        }

        /// Whatever the one-pass decoder accepts, the general decoder accepts without a
        /// problem and decodes to the same put; it declines the rest.
        #[test]
        fn the_envelope_decoder_accepts_only_what_the_general_one_does(
            members in near(common_envelope()),
            gaps in prop::collection::vec(ws(), 1..8),
            tiny_values in any::<bool>(),
            tail in tail(),
        ) {
            let mut body = object_of(&members, &gaps);
            body.push_str(tail);
            let body = Bytes::from(body);
            let limits = value_limit(tiny_values);
            if let Some(fast) = envelope(&body, &limits) {
                prop_assert_eq!(Some(fast), general(&body, &limits), "{:?}", body);
            }
        }
    }

    #[test]
    fn the_envelope_decoder_declines_bodies_off_its_shape() {
        let limits = Limits::default();
        for body in [
            r#"{"value":"v"}"#,
            r#"{"ttl":60,"value":""}"#,
            " {\n\"value\" : \"v\" , \"ttl\" : 31536000 }\t",
        ] {
            assert!(envelope(&Bytes::from(body), &limits).is_some(), "{body}");
        }
        for body in [
            "",
            "{}",
            r#"{"ttl":60}"#,
            r#"{"value":"v","value":"w"}"#,
            r#"{"value":"v","ttl":60,"ttl":61}"#,
            r#"{"value":"v",}"#,
            r#"{"value":"v"}}"#,
            r#"{"value":"v"} x"#,
            r#"{"value":"v""#,
            r#"{"value":null}"#,
            r#"{"value":"v","ttl":null}"#,
            r#"{"value":{"a":1}}"#,
            r#"{"value":"\u00e9"}"#,
            r#"{"valu\u0065":"v"}"#,
            r#"{"value":"v","content_type":"text/plain"}"#,
            r#"{"value":"v","metadata":{}}"#,
            r#"{"value":"v","ttl":59}"#,
            r#"{"value":"v","ttl":60.0}"#,
            // 2^64 + 60: must not wrap around to 60.
            r#"{"value":"v","ttl":18446744073709551676}"#,
            "[\"value\"]",
            "{\"value\":\"v\"}\u{feff}",
        ] {
            assert_eq!(envelope(&Bytes::from(body), &limits), None, "{body}");
        }
        let over = format!(r#"{{"value":"{}"}}"#, "v".repeat(9));
        let tiny = Limits {
            value_bytes_max: 8,
            ..Limits::default()
        };
        assert_eq!(envelope(&Bytes::from(over), &tiny), None);
        assert_eq!(
            envelope(&Bytes::from(&b"{\"value\":\"\xff\"}"[..]), &limits),
            None
        );
    }

    /// The value is a view of the body, not a copy.
    #[test]
    fn the_envelope_decoder_shares_the_body() {
        let body = Bytes::from_static(br#"{"value":"hello","ttl":60}"#);
        let spec = envelope(&body, &Limits::default()).expect("common shape");
        assert_eq!(
            (&spec.value[..], spec.ttl_seconds),
            (&b"hello"[..], Some(60))
        );
        assert_eq!(
            (spec.kind, spec.content_type.as_ref()),
            (Kind::Text, TEXT_UTF8)
        );
        assert!(body.as_ptr_range().contains(&spec.value.as_ptr()));
    }
}
