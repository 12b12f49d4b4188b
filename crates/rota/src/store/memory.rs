//! The in-memory store (the seed's `MemoryStore`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use async_trait::async_trait;
use jiff::Timestamp;

use super::{has_tags, ExecutionQuery, Retention, Store, StoreStats, TaskExecution};
use crate::error::{Error, Result};
use crate::task::DefaultTask;

/// Tasks and history in memory: fast, and gone with the process.
#[derive(Debug, Default)]
pub struct MemoryStore {
    // A std RwLock: never held across an await, and reads dominate.
    tasks: RwLock<HashMap<String, DefaultTask>>,
    history: RwLock<HashMap<String, VecDeque<TaskExecution>>>,
    last_sync: RwLock<Option<Timestamp>>,
    retention: Retention,
    closed: AtomicBool,
}

impl MemoryStore {
    /// An empty store (the seed's `NewMemoryStore`).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that keeps history within `retention`.
    pub fn with_retention(retention: Retention) -> Self {
        MemoryStore {
            retention,
            ..Self::default()
        }
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
        removed
            .map(|_| ())
            .ok_or_else(|| Error::TaskNotFound { id: id.to_string() })
    }

    async fn clear(&self) -> Result<()> {
        self.check("clear")?;
        self.tasks.write().unwrap().clear();
        self.history.write().unwrap().clear();
        self.touch();
        Ok(())
    }

    async fn save_batch(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.check("save_batch")?;
        // Validate first so the batch is all or nothing.
        for t in tasks {
            if t.id.is_empty() {
                return Err(Error::TaskIdRequired {
                    name: t.name.clone(),
                });
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
        let mut v: Vec<DefaultTask> = self
            .tasks
            .read()
            .unwrap()
            .values()
            .filter(|t| has_tags(t, tags))
            .cloned()
            .collect();
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
        let mut h = self.history.write().unwrap();
        let q = h.entry(e.task_id.clone()).or_default();
        q.push_back(e.clone());
        while q.len() > self.retention.max_per_task {
            q.pop_front();
        }
        if let Some(age) = self.retention.max_age {
            let cutoff = e.started_at - crate::clock::signed(age);
            while q.front().is_some_and(|x| x.started_at < cutoff) {
                q.pop_front();
            }
        }
        Ok(())
    }

    async fn executions(&self, query: &ExecutionQuery) -> Result<Vec<TaskExecution>> {
        self.check("executions")?;
        let h = self.history.read().unwrap();
        let mut out: Vec<TaskExecution> = match &query.task_id {
            Some(id) => h
                .get(id)
                .map(|q| q.iter().filter(|e| query.matches(e)).cloned().collect()),
            None => Some(
                h.values()
                    .flatten()
                    .filter(|e| query.matches(e))
                    .cloned()
                    .collect(),
            ),
        }
        .unwrap_or_default();
        out.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then(b.scheduled_at.cmp(&a.scheduled_at))
        });
        out.truncate(query.max());
        Ok(out)
    }
}
