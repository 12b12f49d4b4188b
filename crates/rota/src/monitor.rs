//! Metrics of tasks, of the scheduler and of the process: the seed's
//! `Monitor` interface and its [`DefaultMonitor`].
//!
//! The scheduler calls the `record_*` methods as runs start and finish; the
//! `*_metrics` methods read the figures back.
//!
//! ```
//! use rota::clock::{ManualClock, SharedClock};
//! use rota::monitor::{DefaultMonitor, Monitor};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new("2026-12-04T10:00:00Z".parse()?);
//! let monitor = DefaultMonitor::with_clock(Arc::new(clock.clone()) as SharedClock);
//! monitor.record_task_start("backup");
//! clock.advance(Duration::from_secs(2));
//! monitor.record_task_complete("backup", Duration::from_secs(2), None);
//!
//! let m = monitor.task_metrics("backup")?;
//! assert_eq!(m.total_executions, 1);
//! assert_eq!(m.success_rate, 100.0);
//! assert_eq!(m.last_execution.unwrap().to_string(), "2026-12-04T10:00:02Z");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Time
//!
//! Timestamps, uptime and the sliding window of [`PerformanceMetrics`] use the
//! monitor's [`Clock`](crate::clock::Clock), so a [`ManualClock`](crate::clock::ManualClock) drives
//! them in tests. [`PerformanceMetrics::memory_usage`] and
//! [`PerformanceMetrics::cpu_usage`] are read from the operating system
//! (`/proc` on Linux, zero elsewhere) and CPU usage is measured against real
//! elapsed time, not the monitor's clock.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::clock::{elapsed, signed, SharedClock, SystemClock};
use crate::error::{Error, Result};

/// Serde helper: a [`Duration`] as integer nanoseconds, like Go's
/// `time.Duration` in JSON. Use with `#[serde(with = "duration_nanos")]`.
///
/// Serializes as an `i64`, saturating at `i64::MAX` (about 292 years);
/// deserializing rejects negative values.
pub(crate) mod duration_nanos {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Writes `d` as nanoseconds.
    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Reads nanoseconds into a `Duration`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let n = i64::deserialize(d)?;
        u64::try_from(n)
            .map(Duration::from_nanos)
            .map_err(|_| D::Error::custom(format!("negative duration: {n} ns")))
    }
}

/// Serde helper: an `Option<Duration>` as integer nanoseconds or `null`. Use
/// with `#[serde(with = "duration_nanos_opt", default)]`.
#[allow(dead_code)] // for other modules' structs
pub(crate) mod duration_nanos_opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    #[derive(Serialize, Deserialize)]
    #[serde(transparent)]
    struct Nanos(#[serde(with = "super::duration_nanos")] Duration);

    /// Writes `d` as nanoseconds, or `null`.
    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(Nanos).serialize(s)
    }

    /// Reads nanoseconds or `null`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Nanos>::deserialize(d)?.map(|n| n.0))
    }
}

/// What a monitor records about the scheduler and its tasks: the seed's
/// `Monitor` interface, plus a few events rota reports (latency, skipped and
/// missed runs, task names and counts).
///
/// The scheduler calls [`record_task_start`](Self::record_task_start) when a
/// run begins and then exactly one of
/// [`record_task_complete`](Self::record_task_complete) or
/// [`record_task_failed`](Self::record_task_failed) when it ends. The
/// `record_*` methods are called on the scheduler's hot path and must be cheap
/// and must not block for long.
pub trait Monitor: Send + Sync + fmt::Debug + 'static {
    /// A run of `task_id` began.
    fn record_task_start(&self, task_id: &str);

    /// A run of `task_id` ended after `duration`: successfully if `err` is
    /// `None`, or with the error message `err`.
    fn record_task_complete(&self, task_id: &str, duration: Duration, err: Option<&str>);

    /// A run of `task_id` failed after `duration` with the message `err`. The
    /// same as `record_task_complete(task_id, duration, Some(err))`, which is
    /// what the default does.
    fn record_task_failed(&self, task_id: &str, duration: Duration, err: &str) {
        self.record_task_complete(task_id, duration, Some(err));
    }

    /// The scheduler started.
    fn record_scheduler_start(&self);

    /// The scheduler stopped.
    fn record_scheduler_stop(&self);

    /// The scheduler was paused.
    fn record_scheduler_pause(&self);

    /// The scheduler was resumed.
    fn record_scheduler_resume(&self);

    /// The metrics of one task.
    ///
    /// # Errors
    ///
    /// [`Error::TaskNotFound`] if nothing was ever recorded for `task_id` (or
    /// its metrics were dropped by [`cleanup`](Self::cleanup)).
    fn task_metrics(&self, task_id: &str) -> Result<TaskMetrics>;

    /// The scheduler-wide metrics.
    fn scheduler_metrics(&self) -> SchedulerMetrics;

    /// Throughput, latency and error rate over a recent window, and the
    /// process's memory and CPU usage.
    fn performance_metrics(&self) -> PerformanceMetrics;

    /// Drops the metrics of tasks recorded as removed (see
    /// [`record_task_removed`](Self::record_task_removed)).
    fn cleanup(&self);

    /// Not in the seed: a run of `task_id` started `latency` after the instant
    /// it was scheduled for. The default ignores it.
    fn record_task_latency(&self, task_id: &str, latency: Duration) {
        let _ = (task_id, latency);
    }

    /// Not in the seed: a run of `task_id` was skipped because the previous
    /// run was still going. The default ignores it.
    fn record_task_skipped(&self, task_id: &str) {
        let _ = task_id;
    }

    /// Not in the seed: `count` runs of `task_id` were missed (misfire: the
    /// scheduler was paused, stopped or late past the grace period). The
    /// default ignores it.
    fn record_task_missed(&self, task_id: &str, count: u64) {
        let _ = (task_id, count);
    }

    /// Not in the seed: `task_id` was removed from the scheduler; its metrics
    /// go at the next [`cleanup`](Self::cleanup). The default ignores it.
    fn record_task_removed(&self, task_id: &str) {
        let _ = task_id;
    }

    /// Not in the seed: the display name of `task_id`, reported as
    /// [`TaskMetrics::task_name`]. The default ignores it.
    fn set_task_name(&self, task_id: &str, name: &str) {
        let _ = (task_id, name);
    }

    /// Not in the seed: how many tasks the scheduler has, and how many of them
    /// are enabled, reported in [`SchedulerMetrics`]. The default ignores it.
    fn set_task_counts(&self, total: i64, enabled: i64) {
        let _ = (total, enabled);
    }
}

