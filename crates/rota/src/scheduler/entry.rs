//! How the scheduler holds a task: a compact [`Entry`], not a whole
//! [`DefaultTask`].
//!
//! A `DefaultTask` takes 312 bytes before its strings. An entry takes 152:
//! - it keeps inline only what tells one task from another: ID, name, handler,
//!   enabled, and six instants stored as 12-byte values;
//! - the rest of the definition (schedule and its parsed form, time zone,
//!   description, tags, timeout, retries, policies) is a [`Def`]. Tasks with
//!   equal definitions share one `Def`, so 100,000 tasks declared from one
//!   template pay for it once;
//! - run state and counters ([`Extra`]) are allocated at the first run, skip
//!   or miss, or when a task comes in with run state already.
//!
//! [`Entry::to_task`] rebuilds the `DefaultTask` for `get`, stores and events.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::compact::Shape;
pub(crate) use crate::compact::{OptTs, Ts};
use crate::cron::Schedule;
use crate::task::{DefaultTask, OverlapPolicy, TaskHandler};

/// A task's shape as this scheduler uses it, interned per scheduler (see
/// `State::defs`). Equality and hashing cover `shape` and `handler_name`;
/// `schedule` and `zone` follow from them.
#[derive(Debug)]
pub(crate) struct Def {
    pub(crate) shape: Shape,
    /// Set only when it is not the handler's own name: a task loaded from
    /// the store whose handler is not registered (yet), or a definition that
    /// names a handler other than the one it holds.
    pub(crate) handler_name: Arc<str>,
    /// `shape.schedule`, parsed.
    pub(crate) schedule: Schedule,
    /// `shape.time_zone`, resolved (or the scheduler's zone).
    pub(crate) zone: TimeZone,
}

impl Def {
    /// `task`'s definition, with its parsed schedule and zone.
    pub(crate) fn of(task: &DefaultTask, schedule: Schedule, zone: TimeZone) -> Def {
        let own_name = task.handler.as_ref().is_some_and(|h| h.name() == &*task.handler_name);
        Def {
            shape: Shape::of(task),
            handler_name: if own_name {
                crate::task::empty_str()
            } else {
                task.handler_name.clone()
            },
            schedule,
            zone,
        }
    }
}

impl PartialEq for Def {
    fn eq(&self, other: &Def) -> bool {
        self.shape == other.shape && self.handler_name == other.handler_name
    }
}

impl Eq for Def {}

impl Hash for Def {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.shape.hash(state);
        self.handler_name.hash(state);
    }
}

/// Counters, run state and rarely set fields: allocated on first use.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extra {
    pub(crate) run_count: i64,
    pub(crate) failed_count: i64,
    pub(crate) retry_count: u32,
    pub(crate) last_error: Option<Arc<str>>,
    pub(crate) stats: EntryStats,
    /// Loaded from the store without a registered handler: the stored
    /// `enabled` and `last_error`, restored when the handler is registered.
    /// A held task is never written back, so the store keeps it intact.
    pub(crate) held: Option<(bool, String)>,
}

/// What the scheduler counts per task beyond the seed's fields.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EntryStats {
    pub(crate) total_duration: Duration,
    pub(crate) total_latency: Duration,
    pub(crate) started_runs: i64,
    pub(crate) missed: i64,
    pub(crate) skipped: i64,
}

/// One task, as the scheduler holds it.
pub(crate) struct Entry {
    pub(crate) id: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) handler: Option<Arc<dyn TaskHandler>>,
    pub(crate) def: Arc<Def>,
    pub(crate) extra: Option<Box<Extra>>,
    pub(crate) created_at: Ts,
    pub(crate) updated_at: Ts,
    pub(crate) last_run_at: OptTs,
    pub(crate) next_run_at: OptTs,
    /// Where an `@every` interval counts from.
    pub(crate) anchor: Ts,
    /// The latest fire handled (run, skipped or missed): never handled twice.
    pub(crate) last_fire: OptTs,
    /// Tells this task from another one that later takes its slot (and
    /// maybe its ID): prepared fires check it.
    pub(crate) serial: u32,
    pub(crate) gen: u32,
    pub(crate) running: u32,
    pub(crate) enabled: bool,
    /// Queued for the write-behind to the store.
    pub(crate) dirty: bool,
}

impl Entry {
    /// An entry for `task`, with its interned definition.
    pub(crate) fn new(task: DefaultTask, def: Arc<Def>, serial: u32, anchor: Timestamp) -> Entry {
        let mut e = Entry {
            id: task.id.clone(),
            name: task.name.clone(),
            handler: None,
            def: def.clone(),
            extra: None,
            created_at: Ts::new(task.created_at),
            updated_at: Ts::new(task.updated_at),
            last_run_at: OptTs::NONE,
            next_run_at: OptTs::NONE,
            anchor: Ts::new(anchor),
            last_fire: OptTs::NONE,
            serial,
            gen: serial,
            running: 0,
            enabled: false,
            dirty: false,
        };
        e.assign(task, def);
        e
    }

