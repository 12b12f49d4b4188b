//! Task ID to slot, in 5 bytes a bucket: the table keeps slot numbers only,
//! and reads the IDs from the entries themselves (a map keyed by the ID
//! would keep a second pointer to each ID, 24 bytes a bucket).

use hashbrown::HashTable;

use super::entry::Entry;
use crate::fasthash::hash_str as hash;

/// The scheduler's slots: a task's slot number is stable while it lives.
pub(crate) type Slots = Vec<Option<Box<Entry>>>;

#[derive(Default)]
pub(crate) struct TaskIndex {
    table: HashTable<u32>,
}

fn id_of(slots: &Slots, slot: u32) -> &str {
    // The index only holds slots that hold an entry.
    slots[slot as usize].as_deref().map_or("", |e| &e.id)
}

impl TaskIndex {
    /// The slot of task `id`.
    pub(crate) fn get(&self, slots: &Slots, id: &str) -> Option<u32> {
        self.table.find(hash(id), |&s| id_of(slots, s) == id).copied()
    }

    /// Indexes `slot`, which holds task `id` already (and `id` is not indexed).
    pub(crate) fn insert(&mut self, slots: &Slots, id: &str, slot: u32) {
        self.table.insert_unique(hash(id), slot, |&s| hash(id_of(slots, s)));
    }

    /// Forgets task `id` (its slot still holds it): its slot, if it was indexed.
    pub(crate) fn remove(&mut self, slots: &Slots, id: &str) -> Option<u32> {
        let found = self.table.find_entry(hash(id), |&s| id_of(slots, s) == id).ok()?;
        Some(found.remove().0)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Every indexed slot, in no particular order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().copied()
    }
}
