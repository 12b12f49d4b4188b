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

use super::gate::RunLease;
use super::{Dispatch, Event, Inner, SchedState};
use crate::clock::{elapsed, signed, Clock};
use crate::error::{Error, Result};
use crate::store::{ExecutionStatus, TaskExecution};
use crate::task::{OverlapPolicy, TaskContext, TaskHandler};

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
    slot: u32,
    id: Arc<str>,
    name: Arc<str>,
    handler: Arc<dyn TaskHandler>,
    scheduled: Timestamp,
    timeout: Duration,
    max_retries: u32,
    retry_delay: Duration,
    cancel: CancellationToken,
    /// The task's first run in this process.
    first_run: bool,
    /// Cluster mode: the fencing token of the claim.
    fencing_token: Option<u64>,
    /// Cluster mode: the run lock, held for the whole run.
    lease: Option<Box<dyn RunLease>>,
}

enum Attempt {
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

/// Checks overlap and marks the run as started. Called with the state locked,
/// so the driver prepares a whole batch of due fires under one lock.
pub(crate) fn prepare_locked(st: &mut SchedState, d: &Dispatch) -> Result<Prepared> {
    let run_cancel = st.run_cancel.clone();
    let Some(Some(e)) = st.slots.get_mut(d.slot as usize) else {
        return Err(Error::TaskNotFound { id: String::new() });
    };
    let Some(handler) = e.task.handler.clone() else {
        return Err(Error::TaskHandlerRequired { task: e.task.name.to_string() });
    };
    if e.running > 0 && e.task.overlap == OverlapPolicy::Skip {
        e.skipped += 1;
        let id = e.id.clone();
        st.totals.skipped += 1;
        return Ok(Prepared::Skipped(id, d.scheduled));
    }
    e.running += 1;
    Ok(Prepared::Run(RunSpec {
        slot: d.slot,
        id: e.id.clone(),
        name: e.name.clone(),
        handler,
        scheduled: d.scheduled,
        timeout: e.task.timeout,
        max_retries: e.task.max_retries,
        retry_delay: e.task.retry_delay,
        cancel: run_cancel,
        first_run: e.started_runs == 0 && e.running == 1,
        fencing_token: None,
        lease: None,
    }))
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

/// Starts a fire prepared by the driver in its own task; catch-up fires of
/// the same task (`then`) follow in order, each after the previous one ended.
pub(crate) fn spawn_prepared(inner: &Arc<Inner>, p: Result<Prepared>, then: Vec<Timestamp>) {
    let spec = match p {
        Ok(Prepared::Run(spec)) => spec,
        Ok(Prepared::Skipped(id, at)) => {
            let _ = skipped(inner, &id, at, Trigger::Schedule);
            return;
        }
        Err(e) => {
            tracing::warn!(target: "rota", error = %e, "fire not run");
            return;
        }
    };
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

type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<(), crate::task::HandlerError>> + Send + 'a>>;

/// Polls a handler's future, turning a panic into an error (no extra task).
struct CatchUnwind<'a>(HandlerFuture<'a>);

impl Future for CatchUnwind<'_> {
    type Output = std::result::Result<std::result::Result<(), crate::task::HandlerError>, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Err(p) => Poll::Ready(Err(panic_message(p))),
        }
    }
}

async fn attempt(inner: &Arc<Inner>, spec: &RunSpec, ctx: TaskContext) -> Attempt {
    let mut job = CatchUnwind(spec.handler.handle(ctx.clone()));
    let timed = !spec.timeout.is_zero();
    let deadline = inner.s.clock.now() + signed(spec.timeout);
    let clock = inner.s.clock.clone();
    let lease = spec.lease.as_deref();
    let result = tokio::select! {
        // The handler first: most finish at their first poll, and then the
        // other futures are never polled (no waiter registered on shared tokens).
        biased;
        r = &mut job => return match r {
            Ok(Ok(())) => Attempt::Ok,
            Ok(Err(e)) => Attempt::Failed(e.to_string()),
            Err(panic) => Attempt::Failed(panic),
        },
        _ = sleep_on(clock.as_ref(), deadline), if timed => Attempt::TimedOut,
        _ = spec.cancel.cancelled() => Attempt::Cancelled,
        _ = async { lease.expect("checked").keep().await }, if lease.is_some() => {
            Attempt::LeaseLost
        }
    };
    // Tell the handler, give it a moment to return, then drop (abort) it.
    ctx.cancel.cancel();
    let _ = tokio::time::timeout(CANCEL_GRACE, &mut job).await;
    result
}

