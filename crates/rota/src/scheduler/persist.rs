//! Write-behind of run state and history to the store.
//!
//! A run does not write to the store itself: it marks its task dirty and
//! queues its execution record. Whichever run finds no writer at work becomes
//! the writer and drains both queues in batches (`save_batch`,
//! `record_executions`) until they are empty. Under load this turns thousands
//! of writes a second into a few batched ones; when idle, each run's state is
//! written as soon as it ends. No background task is needed, so a scheduler
//! works on whatever runtime calls it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Inner;
use crate::store::TaskExecution;

/// The most records written in one batch.
const BATCH: usize = 4096;

#[derive(Default)]
pub(crate) struct WriteBehind {
    // Queues, drained from the front a batch at a time.
    tasks: Mutex<VecDeque<Arc<str>>>,
    execs: Mutex<VecDeque<TaskExecution>>,
    busy: AtomicBool,
}

impl WriteBehind {
    fn is_empty(&self) -> bool {
        self.tasks.lock().unwrap().is_empty() && self.execs.lock().unwrap().is_empty()
    }
}

/// The writer's turn: what it has taken from the queues and not yet
/// written. If the writing future is dropped (a `flush` under a timeout),
/// that goes back to the front of the queues and the turn ends, so nothing
/// is lost and the next run writes again. A batch dropped while its write
/// was on its way may then be written twice: run state is the same either
/// way, and history may keep a record twice.
struct Turn<'a> {
    wb: &'a WriteBehind,
    ids: Vec<Arc<str>>,
    execs: Vec<TaskExecution>,
}

impl Turn<'_> {
    /// Takes up to a batch of each queue; false when both are empty.
    fn take(&mut self) -> bool {
        let mut q = self.wb.tasks.lock().unwrap();
        let n = q.len().min(BATCH);
        self.ids.extend(q.drain(..n));
        drop(q);
        let mut q = self.wb.execs.lock().unwrap();
        let n = q.len().min(BATCH);
        self.execs.extend(q.drain(..n));
        !(self.ids.is_empty() && self.execs.is_empty())
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.ids.is_empty() {
            let mut q = self.wb.tasks.lock().unwrap();
            for id in self.ids.drain(..).rev() {
                q.push_front(id);
            }
        }
        if !self.execs.is_empty() {
            let mut q = self.wb.execs.lock().unwrap();
            for e in self.execs.drain(..).rev() {
                q.push_front(e);
            }
        }
        self.wb.busy.store(false, Ordering::Release);
    }
}

impl Inner {
    /// Queues a task's run state (the caller has set its dirty flag).
    pub(crate) fn queue_task(&self, id: Arc<str>) {
        self.wb.tasks.lock().unwrap().push_back(id);
    }

    /// Queues an execution record.
    pub(crate) fn queue_execution(&self, e: TaskExecution) {
        self.wb.execs.lock().unwrap().push_back(e);
    }

    /// Queues execution records.
    pub(crate) fn queue_executions(&self, e: Vec<TaskExecution>) {
        self.wb.execs.lock().unwrap().extend(e);
    }

    /// Becomes the writer if there is none, and drains the queues.
    pub(crate) async fn persist(self: &Arc<Self>) {
        loop {
            if self.wb.busy.swap(true, Ordering::AcqRel) {
                return;
            }
            let mut turn = Turn { wb: &self.wb, ids: Vec::new(), execs: Vec::new() };
            while turn.take() {
                if !turn.ids.is_empty() {
                    let snaps: Vec<_> = {
                        let mut st = self.state.lock().unwrap();
                        turn.ids
                            .iter()
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
                    turn.ids.clear();
                }
                if !turn.execs.is_empty() {
                    if let Err(e) = self.s.store.record_executions(&turn.execs).await {
                        tracing::warn!(target: "rota", error = %e, records = turn.execs.len(), "could not record executions");
                    }
                    turn.execs.clear();
                }
            }
            // Ends the turn.
            drop(turn);
            // Something queued between the last drain and the end: go again.
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use async_trait::async_trait;
    use tokio::sync::watch;

    use super::*;
    use crate::store::{ExecutionQuery, StoreStats};
    use crate::{DefaultTask, FuncHandler, MemoryStore, Result, Scheduler, Store, Task};

    /// A memory store whose run-state writes wait while the gate is shut.
    #[derive(Debug)]
    struct Gated {
        inner: MemoryStore,
        open: watch::Receiver<bool>,
    }

    #[async_trait]
    impl Store for Gated {
        async fn save(&self, task: &DefaultTask) -> Result<()> {
            self.inner.save(task).await
        }
        async fn get(&self, id: &str) -> Result<DefaultTask> {
            self.inner.get(id).await
        }
        async fn get_all(&self) -> Result<Vec<DefaultTask>> {
            self.inner.get_all().await
        }
        async fn delete(&self, id: &str) -> Result<()> {
            self.inner.delete(id).await
        }
        async fn clear(&self) -> Result<()> {
            self.inner.clear().await
        }
        async fn save_batch(&self, tasks: &[DefaultTask]) -> Result<()> {
            self.inner.save_batch(tasks).await
        }
        async fn save_run_state(&self, tasks: &[DefaultTask]) -> Result<()> {
            let mut open = self.open.clone();
            let _ = open.wait_for(|o| *o).await;
            self.inner.save_run_state(tasks).await
        }
        async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<DefaultTask>> {
            self.inner.get_by_tags(tags).await
        }
        async fn stats(&self) -> Result<StoreStats> {
            self.inner.stats().await
        }
        async fn close(&self) -> Result<()> {
            self.inner.close().await
        }
        async fn record_execution(&self, e: &TaskExecution) -> Result<()> {
            self.inner.record_execution(e).await
        }
        async fn executions(&self, q: &ExecutionQuery) -> Result<Vec<TaskExecution>> {
            self.inner.executions(q).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_cut_short_loses_nothing() {
        let (gate, open) = watch::channel(false);
        let store = Arc::new(Gated { inner: MemoryStore::new(), open });
        let sched = crate::DefaultScheduler::new(store.clone());
        sched.start().await.unwrap();
        let h = FuncHandler::new("h", |_ctx| async { Ok(()) });
        sched.add(DefaultTask::new("t", "", "0 0 0 1 1 *", h)).await.unwrap();
        // The run ends, and its write of run state waits at the gate: the
        // caller gives up (the writing future is dropped).
        let r = tokio::time::timeout(Duration::from_secs(1), sched.run_now("t")).await;
        assert!(r.is_err(), "the write should still be waiting");
        assert_eq!(store.inner.get("t").await.unwrap().run_count(), 0);
        gate.send(true).unwrap();
        // The writer's turn ended with the drop, and what it held is back in
        // the queues: the next flush writes it.
        tokio::time::timeout(Duration::from_secs(5), sched.flush()).await.expect("flush");
        assert_eq!(store.inner.get("t").await.unwrap().run_count(), 1);
        let history = store.inner.executions(&ExecutionQuery::task("t")).await.unwrap();
        assert_eq!(history.len(), 1);
        // The task can be written again: it is not left marked as queued.
        sched.run_now("t").await.unwrap();
        sched.flush().await;
        assert_eq!(store.inner.get("t").await.unwrap().run_count(), 2);
        sched.stop().await.unwrap();
    }
}
