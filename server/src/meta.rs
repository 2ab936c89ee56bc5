//! The record's meta section: what the server stores beside a value.
//!
//! The engine keeps an opaque byte section with every record; the server puts the
//! value's kind, content type, user metadata and creation time there. The layout is
//! laid by hand, little-endian and versioned, so that no serialization library's
//! defaults ever decide the bytes on disk (documented in `docs/api.md`, "Record meta
//! section"):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | format version, `1` |
//! | 1 | 1 | kind: `0` JSON, `1` text, `2` binary |
//! | 2 | 8 | `created_at`, ms since the Unix epoch, u64 LE; `0` = this record created the key |
//! | 10 | 2 | content type length `c`, u16 LE |
//! | 12 | c | content type, ASCII |
//! | 12+c | 4 | metadata length `m`, u32 LE; `0` = no metadata (`null`) |
//! | 16+c | m | metadata, compact JSON object, UTF-8 |

use crate::media::Kind;

/// The version byte this server writes and reads.
pub const META_FORMAT_VERSION: u8 = 1;

/// Bytes of the fixed fields before the content type.
const HEAD_BYTES: usize = 12;

/// What the server stores with a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordMeta<'a> {
    /// How the value is checked and shown (kept so reads need not parse the content type).
    pub kind: Kind,
    /// The value's content type, as given or inferred.
    pub content_type: &'a str,
    /// The user's metadata object as compact JSON; `None` for `null`.
    pub metadata: Option<&'a [u8]>,
    /// When the key was created (kept across updates), ms since the Unix epoch;
    /// [`CREATED_BY_THIS_RECORD`] when the record holding it created the key.
    pub created_at_ms: u64,
}

/// The `created_at_ms` of a record that created its key: its creation time is then the
/// record's own write time, known exactly only once the engine has written it.
pub const CREATED_BY_THIS_RECORD: u64 = 0;

