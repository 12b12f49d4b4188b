//! `/metrics`: Prometheus text exposition (format 0.0.4), written by hand.
//!
//! Counters and histograms are fed by scheduler events ([`Metrics::attach`]);
//! gauges are read from the scheduler at scrape time. Every per-task series
//! carries the label `task` (the task's ID).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `rota_task_runs_total` | counter | `task`, `status` = `completed` or `failed` |
//! | `rota_task_failures_total` | counter | `task` (runs that failed after their retries) |
//! | `rota_task_retries_total` | counter | `task` (failed attempts that were retried) |
//! | `rota_task_timeouts_total` | counter | `task` (attempts that timed out) |
//! | `rota_task_skipped_total` | counter | `task` (fires skipped: previous run still going) |
//! | `rota_task_missed_total` | counter | `task` (fires missed: down, paused, clock jump) |
//! | `rota_task_duration_seconds` | histogram | `task` (first start to end, retries included) |
//! | `rota_task_lateness_seconds` | histogram | `task` (first start minus the scheduled instant) |
//! | `rota_task_running` | gauge | `task` |
//! | `rota_running_tasks` | gauge | |
//! | `rota_tasks` | gauge | `state` = `enabled` or `disabled` |
//! | `rota_scheduler_up` | gauge | (1 while running, 0 when paused or stopped) |
//! | `rota_scheduler_status` | gauge | `status` = `running`, `paused`, `stopped` (1 for the current one) |

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use jiff::Timestamp;
use rota::{DefaultScheduler, Event, Scheduler, Status, Task};

use super::AppState;

/// Upper bounds of the duration histogram's buckets, in seconds.
pub const DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0];

/// Upper bounds of the lateness histogram's buckets, in seconds.
pub const LATENESS_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Clone)]
struct TaskSeries {
    completed: u64,
    failed: u64,
    retries: u64,
    timeouts: u64,
    skipped: u64,
    missed: u64,
    duration: Histogram,
    lateness: Histogram,
}

impl Default for TaskSeries {
    fn default() -> Self {
        TaskSeries {
            completed: 0,
            failed: 0,
            retries: 0,
            timeouts: 0,
            skipped: 0,
            missed: 0,
            duration: Histogram::new(DURATION_BUCKETS),
            lateness: Histogram::new(LATENESS_BUCKETS),
        }
    }
}

/// A per-task counter: its name, its help and how to read it.
type Counter = (&'static str, &'static str, fn(&TaskSeries) -> u64);

#[derive(Debug, Default)]
struct Inner {
    tasks: BTreeMap<String, TaskSeries>,
    /// Runs in progress: (task, scheduled instant) -> first-attempt starts.
    in_flight: HashMap<(String, Timestamp), Vec<Timestamp>>,
}

impl Inner {
    fn task(&mut self, id: &str) -> &mut TaskSeries {
        if !self.tasks.contains_key(id) {
            self.tasks.insert(id.to_string(), TaskSeries::default());
        }
        self.tasks.get_mut(id).expect("inserted")
    }

    /// Ends a run in progress; its first start, if it was seen.
    fn end_run(&mut self, id: &str, scheduled_at: Timestamp) -> Option<Timestamp> {
        let key = (id.to_string(), scheduled_at);
        let starts = self.in_flight.get_mut(&key)?;
        let first = if starts.is_empty() { None } else { Some(starts.remove(0)) };
        if starts.is_empty() {
            self.in_flight.remove(&key);
        }
        first
    }
}

