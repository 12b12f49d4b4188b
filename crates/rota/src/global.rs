//! The seed's global functions: one process-wide scheduler.
//!
//! Call [`init`] first; every other function returns
//! [`ErrorKind::StoreNotInitialized`](crate::ErrorKind) before it, never panics.
//!
//! ```
//! use rota::{global, DefaultTask, FuncHandler, MemoryStore};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> rota::Result<()> {
//! global::init(Arc::new(MemoryStore::new()));
//! let h = FuncHandler::new("hello", |_ctx| async { Ok(()) });
//! global::add_task(DefaultTask::new("hello", "Say hello", "0 * * * * *", h)).await?;
//! global::start_scheduler().await?;
//! assert_eq!(global::get_scheduler_status()?.task_count, 1);
//! global::stop_scheduler().await?;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, RwLock};

use crate::error::{Error, Result};
use crate::monitor::{Monitor, PerformanceMetrics};
use crate::scheduler::{DefaultScheduler, Scheduler, SchedulerStats, SchedulerStatus, TaskStats};
use crate::store::Store;
use crate::task::DefaultTask;
use crate::SchedulerConfig;

// A std RwLock: reads are a clone of an Arc, never held across an await.
static GLOBAL: RwLock<Option<DefaultScheduler>> = RwLock::new(None);

/// Creates the global scheduler on `store` (the seed's `Init`). A second call
/// replaces the scheduler (stop the old one first).
pub fn init(store: Arc<dyn Store>) {
    let s = SchedulerConfig::new().store(store).build().expect("default settings are valid");
    *GLOBAL.write().unwrap() = Some(s);
}

/// Installs a scheduler built elsewhere as the global one.
pub fn init_with(scheduler: DefaultScheduler) {
    *GLOBAL.write().unwrap() = Some(scheduler);
}

/// The global scheduler (the seed's `GetScheduler`).
pub fn scheduler() -> Result<DefaultScheduler> {
    GLOBAL.read().unwrap().clone().ok_or_else(|| Error::StoreNotInitialized {
        what: "the global scheduler: call rota::global::init first".into(),
    })
}

/// The global scheduler's monitor (the seed's `GetMonitor`).
pub fn monitor() -> Result<Arc<dyn Monitor>> {
    Ok(scheduler()?.monitor())
}

/// `AddTask`.
pub async fn add_task(task: DefaultTask) -> Result<()> {
    scheduler()?.add(task).await
}

/// `RemoveTask`.
pub async fn remove_task(id: &str) -> Result<()> {
    scheduler()?.remove(id).await
}

/// `GetTask`.
pub fn get_task(id: &str) -> Result<DefaultTask> {
    scheduler()?.get(id)
}

/// `GetAllTasks`.
pub fn get_all_tasks() -> Result<Vec<DefaultTask>> {
    Ok(scheduler()?.get_all())
}

/// `GetEnabledTasks`.
pub fn get_enabled_tasks() -> Result<Vec<DefaultTask>> {
    Ok(scheduler()?.get_enabled())
}

/// `StartScheduler`.
pub async fn start_scheduler() -> Result<()> {
    scheduler()?.start().await
}

/// `StopScheduler`.
pub async fn stop_scheduler() -> Result<()> {
    scheduler()?.stop().await
}

/// `PauseScheduler`.
pub async fn pause_scheduler() -> Result<()> {
    scheduler()?.pause().await
}

/// `ResumeScheduler`.
pub async fn resume_scheduler() -> Result<()> {
    scheduler()?.resume().await
}

/// `GetSchedulerStatus`.
pub fn get_scheduler_status() -> Result<SchedulerStatus> {
    Ok(scheduler()?.status())
}

/// `GetSchedulerStats`.
pub fn get_scheduler_stats() -> Result<SchedulerStats> {
    Ok(scheduler()?.stats())
}

/// `GetTaskStats`.
pub fn get_task_stats(id: &str) -> Result<TaskStats> {
    scheduler()?.task_stats(id)
}

/// `GetPerformanceMetrics`.
pub fn get_performance_metrics() -> Result<PerformanceMetrics> {
    Ok(scheduler()?.monitor().performance_metrics())
}

/// `RunNow`.
pub async fn run_now(id: &str) -> Result<()> {
    scheduler()?.run_now(id).await
}

/// `RunAll`.
pub async fn run_all() -> Result<()> {
    scheduler()?.run_all().await
}
