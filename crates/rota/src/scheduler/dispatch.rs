//! Starting the fires of one instant together.
//!
//! The driver prepares fires ahead of their instant (at most
//! [`Clock::prepare_ahead`](crate::clock::Clock::prepare_ahead)): it takes
//! them off the heap, computes each task's next fire, gathers what each run
//! needs ([`Staged`]) and, unless the task's previous run is still going,
//! marks the run as started. It hands the fires of one instant to a few
//! runners, one per worker thread (on tokio's blocking pool for big
//! batches). At the instant, a runner polls every handler once, in a tight
//! loop. It takes the state lock only if something changed since the
//! preparation (the scheduler's epoch moved) or a fire still needs its
//! overlap check. A handler that does not finish at its first poll moves to
//! a task of its own; the bookkeeping of those that did (monitor, run state,
//! history) waits until every fire of the batch has started. So 10,000 fires
//! due in one second start within a few milliseconds of it, not one spawned
//! task after another.
//!
//! A prepared fire that finds the scheduler paused or stopped at its instant
//! is put back, as if it had never been prepared: resume (or the next start)
//! treats it as missed, under the task's misfire policy. A fire whose task was
//! changed in between runs only if the task is still enabled and its new
//! schedule has a fire at that instant, and then with the new definition. A
//! fire whose task was removed does not run, even if a task with the same ID
//! was added since.
//!
//! In cluster mode one task per instant claims the prepared fires at the
//! instant and starts the won ones as their claims come back.

use std::cmp::Reverse;
use std::sync::Arc;
use std::task::Poll;

use jiff::{SignedDuration, Timestamp};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;

use super::entry::OptTs;
use super::gate::{FireGate, GatedFire};
use super::run::{self, Attempt, Finished, FirstAttempt, FirstState, Job, RunSpec, Trigger};
use super::{Event, HeapItem, Inner, Status};
use crate::task::RunShared;

/// Fires checked and started under one hold of the state lock.
const START_CHUNK: usize = 256;

/// Fires per runner below which a batch is not split further.
const MIN_PER_RUNNER: usize = 512;

/// Batches from this size on (on a real-time clock) get runners on OS
/// threads of their own (see `run_batch_blocking`).
const BIG_BATCH: usize = 256;

/// A fire taken off the heap, waiting for its instant.
pub(crate) struct Staged {
    pub spec: RunSpec,
    /// The task's generation when the fire was prepared.
    pub gen: u32,
    /// The task's latest handled fire before this one (restored if the fire
    /// is put back).
    pub prev_fire: Option<Timestamp>,
    /// Catch-up fires of the same task, run one after another after this one.
    pub then: Vec<Timestamp>,
    /// The scheduler's epoch when the fire was prepared.
    pub epoch: u64,
    /// Marked running when prepared (nothing to check at the instant if the
    /// epoch is unchanged).
    pub reserved: bool,
}

/// Groups prepared fires (in heap order) by instant.
fn by_instant(staged: Vec<Staged>) -> impl Iterator<Item = (Timestamp, Vec<Staged>)> {
    let mut rest = staged.into_iter().peekable();
    std::iter::from_fn(move || {
        let first = rest.next()?;
        let at = first.spec.scheduled;
        let mut batch = vec![first];
        while let Some(s) = rest.next_if(|s| s.spec.scheduled == at) {
            batch.push(s);
        }
        Some((at, batch))
    })
}

/// What the check at the instant decided.
enum Verdict {
    Run(RunSpec),
    /// Run, with catch-up fires after it, in a task of its own.
    RunThen(RunSpec, Vec<Timestamp>),
    Skipped(Arc<str>, Timestamp),
    Dropped,
}

impl Inner {
    /// How far ahead the driver prepares fires: about 1 ms plus 2 µs per
    /// queued fire (a generous estimate of what preparing them takes),
    /// within the clock's bound.
    pub(crate) fn lead(&self, queued: usize) -> std::time::Duration {
        let most = self.s.clock.prepare_ahead();
        if most.is_zero() {
            return std::time::Duration::ZERO;
        }
        let want = std::time::Duration::from_millis(1)
            + std::time::Duration::from_nanos(2000 * queued as u64);
        want.min(most)
    }

