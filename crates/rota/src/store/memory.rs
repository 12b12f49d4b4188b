//! The in-memory store (the seed's `MemoryStore`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use jiff::Timestamp;

use super::{has_tags, ExecutionQuery, Retention, Store, StoreStats, TaskExecution};
use crate::error::{Error, Result};
use crate::task::DefaultTask;

/// Tasks and history in memory: fast, and gone with the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // A std RwLock: never held across an await, and reads dominate.
    tasks: RwLock<HashMap<Arc<str>, DefaultTask>>,
    history: Mutex<History>,
    last_sync: RwLock<Option<Timestamp>>,
    retention: Retention,
    closed: AtomicBool,
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
        let mut t = task.clone();
        t.handler = None;
        self.tasks.write().unwrap().insert(t.id.clone(), t);
        self.touch();
        Ok(())
    }

    async fn save_run_state(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.check("save_run_state")?;
        {
            let mut map = self.tasks.write().unwrap();
            for t in tasks {
                if let Some(cur) = map.get_mut(&*t.id) {
                    if cur.updated_at == t.updated_at {
                        let mut t = t.clone();
                        t.handler = None;
                        *cur = t;
                    }
                }
            }
        }
        self.touch();
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<DefaultTask> {
        self.check("get")?;
        self.tasks
            .read()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::TaskNotFound { id: id.to_string() })
    }

    async fn get_all(&self) -> Result<Vec<DefaultTask>> {
        self.check("get_all")?;
        let mut all: Vec<DefaultTask> = self.tasks.read().unwrap().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn delete(&self, id: &str) -> Result<()> {
        self.check("delete")?;
        let removed = self.tasks.write().unwrap().remove(id);
        self.touch();
        removed.map(|_| ()).ok_or_else(|| Error::TaskNotFound { id: id.to_string() })
    }

    async fn clear(&self) -> Result<()> {
        self.check("clear")?;
        self.tasks.write().unwrap().clear();
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
        let mut map = self.tasks.write().unwrap();
        for t in tasks {
            let mut t = t.clone();
            t.handler = None;
            map.insert(t.id.clone(), t);
        }
        drop(map);
        self.touch();
        Ok(())
    }

    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<DefaultTask>> {
        self.check("get_by_tags")?;
        let mut v: Vec<DefaultTask> =
            self.tasks.read().unwrap().values().filter(|t| has_tags(t, tags)).cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.check("stats")?;
        let map = self.tasks.read().unwrap();
        Ok(StoreStats {
            total_tasks: map.len() as i64,
            enabled_tasks: map.values().filter(|t| t.enabled).count() as i64,
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
