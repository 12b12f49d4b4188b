//! The seed's `SchedulerConfig` builder.

use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;

use crate::clock::{SharedClock, SystemClock};
use crate::error::{Error, Result};
use crate::monitor::{DefaultMonitor, Monitor};
use crate::scheduler::{DefaultScheduler, Settings};
use crate::store::{MemoryStore, Store};

/// Builds a [`DefaultScheduler`] (the seed's `SchedulerConfig`).
///
/// ```
/// use rota::{MemoryStore, DefaultMonitor, SchedulerConfig};
/// use std::{sync::Arc, time::Duration};
///
/// let scheduler = SchedulerConfig::new()
///     .store(Arc::new(MemoryStore::new()))
///     .monitor(Arc::new(DefaultMonitor::new()))
///     .check_interval(Duration::from_secs(1))
///     .max_concurrency(5)
///     .metrics(true)
///     .logging(true)
///     .build()?;
/// # Ok::<(), rota::Error>(())
/// ```
#[derive(Clone)]
pub struct SchedulerConfig {
    store: Option<Arc<dyn Store>>,
    monitor: Option<Arc<dyn Monitor>>,
    clock: Option<SharedClock>,
    zone: Option<TimeZone>,
    node_id: String,
    check_interval: Duration,
    max_concurrency: Option<usize>,
    metrics: bool,
    logging: bool,
    stop_grace: Duration,
    registry: crate::HandlerRegistry,
}

impl std::fmt::Debug for SchedulerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerConfig")
            .field("check_interval", &self.check_interval)
            .field("max_concurrency", &self.max_concurrency)
            .field("metrics", &self.metrics)
            .field("logging", &self.logging)
            .finish_non_exhaustive()
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulerConfig {
    /// Defaults: a [`MemoryStore`], a [`DefaultMonitor`], the system clock and
    /// local zone, check interval 1 s, no concurrency limit, metrics on,
    /// logging off, 30 s stop grace.
    pub fn new() -> Self {
        SchedulerConfig {
            store: None,
            monitor: None,
            clock: None,
            zone: None,
            node_id: "local".into(),
            check_interval: Duration::from_secs(1),
            max_concurrency: None,
            metrics: true,
            logging: false,
            stop_grace: Duration::from_secs(30),
            registry: crate::HandlerRegistry::new(),
        }
    }

    /// The store (`WithStore`).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The monitor (`WithMonitor`).
    pub fn monitor(mut self, monitor: Arc<dyn Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// How often a shared store (PostgreSQL, Redis) is re-read for other
    /// nodes' changes in cluster mode (`WithCheckInterval`, default 1 s). It
    /// does not set precision: fires are timed to their instant, and an idle
    /// scheduler does not wake up for it.
    pub fn check_interval(mut self, d: Duration) -> Self {
        self.check_interval = d;
        self
    }

    /// The most handlers running at once, across all tasks (`WithMaxConcurrency`).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = Some(n);
        self
    }

    /// Whether the monitor is fed (`WithMetrics`).
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Whether scheduler events are logged through `tracing` (`WithLogging`).
    pub fn logging(mut self, on: bool) -> Self {
        self.logging = on;
        self
    }

    /// The clock (a [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The zone schedules are evaluated in, unless a task or expression has its own.
    pub fn time_zone(mut self, zone: TimeZone) -> Self {
        self.zone = Some(zone);
        self
    }

    /// The node ID written into execution history.
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }

    /// How long `stop` waits for running handlers before cancelling them.
    pub fn stop_grace(mut self, d: Duration) -> Self {
        self.stop_grace = d;
        self
    }

    /// The registry that binds tasks read back from the store to their handlers.
    pub fn registry(mut self, registry: crate::HandlerRegistry) -> Self {
        self.registry = registry;
        self
    }

    /// Registers one handler (shorthand for a registry holding it).
    pub fn handler(self, handler: std::sync::Arc<dyn crate::TaskHandler>) -> Self {
        self.registry.register(handler);
        self
    }

    /// Builds the scheduler (`Build`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero check interval, a zero concurrency limit or an empty node ID.
    pub fn build(self) -> Result<DefaultScheduler> {
        Ok(DefaultScheduler::from_settings(self.settings()?))
    }

    /// Checks the configuration and turns it into the scheduler's settings.
    pub(crate) fn settings(self) -> Result<Settings> {
        if self.check_interval.is_zero() {
            return Err(Error::InvalidInput {
                what: "check_interval".into(),
                message: "0s: must be at least 1ms".into(),
            });
        }
        if self.max_concurrency == Some(0) {
            return Err(Error::InvalidInput {
                what: "max_concurrency".into(),
                message: "0: must be at least 1 (leave it unset for no limit)".into(),
            });
        }
        if self.node_id.is_empty() {
            return Err(Error::InvalidInput {
                what: "node_id".into(),
                message: "must not be empty".into(),
            });
        }
        let clock: SharedClock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let monitor: Arc<dyn Monitor> = match (self.monitor, self.metrics) {
            (Some(m), _) => m,
            (None, _) => Arc::new(DefaultMonitor::with_clock(clock.clone())),
        };
        let monitor: Arc<dyn Monitor> = if self.metrics { monitor } else { Arc::new(NoopMonitor) };
        Ok(Settings {
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            monitor,
            clock,
            zone: self.zone.unwrap_or_else(TimeZone::system),
            node_id: self.node_id.as_str().into(),
            gate: None,
            check_interval: self.check_interval,
            max_concurrency: self.max_concurrency,
            logging: self.logging,
            stop_grace: self.stop_grace,
            registry: self.registry,
        })
    }
}

/// The monitor used when metrics are turned off: records nothing.
#[derive(Debug, Default)]
pub(crate) struct NoopMonitor;

impl Monitor for NoopMonitor {
    fn record_task_start(&self, _: &str) {}
    fn record_task_complete(&self, _: &str, _: Duration, _: Option<&str>) {}
    fn record_scheduler_start(&self) {}
    fn record_scheduler_stop(&self) {}
    fn record_scheduler_pause(&self) {}
    fn record_scheduler_resume(&self) {}
    fn task_metrics(&self, task_id: &str) -> Result<crate::monitor::TaskMetrics> {
        Err(Error::TaskNotFound { id: task_id.to_string() })
    }
    fn scheduler_metrics(&self) -> crate::monitor::SchedulerMetrics {
        crate::monitor::SchedulerMetrics::default()
    }
    fn performance_metrics(&self) -> crate::monitor::PerformanceMetrics {
        crate::monitor::PerformanceMetrics::default()
    }
    fn cleanup(&self) {}
}