/// The metrics of one task (the seed's `TaskMetrics`).
///
/// Durations are serialized as integer nanoseconds, like Go's `time.Duration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskMetrics {
    /// The task's ID.
    pub task_id: String,
    /// The task's name, as told by [`Monitor::set_task_name`]; empty if never told.
    pub task_name: String,
    /// Runs that ended, successfully or not.
    pub total_executions: i64,
    /// Runs that ended successfully.
    pub successful_runs: i64,
    /// Runs that ended with an error.
    pub failed_runs: i64,
    /// `successful_runs / total_executions` in percent (0 to 100); 0 with no runs.
    pub success_rate: f64,
    /// The mean duration of a run; zero with no runs.
    #[serde(with = "duration_nanos")]
    pub average_duration: Duration,
    /// The shortest run; zero with no runs.
    #[serde(with = "duration_nanos")]
    pub min_duration: Duration,
    /// The longest run; zero with no runs.
    #[serde(with = "duration_nanos")]
    pub max_duration: Duration,
    /// When the last run ended (by the monitor's clock); `None` with no runs.
    pub last_execution: Option<Timestamp>,
    /// The error message of the last failed run; empty if none failed.
    pub last_error: String,
    /// The sum of the durations of all runs.
    #[serde(with = "duration_nanos")]
    pub total_duration: Duration,
    /// Not in the seed: runs skipped because the previous run was still going.
    pub skipped_runs: i64,
    /// Not in the seed: runs missed (misfires).
    pub missed_runs: i64,
    /// Not in the seed: the mean delay between the instant a run was scheduled
    /// for and its start; zero if none was recorded.
    #[serde(with = "duration_nanos")]
    pub average_latency: Duration,
    /// Not in the seed: the longest such delay.
    #[serde(with = "duration_nanos")]
    pub max_latency: Duration,
}

/// Scheduler-wide metrics (the seed's `SchedulerMetrics`).
///
/// The run counts are totals since the monitor was created (or
/// [reset](DefaultMonitor::reset)); [`Monitor::cleanup`] does not lower them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerMetrics {
    /// How many tasks the scheduler has (see [`Monitor::set_task_counts`]).
    pub total_tasks: i64,
    /// How many of them are enabled.
    pub enabled_tasks: i64,
    /// Runs started and not yet ended.
    pub running_tasks: i64,
    /// Runs that ended, successfully or not.
    pub total_executions: i64,
    /// Runs that ended successfully.
    pub successful_runs: i64,
    /// Runs that ended with an error.
    pub failed_runs: i64,
    /// `successful_runs / total_executions` in percent (0 to 100); 0 with no runs.
    pub success_rate: f64,
    /// How long the scheduler has been up: from its start to now, or to its
    /// stop once stopped. Pausing does not stop or reset it. Zero if it never
    /// started.
    #[serde(with = "duration_nanos")]
    pub uptime: Duration,
    /// When the scheduler started; `None` if it never did.
    pub started_at: Option<Timestamp>,
    /// When something was last recorded (a run, a scheduler state change).
    pub last_activity: Option<Timestamp>,
    /// Not in the seed: runs skipped because the previous run was still going.
    pub skipped_runs: i64,
    /// Not in the seed: runs missed (misfires).
    pub missed_runs: i64,
}

/// Performance metrics (the seed's `PerformanceMetrics`).
///
/// Throughput, latency and error rate cover a sliding window of recent time
/// (60 seconds unless set with [`DefaultMonitor::with_window`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerformanceMetrics {
    /// Runs ended per second: runs ended within the window divided by the
    /// window's length.
    pub throughput: f64,
    /// The mean latency (scheduled instant to start) of the runs that started
    /// within the window, in milliseconds; 0 if none was recorded.
    pub average_latency: f64,
    /// Failed runs among the runs ended within the window, in percent (0 to
    /// 100); 0 with no runs.
    pub error_rate: f64,
    /// This process's resident memory (RSS) in MiB; 0 where it cannot be read.
    pub memory_usage: f64,
    /// This process's CPU time as a percentage of one core (can exceed 100
    /// with several busy threads), since the previous reading of the same
    /// monitor (the first reading covers the time since the process started).
    /// Measured on real time, whatever the monitor's clock. 0 where it
    /// cannot be read.
    pub cpu_usage: f64,
}

/// The default window of [`PerformanceMetrics`].
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// The most samples a [`DefaultMonitor`] keeps for its window (per kind:
/// completions and latencies). Older samples are dropped first.
pub const MAX_WINDOW_SAMPLES: usize = 100_000;

/// Two readings of the CPU time closer than this return the previous figure:
/// with clock ticks of 10 ms, a shorter interval would be mostly noise.
const MIN_CPU_INTERVAL: Duration = Duration::from_millis(100);

/// The in-memory [`Monitor`] (the seed's `DefaultMonitor`).
///
/// It keeps the metrics of every task it has heard of until the task is
/// recorded as removed and [`cleanup`](Monitor::cleanup) runs. All methods
/// take `&self`; one mutex guards the figures, and reading `/proc` for
/// [`performance_metrics`](Monitor::performance_metrics) happens outside it.
///
/// Every `record_*` call updates [`SchedulerMetrics::last_activity`]; the
/// `set_*` calls do not.
///
/// A task costs it about 200 bytes: per-task durations are kept as
/// nanoseconds in a `u64` (sums saturate at 584 years), and a name equal to
/// the task's ID is not stored twice.
pub struct DefaultMonitor {
    clock: SharedClock,
    window: Duration,
    state: Mutex<State>,
    cpu: Mutex<CpuState>,
}

#[derive(Default)]
struct State {
    tasks: crate::fasthash::FastMap<Box<str>, TaskEntry>,
    executions: u64,
    successful: u64,
    failed: u64,
    skipped: u64,
    missed: u64,
    running: u64,
    task_counts: Option<(i64, i64)>,
    started_at: Option<Timestamp>,
    stopped_at: Option<Timestamp>,
    last_activity: Option<Timestamp>,
    // Ends of runs in the window: (when, succeeded), oldest first.
    completions: VecDeque<(Timestamp, bool)>,
    window_failures: u64,
    // Latencies recorded in the window: (when, latency), oldest first.
    latencies: VecDeque<(Timestamp, Duration)>,
    window_latency_nanos: u128,
}