/// Prometheus metrics fed by scheduler events.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_nanosecond() - from.as_nanosecond()) as f64 / 1e9
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Feeds these metrics from `scheduler`'s events. Attach once per scheduler.
    pub fn attach(self: &Arc<Self>, scheduler: &DefaultScheduler) {
        let metrics = Arc::clone(self);
        // The clock, not the scheduler: the listener lives in the scheduler.
        let clock = scheduler.clock();
        scheduler.on_event(move |event| metrics.observe(event, clock.now()));
    }

    /// Counts one event that happened at `now` (by the scheduler's clock).
    pub fn observe(&self, event: &Event, now: Timestamp) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::TaskStarting { task_id, scheduled_at, attempt } if *attempt <= 1 => {
                let lateness = seconds_between(*scheduled_at, now);
                m.task(task_id).lateness.observe(lateness);
                m.in_flight.entry((task_id.clone(), *scheduled_at)).or_default().push(now);
            }
            Event::TaskSucceeded { task_id, scheduled_at, duration } => {
                let total = match m.end_run(task_id, *scheduled_at) {
                    Some(start) => seconds_between(start, now).max(duration.as_secs_f64()),
                    None => duration.as_secs_f64(),
                };
                let t = m.task(task_id);
                t.completed += 1;
                t.duration.observe(total);
            }
            Event::TaskFailed { task_id, scheduled_at, .. } => {
                let start = m.end_run(task_id, *scheduled_at);
                let t = m.task(task_id);
                t.failed += 1;
                if let Some(start) = start {
                    t.duration.observe(seconds_between(start, now));
                }
            }
            Event::TaskRetried { task_id, .. } => m.task(task_id).retries += 1,
            Event::TaskTimedOut { task_id, .. } => m.task(task_id).timeouts += 1,
            Event::TaskSkipped { task_id, .. } => m.task(task_id).skipped += 1,
            Event::TaskMissed { task_id, count, .. } => m.task(task_id).missed += count,
            _ => {}
        }
    }

    /// Runs in progress of one task (0 if none, or if not attached).
    pub fn running(&self, task_id: &str) -> usize {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.in_flight.iter().filter(|((id, _), _)| id == task_id).map(|(_, v)| v.len()).sum()
    }

    /// Runs in progress, all tasks.
    pub fn running_total(&self) -> usize {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.in_flight.values().map(Vec::len).sum()
    }

    /// The exposition text: every task the scheduler holds has its series
    /// (zero until it runs), and tasks seen in events keep theirs after removal.
    pub fn render(&self, scheduler: &DefaultScheduler) -> String {
        let (mut tasks, running) = {
            let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let mut running: BTreeMap<String, usize> = BTreeMap::new();
            for ((id, _), v) in &m.in_flight {
                *running.entry(id.clone()).or_default() += v.len();
            }
            (m.tasks.clone(), running)
        };
        for t in scheduler.get_all() {
            tasks.entry(t.id().to_string()).or_default();
        }
        let stats = scheduler.stats();
        let status = scheduler.status().status;

        let mut out = String::with_capacity(1024 + tasks.len() * 4096);
        let o = &mut out;
        head(o, "rota_task_runs_total", "counter", "Runs that ended, by outcome.");
        for (id, t) in &tasks {
            let l = label(id);
            let _ = writeln!(
                o,
                "rota_task_runs_total{{task=\"{l}\",status=\"completed\"}} {}",
                t.completed
            );
            let _ =
                writeln!(o, "rota_task_runs_total{{task=\"{l}\",status=\"failed\"}} {}", t.failed);
        }
        let counters: [Counter; 5] = [
            ("rota_task_failures_total", "Runs that failed after their retries.", |t| t.failed),
            ("rota_task_retries_total", "Failed attempts that were retried.", |t| t.retries),
            ("rota_task_timeouts_total", "Attempts that ran out of time.", |t| t.timeouts),
            (
                "rota_task_skipped_total",
                "Fires skipped because the previous run was still going.",
                |t| t.skipped,
            ),
            (
                "rota_task_missed_total",
                "Fires missed (scheduler down or paused, clock jump) and not run.",
                |t| t.missed,
            ),
        ];
        for (name, help, get) in counters {
            head(o, name, "counter", help);
            for (id, t) in &tasks {
                let _ = writeln!(o, "{name}{{task=\"{}\"}} {}", label(id), get(t));
            }
        }
        head(
            o,
            "rota_task_duration_seconds",
            "histogram",
            "Run duration, from the first attempt's start to the end (retries included).",
        );
        for (id, t) in &tasks {
            histogram(o, "rota_task_duration_seconds", &label(id), &t.duration);
        }
        head(
            o,
            "rota_task_lateness_seconds",
            "histogram",
            "How late runs start: first attempt's start minus the scheduled instant.",
        );
        for (id, t) in &tasks {
            histogram(o, "rota_task_lateness_seconds", &label(id), &t.lateness);
        }
        head(o, "rota_task_running", "gauge", "Runs of the task in progress.");
        for id in tasks.keys() {
            let n = running.get(id).copied().unwrap_or(0);
            let _ = writeln!(o, "rota_task_running{{task=\"{}\"}} {n}", label(id));
        }
        head(o, "rota_running_tasks", "gauge", "Runs in progress, all tasks.");
        let _ = writeln!(o, "rota_running_tasks {}", running.values().sum::<usize>());
        head(o, "rota_tasks", "gauge", "Tasks held by the scheduler, by state.");
        let _ = writeln!(o, "rota_tasks{{state=\"enabled\"}} {}", stats.enabled_tasks);
        let _ = writeln!(o, "rota_tasks{{state=\"disabled\"}} {}", stats.disabled_tasks);
        head(
            o,
            "rota_scheduler_up",
            "gauge",
            "1 while the scheduler is running (not paused or stopped).",
        );
        let _ = writeln!(o, "rota_scheduler_up {}", u8::from(status == Status::Running));
        head(o, "rota_scheduler_status", "gauge", "The scheduler's state: 1 for the current one.");
        for s in [Status::Running, Status::Paused, Status::Stopped] {
            let _ =
                writeln!(o, "rota_scheduler_status{{status=\"{s}\"}} {}", u8::from(status == s));
        }
        out
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn histogram(o: &mut String, name: &str, task: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, b) in h.bounds.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(o, "{name}_bucket{{task=\"{task}\",le=\"{b}\"}} {cumulative}");
    }
    let _ = writeln!(o, "{name}_bucket{{task=\"{task}\",le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(o, "{name}_sum{{task=\"{task}\"}} {}", h.sum);
    let _ = writeln!(o, "{name}_count{{task=\"{task}\"}} {}", h.count);
}

/// A label value escaped for the text format: `\` `"` and line feeds.
pub(crate) fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// `GET /metrics`.
pub(crate) async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(&state.scheduler),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
        assert_eq!(label("plain-id_1.2"), "plain-id_1.2");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(9.0);
        let mut o = String::new();
        histogram(&mut o, "x", "t", &h);
        assert!(o.contains("x_bucket{task=\"t\",le=\"1\"} 1\n"), "{o}");
        assert!(o.contains("x_bucket{task=\"t\",le=\"2\"} 2\n"), "{o}");
        assert!(o.contains("x_bucket{task=\"t\",le=\"+Inf\"} 3\n"), "{o}");
        assert!(o.contains("x_sum{task=\"t\"} 11\n"), "{o}");
        assert!(o.contains("x_count{task=\"t\"} 3\n"), "{o}");
    }
}