    /// Hands prepared fires to runners: the fires of one instant are split
    /// over at most one runner per worker thread.
    pub(crate) fn launch(self: &Arc<Self>, staged: Vec<Staged>) {
        let real_time = !self.lead(0).is_zero();
        for (at, mut batch) in by_instant(staged) {
            let big = batch.len() >= BIG_BATCH && real_time;
            let runners = batch.len().div_ceil(MIN_PER_RUNNER).clamp(1, self.workers);
            let per = batch.len().div_ceil(runners);
            while !batch.is_empty() {
                let part: Vec<Staged> = batch.drain(..per.min(batch.len())).collect();
                let inner = self.clone();
                if big {
                    let handle = tokio::runtime::Handle::current();
                    self.tracker.spawn_blocking(move || inner.run_batch_blocking(at, part, handle));
                } else {
                    self.tracker.spawn(async move { inner.run_batch(at, part).await });
                }
            }
        }
    }

    /// Cluster mode: one task per instant claims its prepared fires at the
    /// instant (the gate batches the requests), then starts the won ones
    /// like a runner does.
    pub(crate) fn launch_gated(self: &Arc<Self>, gate: Arc<dyn FireGate>, staged: Vec<Staged>) {
        for (at, batch) in by_instant(staged) {
            let inner = self.clone();
            let gate = gate.clone();
            self.tracker.spawn(async move { inner.run_gated(gate, at, batch).await });
        }
    }

    async fn run_gated(
        self: Arc<Self>,
        gate: Arc<dyn FireGate>,
        at: Timestamp,
        fires: Vec<Staged>,
    ) {
        run::sleep_on(self.s.clock.as_ref(), at).await;
        let mut asks = Vec::with_capacity(fires.len());
        for v in self.check(fires, false) {
            match v {
                Verdict::Run(spec) => asks.push(spec),
                Verdict::RunThen(spec, then) => {
                    let d = super::Dispatch { slot: spec.slot, scheduled: spec.scheduled, then };
                    super::gate::spawn_gated(&self, gate.clone(), d);
                }
                Verdict::Skipped(..) | Verdict::Dropped => {}
            }
        }
        // Claims go out together (the gate batches them); each group of
        // answers that arrives starts at once, without waiting for the rest.
        let mut claims: FuturesUnordered<_> = asks
            .into_iter()
            .map(|spec| {
                let ask = GatedFire {
                    task_id: spec.id.clone(),
                    scheduled: spec.scheduled,
                    skip_overlap: spec.skip_overlap,
                };
                let gate = &gate;
                async move { (spec, gate.admit(ask).await) }
            })
            .collect();
        let node_id: Arc<str> = Arc::from(&*self.s.node_id);
        let mut done = Vec::new();
        while let Some(first) = claims.next().await {
            let mut answered = vec![first];
            while let Some(Some(more)) = claims.next().now_or_never() {
                answered.push(more);
            }
            self.start_claimed(answered, &node_id, &mut done).await;
        }
        tokio::task::yield_now().await;
        run::finish(&self, done).await;
    }

    /// Records what the gate said of each fire and starts the won ones.
    async fn start_claimed(
        self: &Arc<Self>,
        answered: Vec<(RunSpec, crate::Result<super::gate::Admission>)>,
        node_id: &Arc<str>,
        done: &mut Vec<Finished>,
    ) {
        let mut won = Vec::with_capacity(answered.len());
        for (mut spec, admission) in answered {
            let claim = super::gate::settle(
                self,
                spec.slot,
                &spec.id,
                spec.scheduled,
                spec.grace,
                admission,
            )
            .await;
            if let Some(claim) = claim {
                spec.fencing_token = claim.fencing_token;
                spec.lease = claim.lease;
                won.push(spec);
            }
        }
        // Overlap on this node, then start them all.
        let mut runs = Vec::with_capacity(won.len());
        let mut skipped = Vec::new();
        {
            let mut st = self.state.lock().unwrap();
            let st = &mut *st;
            for mut spec in won {
                match st.slots.get_mut(spec.slot as usize) {
                    Some(Some(e)) if e.serial == spec.serial => {
                        if run::admit(e, &mut st.totals.skipped, &mut spec) {
                            runs.push(spec);
                        } else {
                            skipped.push(spec);
                        }
                    }
                    _ => skipped.push(spec),
                }
            }
        }
        for mut spec in skipped {
            if let Some(lease) = spec.lease.take() {
                lease.release().await;
            }
            let _ = run::skipped(self, &spec.id, spec.scheduled, Trigger::Schedule);
        }
        let mut runs = Some(runs);
        std::future::poll_fn(|cx| {
            for spec in runs.take().unwrap_or_default() {
                self.start(spec, node_id, cx, done);
            }
            Poll::Ready(())
        })
        .await;
    }