// Compact (a monitor may hear of 100,000 tasks): durations in nanoseconds,
// a 12-byte instant, and no string for a name that is the ID itself.
struct TaskEntry {
    /// `None` until told; an empty box (no allocation) when it is the ID.
    name: Option<Box<str>>,
    executions: u64,
    successful: u64,
    failed: u64,
    skipped: u64,
    missed: u64,
    total_nanos: u64,
    min_nanos: u64,
    max_nanos: u64,
    last_execution: crate::compact::OptTs,
    last_error: Option<Box<str>>,
    latency_count: u64,
    latency_total_nanos: u64,
    max_latency_nanos: u64,
    running: u64,
    removed: bool,
}

impl Default for TaskEntry {
    fn default() -> Self {
        TaskEntry {
            name: None,
            executions: 0,
            successful: 0,
            failed: 0,
            skipped: 0,
            missed: 0,
            total_nanos: 0,
            min_nanos: 0,
            max_nanos: 0,
            last_execution: crate::compact::OptTs::NONE,
            last_error: None,
            latency_count: 0,
            latency_total_nanos: 0,
            max_latency_nanos: 0,
            running: 0,
            removed: false,
        }
    }
}

/// `d` in nanoseconds, saturating (at 584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct CpuState {
    // CPU ticks and real time of the previous reading.
    last: Option<(u64, Instant)>,
    last_usage: f64,
}

impl Default for DefaultMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DefaultMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("DefaultMonitor")
            .field("clock", &self.clock)
            .field("window", &self.window)
            .field("tasks", &state.tasks.len())
            .field("running", &state.running)
            .field("executions", &state.executions)
            .finish()
    }
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

fn mean(total_nanos: u64, n: u64) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(total_nanos / n)
}

impl TaskEntry {
    fn metrics(&self, id: &str) -> TaskMetrics {
        TaskMetrics {
            task_id: id.to_owned(),
            task_name: match self.name.as_deref() {
                None => String::new(),
                Some("") => id.to_owned(),
                Some(name) => name.to_owned(),
            },
            total_executions: count(self.executions),
            successful_runs: count(self.successful),
            failed_runs: count(self.failed),
            success_rate: rate(self.successful, self.executions),
            average_duration: mean(self.total_nanos, self.executions),
            min_duration: Duration::from_nanos(self.min_nanos),
            max_duration: Duration::from_nanos(self.max_nanos),
            last_execution: self.last_execution.get(),
            last_error: self.last_error.as_deref().unwrap_or_default().to_owned(),
            total_duration: Duration::from_nanos(self.total_nanos),
            skipped_runs: count(self.skipped),
            missed_runs: count(self.missed),
            average_latency: mean(self.latency_total_nanos, self.latency_count),
            max_latency: Duration::from_nanos(self.max_latency_nanos),
        }
    }
}

impl State {
    /// The entry of `id`, created if new. Allocates only for a new ID.
    fn task(&mut self, id: &str) -> &mut TaskEntry {
        // One lookup when the entry exists (the common case), no allocation.
        if self.tasks.contains_key(id) {
            return self.tasks.get_mut(id).expect("present");
        }
        self.tasks.entry(id.into()).or_default()
    }

    /// Drops window samples at or before `now - window`.
    fn prune(&mut self, now: Timestamp, window: Duration) {
        let Ok(cutoff) = now.checked_sub(signed(window)) else {
            return;
        };
        while let Some(&(at, ok)) = self.completions.front() {
            if at > cutoff {
                break;
            }
            self.pop_completion(ok);
        }
        while let Some(&(at, latency)) = self.latencies.front() {
            if at > cutoff {
                break;
            }
            self.pop_latency(latency);
        }
    }

    fn pop_completion(&mut self, ok: bool) {
        self.completions.pop_front();
        if !ok {
            self.window_failures -= 1;
        }
    }

    fn pop_latency(&mut self, latency: Duration) {
        self.latencies.pop_front();
        self.window_latency_nanos -= latency.as_nanos();
    }

    fn push_completion(&mut self, now: Timestamp, ok: bool) {
        if self.completions.len() >= MAX_WINDOW_SAMPLES {
            if let Some(&(_, old)) = self.completions.front() {
                self.pop_completion(old);
            }
        }
        self.completions.push_back((now, ok));
        if !ok {
            self.window_failures += 1;
        }
    }

    fn push_latency(&mut self, now: Timestamp, latency: Duration) {
        if self.latencies.len() >= MAX_WINDOW_SAMPLES {
            if let Some(&(_, old)) = self.latencies.front() {
                self.pop_latency(old);
            }
        }
        self.latencies.push_back((now, latency));
        self.window_latency_nanos += latency.as_nanos();
    }
}

