//! Cluster mode: a gate that every scheduled fire passes before it runs.
//!
//! A [`FireGate`] decides whether this process runs a fire: it is not this
//! node's to run, another node claimed it, or this node won it (with a
//! fencing token and, for tasks that skip overlapping runs, a lease that is
//! held for the whole run). The scheduler then checks what only it knows:
//! the fire is still within its misfire grace, the lease was not lost while
//! the claim was on its way, and counts the fires no node claimed.

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use super::{run, Dispatch, Event, Inner, MAX_MISSED_COUNTED};
use crate::clock::elapsed;
use crate::error::Result;
use crate::store::ExecutionStatus;
use crate::task::OverlapPolicy;

/// A fire asking to pass the gate.
#[derive(Debug, Clone)]
pub(crate) struct GatedFire {
    pub task_id: Arc<str>,
    pub scheduled: Timestamp,
    /// The task skips overlapping runs: the claim must take its run lock.
    pub skip_overlap: bool,
}

/// What the gate decided.
pub(crate) enum Admission {
    /// Not this node's fire (another node owns it): nothing is recorded here.
    NotOurs,
    /// Another node already claimed it.
    Taken,
    /// This node claimed it, but the task's previous run still goes on
    /// (somewhere in the cluster): skipped, and counted here.
    Skipped {
        /// The task's previous claimed fire.
        previous: Option<Timestamp>,
    },
    /// This node claimed it: run it.
    Run(Claim),
}

/// A won fire.
pub(crate) struct Claim {
    /// The task's previous claimed fire: fires in between were claimed by
    /// no node, and this node counts them as missed.
    pub previous: Option<Timestamp>,
    /// Handed to the handler in its context.
    pub fencing_token: Option<u64>,
    /// The run lock, held while the run goes on.
    pub lease: Option<Box<dyn RunLease>>,
}

/// A lease held for a run.
#[async_trait]
pub(crate) trait RunLease: Send + Sync {
    /// Whether the lease is already lost.
    fn is_lost(&self) -> bool;
    /// Keeps the lease (renewing it) for as long as it is polled; completes
    /// only when the lease is lost. The run polls it beside its handler, so
    /// a run that ends at once costs no renewal at all.
    async fn keep(&self);
    /// Gives the lease back.
    async fn release(self: Box<Self>);
}

/// Decides per fire whether this process runs it.
#[async_trait]
pub(crate) trait FireGate: Send + Sync {
    /// A quick local check, before any work is spent on the fire: `false`
    /// if it is another node's to run.
    fn is_ours(&self, task_id: &str, scheduled: Timestamp) -> bool;
    /// Asks for `fire`. An error means the fire could not be claimed: it is
    /// recorded as missed.
    async fn admit(&self, fire: GatedFire) -> Result<Admission>;
}

/// Runs fires through the gate in their own task; catch-up fires of the same
/// task (`d.then`) follow in order.
pub(crate) fn spawn_gated(inner: &Arc<Inner>, gate: Arc<dyn FireGate>, d: Dispatch) {
    let inner2 = inner.clone();
    inner.tracker.spawn(async move {
        let slot = d.slot;
        let mut fires = Vec::with_capacity(1 + d.then.len());
        fires.push(d.scheduled);
        fires.extend(d.then);
        for scheduled in fires {
            gated_fire(&inner2, gate.as_ref(), slot, scheduled).await;
        }
    });
}

async fn gated_fire(inner: &Arc<Inner>, gate: &dyn FireGate, slot: u32, scheduled: Timestamp) {
    let (id, skip_overlap, grace) = {
        let st = inner.state.lock().unwrap();
        match st.slots.get(slot as usize) {
            Some(Some(e)) if e.enabled => {
                (e.id.clone(), e.overlap() == OverlapPolicy::Skip, e.misfire_grace())
            }
            _ => return,
        }
    };
    let fire = GatedFire { task_id: id.clone(), scheduled, skip_overlap };
    let admission = gate.admit(fire).await;
    if let Some(claim) = settle(inner, slot, &id, scheduled, grace, admission).await {
        let d = Dispatch { slot, scheduled, then: Vec::new() };
        run::run_claimed(inner, d, claim.fencing_token, claim.lease).await;
    }
}

