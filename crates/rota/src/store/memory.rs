//! The in-memory store (the seed's `MemoryStore`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use jiff::Timestamp;

use super::{ExecutionQuery, Retention, Store, StoreStats, TaskExecution};
use crate::compact::{Interner, OptTs, Shape, Ts};
use crate::error::{Error, Result};
use crate::task::DefaultTask;

/// Tasks and history in memory: fast, and gone with the process.
///
/// Tasks are kept compact: the part of a definition that tasks have in
/// common (schedule, description, tags, zone, limits, policies) is kept once
/// for all the tasks that share it, and instants take 12 bytes.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // A std RwLock: never held across an await, and reads dominate.
    tasks: RwLock<Tasks>,
    history: Mutex<History>,
    last_sync: RwLock<Option<Timestamp>>,
    retention: Retention,
    closed: AtomicBool,
}

/// The stored tasks by ID, and their shapes.
#[derive(Debug, Default)]
struct Tasks {
    map: HashMap<Arc<str>, Packed>,
    shapes: Interner<Shape>,
}

/// A stored task without its ID (the map's key) and handler (not stored).
#[derive(Debug)]
struct Packed {
    name: Arc<str>,
    handler_name: Arc<str>,
    shape: Arc<Shape>,
    last_error: Arc<str>,
    created_at: Ts,
    updated_at: Ts,
    last_run_at: OptTs,
    next_run_at: OptTs,
    run_count: i64,
    failed_count: i64,
    retry_count: u32,
    enabled: bool,
}

