//! Routing key → route hash → slot. The hash is XXH3-64 over the key's UTF-8 bytes with
//! seed 0: a fixed byte encoding and a fixed algorithm, never std's `Hash`, so every
//! node, language and version agrees on where a key lives. Golden tests pin it.

use crate::ids::{RouteHash, Slot};

/// The stable 64-bit hash of a routing key (a user id, or a normalized login name).
pub fn route_hash(routing_key: &str) -> RouteHash {
    RouteHash(xxhash_rust::xxh3::xxh3_64(routing_key.as_bytes()))
}

/// The slot a routing key falls in.
pub fn slot_of(routing_key: &str) -> Slot {
    route_hash(routing_key).slot()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden table: if any line changes, every stored row would be in the wrong slot.
    /// The empty-input hash is XXH3-64's published test vector.
    #[test]
    fn route_hashes_and_slots_never_change() {
        let golden: &[(&str, u64, u16)] = &[
            ("", 0x2d06800538d394c2, 1218),
            ("alice", 0x4da10dd61a0116b0, 1712),
            ("bob", 0x1403c0c40f49b8e5, 2277),
            ("user:0001", 0x041b86d6263a4cef, 3311),
        ];
        for (key, hash, slot) in golden {
            let h = route_hash(key);
            assert_eq!(h.0, *hash, "route hash of {key:?}");
            assert_eq!(h.slot().get(), *slot, "slot of {key:?}");
        }
    }

    #[test]
    fn slot_is_the_hash_modulo_the_slot_count() {
        let h = route_hash("carol");
        assert_eq!(u64::from(h.slot().get()), h.0 % 4096);
    }
}
