//! Identifier newtypes. Shards, slots, route hashes and hosts are never bare integers or
//! strings: each is built through a validating constructor, so a value of the type is
//! always a legal one.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The fixed number of slots the key space is cut into. Never changes: rebalancing moves
/// whole slots between shards, so every row's slot must stay the same forever.
pub const SLOT_COUNT: u16 = 4096;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("shard id {0:?} must be 1..=32 characters of [a-z0-9_-]")]
    BadShardId(String),
    #[error("slot {0} is out of range 0..{SLOT_COUNT}")]
    SlotOutOfRange(u32),
    #[error("host {0:?} must be host:port with a non-zero port")]
    BadHostAddr(String),
}

/// The name of one shard in the shard map, e.g. `s0`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShardId(String);

impl ShardId {
    /// Parses a shard id: short, lower-case, safe in file names, metrics labels and SQL.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        let ok = (1..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(IdError::BadShardId(raw.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ShardId {
    type Err = IdError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl TryFrom<String> for ShardId {
    type Error = IdError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<ShardId> for String {
    fn from(id: ShardId) -> Self {
        id.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One of the [`SLOT_COUNT`] fixed slots; the unit of placement and of rebalancing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slot(u16);

impl Slot {
    /// Builds a slot, refusing numbers outside the slot range.
    pub fn new(n: u32) -> Result<Self, IdError> {
        u16::try_from(n)
            .ok()
            .filter(|n| *n < SLOT_COUNT)
            .map(Self)
            .ok_or(IdError::SlotOutOfRange(n))
    }

    /// Every slot, in order.
    pub fn all() -> impl Iterator<Item = Slot> {
        (0..SLOT_COUNT).map(Slot)
    }

    /// The slot number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The stable 64-bit hash of a routing key, stored on every sharded row so that a row's
/// slot can be recomputed in SQL (`route_hash mod 4096`) during rebalancing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RouteHash(pub u64);

impl RouteHash {
    /// The slot this hash falls in.
    pub fn slot(self) -> Slot {
        Slot((self.0 % u64::from(SLOT_COUNT)) as u16)
    }

    /// The hash as Postgres stores it (`bigint` is signed; the bits are the same).
    pub fn as_i64(self) -> i64 {
        self.0 as i64
    }
}

/// A Postgres host as `host:port`. Shards list hosts, not roles: which one is primary is
/// discovered at run time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostAddr {
    host: String,
    port: u16,
}

impl HostAddr {
    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for HostAddr {
    type Err = IdError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::BadHostAddr(raw.to_owned());
        let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl TryFrom<String> for HostAddr {
    type Error = IdError;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        raw.parse()
    }
}

impl From<HostAddr> for String {
    fn from(addr: HostAddr) -> Self {
        addr.to_string()
    }
}

impl fmt::Display for HostAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids_accept_short_lowercase_names_only() {
        assert!(ShardId::parse("s0").is_ok());
        assert!(ShardId::parse("eu-west_2").is_ok());
        for bad in ["", "S0", "s 0", "s0;drop", &"x".repeat(33)] {
            assert!(ShardId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn slots_outside_the_range_are_refused() {
        assert_eq!(Slot::new(4095).unwrap().get(), 4095);
        assert_eq!(Slot::new(4096), Err(IdError::SlotOutOfRange(4096)));
    }

    #[test]
    fn host_addresses_need_a_host_and_a_port() {
        let addr: HostAddr = "127.0.0.1:5432".parse().unwrap();
        assert_eq!((addr.host(), addr.port()), ("127.0.0.1", 5432));
        for bad in ["127.0.0.1", ":5432", "h:0", "h:99999", "h:p"] {
            assert!(
                bad.parse::<HostAddr>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
