//! Read-your-writes across nodes. Every write answers with a consistency token naming
//! the shard and the WAL position at or after its commit (`s0@0/3A2B1C8`, several
//! separated by commas when a client has written to several shards). A read that sends
//! the token back (header or cookie) is served only by a replica that has replayed that
//! far, or by the primary. Like Cosmos DB's session tokens.

use std::collections::BTreeMap;
use std::fmt;

use strata_router::{Lsn, ShardId};

/// The header (and cookie) name.
pub const CONSISTENCY_HEADER: &str = "x-strata-consistency";

/// Most shards a token may name (bounds what a client can make a node parse). The
/// OpenAPI pattern allows one more entry: the epoch.
pub const MAX_ENTRIES: usize = 64;

/// Shard → the WAL position a reader must have reached, and the placement epoch the
/// reader must know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsistencyToken {
    positions: BTreeMap<ShardId, Lsn>,
    epoch: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed consistency token; send back the value a write returned")]
pub struct TokenFormatError;

impl ConsistencyToken {
    /// Parses `shard@lsn[,shard@lsn...][,eEPOCH]`, exactly the grammar the OpenAPI
    /// description publishes (`CONSISTENCY_PATTERN`): no blanks, no empty entries (one
    /// trailing comma allowed), upper-case hex positions, at most `MAX_ENTRIES` shards
    /// and one epoch. The empty string is the empty token.
    pub fn parse(raw: &str) -> Result<Self, TokenFormatError> {
        let mut token = Self::default();
        if raw.is_empty() {
            return Ok(token);
        }
        let body = raw.strip_suffix(',').unwrap_or(raw);
        let parts: Vec<&str> = body.split(',').collect();
        if parts.len() > MAX_ENTRIES + 1 {
            return Err(TokenFormatError);
        }
        for part in parts {
            if let Some(digits) = part.strip_prefix('e').filter(|d| !d.contains('@')) {
                token.epoch = token.epoch.max(parse_epoch(digits)?);
                continue;
            }
            let (shard, lsn) = part.split_once('@').ok_or(TokenFormatError)?;
            let shard = ShardId::parse(shard).map_err(|_| TokenFormatError)?;
            let lsn = parse_position(lsn)?;
            let entry = token.positions.entry(shard).or_insert(lsn);
            *entry = (*entry).max(lsn);
        }
        if token.positions.len() > MAX_ENTRIES {
            return Err(TokenFormatError);
        }
        Ok(token)
    }

    /// A token for one write.
    pub fn single(shard: ShardId, lsn: Lsn) -> Self {
        Self {
            positions: BTreeMap::from([(shard, lsn)]),
            epoch: 0,
        }
    }

    /// This token, requiring at least placement `epoch`.
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = self.epoch.max(epoch);
        self
    }

    /// The placement epoch a reader must know (0: any).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This token with `other` folded in (the later position wins per shard), so a
    /// client writing to several shards keeps one token.
    pub fn merged(mut self, other: &ConsistencyToken) -> Self {
        for (shard, lsn) in &other.positions {
            let entry = self.positions.entry(shard.clone()).or_insert(*lsn);
            *entry = (*entry).max(*lsn);
        }
        self.epoch = self.epoch.max(other.epoch);
        self
    }

    /// The position a read of `shard` must wait for, if any.
    pub fn required(&self, shard: &ShardId) -> Option<Lsn> {
        self.positions.get(shard).copied()
    }
}

/// `eN`'s digits: 1 to 19 ASCII digits (no sign).
fn parse_epoch(digits: &str) -> Result<u64, TokenFormatError> {
    if !(1..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenFormatError);
    }
    digits.parse().map_err(|_| TokenFormatError)
}

