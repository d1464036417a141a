//! Keyset pagination cursors: the `(created_at, id)` of the last item of a page, as
//! opaque base64url text. The next page is everything strictly after it in the list
//! order (newest first), which stays correct while items are added.

use base64::Engine;
use time::OffsetDateTime;

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

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        let micros = self.created_at.unix_timestamp_nanos() / 1000;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}:{}", self.id))
    }

    /// Parses what a client sent back.
    pub fn decode(raw: &str) -> Result<Self, CursorError> {
        if raw.len() > 200 {
            return Err(CursorError);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| CursorError)?;
        let text = String::from_utf8(bytes).map_err(|_| CursorError)?;
        let (micros, id) = text.split_once(':').ok_or(CursorError)?;
        let micros: i128 = micros.parse().map_err(|_| CursorError)?;
        let created_at =
            OffsetDateTime::from_unix_timestamp_nanos(micros * 1000).map_err(|_| CursorError)?;
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

    #[test]
    fn cursors_round_trip_to_the_microsecond() {
        let cursor = Cursor {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_000)
                .unwrap(),
            id: "ab12".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn foreign_cursors_are_refused() {
        for bad in ["", "!!!", "bm90IGEgY3Vyc29y", &"A".repeat(300)] {
            assert_eq!(Cursor::decode(bad), Err(CursorError), "{bad:?}");
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