    /// A runner: waits for the instant, starts every fire, then records the
    /// ones that finished at once.
    async fn run_batch(self: Arc<Self>, at: Timestamp, fires: Vec<Staged>) {
        run::sleep_on(self.s.clock.as_ref(), at).await;
        let mut fires = Some(fires);
        let done = std::future::poll_fn(|cx| {
            Poll::Ready(self.start_all(fires.take().unwrap_or_default(), cx))
        })
        .await;
        // Let the other runners of this instant start their fires before
        // this one does its bookkeeping.
        tokio::task::yield_now().await;
        for chunk in done {
            run::finish(&self, chunk).await;
        }
    }

    /// A runner for a big batch, on a thread of tokio's blocking pool: an OS
    /// sleep ends within microseconds of the instant (a tokio timer up to a
    /// millisecond or two late), and the runners of one instant run side by
    /// side whatever the worker threads are doing. Handlers are polled here
    /// once, inside the runtime's context; the rest goes to the runtime.
    fn run_batch_blocking(
        self: Arc<Self>,
        at: Timestamp,
        fires: Vec<Staged>,
        handle: tokio::runtime::Handle,
    ) {
        let _rt = handle.enter();
        loop {
            let left = at.duration_since(self.s.clock.now());
            if left.is_negative() || left.is_zero() {
                break;
            }
            std::thread::sleep(left.unsigned_abs().min(std::time::Duration::from_millis(50)));
        }
        // A handler that is not done at its first poll continues in a task
        // of its own, whose first poll registers its real waker.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let done = self.start_all(fires, &mut cx);
        let inner = self.clone();
        let finish = async move {
            for chunk in done {
                run::finish(&inner, chunk).await;
            }
        };
        self.tracker.spawn_on(finish, &handle);
    }

    /// Checks and starts fires, a chunk at a time (with the state lock only
    /// when the chunk needs it).
    fn start_all(
        self: &Arc<Self>,
        fires: Vec<Staged>,
        cx: &mut std::task::Context<'_>,
    ) -> Vec<Vec<Finished>> {
        // One vector per chunk: small allocations the allocator reuses, where
        // one big vector would be fresh pages, faulted in while other runners
        // of the instant are still starting their fires (page faults of one
        // process are serialized).
        let mut done: Vec<Vec<Finished>> = Vec::with_capacity(fires.len().div_ceil(START_CHUNK));
        // A copy of its own, so runners on other threads do not share its
        // reference count.
        let node_id: Arc<str> = Arc::from(&*self.s.node_id);
        let mut fires = fires.into_iter();
        loop {
            let chunk: Vec<Staged> = fires.by_ref().take(START_CHUNK).collect();
            if chunk.is_empty() {
                return done;
            }
            let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
            let vs = if chunk.iter().all(|f| f.reserved && f.epoch == epoch) {
                // Nothing changed since they were prepared: no lock.
                chunk
                    .into_iter()
                    .map(|f| {
                        if f.then.is_empty() {
                            Verdict::Run(f.spec)
                        } else {
                            Verdict::RunThen(f.spec, f.then)
                        }
                    })
                    .collect()
            } else {
                self.check(chunk, true)
            };
            let mut finished = Vec::with_capacity(vs.len());
            for v in vs {
                match v {
                    Verdict::Run(spec) => self.start(spec, &node_id, cx, &mut finished),
                    Verdict::RunThen(spec, then) => run::spawn_run(self, spec, then),
                    Verdict::Skipped(id, at) => {
                        let _ = run::skipped(self, &id, at, Trigger::Schedule);
                    }
                    Verdict::Dropped => {}
                }
            }
            done.push(finished);
        }
    }

