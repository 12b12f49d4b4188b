//! The scheduler: the [`Scheduler`] trait and [`DefaultScheduler`].
//!
//! # Implementation
//!
//! One driver task sleeps until the earliest due fire, kept in a binary heap
//! of `(instant, generation, slot)` entries, and is woken when tasks change.
//! A fire costs O(log n); an idle scheduler does not wake up until its next
//! fire, a change of its tasks, or a step of the wall clock (see
//! [`SystemClock`]), whatever the number of tasks. Changing or removing a task bumps its generation,
//! which turns its heap entries stale instead of searching the heap.
//!
//! The driver wakes a little before an instant (see
//! [`Clock::prepare_ahead`](crate::clock::Clock::prepare_ahead)) and prepares its
//! fires; runners start them all at the instant, polling each handler once
//! in a tight loop, and a handler that does not finish at once continues in
//! a tokio task of its own, where overlap, the concurrency limit, timeout,
//! retries and panics are handled (see `dispatch`). Run state and history
//! are written to the store behind the runs, in batches.

mod dispatch;
mod entry;
pub(crate) mod gate;
mod index;
mod persist;
mod run;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{SharedClock, SystemClock};
use crate::cron::Schedule;
use crate::error::{Error, Result};
use crate::monitor::{DefaultMonitor, Monitor};
use crate::store::{ExecutionQuery, Store, TaskExecution};
use crate::task::{DefaultTask, MisfirePolicy};

use entry::{Def, Entry, OptTs, Ts};

pub use run::Trigger;

type SchedState = State;

/// Due fires prepared per turn of the driver (per hold of the state lock).
const DISPATCH_CHUNK: usize = 2048;

/// The most missed fires counted one by one after downtime; beyond it the
/// count is reported as this number (the scheduler never walks further).
pub const MAX_MISSED_COUNTED: u64 = 100_000;

/// The seed's `Scheduler` interface.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Adds a task: `TaskAlreadyExists` for a taken ID, or the precise validation error.
    async fn add(&self, task: DefaultTask) -> Result<()>;
    /// Removes a task; it never fires again. `TaskNotFound` if absent.
    async fn remove(&self, id: &str) -> Result<()>;
    /// Replaces a task's definition; the new schedule is used from its next fire.
    async fn update(&self, task: DefaultTask) -> Result<()>;
    /// A snapshot of one task.
    fn get(&self, id: &str) -> Result<DefaultTask>;
    /// Snapshots of all tasks, by ID.
    fn get_all(&self) -> Vec<DefaultTask>;
    /// Snapshots of the enabled tasks, by ID.
    fn get_enabled(&self) -> Vec<DefaultTask>;
    /// Starts firing. `SchedulerAlreadyRunning` if running or paused.
    async fn start(&self) -> Result<()>;
    /// Stops gracefully: no new fires; running handlers get the stop grace
    /// period, then are cancelled. `SchedulerAlreadyStopped` if stopped.
    async fn stop(&self) -> Result<()>;
    /// No new fires; running ones finish. `SchedulerNotRunning` unless running.
    async fn pause(&self) -> Result<()>;
    /// Fires again; fires missed while paused follow each task's misfire
    /// policy. `SchedulerNotPaused` unless paused.
    async fn resume(&self) -> Result<()>;
    /// Runs a task now and waits for the run; works whether or not the
    /// scheduler is started. `TaskDisabled` for a disabled task.
    async fn run_now(&self, id: &str) -> Result<()>;
    /// Runs every enabled task now, concurrently; the first error if any failed.
    async fn run_all(&self) -> Result<()>;
    /// The state.
    fn status(&self) -> SchedulerStatus;
    /// Totals.
    fn stats(&self) -> SchedulerStats;
    /// One task's totals.
    fn task_stats(&self, id: &str) -> Result<TaskStats>;
}

/// Running, paused or stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Firing.
    Running,
    /// Started, but not firing.
    Paused,
    /// Not started, or stopped.
    #[default]
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The seed's `SchedulerStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerStatus {
    /// `running`, `paused` or `stopped`.
    pub status: Status,
    /// When the scheduler last started.
    pub started_at: Option<Timestamp>,
    /// Tasks held.
    pub task_count: usize,
}

/// The seed's `SchedulerStats`, plus missed and skipped fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SchedulerStats {
    /// Tasks held.
    pub total_tasks: i64,
    /// Enabled tasks.
    pub enabled_tasks: i64,
    /// Disabled tasks.
    pub disabled_tasks: i64,
    /// Runs finished.
    pub total_runs: i64,
    /// Runs failed.
    pub total_failed: i64,
    /// Successful runs as a percentage of runs (0 with no runs).
    pub success_rate: f64,
    /// When the latest run started.
    pub last_run_at: Option<Timestamp>,
    /// When the scheduler was created.
    pub created_at: Timestamp,
    /// Fires missed (down, paused, clock jump) and not run.
    pub missed_fires: i64,
    /// Fires skipped because the previous run was still going.
    pub skipped_fires: i64,
}

/// The seed's `TaskStats`, plus missed and skipped fires and latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// The task's ID.
    pub task_id: String,
    /// The task's name.
    pub task_name: String,
    /// Runs finished.
    pub run_count: i64,
    /// Runs failed.
    pub failed_count: i64,
    /// Successful runs as a percentage (0 with no runs).
    pub success_rate: f64,
    /// When the latest run started.
    pub last_run_at: Option<Timestamp>,
    /// The next fire.
    pub next_run_at: Option<Timestamp>,
    /// Mean run duration.
    #[serde(with = "crate::task::nanos")]
    pub average_time: Duration,
    /// The last error, empty after a success.
    pub last_error: String,
    /// Fires missed.
    pub missed_fires: i64,
    /// Fires skipped (overlap).
    pub skipped_fires: i64,
    /// Mean lateness: start of the first attempt minus the scheduled instant.
    #[serde(with = "crate::task::nanos")]
    pub average_latency: Duration,
}