impl Tasks {
    /// Saves `t` (without its handler), replacing a task of the same ID.
    fn put(&mut self, t: &DefaultTask) {
        let shape = Shape::of(t);
        // A task saved again with its shape unchanged (run state written
        // behind the runs) keeps its shape without hashing it: the compare
        // is by pointer when the strings are the shared ones.
        let shape = match self.map.get(&*t.id) {
            Some(old) if *old.shape == shape => old.shape.clone(),
            _ => self.shapes.intern(shape),
        };
        let packed = Packed {
            name: t.name.clone(),
            handler_name: t.handler_name.clone(),
            shape,
            last_error: t.last_error.clone(),
            created_at: Ts::new(t.created_at),
            updated_at: Ts::new(t.updated_at),
            last_run_at: OptTs::new(t.last_run_at),
            next_run_at: OptTs::new(t.next_run_at),
            run_count: t.run_count,
            failed_count: t.failed_count,
            retry_count: t.retry_count,
            enabled: t.enabled,
        };
        if let Some(old) = self.map.insert(t.id.clone(), packed) {
            self.shapes.release(&old.shape);
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.map.remove(id) {
            Some(old) => {
                self.shapes.release(&old.shape);
                true
            }
            None => false,
        }
    }

    fn get(&self, id: &str) -> Option<DefaultTask> {
        self.map.get_key_value(id).map(|(id, p)| unpack(id, p))
    }

    /// The tasks `keep` lets through, by ID.
    fn list(&self, keep: impl Fn(&Packed) -> bool) -> Vec<DefaultTask> {
        let mut v: Vec<DefaultTask> =
            self.map.iter().filter(|(_, p)| keep(p)).map(|(id, p)| unpack(id, p)).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }
}

fn unpack(id: &Arc<str>, p: &Packed) -> DefaultTask {
    let mut t = DefaultTask {
        id: id.clone(),
        name: p.name.clone(),
        handler_name: p.handler_name.clone(),
        last_error: p.last_error.clone(),
        created_at: p.created_at.get(),
        updated_at: p.updated_at.get(),
        last_run_at: p.last_run_at.get(),
        next_run_at: p.next_run_at.get(),
        run_count: p.run_count,
        failed_count: p.failed_count,
        retry_count: p.retry_count,
        enabled: p.enabled,
        ..DefaultTask::blank()
    };
    p.shape.apply(&mut t);
    t
}

/// All records in arrival order, plus a count per task for the per-task bound.
#[derive(Debug, Default)]
struct History {
    all: VecDeque<TaskExecution>,
    per_task: crate::fasthash::FastMap<String, usize>,
}

impl History {
    fn pop_oldest(&mut self) {
        if let Some(old) = self.all.pop_front() {
            if let Some(n) = self.per_task.get_mut(&old.task_id) {
                *n -= 1;
                if *n == 0 {
                    self.per_task.remove(&old.task_id);
                }
            }
        }
    }
}

impl MemoryStore {
    /// An empty store (the seed's `NewMemoryStore`).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps history within `retention`.
    pub fn with_retention(retention: Retention) -> Self {
        MemoryStore { retention, ..Self::default() }
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::StoreNotInitialized {
                what: format!("memory store is closed ({what})"),
            });
        }
        Ok(())
    }

    fn touch(&self) {
        *self.last_sync.write().unwrap() = Some(Timestamp::now());
    }

    fn push(&self, h: &mut History, e: &TaskExecution) {
        let n = h.per_task.entry(e.task_id.clone()).or_insert(0);
        *n += 1;
        if *n > self.retention.max_per_task {
            // Drop this task's oldest record.
            *n -= 1;
            if let Some(pos) = h.all.iter().position(|x| x.task_id == e.task_id) {
                h.all.remove(pos);
            }
        }
        h.all.push_back(e.clone());
        while h.all.len() > self.retention.max_total {
            h.pop_oldest();
        }
        if let Some(age) = self.retention.max_age {
            let cutoff = e.started_at - crate::clock::signed(age);
            while h.all.front().is_some_and(|x| x.started_at < cutoff) {
                h.pop_oldest();
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn save(&self, task: &DefaultTask) -> Result<()> {
        self.check("save")?;
        self.tasks.write().unwrap().put(task);
        self.touch();
        Ok(())
    }

    async fn save_run_state(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.check("save_run_state")?;
        {
            let mut all = self.tasks.write().unwrap();
            for t in tasks {
                // Only over the same definition (not one replaced since).
                if all.map.get(&*t.id).is_some_and(|cur| cur.updated_at.get() == t.updated_at) {
                    all.put(t);
                }
            }
        }
        self.touch();
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<DefaultTask> {
        self.check("get")?;
        self.tasks.read().unwrap().get(id).ok_or_else(|| Error::TaskNotFound { id: id.to_string() })
    }

    async fn get_all(&self) -> Result<Vec<DefaultTask>> {
        self.check("get_all")?;
        Ok(self.tasks.read().unwrap().list(|_| true))
    }

    async fn delete(&self, id: &str) -> Result<()> {
        self.check("delete")?;
        let removed = self.tasks.write().unwrap().remove(id);
        self.touch();
        removed.then_some(()).ok_or_else(|| Error::TaskNotFound { id: id.to_string() })
    }

    async fn clear(&self) -> Result<()> {
        self.check("clear")?;
        *self.tasks.write().unwrap() = Tasks::default();
        *self.history.lock().unwrap() = History::default();
        self.touch();
        Ok(())
    }

    async fn save_batch(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.check("save_batch")?;
        // Validate first so the batch is all or nothing.
        for t in tasks {
            if t.id.is_empty() {
                return Err(Error::TaskIdRequired { name: t.name.to_string() });
            }
        }
        let mut all = self.tasks.write().unwrap();
        for t in tasks {
            all.put(t);
        }
        drop(all);
        self.touch();
        Ok(())
    }

    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<DefaultTask>> {
        self.check("get_by_tags")?;
        let has = |p: &Packed| tags.iter().all(|(k, v)| p.shape.tags.get(k) == Some(v));
        Ok(self.tasks.read().unwrap().list(has))
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.check("stats")?;
        let all = self.tasks.read().unwrap();
        Ok(StoreStats {
            total_tasks: all.map.len() as i64,
            enabled_tasks: all.map.values().filter(|t| t.enabled).count() as i64,
            last_sync: *self.last_sync.read().unwrap(),
        })
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        Ok(())
    }

    async fn record_execution(&self, e: &TaskExecution) -> Result<()> {
        self.check("record_execution")?;
        let mut h = self.history.lock().unwrap();
        self.push(&mut h, e);
        Ok(())
    }

    async fn record_executions(&self, batch: &[TaskExecution]) -> Result<()> {
        self.check("record_executions")?;
        let mut h = self.history.lock().unwrap();
        for e in batch {
            self.push(&mut h, e);
        }
        Ok(())
    }

    async fn executions(&self, query: &ExecutionQuery) -> Result<Vec<TaskExecution>> {
        self.check("executions")?;
        let h = self.history.lock().unwrap();
        let mut out: Vec<TaskExecution> =
            h.all.iter().rev().filter(|e| query.matches(e)).take(query.max()).cloned().collect();
        out.sort_by(|a, b| {
            b.started_at.cmp(&a.started_at).then(b.scheduled_at.cmp(&a.scheduled_at))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FuncHandler, Task};

    fn task(i: usize, description: &str) -> DefaultTask {
        let h = FuncHandler::new(format!("h{i}"), |_ctx| async { Ok(()) });
        DefaultTask::new(format!("t{i}"), description, "*/5 * * * * *", h)
    }

    fn shapes(s: &MemoryStore) -> usize {
        s.tasks.read().unwrap().shapes.len()
    }

    #[tokio::test]
    async fn tasks_of_one_shape_share_it_until_the_last_goes() {
        let s = MemoryStore::new();
        let batch: Vec<DefaultTask> = (0..500).map(|i| task(i, "same")).collect();
        s.save_batch(&batch).await.unwrap();
        s.save(&task(500, "same")).await.unwrap();
        assert_eq!(shapes(&s), 1);
        s.save(&task(7, "other")).await.unwrap();
        assert_eq!(shapes(&s), 2);
        assert_eq!(s.get("t7").await.unwrap().description(), "other");
        assert_eq!(s.get("t8").await.unwrap().description(), "same");
        assert_eq!(s.get("t8").await.unwrap().handler_name(), "h8");
        s.save(&task(7, "same")).await.unwrap();
        assert_eq!(shapes(&s), 1, "a shape no task has is dropped");
        s.delete("t1").await.unwrap();
        assert_eq!(s.stats().await.unwrap().total_tasks, 500);
        s.clear().await.unwrap();
        assert_eq!(shapes(&s), 0);
    }
}