    /// Takes `task`'s definition and run state (counts, retries, last run
    /// and error, next fire). What only the scheduler counts (`stats`), a
    /// held task's stored state and the fire history stay.
    pub(crate) fn assign(&mut self, task: DefaultTask, def: Arc<Def>) {
        self.set_run_state(&task);
        self.id = task.id;
        self.name = task.name;
        self.handler = task.handler;
        self.def = def;
        self.created_at = Ts::new(task.created_at);
        self.updated_at = Ts::new(task.updated_at);
        self.last_run_at = OptTs::new(task.last_run_at);
        self.next_run_at = OptTs::new(task.next_run_at);
        self.enabled = task.enabled;
    }

    /// Takes `task`'s counts, retries and last error; allocates the extra
    /// block only for a task that has any (or has the block already).
    fn set_run_state(&mut self, task: &DefaultTask) {
        let has_state = task.run_count != 0
            || task.failed_count != 0
            || task.retry_count != 0
            || !task.last_error.is_empty();
        if has_state || self.extra.is_some() {
            let x = self.extra_mut();
            x.run_count = task.run_count;
            x.failed_count = task.failed_count;
            x.retry_count = task.retry_count;
            x.last_error = (!task.last_error.is_empty()).then(|| task.last_error.clone());
        }
    }

    /// The task as a `DefaultTask`.
    pub(crate) fn to_task(&self) -> DefaultTask {
        let d = &*self.def;
        let x = self.extra.as_deref();
        let handler_name = match &self.handler {
            Some(h) if d.handler_name.is_empty() => Arc::from(h.name()),
            _ => d.handler_name.clone(),
        };
        let mut t = DefaultTask {
            id: self.id.clone(),
            name: self.name.clone(),
            handler: self.handler.clone(),
            handler_name,
            enabled: self.enabled,
            created_at: self.created_at.get(),
            updated_at: self.updated_at.get(),
            last_run_at: self.last_run_at.get(),
            next_run_at: self.next_run_at.get(),
            run_count: x.map_or(0, |x| x.run_count),
            failed_count: x.map_or(0, |x| x.failed_count),
            last_error: self.last_error(),
            retry_count: x.map_or(0, |x| x.retry_count),
            ..DefaultTask::blank()
        };
        d.shape.apply(&mut t);
        t
    }

    /// The handler's name: the one the definition names, else the handler's.
    pub(crate) fn handler_name(&self) -> &str {
        match &self.handler {
            Some(h) if self.def.handler_name.is_empty() => h.name(),
            _ => &self.def.handler_name,
        }
    }

    pub(crate) fn last_error(&self) -> Arc<str> {
        match self.extra.as_deref().and_then(|x| x.last_error.clone()) {
            Some(e) => e,
            None => crate::task::empty_str(),
        }
    }

    pub(crate) fn run_count(&self) -> i64 {
        self.extra.as_deref().map_or(0, |x| x.run_count)
    }

    pub(crate) fn failed_count(&self) -> i64 {
        self.extra.as_deref().map_or(0, |x| x.failed_count)
    }

    pub(crate) fn held(&self) -> bool {
        self.extra.as_deref().is_some_and(|x| x.held.is_some())
    }

    /// Holds the task (or stops holding it) for an unregistered handler.
    pub(crate) fn set_held(&mut self, held: Option<(bool, String)>) {
        if held.is_some() || self.extra.is_some() {
            self.extra_mut().held = held;
        }
    }

    pub(crate) fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    pub(crate) fn stats(&self) -> EntryStats {
        self.extra.as_deref().map(|x| x.stats).unwrap_or_default()
    }

    pub(crate) fn stats_mut(&mut self) -> &mut EntryStats {
        &mut self.extra_mut().stats
    }

    /// The first fire of the schedule after `from`.
    pub(crate) fn next_after(&self, from: Timestamp) -> Option<Timestamp> {
        self.def.schedule.next_after(from, &self.def.zone, self.anchor.get())
    }

    pub(crate) fn overlap(&self) -> OverlapPolicy {
        self.def.shape.overlap
    }

    pub(crate) fn misfire_grace(&self) -> Duration {
        self.def.shape.misfire_grace
    }

    /// Takes a stored copy's run state (for a task declared in code): counts,
    /// last run and error, and the next fire if the schedule did not change.
    pub(crate) fn merge_run_state(&mut self, stored: DefaultTask) {
        let same_schedule = self.def.shape.schedule == stored.schedule
            && self.def.shape.time_zone == stored.time_zone;
        self.last_run_at = OptTs::new(stored.last_run_at);
        self.created_at = Ts::new(stored.created_at);
        if same_schedule && self.enabled && stored.next_run_at.is_some() {
            self.next_run_at = OptTs::new(stored.next_run_at);
        }
        self.set_run_state(&stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_stays_compact() {
        // The budget of issue 3 (400 B per task in all) depends on this.
        assert!(std::mem::size_of::<Entry>() <= 152, "Entry is {} B", std::mem::size_of::<Entry>());
    }
}