async fn execute(inner: &Arc<Inner>, spec: RunSpec) -> Result<()> {
    let clock = inner.s.clock.clone();
    let permit = match &inner.limiter {
        Some(sem) => Some(sem.clone().acquire_owned().await.expect("semaphore never closed")),
        None => None,
    };
    let first_start = clock.now();
    let latency = elapsed(spec.scheduled, first_start);
    if spec.first_run {
        // The monitor learns a task's name at its first run, so tasks that
        // never run cost it nothing.
        inner.s.monitor.set_task_name(&spec.id, &spec.name);
    }
    inner.s.monitor.record_task_start(&spec.id);
    let mut attempt_no = 1u32;
    let output: Arc<std::sync::Mutex<String>> = Arc::default();
    let outcome: std::result::Result<(), (Error, String)> = loop {
        if inner.events_on() {
            inner.emit(Event::TaskStarting {
                task_id: spec.id.to_string(),
                scheduled_at: spec.scheduled,
                attempt: attempt_no,
            });
        }
        let start = clock.now();
        let ctx = TaskContext {
            task_id: spec.id.clone(),
            task_name: spec.name.clone(),
            scheduled_at: spec.scheduled,
            attempt: attempt_no,
            node_id: inner.s.node_id.clone(),
            fencing_token: spec.fencing_token,
            // A token of its own: cheap, and no lock shared with other runs.
            cancel: CancellationToken::new(),
            output: output.clone(),
        };
        let (err, msg) = match attempt(inner, &spec, ctx).await {
            Attempt::Ok => {
                if inner.events_on() {
                    inner.emit(Event::TaskSucceeded {
                        task_id: spec.id.to_string(),
                        scheduled_at: spec.scheduled,
                        duration: elapsed(start, clock.now()),
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
        if attempt_no <= spec.max_retries && !spec.cancel.is_cancelled() && !lease_lost {
            inner.emit(Event::TaskRetried {
                task_id: spec.id.to_string(),
                scheduled_at: spec.scheduled,
                attempt: attempt_no,
                error: msg.clone(),
            });
            {
                let mut st = inner.state.lock().unwrap();
                if let Some(Some(e)) = st.slots.get_mut(spec.slot as usize) {
                    if e.id == spec.id {
                        e.task.retry_count = attempt_no;
                    }
                }
            }
            let until = clock.now() + signed(spec.retry_delay);
            let lease = spec.lease.as_deref();
            tokio::select! {
                _ = sleep_on(clock.as_ref(), until) => {}
                _ = spec.cancel.cancelled() => {}
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
    let duration = elapsed(first_start, end);
    // The bookkeeping below can wait: let fires queued behind this one start
    // their handlers first, so a burst of due fires is not delayed by it.
    tokio::task::yield_now().await;
    inner.s.monitor.record_task_latency(&spec.id, latency);
    let ok = outcome.is_ok();
    match &outcome {
        Ok(()) => inner.s.monitor.record_task_complete(&spec.id, duration, None),
        Err((_, msg)) => {
            inner.s.monitor.record_task_failed(&spec.id, duration, msg);
            inner.emit(Event::TaskFailed {
                task_id: spec.id.to_string(),
                scheduled_at: spec.scheduled,
                error: msg.clone(),
            });
        }
    }
    {
        let mut st = inner.state.lock().unwrap();
        st.totals.runs += 1;
        if !ok {
            st.totals.failed += 1;
        }
        st.totals.last_run_at = Some(first_start);
        match st.slots.get_mut(spec.slot as usize) {
            Some(Some(e)) if e.id == spec.id => {
                e.running = e.running.saturating_sub(1);
                e.task.run_count += 1;
                e.task.last_run_at = Some(first_start);
                e.task.retry_count = attempt_no - 1;
                e.total_duration += duration;
                e.total_latency += latency;
                e.started_runs += 1;
                match &outcome {
                    Ok(()) => {
                        if !e.task.last_error.is_empty() {
                            e.task.last_error = "".into();
                        }
                    }
                    Err((_, msg)) => {
                        e.task.failed_count += 1;
                        e.task.last_error = msg.as_str().into();
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
    inner.queue_execution(TaskExecution {
        task_id: spec.id.to_string(),
        node_id: inner.s.node_id.to_string(),
        status: if ok { ExecutionStatus::Completed } else { ExecutionStatus::Failed },
        scheduled_at: spec.scheduled,
        started_at: first_start,
        ended_at: Some(end),
        error: outcome.as_ref().err().map(|(_, m)| m.clone()).unwrap_or_default(),
        attempts: attempt_no,
        duration,
        output: std::mem::take(&mut *output.lock().unwrap()),
    });
    inner.persist().await;
    outcome.map_err(|(e, _)| e)
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
