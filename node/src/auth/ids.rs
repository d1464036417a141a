//! User and session ids: 32 lowercase hex characters, time-ordered (UUIDv7) for users so
//! new rows land at the end of the primary-key index, random (UUIDv4) for sessions.
//! A user id is its own routing key: `route_hash(user id)` picks the shard.

use std::fmt;

use strata_router::{RouteHash, route_hash};

fn is_id(raw: &str) -> bool {
    raw.len() == 32
        && raw
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A user's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// A new, time-ordered id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    /// Parses an id from a token or a path; `None` when it is not one.
    pub fn parse(raw: &str) -> Option<Self> {
        is_id(raw).then(|| Self(raw.to_owned()))
    }

    /// Where the user's rows live.
    pub fn route_hash(&self) -> RouteHash {
        route_hash(&self.0)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A session's id (one login, and the family of refresh tokens that follow it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    /// A new random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Parses an id from a token or a path; `None` when it is not one.
    pub fn parse(raw: &str) -> Option<Self> {
        is_id(raw).then(|| Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_characters() {
        assert!(UserId::parse(UserId::generate().as_str()).is_some());
        assert!(SessionId::parse(SessionId::generate().as_str()).is_some());
        for bad in [
            "",
            "ABCDEF0123456789ABCDEF0123456789",
            "g0000000000000000000000000000000",
            "../../etc/passwd",
        ] {
            assert_eq!(UserId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn user_ids_are_time_ordered() {
        let a = UserId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(UserId::generate() > a);
    }
}
