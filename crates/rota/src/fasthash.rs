//! A fast hasher for the scheduler's internal maps keyed by task ID.
//!
//! std's SipHash resists hash flooding, which these maps do not need: their
//! keys are task IDs that the program itself chose, not input from a network
//! peer. FNV-1a hashes a short ID several times faster, and these maps are on
//! the path of every fire.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A `HashMap` with [`Fnv`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// `s` hashed with [`Fnv`] as a `str` is hashed (for `hashbrown::HashTable`s
/// keyed by a string kept elsewhere).
pub(crate) fn hash_str(s: &str) -> u64 {
    BuildHasherDefault::<Fnv>::default().hash_one(s)
}
