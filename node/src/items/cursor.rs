//! Keyset pagination cursors: the `(created_at, id)` of the last item of a page, as
//! opaque base64url text. The next page is everything strictly after it in the list
//! order (newest first), which stays correct while items are added.
//!
//! Cursors are signed (HMAC-SHA256 with a key derived from the cluster's token signing
//! key), so a client can only send back one a node made: a crafted one is a 422, and no
//! value a client invents reaches the database.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// Signs cursors on the way out and checks them on the way in.
#[derive(Clone)]
pub struct CursorSigner {
    key: [u8; 32],
}

/// Bytes of the signature kept in a cursor (128 bits).
const TAG_BYTES: usize = 16;

impl CursorSigner {
    /// A signer whose key is derived from `secret` (the token signing key), so every
    /// node of a cluster accepts every other node's cursors.
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"strata cursor key\0");
        hasher.update(secret);
        Self {
            key: hasher.finalize().into(),
        }
    }

    fn tag(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(payload);
        mac.finalize().into_bytes()[..TAG_BYTES].to_vec()
    }

    /// The opaque, signed text form.
    pub fn encode(&self, cursor: &Cursor) -> String {
        let payload = cursor.payload();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(self.tag(payload.as_bytes()))
        )
    }

    /// Checks and parses what a client sent back.
    pub fn decode(&self, raw: &str) -> Result<Cursor, CursorError> {
        if raw.len() > 200 {
            return Err(CursorError);
        }
        let (payload, tag) = raw.split_once('.').ok_or(CursorError)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| CursorError)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| CursorError)?;
        let expected = self.tag(&payload);
        if tag.len() != TAG_BYTES
            || !bool::from(subtle::ConstantTimeEq::ct_eq(&tag[..], &expected[..]))
        {
            return Err(CursorError);
        }
        Cursor::parse(&String::from_utf8(payload).map_err(|_| CursorError)?)
    }
}

/// Where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: String,
}

/// Why a cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API returned")]
pub struct CursorError;

/// The latest instant a cursor may name (the end of year 9999): far past any item, and
/// inside what both the time library and Postgres can represent.
const LATEST_MICROS: i64 = 253_402_300_799_999_999;

impl Cursor {
    /// The signed part: microseconds since the epoch and the id.
    fn payload(&self) -> String {
        let micros = self.created_at.unix_timestamp_nanos() / 1000;
        format!("{micros}:{}", self.id)
    }

    fn parse(text: &str) -> Result<Self, CursorError> {
        let (micros, id) = text.split_once(':').ok_or(CursorError)?;
        let micros: i64 = micros.parse().map_err(|_| CursorError)?;
        if !(0..=LATEST_MICROS).contains(&micros) {
            return Err(CursorError);
        }
        let created_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
            .map_err(|_| CursorError)?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CursorError);
        }
        Ok(Self {
            created_at,
            id: id.to_owned(),
        })
    }
}

/// The `(created_at, id)` a page starts strictly before: the cursor's, or "after
/// everything" for the first page.
pub fn page_start(after: Option<&Cursor>) -> (OffsetDateTime, String) {
    match after {
        Some(c) => (c.created_at, c.id.clone()),
        None => (
            OffsetDateTime::now_utc() + time::Duration::days(36_500),
            String::new(),
        ),
    }
}

/// Cuts a query result of up to `limit + 1` rows into the page and the cursor of the
/// next one (present only when the extra row shows there is more).
pub fn split_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (OffsetDateTime, String),
) -> (Vec<T>, Option<Cursor>) {
    if rows.len() as i64 <= limit {
        return (rows, None);
    }
    rows.truncate(limit as usize);
    let (created_at, id) = key(rows.last().expect("a full page has a last row"));
    (rows, Some(Cursor { created_at, id }))
}

/// A page size from `?limit=`: 1..=100, default 20.
pub fn page_size(limit: Option<&str>) -> Result<i64, String> {
    match limit {
        None => Ok(20),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => Ok(n),
            _ => Err("limit must be a whole number from 1 to 100".into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> CursorSigner {
        CursorSigner::from_secret(b"a test key")
    }

    #[test]
    fn cursors_round_trip_to_the_microsecond() {
        let cursor = Cursor {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000)
                .unwrap(),
            id: "ab12".into(),
        };
        assert_eq!(signer().decode(&signer().encode(&cursor)).unwrap(), cursor);
    }

    #[test]
    fn foreign_forged_and_out_of_range_cursors_are_refused() {
        let cursor = Cursor {
            created_at: OffsetDateTime::UNIX_EPOCH,
            id: "ab".into(),
        };
        let other_key = CursorSigner::from_secret(b"another key").encode(&cursor);
        let unsigned = URL_SAFE_NO_PAD.encode("1700000000000000:ab");
        let (_, tag) = signer()
            .encode(&cursor)
            .split_once('.')
            .map(|(p, t)| (p.to_owned(), t.to_owned()))
            .unwrap();
        let moved = format!("{}.{tag}", URL_SAFE_NO_PAD.encode("1700000000000000:ab"));
        for bad in [
            "",
            "!!!",
            "bm90IGEgY3Vyc29y",
            &"A".repeat(300),
            &other_key,
            &unsigned,
            &moved,
        ] {
            assert_eq!(signer().decode(bad), Err(CursorError), "{bad:?}");
        }
        for payload in [
            "99999999999999999999999:ab",
            "-315619200000000000:ab",
            "253402300800000000:ab",
        ] {
            assert_eq!(Cursor::parse(payload), Err(CursorError), "{payload}");
        }
    }

    #[test]
    fn a_page_has_a_next_cursor_only_when_more_rows_exist() {
        let at = OffsetDateTime::UNIX_EPOCH;
        let rows = |n: usize| (0..n).map(|i| (at, format!("{i:02x}"))).collect::<Vec<_>>();
        let (page, next) = split_page(rows(3), 2, Clone::clone);
        assert_eq!((page.len(), next.map(|c| c.id)), (2, Some("01".to_owned())));
        let (page, next) = split_page(rows(2), 2, Clone::clone);
        assert_eq!((page.len(), next), (2, None));
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None), Ok(20));
        assert_eq!(page_size(Some("100")), Ok(100));
        for bad in ["0", "101", "-1", "ten", "1e2"] {
            assert!(page_size(Some(bad)).is_err(), "{bad}");
        }
    }
}
