//! Compact pieces of a task, for the places that hold many tasks (the
//! scheduler and the memory store): 12-byte instants, and a [`Shape`] (the
//! part of a definition that tasks commonly have in common) interned so that
//! equal ones are kept once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::fasthash::Fnv;
use crate::task::{DefaultTask, MisfirePolicy, OverlapPolicy};

/// An instant in 12 bytes (jiff's `Timestamp` takes 16), exact over jiff's
/// whole range.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub(crate) struct Ts {
    secs: i64,
    nanos: i32,
}

impl Ts {
    pub(crate) fn new(t: Timestamp) -> Ts {
        Ts { secs: t.as_second(), nanos: t.subsec_nanosecond() }
    }

    pub(crate) fn get(self) -> Timestamp {
        // The parts came from a valid `Timestamp`.
        Timestamp::new(self.secs, self.nanos).expect("a stored instant is valid")
    }
}

/// An optional instant in 12 bytes: `nanos == i32::MIN` is none.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
pub(crate) struct OptTs {
    secs: i64,
    nanos: i32,
}

impl OptTs {
    pub(crate) const NONE: OptTs = OptTs { secs: 0, nanos: i32::MIN };

    pub(crate) fn new(t: Option<Timestamp>) -> OptTs {
        match t {
            Some(t) => OptTs { secs: t.as_second(), nanos: t.subsec_nanosecond() },
            None => OptTs::NONE,
        }
    }

    pub(crate) fn get(self) -> Option<Timestamp> {
        (self.nanos != i32::MIN)
            .then(|| Timestamp::new(self.secs, self.nanos).expect("a stored instant is valid"))
    }

    pub(crate) fn is_none(self) -> bool {
        self.nanos == i32::MIN
    }
}

impl fmt::Debug for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

impl fmt::Debug for OptTs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

/// The definition of a task minus its identity, handler and run state:
/// what a template of tasks shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    pub(crate) schedule: Arc<str>,
    pub(crate) description: Arc<str>,
    pub(crate) tags: Arc<BTreeMap<String, String>>,
    pub(crate) time_zone: Option<Arc<str>>,
    pub(crate) timeout: Duration,
    pub(crate) retry_delay: Duration,
    pub(crate) misfire_grace: Duration,
    pub(crate) max_retries: u32,
    pub(crate) overlap: OverlapPolicy,
    pub(crate) misfire: MisfirePolicy,
}

impl Shape {
    /// `task`'s shape.
    pub(crate) fn of(task: &DefaultTask) -> Shape {
        Shape {
            schedule: task.schedule.clone(),
            description: task.description.clone(),
            tags: task.tags.clone(),
            time_zone: task.time_zone.clone(),
            timeout: task.timeout,
            retry_delay: task.retry_delay,
            misfire_grace: task.misfire_grace,
            max_retries: task.max_retries,
            overlap: task.overlap,
            misfire: task.misfire,
        }
    }

    /// Gives `task` this shape.
    pub(crate) fn apply(&self, task: &mut DefaultTask) {
        task.schedule = self.schedule.clone();
        task.description = self.description.clone();
        task.tags = self.tags.clone();
        task.time_zone = self.time_zone.clone();
        task.timeout = self.timeout;
        task.retry_delay = self.retry_delay;
        task.misfire_grace = self.misfire_grace;
        task.max_retries = self.max_retries;
        task.overlap = self.overlap;
        task.misfire = self.misfire;
    }
}

/// Keeps one copy of each distinct value in use.
#[derive(Debug)]
pub(crate) struct Interner<T> {
    set: HashSet<Arc<T>, BuildHasherDefault<Fnv>>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Interner { set: HashSet::default() }
    }
}

impl<T: Hash + Eq> Interner<T> {
    /// The shared copy of `value`.
    pub(crate) fn intern(&mut self, value: T) -> Arc<T> {
        if let Some(v) = self.set.get(&value) {
            return v.clone();
        }
        let v = Arc::new(value);
        self.set.insert(v.clone());
        v
    }

    /// Forgets `value` if the caller holds its last use (and is about to
    /// drop it).
    pub(crate) fn release(&mut self, value: &Arc<T>) {
        if Arc::strong_count(value) == 2 {
            self.set.remove(&**value);
        }
    }

    /// How many distinct values are in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_exactly() {
        let cases = [
            Timestamp::UNIX_EPOCH,
            Timestamp::MIN,
            Timestamp::MAX,
            Timestamp::new(1_700_000_000, 123_456_789).unwrap(),
            Timestamp::new(-1, -1).unwrap(),
        ];
        for t in cases {
            assert_eq!(Ts::new(t).get(), t);
            assert_eq!(OptTs::new(Some(t)).get(), Some(t));
        }
        assert_eq!(OptTs::new(None).get(), None);
        assert!(OptTs::NONE.is_none());
        assert_eq!(std::mem::size_of::<Ts>(), 12);
        assert_eq!(std::mem::size_of::<OptTs>(), 12);
    }

    #[test]
    fn interned_values_are_kept_once_while_used() {
        let mut i = Interner::default();
        let a = i.intern(String::from("a"));
        let a2 = i.intern(String::from("a"));
        let b = i.intern(String::from("b"));
        assert!(Arc::ptr_eq(&a, &a2));
        assert_eq!(i.len(), 2);
        i.release(&a2);
        drop(a2);
        assert_eq!(i.len(), 2, "`a` is still used");
        i.release(&a);
        drop(a);
        assert_eq!(i.len(), 1);
        i.release(&b);
        assert_eq!(i.len(), 0);
    }
}