/// Something that happened in the scheduler, for [`DefaultScheduler::on_event`].
///
/// These are the hooks Laravel users know as `before`, `after`, `onSuccess`
/// and `onFailure`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An attempt is starting.
    TaskStarting {
        /// The task.
        task_id: String,
        /// The fire.
        scheduled_at: Timestamp,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// A run succeeded.
    TaskSucceeded {
        /// The task.
        task_id: String,
        /// The fire.
        scheduled_at: Timestamp,
        /// How long the successful attempt took.
        duration: Duration,
    },
    /// A run failed for good.
    TaskFailed {
        /// The task.
        task_id: String,
        /// The fire.
        scheduled_at: Timestamp,
        /// The final error.
        error: String,
    },
    /// An attempt failed and will be retried.
    TaskRetried {
        /// The task.
        task_id: String,
        /// The fire.
        scheduled_at: Timestamp,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: String,
    },
    /// An attempt ran out of time (it may still be retried).
    TaskTimedOut {
        /// The task.
        task_id: String,
        /// The fire.
        scheduled_at: Timestamp,
        /// The attempt.
        attempt: u32,
    },
    /// A fire was skipped: the previous run was still going.
    TaskSkipped {
        /// The task.
        task_id: String,
        /// The fire.
        scheduled_at: Timestamp,
    },
    /// Fires were missed and not run (misfire policy).
    TaskMissed {
        /// The task.
        task_id: String,
        /// How many.
        count: u64,
        /// The first missed fire.
        first: Timestamp,
        /// The last missed fire.
        last: Timestamp,
    },
    /// The scheduler started.
    SchedulerStarted,
    /// The scheduler paused.
    SchedulerPaused,
    /// The scheduler resumed.
    SchedulerResumed,
    /// The scheduler stopped.
    SchedulerStopped,
}

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Settings of a [`DefaultScheduler`]; built by [`SchedulerConfig`](crate::SchedulerConfig).
#[derive(Clone)]
pub(crate) struct Settings {
    pub store: Arc<dyn Store>,
    pub monitor: Arc<dyn Monitor>,
    pub clock: SharedClock,
    pub zone: TimeZone,
    pub node_id: Arc<str>,
    pub check_interval: Duration,
    pub max_concurrency: Option<usize>,
    pub logging: bool,
    pub stop_grace: Duration,
    pub registry: crate::HandlerRegistry,
    /// Cluster mode: every scheduled fire passes this gate first, and
    /// `@every` intervals count from the Unix epoch, so that every node
    /// computes the same instants.
    pub gate: Option<Arc<dyn gate::FireGate>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct HeapItem {
    due: Timestamp,
    gen: u32,
    slot: u32,
}

#[derive(Default)]
struct Totals {
    runs: i64,
    failed: i64,
    missed: i64,
    skipped: i64,
    last_run_at: Option<Timestamp>,
}

struct State {
    status: Status,
    started_at: Option<Timestamp>,
    // Boxed: a slot costs a pointer, so the vector's growth slack stays small.
    slots: index::Slots,
    free: Vec<u32>,
    index: index::TaskIndex,
    heap: BinaryHeap<Reverse<HeapItem>>,
    totals: Totals,
    driver_stop: Option<CancellationToken>,
    /// Cancels running handlers when a stop's grace period runs out.
    run_cancel: CancellationToken,
    /// The wall-clock reading at the driver's previous look.
    last_seen: Option<Timestamp>,
    /// Whether the store has been read (on the first start).
    loaded: bool,
    /// Enabled tasks, kept up to date so counting costs nothing.
    enabled: i64,
    /// Tasks the store could not give back, with why.
    load_errors: Vec<crate::store::LoadError>,
    /// `@every` intervals count from the Unix epoch (cluster mode), not from
    /// when the task was added.
    align: bool,
    /// One definition per distinct definition, shared by the tasks that
    /// have it (see `entry`).
    defs: crate::compact::Interner<Def>,
    /// Where the next new task's generation starts.
    gen_seed: u32,
}

impl State {
    /// The slot of task `id`.
    fn find(&self, id: &str) -> Option<u32> {
        self.index.get(&self.slots, id)
    }

    /// Task `id`.
    fn entry(&self, id: &str) -> Option<&Entry> {
        self.find(id).and_then(|s| self.slots[s as usize].as_deref())
    }

    /// Removes task `id`: out of the index, its slot freed, its definition
    /// released. False if there is no such task.
    fn remove(&mut self, id: &str) -> bool {
        let Some(slot) = self.index.remove(&self.slots, id) else {
            return false;
        };
        if let Some(e) = self.slots[slot as usize].take() {
            self.defs.release(&e.def);
            self.enabled -= i64::from(e.enabled);
        }
        self.free.push(slot);
        true
    }

    /// Gives the task in `slot` a new definition (its generation moves on).
    fn redefine(&mut self, slot: u32, task: DefaultTask, parsed: Schedule, zone: TimeZone) {
        let def = self.defs.intern(Def::of(&task, parsed, zone));
        let mut e = self.slots[slot as usize].take().expect("slot");
        self.defs.release(&e.def);
        e.assign(task, def);
        e.gen = e.gen.wrapping_add(1);
        self.slots[slot as usize] = Some(e);
    }
}

pub(crate) struct Inner {
    s: Settings,
    created_at: Timestamp,
    state: Mutex<State>,
    wake: Notify,
    limiter: Option<Arc<Semaphore>>,
    listeners: RwLock<Vec<Listener>>,
    /// True once a listener is registered, so events are only built when wanted.
    has_listeners: std::sync::atomic::AtomicBool,
    tracker: TaskTracker,
    wb: persist::WriteBehind,
    /// Runners the fires of one instant are split over (worker threads).
    workers: usize,
    /// Bumped (under the state lock) by every change that can void a
    /// prepared fire: remove, update, enable, disable, pause, resume, stop,
    /// start, a store sync, a handler bound. Fires prepared under the same
    /// epoch start without taking the lock (see `dispatch`).
    epoch: std::sync::atomic::AtomicU64,
}

/// The seed's `DefaultScheduler`.
///
/// ```
/// use rota::{DefaultScheduler, FuncHandler, DefaultTask, MemoryStore, Scheduler};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> rota::Result<()> {
/// let scheduler = DefaultScheduler::new(Arc::new(MemoryStore::new()));
/// let hello = FuncHandler::new("hello", |_ctx| async { Ok(()) });
/// scheduler.add(DefaultTask::new("hello", "Say hello", "0 * * * * *", hello)).await?;
/// scheduler.start().await?;
/// scheduler.run_now("hello").await?;
/// assert_eq!(scheduler.task_stats("hello")?.run_count, 1);
/// scheduler.stop().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DefaultScheduler {
    inner: Arc<Inner>,
}

