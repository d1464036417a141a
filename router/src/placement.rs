//! Slot → shard. Each slot is hashed onto a weighted consistent hash ring of the shards,
//! once, into a table of [`SLOT_COUNT`] entries: a lookup is then an array index. Adding a
//! shard moves only the slots the new shard takes (about 1/(N+1) of them), and only
//! whole slots ever move.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use consistent_hash_ring::{Ring, RingBuilder};
use xxhash_rust::xxh3::Xxh3Builder;

use crate::ids::{RouteHash, SLOT_COUNT, ShardId, Slot};
use crate::shard_map::ShardMap;

/// A shard as a ring node. Hashes exactly its id bytes, so placement does not depend on
/// how std encodes a `String`.
#[derive(Clone, PartialEq, Eq)]
struct RingNode(ShardId);

impl Hash for RingNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_str().as_bytes());
    }
}

/// A slot as a ring key, hashed as its two little-endian bytes on every platform.
struct RingKey(u16);

impl Hash for RingKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0.to_le_bytes());
    }
}

/// Which shard owns each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    owners: Vec<ShardId>,
}

impl Placement {
    /// Places every slot on the map's ring.
    pub fn from_map(map: &ShardMap) -> Self {
        let shards: Vec<(ShardId, u32)> = map
            .shards
            .iter()
            .map(|s| (s.id.clone(), s.weight))
            .collect();
        Self::from_weights(&shards, map.ring.virtual_nodes)
    }

    /// Places every slot on the ring of these shards and weights.
    pub fn from_weights(shards: &[(ShardId, u32)], virtual_nodes: u32) -> Self {
        let weighted = shards.iter().map(|(id, weight)| {
            let vnodes = (weight * virtual_nodes) as usize;
            (RingNode(id.clone()), vnodes)
        });
        // XXH3 with its default seed, not the crate's default FNV: FNV of a two-byte slot
        // number lands in a narrow arc of the ring and skews the split between shards.
        let ring: Ring<RingNode, Xxh3Builder> = RingBuilder::new(Xxh3Builder::new())
            .weighted_nodes_iter(weighted)
            .build();
        let owners = (0..SLOT_COUNT)
            .map(|slot| ring.get(RingKey(slot)).0.clone())
            .collect();
        Self { owners }
    }

    /// A placement recorded elsewhere (the catalog): one owner per slot, in slot order.
    ///
    /// # Panics
    /// When `owners` does not have exactly one entry per slot.
    pub fn from_owners(owners: Vec<ShardId>) -> Self {
        assert_eq!(owners.len(), usize::from(SLOT_COUNT), "one owner per slot");
        Self { owners }
    }

    /// Gives a slot to another shard (a flip recorded in the catalog).
    pub fn set_owner(&mut self, slot: Slot, owner: ShardId) {
        self.owners[usize::from(slot.get())] = owner;
    }

    /// The shard that owns a slot.
    pub fn shard_of_slot(&self, slot: Slot) -> &ShardId {
        &self.owners[usize::from(slot.get())]
    }

    /// The shard that owns a route hash.
    pub fn shard_of(&self, hash: RouteHash) -> &ShardId {
        self.shard_of_slot(hash.slot())
    }

    /// How many slots each shard owns.
    pub fn slot_counts(&self) -> BTreeMap<ShardId, usize> {
        let mut counts = BTreeMap::new();
        for owner in &self.owners {
            *counts.entry(owner.clone()).or_default() += 1;
        }
        counts
    }

    /// The slots whose owner differs between two placements, as (slot, from, to).
    pub fn moves_to<'a>(
        &'a self,
        next: &'a Placement,
    ) -> impl Iterator<Item = (Slot, &'a ShardId, &'a ShardId)> + 'a {
        Slot::all()
            .map(|slot| (slot, self.shard_of_slot(slot), next.shard_of_slot(slot)))
            .filter(|(_, from, to)| from != to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::route_hash;

    fn map(shards: &[(&str, u32)]) -> ShardMap {
        let mut text = String::new();
        for (i, (id, weight)) in shards.iter().enumerate() {
            text += &format!(
                "[[shard]]\nid = \"{id}\"\nweight = {weight}\nhosts = [\"h:{}\"]\n",
                i + 1
            );
        }
        ShardMap::parse(&text).unwrap()
    }

    /// Golden table: key → slot → shard on the default two-shard map. If a line changes,
    /// existing users would be looked for on the wrong shard.
    #[test]
    fn keys_route_to_pinned_slots_and_shards() {
        let placement = Placement::from_map(&map(&[("s0", 1), ("s1", 1)]));
        let golden: &[(&str, u16, &str)] = &[
            ("alice", 1712, "s1"),
            ("bob", 2277, "s1"),
            ("carol", 2980, "s1"),
            ("dave", 1496, "s1"),
            ("user:0001", 3311, "s0"),
            ("user:0002", 2133, "s0"),
            ("user:0003", 1035, "s0"),
            ("0190f3a2-7c1e-7d4b-9a55-3f1e2d4c5b6a", 3273, "s0"),
        ];
        for (key, slot, shard) in golden {
            let h = route_hash(key);
            assert_eq!(h.slot().get(), *slot, "slot of {key:?}");
            assert_eq!(placement.shard_of(h).as_str(), *shard, "shard of {key:?}");
        }
    }

    #[test]
    fn slots_are_spread_evenly_and_by_weight() {
        let even = Placement::from_map(&map(&[("s0", 1), ("s1", 1)])).slot_counts();
        for count in even.values() {
            assert!((1700..=2400).contains(count), "uneven split: {even:?}");
        }
        let weighted = Placement::from_map(&map(&[("s0", 1), ("s1", 3)])).slot_counts();
        let share = weighted[&ShardId::parse("s1").unwrap()] as f64 / f64::from(SLOT_COUNT);
        assert!((0.65..=0.85).contains(&share), "weight 3 of 4 got {share}");
    }

    #[test]
    fn adding_a_third_shard_moves_about_a_third_of_the_slots_all_to_it() {
        let before = Placement::from_map(&map(&[("s0", 1), ("s1", 1)]));
        let after = Placement::from_map(&map(&[("s0", 1), ("s1", 1), ("s2", 1)]));
        let moves: Vec<_> = before.moves_to(&after).collect();
        let share = moves.len() as f64 / f64::from(SLOT_COUNT);
        assert!((0.25..=0.42).contains(&share), "moved {share} of the slots");
        assert!(
            moves.iter().all(|(_, _, to)| to.as_str() == "s2"),
            "a slot moved between old shards"
        );
    }

    #[test]
    fn placement_is_the_same_whatever_the_shard_order() {
        let a = Placement::from_map(&map(&[("s0", 1), ("s1", 1), ("s2", 2)]));
        let b = Placement::from_map(&map(&[("s2", 2), ("s0", 1), ("s1", 1)]));
        assert_eq!(a, b);
    }
}
