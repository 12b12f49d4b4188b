//! rota: a task scheduler for Rust.
//!
//! rota implements the Laravel-Go scheduler module in Rust: tasks and
//! handlers, a cron engine that is right in every time zone, a scheduler with
//! pause and resume, stores, a monitor and cluster backends.
//!
//! ```
//! use rota::CronExpression;
//! use jiff::ZonedDateTime;
//!
//! let cron = CronExpression::parse("0 0 2 * * *")?;
//! let from: ZonedDateTime = "2026-12-04T10:00:00+00:00[UTC]".parse()?;
//! assert_eq!(cron.next_run(&from).unwrap().to_string(), "2026-12-05T02:00:00+00:00[UTC]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! * [`cluster`]: the seed's `Cluster` trait and its backends.
//! * [`cron`](mod@cron): the cron engine ([`CronExpression`], [`Schedule`], [`parse_schedule`]).
//! * [`error`]: the one error type, with the seed's 17 kinds.
//! * [`monitor`]: task, scheduler and process metrics ([`Monitor`], [`DefaultMonitor`]).

pub mod clock;
pub mod cluster;
mod compact;
mod config;
pub mod cron;
pub mod distributed;
pub mod error;
mod fasthash;
pub mod global;
pub mod monitor;
#[cfg(feature = "redis")]
mod redis_conn;
mod registry;
pub mod scheduler;
pub mod store;
pub mod task;

pub use cluster::{Cluster, ClusterMessage, Leadership, LockGuard, NodeInfo, NodeStatus};
#[cfg(feature = "cluster-redis")]
pub use cluster::{RedisCluster, RedisClusterConfig};
pub use config::SchedulerConfig;
pub use cron::{parse_schedule, CronExpression, Schedule, Upcoming};
pub use distributed::{DistributedConfig, DistributedScheduler, DistributedStats};
pub use error::{CronField, Error, ErrorKind, ParseError, Result};
pub use monitor::{DefaultMonitor, Monitor, PerformanceMetrics, SchedulerMetrics, TaskMetrics};
pub use registry::HandlerRegistry;
pub use scheduler::{
    DefaultScheduler, Event, Scheduler, SchedulerStats, SchedulerStatus, Status, TaskStats,
};
pub use store::{
    ExecutionQuery, ExecutionStatus, LoadError, LoadReport, MemoryStore, Retention, Store,
    StoreStats, TaskExecution,
};
#[cfg(feature = "postgres")]
pub use store::{PostgresOptions, PostgresStore};
#[cfg(feature = "redis")]
pub use store::{RedisOptions, RedisStore};
#[cfg(feature = "sqlite")]
pub use store::{SqliteOptions, SqliteStore};
pub use task::{
    at, cron, daily, every, every_day, every_hour, task_id_for, DefaultTask, FuncHandler,
    HandlerError, MisfirePolicy, OverlapPolicy, Task, TaskBuilder, TaskContext, TaskHandler,
};
