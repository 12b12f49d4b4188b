//! Running one fire: overlap, concurrency limit, timeout, retries, panics,
//! and writing the outcome back.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use super::entry::OptTs;
use super::gate::RunLease;
use super::{Dispatch, Event, Inner, SchedState};
use crate::clock::{elapsed, signed, Clock};
use crate::error::{Error, Result};
use crate::store::{ExecutionStatus, TaskExecution};
use crate::task::{OverlapPolicy, RunShared, TaskContext, TaskHandler};

/// How long a cancelled handler gets to return on its own before it is aborted.
const CANCEL_GRACE: Duration = Duration::from_millis(100);

/// Why a fire runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// Its scheduled instant came.
    Schedule,
    /// `run_now` / `run_all`.
    Manual,
}

pub(crate) struct RunSpec {
    pub(crate) slot: u32,
    /// The task's entry (see `Entry::serial`).
    pub(crate) serial: u32,
    pub(crate) id: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) handler: Arc<dyn TaskHandler>,
    pub(crate) scheduled: Timestamp,
    pub(crate) timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_delay: Duration,
    /// The task's first run in this process.
    pub(crate) first_run: bool,
    /// Cluster mode: the fencing token of the claim.
    pub(crate) fencing_token: Option<u64>,
    /// Cluster mode: the run lock, held for the whole run.
    pub(crate) lease: Option<Box<dyn RunLease>>,
    /// The task skips overlapping runs.
    pub(crate) skip_overlap: bool,
    /// The task's misfire grace.
    pub(crate) grace: Duration,
}

pub(crate) enum Attempt {
    Ok,
    Failed(String),
    TimedOut,
    Cancelled,
    /// The run lock was lost (cluster mode).
    LeaseLost,
}

/// The outcome of checking a fire against its task, under the state lock.
pub(crate) enum Prepared {
    /// Marked running: start it.
    Run(RunSpec),
    /// The previous run is still going and the task skips overlaps.
    Skipped(Arc<str>, Timestamp),
}

/// What a run of the task in `e` needs, for the fire at `scheduled`.
pub(crate) fn build_spec(e: &super::Entry, slot: u32, scheduled: Timestamp) -> Result<RunSpec> {
    let Some(handler) = e.handler.clone() else {
        return Err(Error::TaskHandlerRequired { task: e.name.to_string() });
    };
    Ok(RunSpec {
        slot,
        serial: e.serial,
        id: e.id.clone(),
        name: e.name.clone(),
        handler,
        scheduled,
        timeout: e.def.shape.timeout,
        max_retries: e.def.shape.max_retries,
        retry_delay: e.def.shape.retry_delay,
        first_run: false,
        fencing_token: None,
        lease: None,
        skip_overlap: e.overlap() == OverlapPolicy::Skip,
        grace: e.misfire_grace(),
    })
}

/// Checks overlap and marks the run as started, with the state locked:
/// `false` if the task's previous run is still going and it skips overlaps
/// (the skip is counted).
pub(crate) fn admit(e: &mut super::Entry, totals_skipped: &mut i64, spec: &mut RunSpec) -> bool {
    if reserve(e, spec) {
        return true;
    }
    e.stats_mut().skipped += 1;
    *totals_skipped += 1;
    false
}

/// Marks a prepared fire as running ahead of its instant when no overlap
/// check can stop it (no run of the task going, or overlap allowed), so it
/// can start without the lock; `false` leaves the check to the instant.
pub(crate) fn reserve(e: &mut super::Entry, spec: &mut RunSpec) -> bool {
    if e.running > 0 && e.overlap() == OverlapPolicy::Skip {
        return false;
    }
    e.running += 1;
    spec.first_run = e.stats().started_runs == 0 && e.running == 1;
    true
}

/// Checks overlap and marks the run as started. Called with the state locked.
pub(crate) fn prepare_locked(st: &mut SchedState, d: &Dispatch) -> Result<Prepared> {
    let Some(Some(e)) = st.slots.get_mut(d.slot as usize) else {
        return Err(Error::TaskNotFound { id: String::new() });
    };
    let mut spec = build_spec(e, d.slot, d.scheduled)?;
    if !admit(e, &mut st.totals.skipped, &mut spec) {
        return Ok(Prepared::Skipped(spec.id, d.scheduled));
    }
    Ok(Prepared::Run(spec))
}

