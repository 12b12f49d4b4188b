//! Write-behind of run state and history to the store.
//!
//! A run does not write to the store itself: it marks its task dirty and
//! queues its execution record. Whichever run finds no writer at work becomes
//! the writer and drains both queues in batches (`save_batch`,
//! `record_executions`) until they are empty. Under load this turns thousands
//! of writes a second into a few batched ones; when idle, each run's state is
//! written as soon as it ends. No background task is needed, so a scheduler
//! works on whatever runtime calls it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Inner;
use crate::store::TaskExecution;

/// The most records written in one batch.
const BATCH: usize = 4096;

#[derive(Default)]
pub(crate) struct WriteBehind {
    tasks: Mutex<Vec<Arc<str>>>,
    execs: Mutex<Vec<TaskExecution>>,
    busy: AtomicBool,
}

impl WriteBehind {
    fn is_empty(&self) -> bool {
        self.tasks.lock().unwrap().is_empty() && self.execs.lock().unwrap().is_empty()
    }
}

impl Inner {
    /// Queues a task's run state (the caller has set its dirty flag).
    pub(crate) fn queue_task(&self, id: Arc<str>) {
        self.wb.tasks.lock().unwrap().push(id);
    }

    /// Queues an execution record.
    pub(crate) fn queue_execution(&self, e: TaskExecution) {
        self.wb.execs.lock().unwrap().push(e);
    }

    /// Queues execution records.
    pub(crate) fn queue_executions(&self, mut e: Vec<TaskExecution>) {
        self.wb.execs.lock().unwrap().append(&mut e);
    }

    /// Becomes the writer if there is none, and drains the queues.
    pub(crate) async fn persist(self: &Arc<Self>) {
        loop {
            if self.wb.busy.swap(true, Ordering::AcqRel) {
                return;
            }
            loop {
                // Everything queued, taken at once: draining the front of a
                // long queue batch by batch would move the rest each time.
                let ids: Vec<Arc<str>> = std::mem::take(&mut *self.wb.tasks.lock().unwrap());
                let execs: Vec<TaskExecution> = std::mem::take(&mut *self.wb.execs.lock().unwrap());
                if ids.is_empty() && execs.is_empty() {
                    break;
                }
                for ids in ids.chunks(BATCH) {
                    let snaps: Vec<_> = {
                        let mut st = self.state.lock().unwrap();
                        ids.iter()
                            .filter_map(|id| {
                                let slot = st.find(id)?;
                                let e = st.slots[slot as usize].as_mut()?;
                                e.dirty = false;
                                // A held task stays as the store has it.
                                (!e.held()).then(|| e.to_task())
                            })
                            .collect()
                    };
                    if let Err(e) = self.s.store.save_run_state(&snaps).await {
                        tracing::warn!(target: "rota", error = %e, tasks = snaps.len(), "could not save run state");
                    }
                }
                for execs in execs.chunks(BATCH) {
                    if let Err(e) = self.s.store.record_executions(execs).await {
                        tracing::warn!(target: "rota", error = %e, records = execs.len(), "could not record executions");
                    }
                }
            }
            self.wb.busy.store(false, Ordering::Release);
            // Something queued between the last drain and the release: go again.
            if self.wb.is_empty() {
                return;
            }
        }
    }

    /// Writes everything queued, waiting for a writer already at work.
    pub(crate) async fn flush(self: &Arc<Self>) {
        loop {
            self.persist().await;
            if !self.wb.busy.load(Ordering::Acquire) && self.wb.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