    /// Checks prepared fires at their instant, under one hold of the lock;
    /// `admit` also checks overlap and marks them running (in cluster mode
    /// that waits for the claim).
    fn check(&self, chunk: Vec<Staged>, admit: bool) -> Vec<Verdict> {
        let mut st = self.state.lock().unwrap();
        let st = &mut *st;
        let status = st.status;
        chunk
            .into_iter()
            .map(|f| {
                let Staged { mut spec, gen, prev_fire, then, reserved, .. } = f;
                let slot = spec.slot;
                let Some(Some(e)) = st.slots.get_mut(slot as usize) else {
                    return Verdict::Dropped;
                };
                if e.serial != spec.serial {
                    // Removed: the slot holds another task now (maybe one
                    // added again under the same ID, which fires on its own).
                    return Verdict::Dropped;
                }
                let at = spec.scheduled;
                // Gives back a reservation of a fire that does not run.
                let unreserve = |e: &mut super::Entry| {
                    if reserved {
                        e.running = e.running.saturating_sub(1);
                    }
                };
                if status != Status::Running {
                    unreserve(e);
                    if e.gen == gen {
                        // Put back: resume or the next start sees it as due.
                        e.last_fire = OptTs::new(prev_fire);
                        e.next_run_at = OptTs::new(Some(at));
                        e.gen = e.gen.wrapping_add(1);
                        if status == Status::Paused {
                            st.heap.push(Reverse(HeapItem { due: at, gen: e.gen, slot }));
                        }
                    }
                    return Verdict::Dropped;
                }
                if e.gen != gen {
                    // Changed since: run only what the task says now.
                    let before = at.checked_sub(SignedDuration::from_nanos(1)).ok();
                    let still = e.enabled && before.and_then(|b| e.next_after(b)) == Some(at);
                    if !still {
                        unreserve(e);
                        return Verdict::Dropped;
                    }
                    let first_run = spec.first_run;
                    match run::build_spec(e, slot, at) {
                        Ok(s) => spec = RunSpec { first_run, ..s },
                        Err(err) => {
                            tracing::warn!(target: "rota", error = %err, "fire not run");
                            unreserve(e);
                            return Verdict::Dropped;
                        }
                    }
                }
                if admit && !reserved && !run::admit(e, &mut st.totals.skipped, &mut spec) {
                    return Verdict::Skipped(spec.id, at);
                }
                if then.is_empty() {
                    Verdict::Run(spec)
                } else {
                    Verdict::RunThen(spec, then)
                }
            })
            .collect()
    }

    /// Starts a run: polls its handler once, here. One that finishes joins
    /// `done`; any other moves to a task of its own.
    fn start(
        self: &Arc<Self>,
        spec: RunSpec,
        node_id: &Arc<str>,
        cx: &mut std::task::Context<'_>,
        done: &mut Vec<Finished>,
    ) {
        let permit = match &self.limiter {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    // At the concurrency limit: wait for a slot in a task.
                    run::spawn_run(self, spec, Vec::new());
                    return;
                }
            },
            None => None,
        };
        let events = self.events_on();
        if events {
            self.emit(Event::TaskStarting {
                task_id: spec.id.to_string(),
                scheduled_at: spec.scheduled,
                attempt: 1,
            });
        }
        let clock = &self.s.clock;
        let start = clock.now();
        let run: Arc<RunShared> = Arc::default();
        let ctx = run::context(&spec, 1, node_id, run.clone());
        let mut job = Job::new(&spec.handler, ctx);
        match job.poll_once(cx) {
            Poll::Ready(Attempt::Ok) => {
                let end = clock.now();
                drop(permit);
                if events {
                    self.emit(Event::TaskSucceeded {
                        task_id: spec.id.to_string(),
                        scheduled_at: spec.scheduled,
                        duration: crate::clock::elapsed(start, end),
                    });
                }
                let output = run.take_output();
                done.push(Finished {
                    spec,
                    first_start: start,
                    end,
                    error: None,
                    attempts: 1,
                    output,
                    noted: false,
                });
            }
            Poll::Ready(a) => {
                let first = FirstAttempt { start, run, state: FirstState::Ready(a) };
                run::spawn_continued(self, spec, permit, first);
            }
            Poll::Pending => {
                let first = FirstAttempt { start, run, state: FirstState::Pending(job) };
                run::spawn_continued(self, spec, permit, first);
            }
        }
    }
}