/// Records what the gate decided for a fire, and gives back the claim if the
/// fire is this node's to run now: claimed, within its misfire grace, its
/// run lock (if any) not lost on the way.
pub(crate) async fn settle(
    inner: &Arc<Inner>,
    slot: u32,
    id: &Arc<str>,
    scheduled: Timestamp,
    grace: std::time::Duration,
    admission: Result<Admission>,
) -> Option<Claim> {
    let now = inner.s.clock.now();
    match admission {
        Err(e) => {
            let why = format!("fire at {scheduled} not claimed: {e}");
            note_missed(inner, slot, id, 1, scheduled, scheduled, &why);
            None
        }
        Ok(Admission::NotOurs | Admission::Taken) => None,
        Ok(Admission::Skipped { previous }) => {
            count_gap(inner, slot, id, previous, scheduled);
            {
                let mut st = inner.state.lock().unwrap();
                if let Some(Some(e)) = st.slots.get_mut(slot as usize) {
                    e.stats_mut().skipped += 1;
                }
                st.totals.skipped += 1;
            }
            let _ = run::skipped(inner, id, scheduled, run::Trigger::Schedule);
            None
        }
        Ok(Admission::Run(claim)) => {
            count_gap(inner, slot, id, claim.previous, scheduled);
            let late = elapsed(scheduled, now);
            let lost = claim.lease.as_ref().is_some_and(|l| l.is_lost());
            if late > grace || lost {
                let why = if lost {
                    format!(
                        "fire at {scheduled} claimed, but its run lock was lost before the start"
                    )
                } else {
                    format!(
                        "fire at {scheduled} claimed {late:?} late, past its misfire grace of {grace:?}"
                    )
                };
                note_missed(inner, slot, id, 1, scheduled, scheduled, &why);
                if let Some(lease) = claim.lease {
                    lease.release().await;
                }
                return None;
            }
            Some(claim)
        }
    }
}

/// Counts as missed the fires of the task strictly between `previous` (the
/// task's claim before this one, on any node) and `scheduled`: no node
/// claimed them. Fires before this scheduler started are not counted (they
/// belong to the cluster's downtime, before this node knew of the task).
fn count_gap(
    inner: &Arc<Inner>,
    slot: u32,
    id: &Arc<str>,
    previous: Option<Timestamp>,
    scheduled: Timestamp,
) {
    let Some(previous) = previous else { return };
    let (count, first, last) = {
        let st = inner.state.lock().unwrap();
        let Some(Some(e)) = st.slots.get(slot as usize) else { return };
        let started = st.started_at.unwrap_or(scheduled);
        let mut cur = previous.max(started - jiff::SignedDuration::from_nanos(1));
        let (mut count, mut first, mut last) = (0u64, None, scheduled);
        while let Some(n) = e.next_after(cur) {
            if n >= scheduled || count >= MAX_MISSED_COUNTED {
                break;
            }
            count += 1;
            first.get_or_insert(n);
            last = n;
            cur = n;
        }
        (count, first, last)
    };
    if let Some(first) = first {
        let why = if count == 1 {
            format!("fire at {first} was claimed by no node")
        } else {
            format!("{count} fires from {first} to {last} were claimed by no node")
        };
        note_missed(inner, slot, id, count, first, last, &why);
    }
}

/// Counts `count` missed fires of a task, with a history record and an event.
fn note_missed(
    inner: &Arc<Inner>,
    slot: u32,
    id: &Arc<str>,
    count: u64,
    first: Timestamp,
    last: Timestamp,
    why: &str,
) {
    {
        let mut st = inner.state.lock().unwrap();
        if let Some(Some(e)) = st.slots.get_mut(slot as usize) {
            if e.id == *id {
                e.stats_mut().missed += count as i64;
            }
        }
        st.totals.missed += count as i64;
    }
    inner.s.monitor.record_task_missed(id, count);
    let now = inner.s.clock.now();
    run::record_history(inner, id, ExecutionStatus::Missed, first, now, why);
    inner.emit(Event::TaskMissed { task_id: id.to_string(), count, first, last });
}
