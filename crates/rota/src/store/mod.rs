//! Where tasks and their execution history are kept: the [`Store`] trait and
//! [`MemoryStore`].
//!
//! Handlers are not stored (the seed's `json:"-"`): a task read back has its
//! handler's name, and the scheduler binds it again from its handler registry.

mod memory;
mod open;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::task::DefaultTask;

pub use memory::MemoryStore;
pub use open::open;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
pub use redis::{RedisOptions, RedisStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore};

/// The seed's `StoreStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Tasks in the store.
    pub total_tasks: i64,
    /// Enabled tasks in the store.
    pub enabled_tasks: i64,
    /// When the store was last written.
    pub last_sync: Option<Timestamp>,
}

/// How a run ended (the seed's `TaskExecution.Status`, plus rota's `missed`
/// and `skipped` so that fires that did not run are visible in history too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExecutionStatus {
    /// Still running.
    Running,
    /// Succeeded.
    Completed,
    /// Failed (after its retries), or timed out.
    Failed,
    /// The fire was missed (scheduler down or paused past the misfire grace).
    Missed,
    /// The fire was skipped because the previous run was still going.
    Skipped,
}

impl ExecutionStatus {
    /// The lowercase name used in JSON and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Missed => "missed",
            ExecutionStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of a task (the seed's `TaskExecution`, plus the scheduled instant,
/// the attempt count, the duration and captured output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskExecution {
    /// The task's ID.
    pub task_id: String,
    /// The node that ran it.
    pub node_id: String,
    /// How it ended.
    pub status: ExecutionStatus,
    /// The fire's scheduled instant: with the task ID, the fire's identity.
    pub scheduled_at: Timestamp,
    /// When the first attempt started (for missed fires: when the miss was noticed).
    pub started_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// The error of the last attempt.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Attempts made (1 with no retries).
    pub attempts: u32,
    /// Wall time from start to end.
    #[serde(with = "crate::task::nanos", default)]
    pub duration: Duration,
    /// Captured output (the daemon's command jobs), capped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// A query of the execution history: newest first.
#[derive(Debug, Clone, Default)]
pub struct ExecutionQuery {
    /// Only this task.
    pub task_id: Option<String>,
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
}

impl ExecutionQuery {
    /// The history of one task.
    pub fn task(id: impl Into<String>) -> Self {
        ExecutionQuery { task_id: Some(id.into()), ..Default::default() }
    }

    /// Only runs with this status.
    pub fn status(mut self, s: ExecutionStatus) -> Self {
        self.status = Some(s);
        self
    }

    /// At most `n` records.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    pub(crate) fn matches(&self, e: &TaskExecution) -> bool {
        self.task_id.as_deref().is_none_or(|id| id == e.task_id)
            && self.status.is_none_or(|s| s == e.status)
    }

    pub(crate) fn max(&self) -> usize {
        self.limit.unwrap_or(100)
    }
}

/// How much execution history a store keeps: the oldest records go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many records per task.
    pub max_per_task: usize,
    /// At most this many records in all.
    pub max_total: usize,
    /// Records older than this are dropped, if set.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    /// 100 records per task, 10,000 in all, no age limit.
    fn default() -> Self {
        Retention { max_per_task: 100, max_total: 10_000, max_age: None }
    }
}

/// What [`Store::load_all`] read: the tasks that loaded, and one error per
/// task that did not (a corrupt row or value affects only its task).
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Tasks read back.
    pub tasks: Vec<DefaultTask>,
    /// Tasks that could not be read: their ID and why.
    pub errors: Vec<LoadError>,
}

/// A task that could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The task's ID (the key it is stored under).
    pub id: String,
    /// Why it could not be read.
    pub reason: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {:?}: {}", self.id, self.reason)
    }
}

/// The seed's `Store`: where tasks are persisted, plus execution history.
///
/// Every method fails with [`ErrorKind::StoreNotInitialized`](crate::ErrorKind)
/// after [`close`](Store::close).
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Inserts or replaces a task.
    async fn save(&self, task: &DefaultTask) -> Result<()>;
    /// One task; `TaskNotFound` if absent.
    async fn get(&self, id: &str) -> Result<DefaultTask>;
    /// All tasks.
    async fn get_all(&self) -> Result<Vec<DefaultTask>>;
    /// Deletes a task; `TaskNotFound` if absent.
    async fn delete(&self, id: &str) -> Result<()>;
    /// Deletes every task (and the history).
    async fn clear(&self) -> Result<()>;
    /// Saves all or none.
    async fn save_batch(&self, tasks: &[DefaultTask]) -> Result<()>;
    /// Tasks that carry every one of `tags` (key and value).
    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<DefaultTask>>;
    /// Counts.
    async fn stats(&self) -> Result<StoreStats>;
    /// Releases the store; later calls fail.
    async fn close(&self) -> Result<()>;
    /// Appends a run to the history (subject to retention).
    async fn record_execution(&self, execution: &TaskExecution) -> Result<()>;
    /// Reads the history, newest first.
    async fn executions(&self, query: &ExecutionQuery) -> Result<Vec<TaskExecution>>;
    /// Every task that can be read, and an error for each that cannot.
    async fn load_all(&self) -> Result<LoadReport> {
        Ok(LoadReport { tasks: self.get_all().await?, errors: Vec::new() })
    }
    /// Writes back the run state of tasks (counts, last and next run, last
    /// error) that the store still holds *with the same definition*: a task
    /// that is gone from the store, or whose `updated_at` there differs (it
    /// was removed or redefined by another process meanwhile), is left
    /// alone. The scheduler's write-behind uses it, so that a shared store
    /// never gets a removed task back, nor an older definition. The default
    /// saves the tasks whole.
    async fn save_run_state(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.save_batch(tasks).await
    }

    /// Whether several processes can share this store (a database server),
    /// so that a [`DistributedScheduler`](crate::DistributedScheduler)
    /// re-reads it every `check_interval` to pick up other nodes' changes.
    fn is_shared(&self) -> bool {
        false
    }
    /// Appends several runs; the scheduler writes history in batches.
    async fn record_executions(&self, batch: &[TaskExecution]) -> Result<()> {
        for e in batch {
            self.record_execution(e).await?;
        }
        Ok(())
    }
}

/// `t.updated_at` as the task's JSON writes it, to compare with a stored copy.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "redis"))]
pub(crate) fn updated_at_json(t: &DefaultTask) -> String {
    match serde_json::to_value(t.updated_at) {
        Ok(serde_json::Value::String(s)) => s,
        _ => t.updated_at.to_string(),
    }
}

/// True when `task` carries every tag of `tags`.
#[cfg(feature = "redis")]
pub(crate) fn has_tags(task: &DefaultTask, tags: &BTreeMap<String, String>) -> bool {
    tags.iter().all(|(k, v)| task.tags.get(k) == Some(v))
}