impl fmt::Debug for DefaultScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.lock().unwrap();
        f.debug_struct("DefaultScheduler")
            .field("status", &st.status)
            .field("tasks", &st.index.len())
            .finish_non_exhaustive()
    }
}

impl DefaultScheduler {
    /// A scheduler on `store` with the defaults (the seed's `NewScheduler`):
    /// system clock, local zone, a [`DefaultMonitor`], no concurrency limit.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::from_settings(Settings {
            store,
            monitor: Arc::new(DefaultMonitor::new()),
            clock: Arc::new(SystemClock),
            zone: TimeZone::system(),
            node_id: "local".into(),
            check_interval: Duration::from_secs(1),
            max_concurrency: None,
            logging: false,
            stop_grace: Duration::from_secs(30),
            registry: crate::HandlerRegistry::new(),
            gate: None,
        })
    }

    pub(crate) fn from_settings(s: Settings) -> Self {
        let now = s.clock.now();
        DefaultScheduler {
            inner: Arc::new(Inner {
                limiter: s.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
                created_at: now,
                state: Mutex::new(State {
                    status: Status::Stopped,
                    started_at: None,
                    slots: Vec::new(),
                    free: Vec::new(),
                    index: Default::default(),
                    heap: BinaryHeap::new(),
                    totals: Totals::default(),
                    driver_stop: None,
                    run_cancel: CancellationToken::new(),
                    last_seen: None,
                    loaded: false,
                    enabled: 0,
                    load_errors: Vec::new(),
                    align: s.gate.is_some(),
                    defs: Default::default(),
                    gen_seed: 0,
                }),
                wake: Notify::new(),
                listeners: RwLock::new(Vec::new()),
                has_listeners: std::sync::atomic::AtomicBool::new(false),
                tracker: TaskTracker::new(),
                wb: persist::WriteBehind::default(),
                workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
                epoch: std::sync::atomic::AtomicU64::new(0),
                s,
            }),
        }
    }

    /// Calls `listener` for every [`Event`]. Listeners run on the scheduler's
    /// tasks: keep them quick.
    pub fn on_event(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        self.inner.listeners.write().unwrap().push(Arc::new(listener));
        self.inner.has_listeners.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The monitor.
    pub fn monitor(&self) -> Arc<dyn Monitor> {
        self.inner.s.monitor.clone()
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.s.store.clone()
    }

    /// The clock.
    pub fn clock(&self) -> SharedClock {
        self.inner.s.clock.clone()
    }

    /// The node ID this scheduler records in execution history.
    pub fn node_id(&self) -> &str {
        &self.inner.s.node_id
    }

    /// Enables a task; it fires from its next scheduled instant.
    pub async fn enable(&self, id: &str) -> Result<()> {
        self.set_enabled(id, true).await
    }

    /// Disables a task; it stops firing (a running run finishes).
    pub async fn disable(&self, id: &str) -> Result<()> {
        self.set_enabled(id, false).await
    }

    async fn set_enabled(&self, id: &str, on: bool) -> Result<()> {
        let snapshot = {
            let mut st = self.inner.state.lock().unwrap();
            let now = self.inner.s.clock.now();
            let slot = st.find(id).ok_or_else(|| Error::TaskNotFound { id: id.into() })?;
            let running = st.status != Status::Stopped;
            let e = st.slots[slot as usize].as_mut().expect("indexed slot");
            if on && e.held() {
                return Err(Error::TaskHandlerRequired {
                    task: format!("{} (handler {:?} is not registered)", e.name, e.handler_name()),
                });
            }
            let was = e.enabled;
            e.enabled = on;
            e.updated_at = Ts::new(now);
            let delta = i64::from(on) - i64::from(was);
            e.gen = e.gen.wrapping_add(1);
            self.inner.changed();
            let next = if on { e.next_after(now) } else { None };
            e.next_run_at = OptTs::new(next);
            let item = next.map(|due| HeapItem { due, gen: e.gen, slot });
            let snap = e.to_task();
            st.enabled += delta;
            if let (Some(item), true) = (item, running) {
                st.heap.push(Reverse(item));
            }
            snap
        };
        self.inner.wake.notify_one();
        self.inner.s.store.save(&snapshot).await
    }

    /// Execution history from the store, newest first (after writing what is queued).
    pub async fn executions(&self, query: &ExecutionQuery) -> Result<Vec<TaskExecution>> {
        self.flush().await;
        self.inner.s.store.executions(query).await
    }

    /// Writes queued run state and history to the store now. Run state is
    /// written behind the runs, in batches; `stop` flushes too.
    pub async fn flush(&self) {
        self.inner.flush().await
    }

    /// Waits until no run is in progress (for tests and shutdown).
    pub async fn wait_idle(&self) {
        loop {
            let running: u32 = {
                let st = self.inner.state.lock().unwrap();
                st.slots.iter().flatten().map(|e| e.running).sum()
            };
            if running == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn validate_new(&self, task: &DefaultTask) -> Result<(Schedule, TimeZone)> {
        let schedule = task.validate_parsed()?;
        let zone = task.zone(&self.inner.s.zone);
        Ok((schedule, zone))
    }
}

impl Inner {
    /// Voids the fast path of fires prepared so far (call with the state
    /// lock held, after the change).
    pub(crate) fn changed(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// True when events are logged or listened to.
    pub(crate) fn events_on(&self) -> bool {
        self.s.logging || self.has_listeners.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn emit(&self, e: Event) {
        if !self.events_on() {
            return;
        }
        if self.s.logging {
            tracing::info!(target: "rota", event = ?e, "scheduler event");
        }
        let listeners = self.listeners.read().unwrap().clone();
        for l in listeners {
            l(&e);
        }
    }

    fn schedule_entry(st: &mut State, slot: u32, now: Timestamp) {
        let running = st.status != Status::Stopped;
        let e = st.slots[slot as usize].as_mut().expect("slot");
        if !e.enabled {
            e.next_run_at = OptTs::NONE;
            return;
        }
        let from = match e.last_fire.get() {
            Some(last) if last > now => last,
            _ => now,
        };
        let next = e.next_after(from);
        e.next_run_at = OptTs::new(next);
        if let (Some(due), true) = (next, running) {
            let item = HeapItem { due, gen: e.gen, slot };
            st.heap.push(Reverse(item));
        }
    }
}

impl Inner {
    fn insert_entry(
        st: &mut State,
        task: DefaultTask,
        schedule: Schedule,
        zone: TimeZone,
        now: Timestamp,
        held: Option<(bool, String)>,
    ) -> u32 {
        let id: Arc<str> = task.id.clone();
        let anchor = if st.align { Timestamp::UNIX_EPOCH } else { now };
        let def = st.defs.intern(Def::of(&task, schedule, zone));
        // Generations differ between the tasks a slot holds over time, so a
        // fire prepared for a removed task never passes for its successor's.
        st.gen_seed = st.gen_seed.wrapping_add(1 << 20);
        let mut entry = Entry::new(task, def, st.gen_seed, anchor);
        if held.is_some() {
            entry.extra_mut().held = held;
        }
        let enabled = entry.enabled;
        let slot = match st.free.pop() {
            Some(s) => {
                st.slots[s as usize] = Some(Box::new(entry));
                s
            }
            None => {
                st.slots.push(Some(Box::new(entry)));
                (st.slots.len() - 1) as u32
            }
        };
        st.index.insert(&st.slots, &id, slot);
        st.enabled += i64::from(enabled);
        slot
    }
}

/// Fires the driver found due.
enum Due {
    /// Prepared, to start at their instants.
    Staged(Vec<dispatch::Staged>),
    /// Prepared, to pass the cluster gate at their instants first.
    Gated(Arc<dyn gate::FireGate>, Vec<dispatch::Staged>),
}

/// A fire the driver decided to run.
pub(crate) struct Dispatch {
    pub slot: u32,
    pub scheduled: Timestamp,
    /// Catch-up fires of the same task, run one after another after this one.
    pub then: Vec<Timestamp>,
}

impl Inner {
    /// The driver: sleeps until the earliest due fire, dispatches what is due.
    async fn drive(self: Arc<Self>, stop: CancellationToken) {
        // Fires prepared over several turns (a big instant takes several
        // chunks), launched together so one instant gets one runner per worker.
        let mut staged = Vec::new();
        loop {
            let notified = self.wake.notified();
            let (dispatches, next_due, full, lead) = self.collect_due();
            match dispatches {
                Due::Staged(mut fires) => {
                    staged.append(&mut fires);
                    let due_now =
                        staged.first().is_some_and(|f| f.spec.scheduled <= self.s.clock.now());
                    if !full || due_now {
                        self.launch(std::mem::take(&mut staged));
                    }
                }
                Due::Gated(gate, fires) => self.launch_gated(gate, fires),
            }
            if full {
                // More may be due: let the fires just spawned start their
                // handlers before preparing the next chunk.
                tokio::task::yield_now().await;
                continue;
            }
            let now = self.s.clock.now();
            // Nothing wakes the driver but the next fire, a change of the
            // tasks, or a step of the wall clock (see `SystemClock`).
            // Fires are prepared `lead` ahead of their instant.
            let deadline = match next_due {
                Some(due) => due - crate::clock::signed(lead),
                None => now + jiff::SignedDuration::from_hours(24),
            };
            tokio::select! {
                _ = self.s.clock.sleep_until(deadline) => {}
                _ = notified => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Pops every heap entry due by now plus the lead: runs, skips (overlap)
    /// and misfires. Also says whether the chunk was full (more may be due),
    /// and the lead for the next look.
    fn collect_due(self: &Arc<Self>) -> (Due, Option<Timestamp>, bool, Duration) {
        let now = self.s.clock.now();
        let mut st = self.state.lock().unwrap();
        if let Some(prev) = st.last_seen {
            let step = now.duration_since(prev);
            if step.is_negative() && step.unsigned_abs() > Duration::from_secs(1) {
                tracing::warn!(target: "rota", from = %prev, to = %now, "wall clock stepped backward; fires already handled are not repeated");
            }
        }
        st.last_seen = Some(now);
        let mut out = Vec::new();
        if st.status != Status::Running {
            return (Due::Staged(Vec::new()), None, false, Duration::ZERO);
        }
        let mut events = Vec::new();
        let gated = self.s.gate.is_some();
        let horizon = now + crate::clock::signed(self.lead(st.heap.len()));
        let mut prev_fires = Vec::new();
        while let Some(Reverse(top)) = st.heap.peek().copied() {
            if top.due > horizon || out.len() >= DISPATCH_CHUNK {
                break;
            }
            st.heap.pop();
            let Some(Some(e)) = st.slots.get_mut(top.slot as usize) else {
                continue;
            };
            if e.gen != top.gen || !e.enabled {
                continue;
            }
            if e.last_fire.get().is_some_and(|l| top.due <= l) {
                // Already handled (a backward clock step cannot repeat a fire).
                Inner::schedule_entry(&mut st, top.slot, now);
                continue;
            }
            prev_fires.push((e.gen, e.last_fire.get()));
            let late = crate::clock::elapsed(top.due, now);
            if late > e.misfire_grace() {
                // Every fire from `due` up to now was missed.
                let mut fires = vec![top.due];
                let mut count: u64 = 1;
                let mut cur = top.due;
                let keep = match e.def.shape.misfire {
                    MisfirePolicy::Skip => 0,
                    MisfirePolicy::RunOnce => 1,
                    MisfirePolicy::RunAll { max } => max as usize,
                };
                // Fires still within their grace are not missed: they run as
                // usual (at most `DISPATCH_CHUNK` of them).
                let mut on_time = Vec::new();
                while let Some(n) = e.next_after(cur) {
                    if n > now || count >= MAX_MISSED_COUNTED || on_time.len() >= DISPATCH_CHUNK {
                        break;
                    }
                    if crate::clock::elapsed(n, now) <= e.misfire_grace() {
                        on_time.push(n);
                        cur = n;
                        continue;
                    }
                    count += 1;
                    cur = n;
                    fires.push(n);
                    if fires.len() > keep.max(1) {
                        fires.remove(0);
                    }
                }
                // The last missed fire (`fires` keeps the latest ones).
                let last = *fires.last().expect("the first missed fire");
                let mut run: Vec<Timestamp> = if keep == 0 {
                    Vec::new()
                } else {
                    let k = keep.min(fires.len());
                    fires[fires.len() - k..].to_vec()
                };
                if !on_time.is_empty() && e.def.shape.misfire == MisfirePolicy::RunOnce {
                    // A fire due now is the one run.
                    run.clear();
                }
                let missed = count - run.len() as u64;
                let last_missed = if run.is_empty() { last } else { run[0] };
                e.last_fire = OptTs::new(Some(on_time.last().copied().unwrap_or(last)));
                run.extend(on_time);
                // In cluster mode the claim of the task's next fire counts
                // the fires no node claimed, once for the whole cluster.
                let missed = if gated { 0 } else { missed };
                if missed > 0 {
                    e.stats_mut().missed += missed as i64;
                    events.push(Event::TaskMissed {
                        task_id: e.id.to_string(),
                        count: missed,
                        first: top.due,
                        last: last_missed,
                    });
                    self.s.monitor.record_task_missed(&e.id, missed);
                }
                st.totals.missed += missed as i64;
                if let Some((&first, rest)) = run.split_first() {
                    out.push(Dispatch { slot: top.slot, scheduled: first, then: rest.to_vec() });
                } else {
                    prev_fires.pop();
                }
            } else {
                e.last_fire = OptTs::new(Some(top.due));
                out.push(Dispatch { slot: top.slot, scheduled: top.due, then: Vec::new() });
            }
            Inner::schedule_entry(&mut st, top.slot, now);
        }
        let next = st.heap.peek().map(|Reverse(i)| i.due);
        let lead = self.lead(st.heap.len());
        let full = out.len() >= DISPATCH_CHUNK;
        // In cluster mode only this node's fires are prepared (another node's
        // fire costs nothing more than this check), and the claim at the
        // instant decides overlap; otherwise fires that no overlap check can
        // stop are marked running now, so they start without the lock.
        let gate = self.s.gate.clone();
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        let sm = &mut *st;
        let staged: Vec<dispatch::Staged> = out
            .into_iter()
            .zip(prev_fires)
            .filter_map(|(d, (gen, prev_fire))| {
                let e = sm.slots[d.slot as usize].as_mut()?;
                if let Some(g) = &gate {
                    if d.then.is_empty() && !g.is_ours(&e.id, d.scheduled) {
                        return None;
                    }
                }
                match run::build_spec(e, d.slot, d.scheduled) {
                    Ok(mut spec) => {
                        let reserved = gate.is_none() && run::reserve(e, &mut spec);
                        Some(dispatch::Staged {
                            spec,
                            gen,
                            prev_fire,
                            then: d.then,
                            epoch,
                            reserved,
                        })
                    }
                    Err(err) => {
                        tracing::warn!(target: "rota", error = %err, "fire not run");
                        None
                    }
                }
            })
            .collect();
        let due = match gate {
            Some(g) => Due::Gated(g, staged),
            None => Due::Staged(staged),
        };
        drop(st);
        for ev in events {
            if let Event::TaskMissed { task_id, count, first, last } = &ev {
                run::record_missed(self, task_id, *count, *first, *last, now);
            }
            self.emit(ev);
        }
        (due, next, full, lead)
    }
}

#[async_trait]
impl Scheduler for DefaultScheduler {
    async fn add(&self, mut task: DefaultTask) -> Result<()> {
        let (schedule, zone) = self.validate_new(&task)?;
        let now = self.inner.s.clock.now();
        let snapshot = {
            let mut st = self.inner.state.lock().unwrap();
            if st.find(&task.id).is_some() {
                return Err(Error::TaskAlreadyExists { id: task.id.to_string() });
            }
            task.created_at = now;
            task.updated_at = now;
            if let Some(h) = &task.handler {
                self.inner.s.registry.register_if_absent(h);
            }
            let slot = Inner::insert_entry(&mut st, task, schedule, zone, now, None);
            Inner::schedule_entry(&mut st, slot, now);
            let loaded = st.loaded;
            let e = st.slots[slot as usize].as_ref().expect("slot");
            // Before the first start the store has not been read: the task is
            // written then, after taking its stored run state (see `load_store`).
            loaded.then(|| e.to_task())
        };
        self.inner.wake.notify_one();
        self.update_counts();
        match snapshot {
            Some(t) => self.inner.s.store.save(&t).await,
            None => Ok(()),
        }
    }

    async fn remove(&self, id: &str) -> Result<()> {
        {
            let mut st = self.inner.state.lock().unwrap();
            if !st.remove(id) {
                return Err(Error::TaskNotFound { id: id.into() });
            }
            self.inner.changed();
        }
        self.inner.s.monitor.record_task_removed(id);
        self.update_counts();
        self.inner.wake.notify_one();
        match self.inner.s.store.delete(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == crate::ErrorKind::TaskNotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn update(&self, mut task: DefaultTask) -> Result<()> {
        let (schedule, zone) = self.validate_new(&task)?;
        let now = self.inner.s.clock.now();
        let snapshot = {
            let mut st = self.inner.state.lock().unwrap();
            let slot =
                st.find(&task.id).ok_or_else(|| Error::TaskNotFound { id: task.id.to_string() })?;
            let e = st.slots[slot as usize].as_mut().expect("slot");
            task.created_at = e.created_at.get();
            task.updated_at = now;
            let delta = i64::from(task.enabled) - i64::from(e.enabled);
            st.redefine(slot, task, schedule, zone);
            self.inner.changed();
            st.enabled += delta;
            Inner::schedule_entry(&mut st, slot, now);
            st.slots[slot as usize].as_ref().expect("slot").to_task()
        };
        self.inner.wake.notify_one();
        self.update_counts();
        self.inner.s.store.save(&snapshot).await
    }

    fn get(&self, id: &str) -> Result<DefaultTask> {
        let st = self.inner.state.lock().unwrap();
        st.entry(id).map(|e| e.to_task()).ok_or_else(|| Error::TaskNotFound { id: id.into() })
    }

    fn get_all(&self) -> Vec<DefaultTask> {
        let st = self.inner.state.lock().unwrap();
        let mut v: Vec<DefaultTask> = st.slots.iter().flatten().map(|e| e.to_task()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn get_enabled(&self) -> Vec<DefaultTask> {
        let mut v = self.get_all();
        v.retain(|t| t.enabled);
        v
    }

    async fn start(&self) -> Result<()> {
        let stop = CancellationToken::new();
        let first = {
            let st = self.inner.state.lock().unwrap();
            if st.status != Status::Stopped {
                return Err(Error::SchedulerAlreadyRunning);
            }
            !st.loaded
        };
        if first {
            self.load_store().await?;
        }
        {
            let mut st = self.inner.state.lock().unwrap();
            if st.status != Status::Stopped {
                return Err(Error::SchedulerAlreadyRunning);
            }
            let now = self.inner.s.clock.now();
            st.status = Status::Running;
            self.inner.changed();
            st.started_at = Some(now);
            st.driver_stop = Some(stop.clone());
            st.run_cancel = CancellationToken::new();
            st.heap.clear();
            let align = st.align;
            let slots: Vec<u32> = st.index.slots().collect();
            for slot in slots {
                let e = st.slots[slot as usize].as_mut().expect("slot");
                e.gen = e.gen.wrapping_add(1);
                if e.enabled {
                    // Keep a stored next fire (downtime: it may be missed) unless
                    // it is newer than what the schedule says now.
                    if e.def.schedule.interval().is_some() && e.next_run_at.is_none() && !align {
                        e.anchor = Ts::new(now);
                    }
                    match e.next_run_at.get() {
                        Some(due) => {
                            let item = HeapItem { due, gen: e.gen, slot };
                            st.heap.push(Reverse(item));
                        }
                        None => Inner::schedule_entry(&mut st, slot, now),
                    }
                }
            }
        }
        self.inner.s.monitor.record_scheduler_start();
        let inner = self.inner.clone();
        tokio::spawn(inner.drive(stop));
        self.inner.emit(Event::SchedulerStarted);
        Ok(())
    }

    async fn stop(&self) -> Result<()> {
        let run_cancel = {
            let mut st = self.inner.state.lock().unwrap();
            if st.status == Status::Stopped {
                return Err(Error::SchedulerAlreadyStopped);
            }
            st.status = Status::Stopped;
            self.inner.changed();
            if let Some(s) = st.driver_stop.take() {
                s.cancel();
            }
            st.heap.clear();
            st.run_cancel.clone()
        };
        // Let running handlers finish within the grace period, then cancel them.
        let grace = self.inner.s.stop_grace;
        if tokio::time::timeout(grace, self.wait_idle()).await.is_err() {
            run_cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.wait_idle()).await;
        }
        self.inner.flush().await;
        self.inner.s.monitor.record_scheduler_stop();
        self.inner.emit(Event::SchedulerStopped);
        Ok(())
    }

    async fn pause(&self) -> Result<()> {
        {
            let mut st = self.inner.state.lock().unwrap();
            if st.status != Status::Running {
                return Err(Error::SchedulerNotRunning { status: st.status.to_string() });
            }
            st.status = Status::Paused;
            self.inner.changed();
        }
        self.inner.wake.notify_one();
        self.inner.s.monitor.record_scheduler_pause();
        self.inner.emit(Event::SchedulerPaused);
        Ok(())
    }

    async fn resume(&self) -> Result<()> {
        {
            let mut st = self.inner.state.lock().unwrap();
            if st.status != Status::Paused {
                return Err(Error::SchedulerNotPaused { status: st.status.to_string() });
            }
            st.status = Status::Running;
            self.inner.changed();
        }
        self.inner.wake.notify_one();
        self.inner.s.monitor.record_scheduler_resume();
        self.inner.emit(Event::SchedulerResumed);
        Ok(())
    }

    async fn run_now(&self, id: &str) -> Result<()> {
        let (slot, now) = {
            let st = self.inner.state.lock().unwrap();
            let slot = st.find(id).ok_or_else(|| Error::TaskNotFound { id: id.into() })?;
            let e = st.slots[slot as usize].as_ref().expect("slot");
            if !e.enabled {
                return Err(Error::TaskDisabled { id: id.into() });
            }
            (slot, self.inner.s.clock.now())
        };
        run::run_fire_now(&self.inner, Dispatch { slot, scheduled: now, then: Vec::new() }).await
    }

    async fn run_all(&self) -> Result<()> {
        let mut runs = tokio::task::JoinSet::new();
        for t in self.get_enabled() {
            let s = self.clone();
            runs.spawn(async move { s.run_now(&t.id).await });
        }
        let mut first = Ok(());
        while let Some(r) = runs.join_next().await {
            let r = r.unwrap_or_else(|e| {
                Err(Error::TaskExecutionFailed {
                    task: String::new(),
                    attempt: 1,
                    message: e.to_string(),
                })
            });
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn status(&self) -> SchedulerStatus {
        let st = self.inner.state.lock().unwrap();
        SchedulerStatus { status: st.status, started_at: st.started_at, task_count: st.index.len() }
    }

    fn stats(&self) -> SchedulerStats {
        let st = self.inner.state.lock().unwrap();
        let total = st.index.len() as i64;
        let enabled = st.enabled;
        let t = &st.totals;
        SchedulerStats {
            total_tasks: total,
            enabled_tasks: enabled,
            disabled_tasks: total - enabled,
            total_runs: t.runs,
            total_failed: t.failed,
            success_rate: rate(t.runs - t.failed, t.runs),
            last_run_at: t.last_run_at,
            created_at: self.inner.created_at,
            missed_fires: t.missed,
            skipped_fires: t.skipped,
        }
    }

    fn task_stats(&self, id: &str) -> Result<TaskStats> {
        let st = self.inner.state.lock().unwrap();
        let e = st.entry(id).ok_or_else(|| Error::TaskNotFound { id: id.into() })?;
        let avg = |total: Duration, n: i64| {
            if n > 0 {
                total / n as u32
            } else {
                Duration::ZERO
            }
        };
        Ok(TaskStats {
            task_id: e.id.to_string(),
            task_name: e.name.to_string(),
            run_count: e.run_count(),
            failed_count: e.failed_count(),
            success_rate: rate(e.run_count() - e.failed_count(), e.run_count()),
            last_run_at: e.last_run_at.get(),
            next_run_at: e.next_run_at.get(),
            average_time: avg(e.stats().total_duration, e.run_count()),
            last_error: e.last_error().to_string(),
            missed_fires: e.stats().missed,
            skipped_fires: e.stats().skipped,
            average_latency: avg(e.stats().total_latency, e.stats().started_runs),
        })
    }
}

impl DefaultScheduler {
    /// Reads the store: tasks declared in code take their run state from it,
    /// other tasks are added and bound to their handlers by name. A task whose
    /// handler is not registered is held: loaded, disabled, with a
    /// `last_error` naming the handler, and left intact in the store.
    async fn load_store(&self) -> Result<()> {
        let report = self.inner.s.store.load_all().await?;
        let now = self.inner.s.clock.now();
        let mut errors = report.errors;
        let declared: Vec<DefaultTask>;
        {
            let mut st = self.inner.state.lock().unwrap();
            // Tasks added in code before this first start: only they are
            // written back; tasks that came from the store are already there.
            let in_code: Vec<Arc<str>> = st
                .index
                .slots()
                .filter_map(|s| st.slots[s as usize].as_ref().map(|e| e.id.clone()))
                .collect();
            for stored in report.tasks {
                if let Some(slot) = st.find(&stored.id) {
                    let e = st.slots[slot as usize].as_mut().expect("slot");
                    e.merge_run_state(stored);
                    continue;
                }
                match self.bind_stored(stored) {
                    Ok((task, schedule, zone, held)) => {
                        Inner::insert_entry(&mut st, task, schedule, zone, now, held);
                    }
                    Err(e) => errors.push(e),
                }
            }
            for e in &errors {
                tracing::warn!(target: "rota", task = %e.id, reason = %e.reason, "task not loaded from the store");
            }
            st.load_errors = errors;
            st.loaded = true;
            declared = in_code.iter().filter_map(|id| st.entry(id)).map(|e| e.to_task()).collect();
        }
        self.update_counts();
        // Tasks declared in code (with their merged run state) reach the store.
        for chunk in declared.chunks(10_000) {
            self.inner.s.store.save_batch(chunk).await?;
        }
        Ok(())
    }

    /// A task read from the store, ready to be held here: its schedule and
    /// zone parsed, its handler bound by name from the registry, or, if the
    /// handler is not registered, held (disabled, see [`load_store`](Self::load_store)).
    #[allow(clippy::type_complexity)]
    fn bind_stored(
        &self,
        mut task: DefaultTask,
    ) -> std::result::Result<
        (DefaultTask, Schedule, TimeZone, Option<(bool, String)>),
        crate::store::LoadError,
    > {
        let parsed = task.parsed_schedule().and_then(|s| {
            if let Some(z) = &task.time_zone {
                TimeZone::get(z).map_err(|_| Error::InvalidInput {
                    what: "time_zone".into(),
                    message: format!("unknown time zone {z:?}"),
                })?;
            }
            Ok(s)
        });
        let schedule = parsed.map_err(|e| crate::store::LoadError {
            id: task.id.to_string(),
            reason: e.to_string(),
        })?;
        let zone = task.zone(&self.inner.s.zone);
        let held = match self.inner.s.registry.get(&task.handler_name) {
            Some(h) => {
                task.handler = Some(h);
                None
            }
            None => {
                let keep = (task.enabled, task.last_error.to_string());
                task.enabled = false;
                task.handler = None;
                task.last_error = format!(
                    "handler {:?} is not registered: register it to enable this task",
                    task.handler_name
                )
                .into();
                Some(keep)
            }
        };
        Ok((task, schedule, zone, held))
    }

    /// How often the store is re-read in cluster mode with a shared store.
    pub fn check_interval(&self) -> Duration {
        self.inner.s.check_interval
    }

    /// Re-reads the store, for a store shared with other processes: tasks
    /// added there are added here, tasks whose definition is newer there
    /// (`updated_at`) are updated here, and tasks gone from it are removed
    /// here (unless changed here in the last 5 s, which covers a save still
    /// on its way). Run state is not taken over: each node keeps its own.
    pub async fn sync_store(&self) -> Result<()> {
        if !self.inner.state.lock().unwrap().loaded {
            return Ok(());
        }
        let began = self.inner.s.clock.now();
        let report = self.inner.s.store.load_all().await?;
        let now = self.inner.s.clock.now();
        let mut removed = Vec::new();
        let mut changed = false;
        {
            let mut st = self.inner.state.lock().unwrap();
            let mut seen: std::collections::HashSet<Arc<str>> = Default::default();
            for stored in report.tasks {
                seen.insert(stored.id.clone());
                let newer = match st.find(&stored.id) {
                    None => None,
                    Some(slot) => {
                        let e = st.slots[slot as usize].as_ref().expect("slot");
                        if stored.updated_at <= e.updated_at.get() || e.running > 0 {
                            continue;
                        }
                        Some(slot)
                    }
                };
                let Ok((task, schedule, zone, held)) = self.bind_stored(stored) else {
                    continue;
                };
                changed = true;
                match newer {
                    None => {
                        let slot = Inner::insert_entry(&mut st, task, schedule, zone, now, held);
                        Inner::schedule_entry(&mut st, slot, now);
                    }
                    Some(slot) => {
                        let e = st.slots[slot as usize].as_mut().expect("slot");
                        let delta = i64::from(task.enabled) - i64::from(e.enabled);
                        let mut task = task;
                        task.next_run_at = None;
                        e.set_held(held);
                        st.redefine(slot, task, schedule, zone);
                        st.enabled += delta;
                        Inner::schedule_entry(&mut st, slot, now);
                    }
                }
            }
            let settle = jiff::SignedDuration::from_secs(5);
            let gone: Vec<Arc<str>> = st
                .index
                .slots()
                .filter_map(|slot| st.slots[slot as usize].as_deref())
                .filter(|e| !seen.contains(&*e.id))
                .filter(|e| e.updated_at.get() < began - settle && e.running == 0)
                .map(|e| e.id.clone())
                .collect();
            for id in gone {
                st.remove(&id);
                removed.push(id);
            }
            if changed || !removed.is_empty() {
                self.inner.changed();
            }
        }
        for id in &removed {
            self.inner.s.monitor.record_task_removed(id);
        }
        if changed || !removed.is_empty() {
            self.inner.wake.notify_one();
            self.update_counts();
        }
        Ok(())
    }

    /// Tasks the store could not give back on the last load, each with its ID
    /// and the reason. Every other task loaded.
    pub fn load_errors(&self) -> Vec<crate::store::LoadError> {
        self.inner.state.lock().unwrap().load_errors.clone()
    }

    /// Registers a handler, and binds and re-enables tasks loaded from the
    /// store that were held waiting for it.
    pub async fn register_handler(&self, handler: Arc<dyn crate::TaskHandler>) -> Result<()> {
        self.inner.s.registry.register(handler.clone());
        let now = self.inner.s.clock.now();
        let snapshots: Vec<DefaultTask> = {
            let mut st = self.inner.state.lock().unwrap();
            let slots: Vec<u32> = st
                .slots
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    let e = e.as_ref()?;
                    (e.held() && e.handler_name() == handler.name()).then_some(i as u32)
                })
                .collect();
            let mut out = Vec::new();
            for slot in slots {
                let e = st.slots[slot as usize].as_mut().expect("slot");
                let (enabled, last_error) = e.extra_mut().held.take().expect("held");
                e.handler = Some(handler.clone());
                e.enabled = enabled;
                let delta = i64::from(enabled);
                e.extra_mut().last_error = (!last_error.is_empty()).then(|| last_error.into());
                e.gen = e.gen.wrapping_add(1);
                st.enabled += delta;
                Inner::schedule_entry(&mut st, slot, now);
                out.push(st.slots[slot as usize].as_ref().expect("slot").to_task());
            }
            if !out.is_empty() {
                self.inner.changed();
            }
            out
        };
        self.inner.wake.notify_one();
        self.update_counts();
        if snapshots.is_empty() {
            Ok(())
        } else {
            self.inner.s.store.save_batch(&snapshots).await
        }
    }

    fn update_counts(&self) {
        let (total, enabled) = {
            let st = self.inner.state.lock().unwrap();
            (st.index.len() as i64, st.enabled)
        };
        self.inner.s.monitor.set_task_counts(total, enabled);
    }
}

pub(crate) fn rate(ok: i64, total: i64) -> f64 {
    if total == 0 {
        0.0
    } else {
        ok as f64 * 100.0 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FuncHandler, OverlapPolicy, Store, Task, TaskBuilder};

    fn handler(name: &str) -> Arc<dyn crate::TaskHandler> {
        FuncHandler::new(name, |_ctx| async { Ok(()) })
    }

    fn defs(s: &DefaultScheduler) -> usize {
        s.inner.state.lock().unwrap().defs.len()
    }

    #[tokio::test]
    async fn get_gives_back_the_whole_definition_and_run_state() {
        let s = DefaultScheduler::new(Arc::new(crate::MemoryStore::new()));
        let mut task =
            TaskBuilder::new("full task", "every field set", "0 30 9 * * 1-5", handler("h"))
                .timeout(Duration::from_secs(7))
                .max_retries(3)
                .retry_delay(Duration::from_millis(1500))
                .tag("team", "ops")
                .tag("tier", "1")
                .time_zone("Asia/Shanghai")
                .overlap(OverlapPolicy::Allow)
                .misfire(MisfirePolicy::RunAll { max: 4 })
                .misfire_grace(Duration::from_secs(9))
                .enabled(false)
                .build();
        task.increment_run_count();
        task.increment_run_count();
        task.increment_failed_count();
        let last = Timestamp::from_second(1_700_000_000).unwrap();
        task.last_run_at = Some(last);
        task.last_error = "boom".into();
        s.add(task.clone()).await.unwrap();

        let got = s.get(&task.id).unwrap();
        assert_eq!(got.id(), task.id());
        assert_eq!(got.name(), "full task");
        assert_eq!(got.description(), "every field set");
        assert_eq!(got.schedule(), "0 30 9 * * 1-5");
        assert_eq!(got.handler_name, task.handler_name);
        assert!(got.handler().is_some());
        assert!(!got.enabled());
        assert_eq!(got.timeout(), Duration::from_secs(7));
        assert_eq!(got.max_retries(), 3);
        assert_eq!(got.retry_delay(), Duration::from_millis(1500));
        assert_eq!(got.tags(), task.tags());
        assert_eq!(got.time_zone(), Some("Asia/Shanghai"));
        assert_eq!(got.overlap(), OverlapPolicy::Allow);
        assert_eq!(got.misfire(), MisfirePolicy::RunAll { max: 4 });
        assert_eq!(got.misfire_grace(), Duration::from_secs(9));
        assert_eq!(got.run_count(), 2);
        assert_eq!(got.failed_count(), 1);
        assert_eq!(got.last_run_at(), Some(last));
        assert_eq!(got.last_error(), "boom");
        assert_eq!(got.next_run_at(), None, "disabled: no next fire");
        // Instants keep their nanoseconds.
        assert_eq!(got.created_at(), got.updated_at());
        assert_eq!(s.get_all().len(), 1);
    }

    #[tokio::test]
    async fn a_restart_allocates_run_state_only_for_tasks_that_have_some() {
        let store = Arc::new(crate::MemoryStore::new());
        let mut ran = DefaultTask::new("ran", "", "0 0 0 1 1 *", handler("h1"));
        ran.increment_run_count();
        ran.last_error = "old".into();
        store.save(&ran).await.unwrap();
        store.save(&DefaultTask::new("fresh", "", "0 0 0 1 1 *", handler("h2"))).await.unwrap();
        // The same tasks declared in code after a restart.
        let s = DefaultScheduler::new(store);
        s.add(DefaultTask::new("ran", "", "0 0 0 1 1 *", handler("h1"))).await.unwrap();
        s.add(DefaultTask::new("fresh", "", "0 0 0 1 1 *", handler("h2"))).await.unwrap();
        s.start().await.unwrap();
        {
            let st = s.inner.state.lock().unwrap();
            assert!(st.entry("fresh").unwrap().extra.is_none());
            assert!(st.entry("ran").unwrap().extra.is_some());
        }
        assert_eq!(s.get("ran").unwrap().run_count(), 1);
        assert_eq!(s.get("ran").unwrap().last_error(), "old");
        assert_eq!(s.get("fresh").unwrap().run_count(), 0);
        s.stop().await.unwrap();
    }

    #[tokio::test]
    async fn tasks_with_equal_definitions_share_one() {
        let s = DefaultScheduler::new(Arc::new(crate::MemoryStore::new()));
        for i in 0..1000 {
            let t = DefaultTask::new(
                format!("t{i}"),
                "same",
                "*/5 * * * * *",
                handler(&format!("h{i}")),
            );
            s.add(t).await.unwrap();
        }
        assert_eq!(defs(&s), 1, "handler names differ, but each is its handler's own");
        let mut t = s.get("t7").unwrap();
        t.description = "different".into();
        s.update(t).await.unwrap();
        assert_eq!(defs(&s), 2);
        assert_eq!(s.get("t7").unwrap().description(), "different");
        assert_eq!(s.get("t8").unwrap().description(), "same");
        assert_eq!(s.get("t7").unwrap().handler_name.as_ref(), "h7");
        s.remove("t7").await.unwrap();
        assert_eq!(defs(&s), 1, "a definition nobody uses is dropped");
        for i in 0..1000 {
            if i != 7 {
                s.remove(&format!("t{i}")).await.unwrap();
            }
        }
        assert_eq!(defs(&s), 0);
        assert!(matches!(s.get("t8"), Err(Error::TaskNotFound { .. })));
    }
}