/// A WAL position as Postgres prints it: `HI/LO`, each 1 to 8 upper-case hex digits.
fn parse_position(text: &str) -> Result<Lsn, TokenFormatError> {
    let upper_hex = |half: &str| {
        (1..=8).contains(&half.len())
            && half
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    };
    match text.split_once('/') {
        Some((hi, lo)) if upper_hex(hi) && upper_hex(lo) => {
            text.parse().map_err(|_| TokenFormatError)
        }
        _ => Err(TokenFormatError),
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .positions
            .iter()
            .map(|(s, l)| format!("{s}@{l}"))
            .collect();
        if self.epoch > 0 {
            parts.push(format!("e{}", self.epoch));
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str) -> ShardId {
        ShardId::parse(id).unwrap()
    }

    #[test]
    fn tokens_round_trip_and_merge_to_the_later_position() {
        let token = ConsistencyToken::parse("s0@0/3A2B1C8,s1@1/0").unwrap();
        assert_eq!(ConsistencyToken::parse(&token.to_string()).unwrap(), token);
        let merged = token.merged(&ConsistencyToken::single(
            shard("s0"),
            "0/FFFFFFFF".parse().unwrap(),
        ));
        assert_eq!(
            merged.required(&shard("s0")),
            Some("0/FFFFFFFF".parse().unwrap())
        );
        assert_eq!(merged.required(&shard("s1")), Some("1/0".parse().unwrap()));
        assert_eq!(merged.required(&shard("s9")), None);
    }

    #[test]
    fn the_placement_epoch_travels_and_the_later_one_wins() {
        let token = ConsistencyToken::parse("s0@0/1,e7").unwrap();
        assert_eq!(token.epoch(), 7);
        assert_eq!(ConsistencyToken::parse(&token.to_string()).unwrap(), token);
        let merged = token
            .merged(&ConsistencyToken::single(shard("s1"), "0/2".parse().unwrap()).with_epoch(9));
        assert_eq!(merged.epoch(), 9);
        assert_eq!(merged.to_string(), "s0@0/1,s1@0/2,e9");
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "s0",
            "s0@",
            "@0/1",
            "S0@0/1",
            "s0@zz",
            "s0@0/1;s1@0/2",
            "e",
            "ex1",
            ",",
            ",s0@0/1",
            "s0@0/1,,",
            " s0@0/1",
            "s0@0/1 ",
            "s0@0/a",
            "s0@+1/1",
            "e+1",
            "e12345678901234567890",
        ] {
            assert_eq!(
                ConsistencyToken::parse(bad),
                Err(TokenFormatError),
                "{bad:?}"
            );
        }
        let huge: Vec<String> = (0..100).map(|i| format!("s{i}@0/1")).collect();
        assert_eq!(
            ConsistencyToken::parse(&huge.join(",")),
            Err(TokenFormatError)
        );
        assert_eq!(
            ConsistencyToken::parse("").unwrap(),
            ConsistencyToken::default()
        );
    }

    #[test]
    fn what_the_published_pattern_allows_is_accepted() {
        let token = ConsistencyToken::parse("s0@0/1,").unwrap();
        assert_eq!(token.required(&shard("s0")), Some("0/1".parse().unwrap()));
        let most: Vec<String> = (0..MAX_ENTRIES)
            .map(|i| format!("s{i}@0/1"))
            .chain(["e3".to_owned()])
            .collect();
        let token = ConsistencyToken::parse(&most.join(",")).unwrap();
        assert_eq!(token.epoch(), 3);
    }
}

/// The caller's token, from the header or else the cookie (empty when neither).
#[derive(Debug, Clone, Default)]
pub struct ReadConsistency(pub ConsistencyToken);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ReadConsistency {
    type Rejection = crate::error::ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        // A header was parsed once by `take_token_header`; only the cookie is left.
        if let Some(token) = parts.extensions.get::<ConsistencyToken>() {
            return Ok(Self(token.clone()));
        }
        match crate::auth::cookies::read(&parts.headers, CONSISTENCY_HEADER) {
            None => Ok(Self::default()),
            Some(raw) => ConsistencyToken::parse(&raw)
                .map(Self)
                .map_err(|e| crate::error::ApiError::BadRequest(e.to_string())),
        }
    }
}

/// Parses the consistency header once, for [`ReadConsistency`] (every request, in
/// [`crate::edge`]). One that is not a token this API wrote is a 400 on every route, whether or not the route reads
/// it, so a client learns at once that it sends a broken token (and the API answers as
/// its description says).
pub fn take_token_header(
    request: &mut axum::extract::Request,
) -> Result<(), crate::error::ApiError> {
    if let Some(value) = request.headers().get(CONSISTENCY_HEADER) {
        let parsed = value
            .to_str()
            .map_err(|_| TokenFormatError)
            .and_then(ConsistencyToken::parse);
        match parsed {
            Ok(token) => {
                request.extensions_mut().insert(token);
            }
            Err(e) => return Err(crate::error::ApiError::BadRequest(e.to_string())),
        }
    }
    Ok(())
}

/// Stamps a write's answer with the caller's token merged with the write's, as the
/// header and as a cookie, so the next read anywhere sees the write.
pub fn stamp(
    mut response: axum::response::Response,
    caller: &ConsistencyToken,
    write: &ConsistencyToken,
    secure: bool,
) -> axum::response::Response {
    let merged = caller.clone().merged(write).to_string();
    if let Ok(value) = axum::http::HeaderValue::from_str(&merged) {
        response
            .headers_mut()
            .insert(CONSISTENCY_HEADER, value.clone());
        let cookie = cookie::Cookie::build((CONSISTENCY_HEADER, merged))
            .path("/")
            .http_only(true)
            .secure(secure)
            .same_site(cookie::SameSite::Lax)
            .build();
        if let Ok(value) = axum::http::HeaderValue::from_str(&cookie.to_string()) {
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, value);
        }
    }
    response
}