/// Records a skipped fire (outside the lock); a manual run gets an error.
pub(crate) fn skipped(
    inner: &Arc<Inner>,
    id: &Arc<str>,
    scheduled: Timestamp,
    trigger: Trigger,
) -> Result<()> {
    inner.s.monitor.record_task_skipped(id);
    record_history(
        inner,
        id,
        ExecutionStatus::Skipped,
        scheduled,
        inner.s.clock.now(),
        "previous run still going",
    );
    inner.emit(Event::TaskSkipped { task_id: id.to_string(), scheduled_at: scheduled });
    if trigger == Trigger::Manual {
        return Err(Error::InvalidInput {
            what: format!("run of task {id:?}"),
            message: "its previous run is still going and its overlap policy is skip".into(),
        });
    }
    Ok(())
}

/// Checks overlap and marks the run as started; `None` if skipped.
fn prepare(inner: &Arc<Inner>, d: &Dispatch, trigger: Trigger) -> Result<Option<RunSpec>> {
    let p = prepare_locked(&mut inner.state.lock().unwrap(), d)?;
    match p {
        Prepared::Run(spec) => Ok(Some(spec)),
        Prepared::Skipped(id, at) => skipped(inner, &id, at, trigger).map(|()| None),
    }
}

/// Runs a fire in a task of its own; catch-up fires of the same task
/// (`then`) follow in order, each after the previous one ended.
pub(crate) fn spawn_run(inner: &Arc<Inner>, spec: RunSpec, then: Vec<Timestamp>) {
    let inner2 = inner.clone();
    inner.tracker.spawn(async move {
        let slot = spec.slot;
        let _ = execute(&inner2, spec).await;
        for scheduled in then {
            let next = Dispatch { slot, scheduled, then: Vec::new() };
            match prepare(&inner2, &next, Trigger::Schedule) {
                Ok(Some(spec)) => {
                    let _ = execute(&inner2, spec).await;
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    });
}

/// Continues a run whose first attempt a runner started, in a task of its own.
pub(crate) fn spawn_continued(
    inner: &Arc<Inner>,
    spec: RunSpec,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    first: FirstAttempt,
) {
    let inner2 = inner.clone();
    inner.tracker.spawn(async move {
        let _ = run_attempts(&inner2, spec, permit, Some(first)).await;
    });
}

/// Runs a fire in the caller's task and returns its outcome.
pub(crate) async fn run_fire_now(inner: &Arc<Inner>, d: Dispatch) -> Result<()> {
    match prepare(inner, &d, Trigger::Manual)? {
        Some(spec) => execute(inner, spec).await,
        None => Ok(()),
    }
}

/// Runs a fire this node claimed in the cluster, in the caller's task.
pub(crate) async fn run_claimed(
    inner: &Arc<Inner>,
    d: Dispatch,
    fencing_token: Option<u64>,
    lease: Option<Box<dyn RunLease>>,
) {
    match prepare(inner, &d, Trigger::Schedule) {
        Ok(Some(mut spec)) => {
            spec.fencing_token = fencing_token;
            spec.lease = lease;
            let _ = execute(inner, spec).await;
        }
        Ok(None) | Err(_) => {
            if let Some(lease) = lease {
                lease.release().await;
            }
        }
    }
}

/// Sleeps on the scheduler's clock until `deadline`.
pub(crate) async fn sleep_on(clock: &dyn Clock, deadline: Timestamp) {
    while clock.now() < deadline {
        clock.sleep_until(deadline).await;
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    format!("handler panicked: {msg}")
}

type HandlerFuture =
    Pin<Box<dyn Future<Output = std::result::Result<(), crate::task::HandlerError>> + Send>>;

/// A handler's run as an owned future (it keeps its own handle on the
/// handler), polled so that a panic becomes an error. Owned,
/// so a runner can poll it first and move it into a task of its own only if
/// it does not finish at once.
pub(crate) struct Job(HandlerFuture);

impl Job {
    pub(crate) fn new(handler: &Arc<dyn TaskHandler>, ctx: TaskContext) -> Job {
        let h = handler.clone();
        Job(Box::pin(async move { h.handle(ctx).await }))
    }

    /// Polls once, turning a panic into an error.
    pub(crate) fn poll_once(&mut self, cx: &mut Context<'_>) -> Poll<Attempt> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Ok(()))) => Poll::Ready(Attempt::Ok),
            Ok(Poll::Ready(Err(e))) => Poll::Ready(Attempt::Failed(e.to_string())),
            Err(p) => Poll::Ready(Attempt::Failed(panic_message(p))),
        }
    }
}

impl Future for Job {
    type Output = Attempt;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Attempt> {
        self.poll_once(cx)
    }
}

/// The first attempt of a run, already started by a runner (see
/// `dispatch`): its handler was polled once.
pub(crate) struct FirstAttempt {
    pub start: Timestamp,
    pub run: Arc<RunShared>,
    pub state: FirstState,
}

pub(crate) enum FirstState {
    /// Not finished at its first poll.
    Pending(Job),
    /// Finished at its first poll, not with success (so retries may follow).
    Ready(Attempt),
}

/// The context of one attempt of a run.
pub(crate) fn context(
    spec: &RunSpec,
    attempt: u32,
    node_id: &Arc<str>,
    run: Arc<RunShared>,
) -> TaskContext {
    TaskContext {
        task_id: spec.id.clone(),
        task_name: spec.name.clone(),
        scheduled_at: spec.scheduled,
        attempt,
        node_id: node_id.clone(),
        fencing_token: spec.fencing_token,
        run,
    }
}

/// Waits for an attempt to end: success, failure, timeout, a stop of the
/// scheduler, or the loss of the run lock.
async fn attempt(
    inner: &Arc<Inner>,
    spec: &RunSpec,
    stop: &CancellationToken,
    run: &RunShared,
    mut job: Job,
    start: Timestamp,
) -> Attempt {
    let timed = !spec.timeout.is_zero();
    let deadline = start + signed(spec.timeout);
    let clock = inner.s.clock.clone();
    let lease = spec.lease.as_deref();
    let result = tokio::select! {
        // The handler first: most finish at their first poll, and then the
        // other futures are never polled (no waiter registered on shared tokens).
        biased;
        r = &mut job => return r,
        _ = sleep_on(clock.as_ref(), deadline), if timed => Attempt::TimedOut,
        _ = stop.cancelled() => Attempt::Cancelled,
        _ = async { lease.expect("checked").keep().await }, if lease.is_some() => {
            Attempt::LeaseLost
        }
    };
    // Tell the handler, give it a moment to return, then drop (abort) it.
    run.cancel();
    let _ = tokio::time::timeout(CANCEL_GRACE, &mut job).await;
    result
}

async fn execute(inner: &Arc<Inner>, spec: RunSpec) -> Result<()> {
    let permit = match &inner.limiter {
        Some(sem) => Some(sem.clone().acquire_owned().await.expect("semaphore never closed")),
        None => None,
    };
    run_attempts(inner, spec, permit, None).await
}

/// Tells the monitor a run started (it learns the task's name at its first
/// run, so tasks that never run cost it nothing).
fn note_start(inner: &Inner, spec: &RunSpec) {
    if spec.first_run {
        inner.s.monitor.set_task_name(&spec.id, &spec.name);
    }
    inner.s.monitor.record_task_start(&spec.id);
}

/// Runs the attempts of one fire (the first may have been started by a
/// runner), then records the outcome.
pub(crate) async fn run_attempts(
    inner: &Arc<Inner>,
    spec: RunSpec,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    mut first: Option<FirstAttempt>,
) -> Result<()> {
    let clock = inner.s.clock.clone();
    let first_start = first.as_ref().map_or_else(|| clock.now(), |f| f.start);
    note_start(inner, &spec);
    // Cancelled when a stop's grace period runs out.
    let stop = inner.state.lock().unwrap().run_cancel.clone();
    let mut attempt_no = 1u32;
    // The latest attempt's share: its output carries over to the next.
    let mut run: Arc<RunShared> = first.as_ref().map_or_else(Arc::default, |f| f.run.clone());
    let mut attempt_start = first_start;
    let outcome: std::result::Result<(), (Error, String)> = loop {
        let result = match first.take() {
            Some(f) => match f.state {
                FirstState::Ready(a) => a,
                FirstState::Pending(job) => attempt(inner, &spec, &stop, &run, job, f.start).await,
            },
            None => {
                if inner.events_on() {
                    inner.emit(Event::TaskStarting {
                        task_id: spec.id.to_string(),
                        scheduled_at: spec.scheduled,
                        attempt: attempt_no,
                    });
                }
                let start = clock.now();
                attempt_start = start;
                if attempt_no > 1 {
                    run = Arc::new(RunShared::with_output(run.take_output()));
                }
                let ctx = context(&spec, attempt_no, &inner.s.node_id, run.clone());
                let job = Job::new(&spec.handler, ctx);
                attempt(inner, &spec, &stop, &run, job, start).await
            }
        };
        let (err, msg) = match result {
            Attempt::Ok => {
                if inner.events_on() {
                    inner.emit(Event::TaskSucceeded {
                        task_id: spec.id.to_string(),
                        scheduled_at: spec.scheduled,
                        duration: elapsed(attempt_start, clock.now()),
                    });
                }
                break Ok(());
            }
            Attempt::TimedOut => {
                inner.emit(Event::TaskTimedOut {
                    task_id: spec.id.to_string(),
                    scheduled_at: spec.scheduled,
                    attempt: attempt_no,
                });
                let e = Error::TaskExecutionTimeout {
                    task: spec.id.to_string(),
                    timeout: spec.timeout,
                    attempt: attempt_no,
                };
                let m = e.to_string();
                (e, m)
            }
            Attempt::Failed(message) => (
                Error::TaskExecutionFailed {
                    task: spec.id.to_string(),
                    attempt: attempt_no,
                    message: message.clone(),
                },
                message,
            ),
            Attempt::LeaseLost => {
                let m = format!(
                    "cancelled: the run lock was lost (fencing token {})",
                    spec.fencing_token.unwrap_or_default()
                );
                break Err((
                    Error::TaskExecutionFailed {
                        task: spec.id.to_string(),
                        attempt: attempt_no,
                        message: m.clone(),
                    },
                    m,
                ));
            }
            Attempt::Cancelled => {
                let m = "cancelled: the scheduler stopped".to_string();
                break Err((
                    Error::TaskExecutionFailed {
                        task: spec.id.to_string(),
                        attempt: attempt_no,
                        message: m.clone(),
                    },
                    m,
                ));
            }
        };
        let lease_lost = spec.lease.as_ref().is_some_and(|l| l.is_lost());
        if attempt_no <= spec.max_retries && !stop.is_cancelled() && !lease_lost {
            inner.emit(Event::TaskRetried {
                task_id: spec.id.to_string(),
                scheduled_at: spec.scheduled,
                attempt: attempt_no,
                error: msg.clone(),
            });
            {
                let mut st = inner.state.lock().unwrap();
                if let Some(Some(e)) = st.slots.get_mut(spec.slot as usize) {
                    if e.serial == spec.serial {
                        e.extra_mut().retry_count = attempt_no;
                    }
                }
            }
            let until = clock.now() + signed(spec.retry_delay);
            let lease = spec.lease.as_deref();
            tokio::select! {
                _ = sleep_on(clock.as_ref(), until) => {}
                _ = stop.cancelled() => {}
                _ = async { lease.expect("checked").keep().await }, if lease.is_some() => {}
            }
            attempt_no += 1;
            continue;
        }
        if spec.max_retries > 0 {
            let e = Error::TaskMaxRetriesExceeded {
                task: spec.id.to_string(),
                retries: attempt_no - 1,
                last_error: msg.clone(),
            };
            break Err((e, msg));
        }
        break Err((err, msg));
    };
    drop(permit);
    let end = clock.now();
    let mut spec = spec;
    if let Some(lease) = spec.lease.take() {
        lease.release().await;
    }
    // The bookkeeping below can wait: let fires queued behind this one start
    // their handlers first, so a burst of due fires is not delayed by it.
    tokio::task::yield_now().await;
    let (result, message) = match outcome {
        Ok(()) => (Ok(()), None),
        Err((e, m)) => (Err(e), Some(m)),
    };
    let output = run.take_output();
    let done = Finished {
        spec,
        first_start,
        end,
        error: message,
        attempts: attempt_no,
        output,
        noted: true,
    };
    finish(inner, vec![done]).await;
    result
}

/// A run that ended, for the bookkeeping.
pub(crate) struct Finished {
    pub spec: RunSpec,
    pub first_start: Timestamp,
    pub end: Timestamp,
    /// The failure's message; `None` on success.
    pub error: Option<String>,
    pub attempts: u32,
    pub output: String,
    /// Whether the monitor was told of the start.
    pub noted: bool,
}

/// Records the outcome of runs: monitor, events, the tasks' run state (under
/// one lock for the whole batch), history, and the write-behind.
pub(crate) async fn finish(inner: &Arc<Inner>, mut done: Vec<Finished>) {
    if done.is_empty() {
        return;
    }
    // Run locks of runs that ended at their first poll, given back together.
    let leases: Vec<_> = done.iter_mut().filter_map(|f| f.spec.lease.take()).collect();
    if !leases.is_empty() {
        futures_util::future::join_all(leases.into_iter().map(|l| l.release())).await;
    }
    let monitor = &inner.s.monitor;
    for f in &done {
        if !f.noted {
            note_start(inner, &f.spec);
        }
        let latency = elapsed(f.spec.scheduled, f.first_start);
        let duration = elapsed(f.first_start, f.end);
        monitor.record_task_latency(&f.spec.id, latency);
        match &f.error {
            None => monitor.record_task_complete(&f.spec.id, duration, None),
            Some(msg) => {
                monitor.record_task_failed(&f.spec.id, duration, msg);
                inner.emit(Event::TaskFailed {
                    task_id: f.spec.id.to_string(),
                    scheduled_at: f.spec.scheduled,
                    error: msg.clone(),
                });
            }
        }
    }
    let mut execs = Vec::with_capacity(done.len());
    {
        let mut st = inner.state.lock().unwrap();
        for f in &done {
            let latency = elapsed(f.spec.scheduled, f.first_start);
            let duration = elapsed(f.first_start, f.end);
            let ok = f.error.is_none();
            st.totals.runs += 1;
            if !ok {
                st.totals.failed += 1;
            }
            if st.totals.last_run_at.is_none_or(|t| t < f.first_start) {
                st.totals.last_run_at = Some(f.first_start);
            }
            match st.slots.get_mut(f.spec.slot as usize) {
                Some(Some(e)) if e.serial == f.spec.serial => {
                    e.running = e.running.saturating_sub(1);
                    if e.last_run_at.get().is_none_or(|t| t < f.first_start) {
                        e.last_run_at = OptTs::new(Some(f.first_start));
                    }
                    let x = e.extra_mut();
                    x.run_count += 1;
                    x.retry_count = f.attempts - 1;
                    x.stats.total_duration += duration;
                    x.stats.total_latency += latency;
                    x.stats.started_runs += 1;
                    match &f.error {
                        None => x.last_error = None,
                        Some(msg) => {
                            x.failed_count += 1;
                            x.last_error = Some(msg.as_str().into());
                        }
                    }
                    if !e.dirty {
                        e.dirty = true;
                        inner.queue_task(e.id.clone());
                    }
                }
                // Removed while running: nothing to write back.
                _ => {}
            }
        }
    }
    for f in done {
        let ok = f.error.is_none();
        execs.push(TaskExecution {
            task_id: f.spec.id.to_string(),
            node_id: inner.s.node_id.to_string(),
            status: if ok { ExecutionStatus::Completed } else { ExecutionStatus::Failed },
            scheduled_at: f.spec.scheduled,
            started_at: f.first_start,
            ended_at: Some(f.end),
            error: f.error.unwrap_or_default(),
            attempts: f.attempts,
            duration: elapsed(f.first_start, f.end),
            output: f.output,
        });
    }
    inner.queue_executions(execs);
    inner.persist().await;
}

/// Writes a history record for a fire that did not run, in the background.
pub(crate) fn record_history(
    inner: &Arc<Inner>,
    id: &str,
    status: ExecutionStatus,
    scheduled: Timestamp,
    now: Timestamp,
    why: &str,
) {
    let exec = TaskExecution {
        task_id: id.to_string(),
        node_id: inner.s.node_id.to_string(),
        status,
        scheduled_at: scheduled,
        started_at: now,
        ended_at: Some(now),
        error: why.to_string(),
        attempts: 0,
        duration: Duration::ZERO,
        output: String::new(),
    };
    inner.queue_execution(exec);
    let inner = inner.clone();
    inner.tracker.clone().spawn(async move { inner.persist().await });
}

/// History for missed fires: one record per miss notice.
pub(crate) fn record_missed(
    inner: &Arc<Inner>,
    id: &str,
    count: u64,
    first: Timestamp,
    last: Timestamp,
    now: Timestamp,
) {
    let why = if count == 1 {
        format!("missed fire at {first}")
    } else {
        format!("{count} missed fires from {first} to {last}")
    };
    record_history(inner, id, ExecutionStatus::Missed, first, now, &why);
}
