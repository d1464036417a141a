//! Item ids (posts, tasks, files): the owner's user id followed by a UUIDv7, 64 lowercase
//! hex characters in all. Opaque to clients, but they route without a lookup: the first
//! half is the owner, whose hash picks the shard.

use std::fmt;

use crate::auth::ids::UserId;

/// The id of a post, task or file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemId {
    owner: UserId,
    text: String,
}

impl ItemId {
    /// A new, time-ordered id for an item of `owner`.
    pub fn generate(owner: &UserId) -> Self {
        let local = uuid::Uuid::now_v7().simple().to_string();
        Self {
            owner: owner.clone(),
            text: format!("{owner}{local}"),
        }
    }

    /// Parses an id from a path; `None` when it is not one (answered as 404).
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() != 64
            || !raw
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        Some(Self {
            owner: UserId::parse(&raw[..32])?,
            text: raw.to_owned(),
        })
    }

    /// Parses an id of one of `owner`'s items; `None` for anything else (answered as
    /// 404 by owner-only routes, which never reveal another user's items).
    pub fn owned_by(raw: &str, owner: &UserId) -> Option<Self> {
        Self::parse(raw).filter(|id| id.owner() == owner)
    }

    /// The owner, whose shard holds the item.
    pub fn owner(&self) -> &UserId {
        &self.owner
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_id_names_its_owner() {
        let owner = UserId::generate();
        let id = ItemId::generate(&owner);
        let parsed = ItemId::parse(id.as_str()).unwrap();
        assert_eq!(parsed.owner(), &owner);
        assert_eq!(parsed, id);
    }

    #[test]
    fn anything_else_is_not_an_item_id() {
        let good = ItemId::generate(&UserId::generate()).to_string();
        for bad in [
            String::new(),
            good[..63].to_owned(),
            good.to_uppercase(),
            format!("{good}0"),
            "../../etc/passwd".into(),
        ] {
            assert_eq!(ItemId::parse(&bad), None, "{bad:?}");
        }
    }
}