/// The meta section does not decode: a bug or damage, never a user error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record meta section: {0}")]
pub struct MetaError(&'static str);

impl<'a> RecordMeta<'a> {
    /// When the key was created, given the write time of the record holding this section.
    pub fn created_at(&self, written_at_ms: u64) -> u64 {
        if self.created_at_ms == CREATED_BY_THIS_RECORD {
            written_at_ms
        } else {
            self.created_at_ms
        }
    }

    /// The bytes of the section. Content type and metadata must fit their length
    /// fields, which the request limits guarantee (255 chars; engine meta ≤ 64 KiB).
    pub fn encode(&self) -> Result<Vec<u8>, MetaError> {
        let md = self.metadata.unwrap_or_default();
        let mut out = Vec::with_capacity(HEAD_BYTES + 4 + self.content_type.len() + md.len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the bytes of the section to `out` (see [`RecordMeta::encode`]).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), MetaError> {
        let ct_len = u16::try_from(self.content_type.len())
            .map_err(|_| MetaError("content type too long"))?;
        let md = self.metadata.unwrap_or_default();
        let md_len = u32::try_from(md.len()).map_err(|_| MetaError("metadata too long"))?;
        // One allocation for an empty buffer, not a doubling per field.
        out.reserve(1 + 1 + 8 + 2 + self.content_type.len() + 4 + md.len());
        out.push(META_FORMAT_VERSION);
        out.push(kind_byte(self.kind));
        out.extend_from_slice(&self.created_at_ms.to_le_bytes());
        out.extend_from_slice(&ct_len.to_le_bytes());
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(&md_len.to_le_bytes());
        out.extend_from_slice(md);
        Ok(())
    }

    /// Reads a section written by [`RecordMeta::encode`], borrowing from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<RecordMeta<'a>, MetaError> {
        let mut rest = bytes;
        let version = take::<1>(&mut rest)?[0];
        if version != META_FORMAT_VERSION {
            return Err(MetaError("unknown format version"));
        }
        let kind = match take::<1>(&mut rest)?[0] {
            0 => Kind::Json,
            1 => Kind::Text,
            2 => Kind::Binary,
            _ => return Err(MetaError("unknown kind")),
        };
        let created_at_ms = u64::from_le_bytes(take::<8>(&mut rest)?);
        let ct_len = usize::from(u16::from_le_bytes(take::<2>(&mut rest)?));
        let content_type = std::str::from_utf8(take_slice(&mut rest, ct_len)?)
            .map_err(|_| MetaError("content type not UTF-8"))?;
        let md_len = u32::from_le_bytes(take::<4>(&mut rest)?) as usize;
        let metadata = take_slice(&mut rest, md_len)?;
        if !rest.is_empty() {
            return Err(MetaError("trailing bytes"));
        }
        Ok(RecordMeta {
            kind,
            content_type,
            metadata: (md_len > 0).then_some(metadata),
            created_at_ms,
        })
    }
}

/// Every put's [`caskade_engine::MetaCarry`]: the put's section is written with
/// [`CREATED_BY_THIS_RECORD`]; when the put replaces a live entry, the engine's writer
/// carries that entry's creation time over, so an update keeps `created_at` without
/// the server reading the key first. The engine remembers each key's word, so an
/// update reads the replaced record only when it was written before the store opened.
pub const CARRY_CREATED_AT: caskade_engine::MetaCarry = caskade_engine::MetaCarry {
    word: created_at_of,
    write: write_created_at,
};

/// When the key of a stored entry was created: the word of [`CARRY_CREATED_AT`].
pub fn created_at_of(entry: &caskade_engine::Previous<'_>) -> Result<u64, &'static str> {
    let meta = RecordMeta::decode(entry.meta).map_err(|e| e.0)?;
    let created_at_ms = meta.created_at(entry.written_at_ms);
    // A key cannot have been created after the record that holds it was written:
    // such a section is damaged (the engine checked the record's CRC, so this is a bug
    // or damage the CRC missed), and its time must not live on in the new record.
    // Wall-clock steps back (NTP) can make an update's write time earlier than the
    // creation it carries, so a margin keeps those keys writable.
    if created_at_ms > entry.written_at_ms.saturating_add(CLOCK_STEP_MARGIN_MS) {
        return Err("the replaced entry's created_at is later than its own write time");
    }
    Ok(created_at_ms)
}

/// Writes a carried creation time into a put's section, in place.
pub fn write_created_at(created_at_ms: u64, meta: &mut [u8]) -> Result<(), &'static str> {
    if meta.first() != Some(&META_FORMAT_VERSION) {
        return Err("the new meta section is not of this format");
    }
    let field = meta
        .get_mut(CREATED_AT_RANGE)
        .ok_or("the new meta section is truncated")?;
    field.copy_from_slice(&created_at_ms.to_le_bytes());
    Ok(())
}

/// How far a carried `created_at` may lie after the write time of the record holding
/// it (a wall clock stepped back between the key's creation and an update) before
/// [`created_at_of`] takes it for damage: one day.
pub const CLOCK_STEP_MARGIN_MS: u64 = 24 * 60 * 60 * 1000;

/// Where `created_at` sits in the section (see the layout above).
const CREATED_AT_RANGE: std::ops::Range<usize> = 2..10;

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Json => 0,
        Kind::Text => 1,
        Kind::Binary => 2,
    }
}

fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], MetaError> {
    let head = take_slice(rest, N)?;
    head.try_into().map_err(|_| MetaError("truncated"))
}