impl DefaultMonitor {
    /// A monitor on the system clock (the seed's `NewMonitor`).
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A monitor that reads time from `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        DefaultMonitor {
            clock,
            window: DEFAULT_WINDOW,
            state: Mutex::new(State::default()),
            cpu: Mutex::new(CpuState::default()),
        }
    }

    /// Sets the sliding window of [`PerformanceMetrics`] (60 seconds by
    /// default). A zero window is raised to one second.
    pub fn with_window(mut self, window: Duration) -> Self {
        self.window = if window.is_zero() { Duration::from_secs(1) } else { window };
        self
    }

    /// The sliding window of [`PerformanceMetrics`].
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The metrics of every task the monitor knows, sorted by task ID.
    pub fn all_task_metrics(&self) -> Vec<TaskMetrics> {
        let state = self.lock();
        let mut all: Vec<_> = state.tasks.iter().map(|(id, t)| t.metrics(id)).collect();
        drop(state);
        all.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        all
    }

    /// The `limit` tasks with the most runs, most first (ties by task ID).
    pub fn top_tasks(&self, limit: usize) -> Vec<TaskMetrics> {
        let mut all = self.all_task_metrics();
        all.sort_by(|a, b| {
            b.total_executions.cmp(&a.total_executions).then_with(|| a.task_id.cmp(&b.task_id))
        });
        all.truncate(limit);
        all
    }

    /// The tasks with at least one failed run, sorted by task ID.
    pub fn failed_tasks(&self) -> Vec<TaskMetrics> {
        let mut all = self.all_task_metrics();
        all.retain(|m| m.failed_runs > 0);
        all
    }

    /// Forgets everything: task metrics, totals, uptime, the window and the
    /// task counts (the seed's `ResetMetrics`).
    pub fn reset(&self) {
        *self.lock() = State::default();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves counters that are at
        // worst one event off: keep going rather than propagate the panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the state with the clock read and `last_activity` updated.
    fn record(&self) -> (MutexGuard<'_, State>, Timestamp) {
        let now = self.clock.now();
        let mut state = self.lock();
        state.last_activity = Some(now);
        (state, now)
    }

    fn cpu_usage(&self) -> f64 {
        let Some(ticks) = sys::cpu_ticks() else {
            return 0.0;
        };
        let now = Instant::now();
        let mut cpu = self.cpu.lock().unwrap_or_else(|e| e.into_inner());
        let (used, wall) = match cpu.last {
            Some((_, at)) if now.duration_since(at) < MIN_CPU_INTERVAL => return cpu.last_usage,
            Some((last_ticks, at)) => (
                ticks.saturating_sub(last_ticks) as f64 / sys::clock_ticks_per_second() as f64,
                now.duration_since(at).as_secs_f64(),
            ),
            None => (
                ticks as f64 / sys::clock_ticks_per_second() as f64,
                sys::seconds_since_process_start().unwrap_or(0.0),
            ),
        };
        let usage = if wall > 0.0 { (used / wall * 100.0).max(0.0) } else { 0.0 };
        cpu.last = Some((ticks, now));
        cpu.last_usage = usage;
        usage
    }
}

impl Monitor for DefaultMonitor {
    fn record_task_start(&self, task_id: &str) {
        let (mut state, _) = self.record();
        let task = state.task(task_id);
        task.running += 1;
        task.removed = false;
        state.running += 1;
    }

    fn record_task_complete(&self, task_id: &str, duration: Duration, err: Option<&str>) {
        let (mut state, now) = self.record();
        let task = state.task(task_id);
        task.executions += 1;
        let d = nanos(duration);
        task.total_nanos = task.total_nanos.saturating_add(d);
        if task.executions == 1 || d < task.min_nanos {
            task.min_nanos = d;
        }
        task.max_nanos = task.max_nanos.max(d);
        task.last_execution = crate::compact::OptTs::new(Some(now));
        match err {
            None => task.successful += 1,
            Some(err) => {
                task.failed += 1;
                if task.last_error.as_deref() != Some(err) {
                    task.last_error = Some(err.into());
                }
            }
        }
        // A run that ends without a recorded start does not lower the count.
        let was_running = task.running > 0;
        task.running = task.running.saturating_sub(1);
        if was_running {
            state.running = state.running.saturating_sub(1);
        }
        state.executions += 1;
        if err.is_none() {
            state.successful += 1;
        } else {
            state.failed += 1;
        }
        state.prune(now, self.window);
        state.push_completion(now, err.is_none());
    }

    fn record_scheduler_start(&self) {
        let (mut state, now) = self.record();
        // A start while already running keeps the first start time.
        if state.started_at.is_none() || state.stopped_at.is_some() {
            state.started_at = Some(now);
            state.stopped_at = None;
        }
    }

    fn record_scheduler_stop(&self) {
        let (mut state, now) = self.record();
        if state.started_at.is_some() && state.stopped_at.is_none() {
            state.stopped_at = Some(now);
        }
    }

    fn record_scheduler_pause(&self) {
        let _ = self.record();
    }

    fn record_scheduler_resume(&self) {
        let _ = self.record();
    }

    fn task_metrics(&self, task_id: &str) -> Result<TaskMetrics> {
        let state = self.lock();
        match state.tasks.get(task_id) {
            Some(task) => Ok(task.metrics(task_id)),
            None => Err(Error::TaskNotFound { id: task_id.to_owned() }),
        }
    }

    /// Without [`set_task_counts`](Monitor::set_task_counts), `total_tasks`
    /// and `enabled_tasks` are both the number of tasks known to the monitor
    /// and not recorded as removed.
    fn scheduler_metrics(&self) -> SchedulerMetrics {
        let now = self.clock.now();
        let state = self.lock();
        let (total_tasks, enabled_tasks) = state.task_counts.unwrap_or_else(|| {
            let n = count(state.tasks.values().filter(|t| !t.removed).count() as u64);
            (n, n)
        });
        let uptime = match state.started_at {
            Some(start) => elapsed(start, state.stopped_at.unwrap_or(now)),
            None => Duration::ZERO,
        };
        SchedulerMetrics {
            total_tasks,
            enabled_tasks,
            running_tasks: count(state.running),
            total_executions: count(state.executions),
            successful_runs: count(state.successful),
            failed_runs: count(state.failed),
            success_rate: rate(state.successful, state.executions),
            uptime,
            started_at: state.started_at,
            last_activity: state.last_activity,
            skipped_runs: count(state.skipped),
            missed_runs: count(state.missed),
        }
    }

    fn performance_metrics(&self) -> PerformanceMetrics {
        let now = self.clock.now();
        let mut state = self.lock();
        state.prune(now, self.window);
        let ended = state.completions.len() as u64;
        let throughput = ended as f64 / self.window.as_secs_f64();
        let error_rate = rate(state.window_failures, ended);
        let average_latency = if state.latencies.is_empty() {
            0.0
        } else {
            state.window_latency_nanos as f64 / state.latencies.len() as f64 / 1e6
        };
        drop(state);
        PerformanceMetrics {
            throughput,
            average_latency,
            error_rate,
            memory_usage: sys::resident_mib().unwrap_or(0.0),
            cpu_usage: self.cpu_usage(),
        }
    }

    /// Drops the metrics of removed tasks. A removed task with a run still
    /// going is kept until a cleanup after that run ends. Scheduler-wide
    /// totals are not lowered.
    fn cleanup(&self) {
        self.lock().tasks.retain(|_, t| !t.removed || t.running > 0);
    }

    fn record_task_latency(&self, task_id: &str, latency: Duration) {
        let (mut state, now) = self.record();
        let task = state.task(task_id);
        task.latency_count += 1;
        task.latency_total_nanos = task.latency_total_nanos.saturating_add(nanos(latency));
        task.max_latency_nanos = task.max_latency_nanos.max(nanos(latency));
        state.prune(now, self.window);
        state.push_latency(now, latency);
    }

    fn record_task_skipped(&self, task_id: &str) {
        let (mut state, _) = self.record();
        state.task(task_id).skipped += 1;
        state.skipped += 1;
    }

    fn record_task_missed(&self, task_id: &str, count: u64) {
        let (mut state, _) = self.record();
        let task = state.task(task_id);
        task.missed = task.missed.saturating_add(count);
        state.missed = state.missed.saturating_add(count);
    }

    /// Marks `task_id` for the next [`cleanup`](Monitor::cleanup). A later
    /// [`set_task_name`](Monitor::set_task_name) or
    /// [`record_task_start`](Monitor::record_task_start) for the same ID (the
    /// task was added again) clears the mark.
    fn record_task_removed(&self, task_id: &str) {
        let (mut state, _) = self.record();
        if let Some(task) = state.tasks.get_mut(task_id) {
            task.removed = true;
        }
    }

    /// Sets the name, creating the task's (empty) metrics if new, so that
    /// [`task_metrics`](Monitor::task_metrics) answers for a task that has not
    /// run yet.
    fn set_task_name(&self, task_id: &str, name: &str) {
        let mut state = self.lock();
        let task = state.task(task_id);
        let same = match task.name.as_deref() {
            None => name.is_empty(),
            Some("") => name == task_id,
            Some(old) => old == name,
        };
        if !same {
            task.name = if name.is_empty() {
                None
            } else if name == task_id {
                Some(Box::default())
            } else {
                Some(name.into())
            };
        }
        task.removed = false;
    }

    fn set_task_counts(&self, total: i64, enabled: i64) {
        self.lock().task_counts = Some((total, enabled));
    }
}

/// Process figures from `/proc` (Linux). Every function returns `None` where
/// the files are missing or unreadable.
mod sys {
    use super::OnceLock;

    /// Resident memory in MiB, from `VmRSS` in `/proc/self/status`.
    pub(super) fn resident_mib() -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: f64 = line["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
    }

    /// The fields of `/proc/self/stat` after the command name, so that index
    /// 0 is field 3 (`state`) of proc(5).
    fn stat_fields() -> Option<Vec<u64>> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may hold spaces or ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        Some(rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
    }

    /// User plus system CPU time of the whole process, in clock ticks.
    pub(super) fn cpu_ticks() -> Option<u64> {
        let f = stat_fields()?;
        // utime and stime are fields 14 and 15.
        f.get(11)?.checked_add(*f.get(12)?)
    }

    /// Seconds from the process's start to now.
    pub(super) fn seconds_since_process_start() -> Option<f64> {
        // starttime is field 22, in ticks after boot.
        let start = *stat_fields()?.get(19)? as f64 / clock_ticks_per_second() as f64;
        let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
        let uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
        Some((uptime - start).max(0.0))
    }

    /// `sysconf(_SC_CLK_TCK)`, read from the auxiliary vector (`AT_CLKTCK`),
    /// 100 if it cannot be read.
    pub(super) fn clock_ticks_per_second() -> u64 {
        static TICKS: OnceLock<u64> = OnceLock::new();
        *TICKS.get_or_init(|| auxv_entry(17).filter(|&t| t > 0).unwrap_or(100))
    }

    /// The value of entry `key` of `/proc/self/auxv`: pairs of native words.
    fn auxv_entry(key: u64) -> Option<u64> {
        const WORD: usize = std::mem::size_of::<usize>();
        let auxv = std::fs::read("/proc/self/auxv").ok()?;
        auxv.chunks_exact(2 * WORD).find_map(|pair| {
            let word = |b: &[u8]| usize::from_ne_bytes(b.try_into().expect("one word")) as u64;
            (word(&pair[..WORD]) == key).then(|| word(&pair[WORD..]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::error::ErrorKind;

    const MS: Duration = Duration::from_millis(1);

    fn setup() -> (ManualClock, DefaultMonitor) {
        let clock = ManualClock::new("2026-12-04T10:00:00Z".parse().unwrap());
        let monitor = DefaultMonitor::with_clock(Arc::new(clock.clone()));
        (clock, monitor)
    }

    fn run(m: &DefaultMonitor, id: &str, ms: u64, err: Option<&str>) {
        m.record_task_start(id);
        m.record_task_complete(id, Duration::from_millis(ms), err);
    }

    #[test]
    fn names_are_kept_whether_or_not_they_are_the_id() {
        let (_clock, m) = setup();
        run(&m, "untold", 1, None);
        m.set_task_name("same", "same");
        m.set_task_name("other", "Other name");
        m.set_task_name("cleared", "x");
        m.set_task_name("cleared", "");
        let name = |id: &str| m.task_metrics(id).unwrap().task_name;
        assert_eq!(name("untold"), "");
        assert_eq!(name("same"), "same");
        assert_eq!(name("other"), "Other name");
        assert_eq!(name("cleared"), "");
        m.set_task_name("same", "renamed");
        assert_eq!(name("same"), "renamed");
        // What a task costs the monitor, before its strings.
        assert!(std::mem::size_of::<TaskEntry>() <= 160, "{}", std::mem::size_of::<TaskEntry>());
    }

    #[test]
    fn durations_beyond_u64_nanoseconds_saturate() {
        let (_clock, m) = setup();
        m.record_task_start("long");
        m.record_task_complete("long", Duration::MAX, None);
        m.record_task_latency("long", Duration::MAX);
        let t = m.task_metrics("long").unwrap();
        assert_eq!(t.max_duration, Duration::from_nanos(u64::MAX));
        assert_eq!(t.total_duration, Duration::from_nanos(u64::MAX));
        assert_eq!(t.max_latency, Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn durations_min_avg_max_total() {
        let (clock, m) = setup();
        for ms in [30, 10, 50, 0, 10] {
            run(&m, "a", ms, None);
            clock.advance(Duration::from_secs(1));
        }
        let t = m.task_metrics("a").unwrap();
        assert_eq!(t.task_id, "a");
        assert_eq!(t.total_executions, 5);
        assert_eq!(t.min_duration, Duration::ZERO);
        assert_eq!(t.max_duration, 50 * MS);
        assert_eq!(t.total_duration, 100 * MS);
        assert_eq!(t.average_duration, 20 * MS);
        // Ended at 10:00:04, before the last advance.
        assert_eq!(t.last_execution.unwrap().to_string(), "2026-12-04T10:00:04Z");

        // The first run sets the minimum even when it is not zero.
        run(&m, "b", 40, None);
        run(&m, "b", 70, None);
        let t = m.task_metrics("b").unwrap();
        assert_eq!(
            (t.min_duration, t.max_duration, t.average_duration),
            (40 * MS, 70 * MS, 55 * MS)
        );
    }

    #[test]
    fn no_runs_means_zeros() {
        let (_, m) = setup();
        m.set_task_name("idle", "Idle task");
        let t = m.task_metrics("idle").unwrap();
        assert_eq!(t.task_name, "Idle task");
        assert_eq!(t.total_executions, 0);
        assert_eq!(t.success_rate, 0.0);
        assert_eq!(t.average_duration, Duration::ZERO);
        assert_eq!(t.last_execution, None);
        let s = m.scheduler_metrics();
        assert_eq!(s.success_rate, 0.0);
        assert_eq!(s.uptime, Duration::ZERO);
        assert_eq!(s.started_at, None);
        let p = m.performance_metrics();
        assert_eq!((p.throughput, p.error_rate, p.average_latency), (0.0, 0.0, 0.0));
    }

    #[test]
    fn success_and_error_rates() {
        let (_, m) = setup();
        run(&m, "a", 1, None);
        run(&m, "a", 1, None);
        run(&m, "a", 1, None);
        run(&m, "a", 1, Some("boom"));
        m.record_task_start("b");
        m.record_task_failed("b", MS, "disk full");

        let a = m.task_metrics("a").unwrap();
        assert_eq!((a.successful_runs, a.failed_runs), (3, 1));
        assert_eq!(a.success_rate, 75.0);
        assert_eq!(a.last_error, "boom");
        let b = m.task_metrics("b").unwrap();
        assert_eq!((b.successful_runs, b.failed_runs, b.success_rate), (0, 1, 0.0));
        assert_eq!(b.last_error, "disk full");

        // A later success keeps the last error message.
        run(&m, "a", 1, None);
        assert_eq!(m.task_metrics("a").unwrap().last_error, "boom");
        run(&m, "a", 1, Some("x"));
        assert_eq!(m.task_metrics("a").unwrap().last_error, "x");

        let s = m.scheduler_metrics();
        assert_eq!((s.total_executions, s.successful_runs, s.failed_runs), (7, 4, 3));
        assert!((s.success_rate - 400.0 / 7.0).abs() < 1e-9, "{}", s.success_rate);
        let p = m.performance_metrics();
        assert!((p.error_rate - 300.0 / 7.0).abs() < 1e-9, "{}", p.error_rate);
    }

    #[test]
    fn throughput_over_sliding_window() {
        let (clock, m) = setup();
        assert_eq!(m.window(), DEFAULT_WINDOW);
        // 30 runs at t=0 (one failure), 30 more at t=40s.
        for i in 0..30 {
            run(&m, "a", 1, if i == 0 { Some("e") } else { None });
        }
        clock.advance(Duration::from_secs(40));
        for _ in 0..30 {
            run(&m, "a", 1, None);
        }
        let p = m.performance_metrics();
        assert_eq!(p.throughput, 1.0); // 60 runs / 60 s
        assert!((p.error_rate - 100.0 / 60.0).abs() < 1e-9, "{}", p.error_rate);

        // At t=60s the first 30 are out of the window, and the failure with them.
        clock.advance(Duration::from_secs(20));
        let p = m.performance_metrics();
        assert_eq!(p.throughput, 0.5);
        assert_eq!(p.error_rate, 0.0);

        // At t=100s everything is out; totals are unaffected.
        clock.advance(Duration::from_secs(40));
        let p = m.performance_metrics();
        assert_eq!((p.throughput, p.error_rate), (0.0, 0.0));
        assert_eq!(m.scheduler_metrics().total_executions, 60);
        assert_eq!(m.task_metrics("a").unwrap().total_executions, 60);
    }

    #[test]
    fn custom_window() {
        let clock = ManualClock::new("2026-12-04T10:00:00Z".parse().unwrap());
        let m = DefaultMonitor::with_clock(Arc::new(clock.clone()))
            .with_window(Duration::from_secs(10));
        assert_eq!(m.window(), Duration::from_secs(10));
        for _ in 0..5 {
            run(&m, "a", 1, None);
        }
        assert_eq!(m.performance_metrics().throughput, 0.5);
        clock.advance(Duration::from_secs(9));
        assert_eq!(m.performance_metrics().throughput, 0.5);
        clock.advance(Duration::from_secs(1));
        assert_eq!(m.performance_metrics().throughput, 0.0);
        assert_eq!(
            DefaultMonitor::new().with_window(Duration::ZERO).window(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn window_is_capped() {
        let (_, m) = setup();
        for _ in 0..MAX_WINDOW_SAMPLES + 10 {
            m.record_task_complete("a", MS, Some("e"));
        }
        let state = m.lock();
        assert_eq!(state.completions.len(), MAX_WINDOW_SAMPLES);
        assert_eq!(state.window_failures, MAX_WINDOW_SAMPLES as u64);
        drop(state);
        assert_eq!(m.performance_metrics().error_rate, 100.0);
        assert_eq!(m.scheduler_metrics().failed_runs, MAX_WINDOW_SAMPLES as i64 + 10);
    }

    #[test]
    fn latency_average() {
        let (clock, m) = setup();
        m.record_task_latency("a", 10 * MS);
        m.record_task_latency("a", 30 * MS);
        m.record_task_latency("b", 2 * MS);
        let a = m.task_metrics("a").unwrap();
        assert_eq!((a.average_latency, a.max_latency), (20 * MS, 30 * MS));
        let p = m.performance_metrics();
        assert!((p.average_latency - 14.0).abs() < 1e-9, "{}", p.average_latency);

        // Old latencies leave the window; the task's figures keep them.
        clock.advance(Duration::from_secs(30));
        m.record_task_latency("a", 500 * MS + Duration::from_micros(500));
        assert!((m.performance_metrics().average_latency - 135.625).abs() < 1e-9);
        clock.advance(Duration::from_secs(30));
        assert!((m.performance_metrics().average_latency - 500.5).abs() < 1e-9);
        let a = m.task_metrics("a").unwrap();
        assert_eq!(a.max_latency, 500 * MS + Duration::from_micros(500));
        assert_eq!(a.average_latency, Duration::from_nanos(180_166_666)); // 540.5 ms / 3, floor
        clock.advance(Duration::from_secs(30));
        assert_eq!(m.performance_metrics().average_latency, 0.0);
    }

    #[test]
    fn running_tasks_count() {
        let (_, m) = setup();
        m.record_task_start("a");
        m.record_task_start("a");
        m.record_task_start("b");
        assert_eq!(m.scheduler_metrics().running_tasks, 3);
        m.record_task_complete("a", MS, None);
        assert_eq!(m.scheduler_metrics().running_tasks, 2);
        m.record_task_failed("b", MS, "e");
        assert_eq!(m.scheduler_metrics().running_tasks, 1);
        // Ends without a start do not go below zero, nor eat another task's count.
        m.record_task_complete("c", MS, None);
        m.record_task_complete("b", MS, None);
        assert_eq!(m.scheduler_metrics().running_tasks, 1);
        m.record_task_complete("a", MS, None);
        m.record_task_complete("a", MS, None);
        assert_eq!(m.scheduler_metrics().running_tasks, 0);
    }

    #[test]
    fn uptime_with_pause_and_stop() {
        let (clock, m) = setup();
        clock.advance(Duration::from_secs(5));
        m.record_scheduler_start();
        let started = clock.now();
        clock.advance(Duration::from_secs(10));
        let s = m.scheduler_metrics();
        assert_eq!(s.uptime, Duration::from_secs(10));
        assert_eq!(s.started_at, Some(started));

        m.record_scheduler_pause();
        clock.advance(Duration::from_secs(20));
        assert_eq!(m.scheduler_metrics().uptime, Duration::from_secs(30));
        m.record_scheduler_resume();
        assert_eq!(m.scheduler_metrics().last_activity, Some(clock.now()));
        // A second start while running keeps the first start time.
        m.record_scheduler_start();
        clock.advance(Duration::from_secs(5));
        assert_eq!(m.scheduler_metrics().uptime, Duration::from_secs(35));

        m.record_scheduler_stop();
        let stopped = clock.now();
        clock.advance(Duration::from_secs(100));
        let s = m.scheduler_metrics();
        assert_eq!(s.uptime, Duration::from_secs(35));
        assert_eq!(s.last_activity, Some(stopped));

        // Start again: uptime counts from the new start.
        m.record_scheduler_start();
        clock.advance(Duration::from_secs(3));
        let s = m.scheduler_metrics();
        assert_eq!(s.uptime, Duration::from_secs(3));
        assert_eq!(s.started_at, Some(stopped + Duration::from_secs(100)));
    }

    #[test]
    fn last_activity_follows_records_only() {
        let (clock, m) = setup();
        assert_eq!(m.scheduler_metrics().last_activity, None);
        m.record_task_start("a");
        let t = clock.now();
        clock.advance(Duration::from_secs(1));
        m.set_task_name("a", "A");
        m.set_task_counts(1, 1);
        assert_eq!(m.scheduler_metrics().last_activity, Some(t));
        m.record_task_skipped("a");
        assert_eq!(m.scheduler_metrics().last_activity, Some(clock.now()));
    }

    #[test]
    fn cleanup_drops_removed_tasks_only() {
        let (_, m) = setup();
        run(&m, "keep", 1, None);
        run(&m, "gone", 1, Some("e"));
        m.set_task_name("renamed", "R");
        m.record_task_start("busy");
        m.record_task_removed("gone");
        m.record_task_removed("busy");
        m.record_task_removed("renamed");
        m.set_task_name("renamed", "R2"); // added again: unmarked
        m.record_task_removed("never-seen");

        // Counts before cleanup exclude tasks marked as removed.
        assert_eq!(m.scheduler_metrics().total_tasks, 2); // keep, renamed
        m.cleanup();
        assert_eq!(m.task_metrics("gone").unwrap_err().kind(), ErrorKind::TaskNotFound);
        assert!(m.task_metrics("keep").is_ok());
        assert_eq!(m.task_metrics("renamed").unwrap().task_name, "R2");
        // Still running: kept until a cleanup after the run ends.
        assert!(m.task_metrics("busy").is_ok());
        m.record_task_complete("busy", MS, None);
        m.cleanup();
        assert!(m.task_metrics("busy").is_err());
        let ids: Vec<_> = m.all_task_metrics().into_iter().map(|t| t.task_id).collect();
        assert_eq!(ids, ["keep", "renamed"]);
        // Scheduler totals keep the dropped tasks' runs.
        let s = m.scheduler_metrics();
        assert_eq!((s.total_executions, s.failed_runs, s.running_tasks), (3, 1, 0));
    }

    #[test]
    fn unknown_task_is_not_found() {
        let (_, m) = setup();
        run(&m, "a", 1, None);
        match m.task_metrics("nope") {
            Err(Error::TaskNotFound { id }) => assert_eq!(id, "nope"),
            other => panic!("expected TaskNotFound, got {other:?}"),
        }
    }

    #[test]
    fn skipped_missed_and_counts() {
        let (_, m) = setup();
        m.record_task_skipped("a");
        m.record_task_skipped("a");
        m.record_task_missed("a", 3);
        m.record_task_missed("b", 1);
        let a = m.task_metrics("a").unwrap();
        assert_eq!((a.skipped_runs, a.missed_runs, a.total_executions), (2, 3, 0));
        let s = m.scheduler_metrics();
        assert_eq!((s.skipped_runs, s.missed_runs), (2, 4));
        assert_eq!((s.total_tasks, s.enabled_tasks), (2, 2));
        m.set_task_counts(7, 5);
        let s = m.scheduler_metrics();
        assert_eq!((s.total_tasks, s.enabled_tasks), (7, 5));
    }

    #[test]
    fn top_failed_and_reset() {
        let (_, m) = setup();
        for _ in 0..3 {
            run(&m, "c", 1, None);
        }
        run(&m, "a", 1, Some("e"));
        run(&m, "b", 1, None);
        let top: Vec<_> = m.top_tasks(2).into_iter().map(|t| t.task_id).collect();
        assert_eq!(top, ["c", "a"]);
        let failed: Vec<_> = m.failed_tasks().into_iter().map(|t| t.task_id).collect();
        assert_eq!(failed, ["a"]);
        m.reset();
        assert!(m.all_task_metrics().is_empty());
        assert_eq!(m.scheduler_metrics(), SchedulerMetrics::default());
    }

    #[test]
    fn process_memory_and_cpu() {
        let m = DefaultMonitor::new();
        let first = m.performance_metrics();
        assert!(first.cpu_usage >= 0.0, "{}", first.cpu_usage);
        if cfg!(target_os = "linux") {
            assert!(first.memory_usage > 0.0, "{}", first.memory_usage);
        }
        // Burn ~200 ms of CPU; cpu_usage is real process time over real time.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let second = m.performance_metrics();
        if cfg!(target_os = "linux") {
            assert!(second.cpu_usage > 0.0, "{}", second.cpu_usage);
            assert!(second.memory_usage > 0.0);
        }
        // A reading right after returns the same figure.
        assert_eq!(m.performance_metrics().cpu_usage, second.cpu_usage);
    }

    #[test]
    fn clock_ticks_is_read() {
        if cfg!(target_os = "linux") {
            assert!(sys::clock_ticks_per_second() > 0);
            assert!(sys::cpu_ticks().is_some());
            assert!(sys::seconds_since_process_start().unwrap() >= 0.0);
        }
    }

    #[test]
    fn json_names_and_nanoseconds() {
        let (clock, m) = setup();
        m.set_task_name("a", "Alpha");
        m.record_task_start("a");
        m.record_task_complete("a", Duration::from_millis(1500), Some("bad"));
        m.record_task_latency("a", Duration::from_micros(3));
        let t = m.task_metrics("a").unwrap();
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["task_id"], "a");
        assert_eq!(v["task_name"], "Alpha");
        assert_eq!(v["total_executions"], 1);
        assert_eq!(v["failed_runs"], 1);
        assert_eq!(v["success_rate"], 0.0);
        assert_eq!(v["average_duration"], 1_500_000_000i64);
        assert_eq!(v["min_duration"], 1_500_000_000i64);
        assert_eq!(v["max_duration"], 1_500_000_000i64);
        assert_eq!(v["total_duration"], 1_500_000_000i64);
        assert_eq!(v["last_execution"], clock.now().to_string());
        assert_eq!(v["last_error"], "bad");
        assert_eq!(v["average_latency"], 3000);
        assert_eq!(v["max_latency"], 3000);
        assert_eq!(v["skipped_runs"], 0);
        assert_eq!(v["missed_runs"], 0);
        assert_eq!(v.as_object().unwrap().len(), 16);
        let back: TaskMetrics = serde_json::from_value(v).unwrap();
        assert_eq!(back, t);

        m.record_scheduler_start();
        clock.advance(Duration::from_secs(2));
        let s = m.scheduler_metrics();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["uptime"], 2_000_000_000i64);
        assert_eq!(v["running_tasks"], 0);
        assert_eq!(v["started_at"], "2026-12-04T10:00:00Z");
        for key in ["total_tasks", "enabled_tasks", "successful_runs", "last_activity"] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(serde_json::from_value::<SchedulerMetrics>(v).unwrap(), s);

        let p = PerformanceMetrics { throughput: 1.5, cpu_usage: 3.0, ..Default::default() };
        let v = serde_json::to_value(&p).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut want = ["throughput", "average_latency", "error_rate", "memory_usage", "cpu_usage"];
        want.sort();
        assert_eq!(keys, want);

        // Seed JSON, without rota's fields, reads with defaults; a missing
        // execution time is null.
        let seed = r#"{"task_id":"x","task_name":"","total_executions":0,"successful_runs":0,
            "failed_runs":0,"success_rate":0,"average_duration":0,"min_duration":0,
            "max_duration":0,"last_execution":null,"last_error":"","total_duration":0}"#;
        let t: TaskMetrics = serde_json::from_str(seed).unwrap();
        assert_eq!(t.task_id, "x");
        assert_eq!(t.last_execution, None);
        assert!(serde_json::from_str::<TaskMetrics>(r#"{"total_duration":-1}"#).is_err());
    }

    #[test]
    fn duration_nanos_opt_round_trip() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "duration_nanos_opt", default)]
            d: Option<Duration>,
        }
        let some = T { d: Some(Duration::new(1, 5)) };
        assert_eq!(serde_json::to_string(&some).unwrap(), r#"{"d":1000000005}"#);
        assert_eq!(serde_json::from_str::<T>(r#"{"d":1000000005}"#).unwrap(), some);
        assert_eq!(serde_json::to_string(&T { d: None }).unwrap(), r#"{"d":null}"#);
        assert_eq!(serde_json::from_str::<T>("{}").unwrap(), T { d: None });
        assert_eq!(serde_json::from_str::<T>(r#"{"d":null}"#).unwrap(), T { d: None });
        // Saturates rather than wraps.
        let huge = T { d: Some(Duration::MAX) };
        assert_eq!(serde_json::to_string(&huge).unwrap(), format!(r#"{{"d":{}}}"#, i64::MAX));
    }

    #[test]
    fn monitor_is_object_safe() {
        let (_, m) = setup();
        let shared: Arc<dyn Monitor> = Arc::new(m);
        shared.record_task_start("a");
        shared.record_task_failed("a", MS, "e");
        assert_eq!(shared.task_metrics("a").unwrap().failed_runs, 1);
        assert!(format!("{shared:?}").contains("DefaultMonitor"));
    }

    #[test]
    fn default_methods_are_no_ops() {
        #[derive(Debug)]
        struct Null;
        impl Monitor for Null {
            fn record_task_start(&self, _: &str) {}
            fn record_task_complete(&self, _: &str, _: Duration, _: Option<&str>) {}
            fn record_scheduler_start(&self) {}
            fn record_scheduler_stop(&self) {}
            fn record_scheduler_pause(&self) {}
            fn record_scheduler_resume(&self) {}
            fn task_metrics(&self, id: &str) -> Result<TaskMetrics> {
                Err(Error::TaskNotFound { id: id.into() })
            }
            fn scheduler_metrics(&self) -> SchedulerMetrics {
                SchedulerMetrics::default()
            }
            fn performance_metrics(&self) -> PerformanceMetrics {
                PerformanceMetrics::default()
            }
            fn cleanup(&self) {}
        }
        let n = Null;
        n.record_task_failed("a", MS, "e");
        n.record_task_latency("a", MS);
        n.record_task_skipped("a");
        n.record_task_missed("a", 1);
        n.record_task_removed("a");
        n.set_task_name("a", "A");
        n.set_task_counts(1, 1);
        assert!(n.task_metrics("a").is_err());
    }
}