fn take_slice<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], MetaError> {
    if rest.len() < n {
        return Err(MetaError("truncated"));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        for (kind, metadata) in [
            (Kind::Json, None),
            (Kind::Text, Some(&b"{\"a\":1}"[..])),
            (Kind::Binary, Some(&b"{}"[..])),
        ] {
            let meta = RecordMeta {
                kind,
                content_type: "text/plain; charset=utf-8",
                metadata,
                created_at_ms: 1_764_148_483_000,
            };
            let bytes = meta.encode().expect("encodes");
            assert_eq!(RecordMeta::decode(&bytes), Ok(meta));
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        let meta = RecordMeta {
            kind: Kind::Text,
            content_type: "a/b",
            metadata: Some(b"{}"),
            created_at_ms: 0x0102,
        };
        assert_eq!(
            meta.encode().expect("encodes"),
            vec![
                1, 1, 2, 1, 0, 0, 0, 0, 0, 0, 3, 0, b'a', b'/', b'b', 2, 0, 0, 0, b'{', b'}'
            ]
        );
    }

    /// What the engine's writer does with [`CARRY_CREATED_AT`] for a put replacing
    /// `previous`.
    fn carry_created_at(
        previous: &caskade_engine::Previous<'_>,
        meta: &mut [u8],
    ) -> Result<(), &'static str> {
        write_created_at((CARRY_CREATED_AT.word)(previous)?, meta)
    }

    #[test]
    fn a_carried_section_keeps_the_creation_time() {
        let section = |created_at_ms| {
            RecordMeta {
                kind: Kind::Json,
                content_type: "application/json",
                metadata: Some(b"{}"),
                created_at_ms,
            }
            .encode()
            .expect("encodes")
        };
        let mut new = section(CREATED_BY_THIS_RECORD);
        // The predecessor created the key itself: its write time is the creation time.
        let first = section(CREATED_BY_THIS_RECORD);
        let previous = |meta| caskade_engine::Previous {
            meta,
            version: 1,
            written_at_ms: 5_000,
        };
        carry_created_at(&previous(&first), &mut new).expect("carries");
        let decoded = RecordMeta::decode(&new).expect("decodes");
        assert_eq!(decoded.created_at_ms, 5_000);
        assert_eq!(decoded.metadata, Some(&b"{}"[..]));
        // A predecessor that kept an older creation time passes it on.
        let older = section(1_000);
        carry_created_at(&previous(&older), &mut new).expect("carries");
        assert_eq!(
            RecordMeta::decode(&new).expect("decodes").created_at_ms,
            1_000
        );
        // Damage is an error, never a guess.
        assert!(carry_created_at(&previous(&older[..5]), &mut new).is_err());
        // A creation time after the predecessor's own write time (beyond a clock step)
        // is damage, refused.
        let future = section(5_001 + CLOCK_STEP_MARGIN_MS);
        assert!(carry_created_at(&previous(&future), &mut new).is_err());
        // Within a clock step back it is kept: the key stays writable.
        let stepped = section(5_000 + CLOCK_STEP_MARGIN_MS);
        carry_created_at(&previous(&stepped), &mut new).expect("carries");
        assert_eq!(
            RecordMeta::decode(&new).expect("decodes").created_at_ms,
            5_000 + CLOCK_STEP_MARGIN_MS
        );
        carry_created_at(&previous(&older), &mut new).expect("carries");
        assert_eq!(
            RecordMeta::decode(&new).expect("decodes").created_at_ms,
            1_000,
            "a refused carry leaves the section as it was"
        );
        assert!(carry_created_at(&previous(&older), &mut new[..4]).is_err());
    }

    #[test]
    fn damaged_sections_are_errors_not_panics() {
        let bytes = RecordMeta {
            kind: Kind::Json,
            content_type: "application/json",
            metadata: Some(b"{\"k\":true}"),
            created_at_ms: 7,
        }
        .encode()
        .expect("encodes");
        for cut in 0..bytes.len() {
            assert!(RecordMeta::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(RecordMeta::decode(&extra).is_err());
        let mut version = bytes.clone();
        version[0] = 2;
        assert!(RecordMeta::decode(&version).is_err());
        let mut kind = bytes;
        kind[1] = 9;
        assert!(RecordMeta::decode(&kind).is_err());
    }
}
