//! Tasks and handlers: [`Task`], [`DefaultTask`], [`TaskHandler`],
//! [`FuncHandler`], [`TaskContext`], [`TaskBuilder`] and the convenience
//! constructors [`every`], [`every_hour`], [`every_day`], [`daily`], [`cron`], [`at`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cron::Schedule;
use crate::error::{Error, ErrorKind, ParseError, Result};

/// What a handler returns on failure: any error.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The facts of one run, handed to [`TaskHandler::handle`].
///
/// A fire is identified by the task ID and its scheduled instant; retries of
/// a fire keep both and count up [`attempt`](Self::attempt).
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub(crate) task_id: Arc<str>,
    pub(crate) task_name: Arc<str>,
    pub(crate) scheduled_at: Timestamp,
    pub(crate) attempt: u32,
    pub(crate) node_id: Arc<str>,
    pub(crate) fencing_token: Option<u64>,
    /// Cancellation and output, shared with the scheduler.
    pub(crate) run: Arc<RunShared>,
}

/// What a run's context shares with the scheduler: one allocation per
/// attempt, and no cancellation token until a handler asks for one.
#[derive(Debug, Default)]
pub(crate) struct RunShared {
    cancelled: std::sync::atomic::AtomicBool,
    token: std::sync::OnceLock<CancellationToken>,
    /// Output the handler wants kept in the execution history.
    pub(crate) output: std::sync::Mutex<String>,
}

impl RunShared {
    /// A new attempt's share, keeping what earlier attempts output.
    pub(crate) fn with_output(output: String) -> Self {
        RunShared { output: std::sync::Mutex::new(output), ..Default::default() }
    }

    /// Cancels the run (the handler's token too, if it took one).
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.token.get() {
            t.cancel();
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn token(&self) -> &CancellationToken {
        let t = self.token.get_or_init(CancellationToken::new);
        // Cancelled before the token existed: `cancel` did not see it.
        if self.is_cancelled() {
            t.cancel();
        }
        t
    }

    /// Takes the output set so far.
    pub(crate) fn take_output(&self) -> String {
        std::mem::take(&mut *self.output.lock().unwrap())
    }
}

impl TaskContext {
    /// A context for calling a handler outside a scheduler (tests, tools).
    pub fn new(task_id: &str, scheduled_at: Timestamp) -> Self {
        TaskContext {
            task_id: task_id.into(),
            task_name: task_id.into(),
            scheduled_at,
            attempt: 1,
            node_id: "local".into(),
            fencing_token: None,
            run: Arc::default(),
        }
    }

    /// The task's ID.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The task's name.
    pub fn task_name(&self) -> &str {
        &self.task_name
    }

    /// The instant this fire was scheduled for (for `run_now`, the instant it was asked for).
    pub fn scheduled_at(&self) -> Timestamp {
        self.scheduled_at
    }

    /// The attempt number: 1 for the first try, 2 for the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The node running this fire (`"local"` outside a cluster).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The fencing token of the lock or leadership this run holds, in a cluster.
    pub fn fencing_token(&self) -> Option<u64> {
        self.fencing_token
    }

    /// True once the run is cancelled (timeout, stop, or lost lock).
    pub fn is_cancelled(&self) -> bool {
        self.run.is_cancelled()
    }

    /// Completes when the run is cancelled. Use it in `tokio::select!` next to
    /// the work, so a timeout or a stop ends the work promptly.
    pub async fn cancelled(&self) {
        self.run.token().cancelled().await
    }

    /// Keeps `output` as this run's output in the execution history
    /// (replacing what an earlier attempt set). The daemon's command jobs put
    /// their captured stdout and stderr here.
    pub fn set_output(&self, output: impl Into<String>) {
        *self.run.output.lock().unwrap() = output.into();
    }

    /// The output set so far.
    pub fn output(&self) -> String {
        self.run.output.lock().unwrap().clone()
    }

    /// The underlying token, to hand to other libraries.
    pub fn cancellation_token(&self) -> &CancellationToken {
        self.run.token()
    }
}

/// The work of a task (the seed's `TaskHandler`).
///
/// Handlers are not serialised: a task read back from a store is bound to its
/// handler again by [`name`](Self::name).
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// The handler's name, used to re-bind stored tasks.
    fn name(&self) -> &str;

    /// Runs the task once. Return an error to fail the attempt.
    async fn handle(&self, ctx: TaskContext) -> std::result::Result<(), HandlerError>;
}

impl fmt::Debug for dyn TaskHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskHandler({:?})", self.name())
    }
}

/// A handler made from a closure (the seed's `NewFuncHandler`).
///
/// ```
/// use rota::FuncHandler;
///
/// let h = FuncHandler::new("hello", |ctx| async move {
///     println!("hello from {} at {}", ctx.task_id(), ctx.scheduled_at());
///     Ok(())
/// });
/// ```
pub struct FuncHandler<F> {
    // Boxed, not a `String`: no spare capacity, and 8 bytes less per handler.
    name: Box<str>,
    f: F,
}

impl<F, Fut> FuncHandler<F>
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
{
    /// A handler named `name` that runs `f`.
    pub fn new(name: impl Into<String>, f: F) -> Arc<Self> {
        Arc::new(FuncHandler { name: name.into().into_boxed_str(), f })
    }
}

impl<F> fmt::Debug for FuncHandler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FuncHandler").field("name", &self.name).finish()
    }
}

#[async_trait]
impl<F, Fut> TaskHandler for FuncHandler<F>
where
    F: Fn(TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, ctx: TaskContext) -> std::result::Result<(), HandlerError> {
        (self.f)(ctx).await
    }
}

/// What happens to a fire while the same task's previous run is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OverlapPolicy {
    /// The fire is skipped and counted (`skipped` event). The default, like
    /// Laravel's `withoutOverlapping` and gocron's singleton mode.
    ///
    /// ```text
    /// fires:  |----|----|----|
    /// run:    [=======]  [==]
    ///              ^ skipped
    /// ```
    #[default]
    Skip,
    /// Runs start at every fire, even while earlier ones are still going.
    Allow,
}

/// What happens to fires that were due while the scheduler was stopped,
/// paused, or the clock jumped: fires later than the grace period count as
/// missed, and then the policy decides.
///
/// ```text
/// due:      1   2   3   4        (down from before 1 until after 4)
/// Skip:                   -      all four counted missed, next fire as usual
/// RunOnce:                4      one run, for the latest missed fire
/// RunAll{max:2}:          3 4    the latest two missed fires, in order
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
#[non_exhaustive]
pub enum MisfirePolicy {
    /// Missed fires are counted (`missed` event) and not run. The default, as in cron.
    #[default]
    Skip,
    /// One run for the latest missed fire; the others are counted missed.
    RunOnce,
    /// A run for each missed fire, at most `max` (the latest ones); the rest are counted missed.
    RunAll {
        /// The most catch-up runs at once.
        max: u32,
    },
}

/// The default misfire grace: a fire started more than this after its
/// scheduled instant, because the scheduler was down, paused or the clock
/// jumped, counts as missed.
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(1);

/// The seed's `Task` interface. [`DefaultTask`] is its implementation, and the
/// scheduler and stores work on `DefaultTask`; another implementation converts
/// with [`DefaultTask::from_task`].
pub trait Task: Send + Sync + fmt::Debug + fmt::Display {
    /// The task's ID (stable: derived from the name unless set).
    fn id(&self) -> &str;
    /// The task's name.
    fn name(&self) -> &str;
    /// The description.
    fn description(&self) -> &str;
    /// The schedule expression as written.
    fn schedule(&self) -> &str;
    /// The handler, if bound.
    fn handler(&self) -> Option<Arc<dyn TaskHandler>>;
    /// Whether the task fires.
    fn enabled(&self) -> bool;
    /// When the task was created.
    fn created_at(&self) -> Timestamp;
    /// When the task was last changed.
    fn updated_at(&self) -> Timestamp;
    /// When the task last started a run.
    fn last_run_at(&self) -> Option<Timestamp>;
    /// The next scheduled fire.
    fn next_run_at(&self) -> Option<Timestamp>;
    /// Runs finished (successful or not).
    fn run_count(&self) -> i64;
    /// Runs that failed (after their retries).
    fn failed_count(&self) -> i64;
    /// The error of the last failed attempt, empty after a success.
    fn last_error(&self) -> &str;
    /// Timeout of one attempt; zero means none.
    fn timeout(&self) -> Duration;
    /// Retries made by the latest run.
    fn retry_count(&self) -> u32;
    /// Delay between attempts.
    fn retry_delay(&self) -> Duration;
    /// Retries allowed after the first attempt.
    fn max_retries(&self) -> u32;
    /// Tags.
    fn tags(&self) -> &BTreeMap<String, String>;
    /// Enables the task.
    fn enable(&mut self);
    /// Disables the task.
    fn disable(&mut self);
    /// Recomputes `next_run_at` from now (system clock).
    fn update_next_run(&mut self);
    /// Counts a run.
    fn increment_run_count(&mut self);
    /// Counts a failed run.
    fn increment_failed_count(&mut self);
    /// The seed's JSON form (no handler).
    fn serialize(&self) -> Result<Vec<u8>>;
    /// Replaces this task's data with the JSON form; the handler is kept.
    fn deserialize(&mut self, data: &[u8]) -> Result<()>;
    /// Checks name, ID, handler and schedule.
    fn validate(&self) -> Result<()>;
    /// A boxed copy.
    fn clone_task(&self) -> Box<dyn Task>;
}

/// The seed's `DefaultTask`: a task's definition and its run state.
///
/// JSON field names are the seed's; durations are integer nanoseconds (Go's
/// `time.Duration`), instants RFC 3339. rota adds `handler` (the handler's
/// name, for re-binding), `time_zone`, `overlap`, `misfire` and `misfire_grace`.
#[derive(Clone, Serialize, Deserialize)]
pub struct DefaultTask {
    pub(crate) id: Arc<str>,
    pub(crate) name: Arc<str>,
    #[serde(default)]
    pub(crate) description: Arc<str>,
    pub(crate) schedule: Arc<str>,
    #[serde(skip)]
    pub(crate) handler: Option<Arc<dyn TaskHandler>>,
    /// The handler's name, kept when the handler itself is not.
    #[serde(rename = "handler", default)]
    pub(crate) handler_name: Arc<str>,
    pub(crate) enabled: bool,
    pub(crate) created_at: Timestamp,
    pub(crate) updated_at: Timestamp,
    pub(crate) last_run_at: Option<Timestamp>,
    pub(crate) next_run_at: Option<Timestamp>,
    #[serde(default)]
    pub(crate) run_count: i64,
    #[serde(default)]
    pub(crate) failed_count: i64,
    #[serde(default)]
    pub(crate) last_error: Arc<str>,
    #[serde(with = "nanos", default)]
    pub(crate) timeout: Duration,
    #[serde(default)]
    pub(crate) retry_count: u32,
    #[serde(with = "nanos", default)]
    pub(crate) retry_delay: Duration,
    #[serde(default)]
    pub(crate) max_retries: u32,
    #[serde(default)]
    pub(crate) tags: Arc<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) time_zone: Option<Arc<str>>,
    #[serde(default)]
    pub(crate) overlap: OverlapPolicy,
    #[serde(default)]
    pub(crate) misfire: MisfirePolicy,
    #[serde(with = "nanos", default = "default_grace")]
    pub(crate) misfire_grace: Duration,
    /// Set by constructors that were given a value that can't become a
    /// schedule (`at("25:00")`); reported by `validate`.
    #[serde(skip)]
    pub(crate) pending_error: Option<Box<ParseError>>,
}

/// A shared string from anything string-like; the empty string is one
/// shared allocation for all tasks.
fn arc(s: impl Into<String>) -> Arc<str> {
    let s = s.into();
    if s.is_empty() {
        empty_str()
    } else {
        Arc::from(s)
    }
}

pub(crate) fn empty_str() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

fn empty_tags() -> Arc<BTreeMap<String, String>> {
    static EMPTY: std::sync::OnceLock<Arc<BTreeMap<String, String>>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Arc::default).clone()
}

fn default_grace() -> Duration {
    DEFAULT_MISFIRE_GRACE
}

/// Serde for `Duration` as integer nanoseconds (Go's `time.Duration`).
pub(crate) mod nanos {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let n = i64::deserialize(d)?;
        if n < 0 {
            return Err(serde::de::Error::custom(format!("negative duration: {n} ns")));
        }
        Ok(Duration::from_nanos(n as u64))
    }
}

/// A stable task ID from a name: the name itself when it is a plain
/// identifier (letters, digits, `.`, `_`, `-`, at most 64 bytes), else a
/// slug of it plus a hash of the whole name. The same name gives the same ID in
/// every process, so a task declared on several nodes is one task.
///
/// ```
/// assert_eq!(rota::task_id_for("backup"), "backup");
/// assert_eq!(rota::task_id_for("Nightly backup"), rota::task_id_for("Nightly backup"));
/// assert_ne!(rota::task_id_for("a b"), rota::task_id_for("a_b"));
/// ```
pub fn task_id_for(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        return name.to_string();
    }
    // FNV-1a 64: stable across processes and Rust versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        format!("task-{h:016x}")
    } else {
        format!("{slug}-{h:016x}")
    }
}

impl DefaultTask {
    /// The seed's `NewTask`: a task with a stable ID derived from its name.
    /// The schedule is checked by [`validate`](Task::validate) and when the task is added.
    ///
    /// ```
    /// use rota::{DefaultTask, FuncHandler, Task};
    ///
    /// let h = FuncHandler::new("test", |_ctx| async { Ok(()) });
    /// let task = DefaultTask::new("test-task", "Test task", "0 * * * * *", h);
    /// assert_eq!(task.id(), "test-task");
    /// assert!(task.validate().is_ok());
    /// ```
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        schedule: impl Into<String>,
        handler: Arc<dyn TaskHandler>,
    ) -> DefaultTask {
        let name = name.into();
        // The ID is usually the name itself: share one allocation.
        let shared: Arc<str> = Arc::from(name.as_str());
        let now = Timestamp::now();
        DefaultTask {
            id: if task_id_for(&name) == name {
                Arc::clone(&shared)
            } else {
                task_id_for(&name).into()
            },
            handler_name: handler.name().into(),
            name: shared,
            description: arc(description),
            schedule: arc(schedule),
            handler: Some(handler),
            created_at: now,
            updated_at: now,
            ..DefaultTask::blank()
        }
    }

    /// A task with every field empty or at its default, for filling in.
    pub(crate) fn blank() -> DefaultTask {
        DefaultTask {
            id: empty_str(),
            name: empty_str(),
            description: empty_str(),
            schedule: empty_str(),
            handler: None,
            handler_name: empty_str(),
            enabled: true,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
            last_run_at: None,
            next_run_at: None,
            run_count: 0,
            failed_count: 0,
            last_error: empty_str(),
            timeout: Duration::ZERO,
            retry_count: 0,
            retry_delay: Duration::ZERO,
            max_retries: 0,
            tags: empty_tags(),
            time_zone: None,
            overlap: OverlapPolicy::Skip,
            misfire: MisfirePolicy::Skip,
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            pending_error: None,
        }
    }

    /// Copies any [`Task`] into a `DefaultTask` (policies take their defaults).
    pub fn from_task(t: &dyn Task) -> DefaultTask {
        DefaultTask {
            id: t.id().into(),
            name: t.name().into(),
            description: t.description().into(),
            schedule: t.schedule().into(),
            handler_name: t.handler().map(|h| h.name().into()).unwrap_or_else(|| "".into()),
            handler: t.handler(),
            enabled: t.enabled(),
            created_at: t.created_at(),
            updated_at: t.updated_at(),
            last_run_at: t.last_run_at(),
            next_run_at: t.next_run_at(),
            run_count: t.run_count(),
            failed_count: t.failed_count(),
            last_error: t.last_error().into(),
            timeout: t.timeout(),
            retry_count: t.retry_count(),
            retry_delay: t.retry_delay(),
            max_retries: t.max_retries(),
            tags: Arc::new(t.tags().clone()),
            time_zone: None,
            overlap: OverlapPolicy::default(),
            misfire: MisfirePolicy::default(),
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            pending_error: None,
        }
    }

    /// The parsed schedule.
    ///
    /// # Errors
    ///
    /// The schedule's parse error, attached to this task.
    pub fn parsed_schedule(&self) -> Result<Schedule> {
        if let Some(e) = &self.pending_error {
            return Err(Error::TaskSchedule { task: self.name.to_string(), source: (**e).clone() });
        }
        Schedule::parse(&self.schedule)
            .map_err(|source| Error::TaskSchedule { task: self.name.to_string(), source })
    }

    /// The task's own time zone (IANA name), if set.
    pub fn time_zone(&self) -> Option<&str> {
        self.time_zone.as_deref()
    }

    /// The zone to evaluate the schedule in: the task's zone, else `default`.
    pub(crate) fn zone(&self, default: &TimeZone) -> TimeZone {
        self.time_zone
            .as_deref()
            .and_then(|z| TimeZone::get(z).ok())
            .unwrap_or_else(|| default.clone())
    }

    /// The overlap policy.
    pub fn overlap(&self) -> OverlapPolicy {
        self.overlap
    }

    /// The misfire policy.
    pub fn misfire(&self) -> MisfirePolicy {
        self.misfire
    }

    /// The misfire grace period.
    pub fn misfire_grace(&self) -> Duration {
        self.misfire_grace
    }

    /// The handler's name (kept when the handler itself is not, as in a store).
    pub fn handler_name(&self) -> &str {
        &self.handler_name
    }

    /// Binds a handler (and records its name).
    pub fn set_handler(&mut self, handler: Arc<dyn TaskHandler>) {
        self.handler_name = handler.name().into();
        self.handler = Some(handler);
    }

    /// Changes the schedule.
    pub fn set_schedule(&mut self, schedule: impl Into<String>) {
        self.schedule = arc(schedule);
        self.pending_error = None;
        self.updated_at = Timestamp::now();
    }

    /// Sets the next fire.
    pub fn set_next_run_at(&mut self, t: Option<Timestamp>) {
        self.next_run_at = t;
    }

    /// Sets the timeout of one attempt (zero: none).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sets the retries allowed after the first attempt.
    pub fn set_max_retries(&mut self, n: u32) {
        self.max_retries = n;
    }

    /// Sets the delay between attempts.
    pub fn set_retry_delay(&mut self, d: Duration) {
        self.retry_delay = d;
    }

    /// Sets the overlap policy.
    pub fn set_overlap(&mut self, p: OverlapPolicy) {
        self.overlap = p;
    }

    /// Sets the misfire policy.
    pub fn set_misfire(&mut self, p: MisfirePolicy) {
        self.misfire = p;
    }

    /// Sets the task's ID explicitly.
    pub fn set_id(&mut self, id: impl Into<String>) {
        self.id = arc(id);
    }

    /// Validates and returns the parsed schedule (one parse).
    pub(crate) fn validate_parsed(&self) -> Result<Schedule> {
        if self.name.is_empty() {
            return Err(Error::TaskNameRequired { id: self.id.to_string() });
        }
        if self.id.is_empty() {
            return Err(Error::TaskIdRequired { name: self.name.to_string() });
        }
        if self.handler.is_none() {
            return Err(Error::TaskHandlerRequired { task: self.name.to_string() });
        }
        if let Some(z) = &self.time_zone {
            if TimeZone::get(z).is_err() {
                return Err(Error::TaskSchedule {
                    task: self.name.to_string(),
                    source: ParseError::new(
                        ErrorKind::InvalidSchedule,
                        &self.schedule,
                        None,
                        format!("unknown time zone {z:?} (expected an IANA name)"),
                    ),
                });
            }
        }
        self.parsed_schedule()
    }
}

impl fmt::Debug for DefaultTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultTask")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("handler", &self.handler_name)
            .field("enabled", &self.enabled)
            .field("next_run_at", &self.next_run_at)
            .field("run_count", &self.run_count)
            .field("failed_count", &self.failed_count)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DefaultTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Task{{ID: {}, Name: {}, Schedule: {}, Enabled: {}}}",
            self.id, self.name, self.schedule, self.enabled
        )
    }
}

impl Task for DefaultTask {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn schedule(&self) -> &str {
        &self.schedule
    }
    fn handler(&self) -> Option<Arc<dyn TaskHandler>> {
        self.handler.clone()
    }
    fn enabled(&self) -> bool {
        self.enabled
    }
    fn created_at(&self) -> Timestamp {
        self.created_at
    }
    fn updated_at(&self) -> Timestamp {
        self.updated_at
    }
    fn last_run_at(&self) -> Option<Timestamp> {
        self.last_run_at
    }
    fn next_run_at(&self) -> Option<Timestamp> {
        self.next_run_at
    }
    fn run_count(&self) -> i64 {
        self.run_count
    }
    fn failed_count(&self) -> i64 {
        self.failed_count
    }
    fn last_error(&self) -> &str {
        &self.last_error
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn retry_count(&self) -> u32 {
        self.retry_count
    }
    fn retry_delay(&self) -> Duration {
        self.retry_delay
    }
    fn max_retries(&self) -> u32 {
        self.max_retries
    }
    fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }
    fn enable(&mut self) {
        self.enabled = true;
        self.updated_at = Timestamp::now();
    }
    fn disable(&mut self) {
        self.enabled = false;
        self.updated_at = Timestamp::now();
    }
    fn update_next_run(&mut self) {
        let now = Timestamp::now();
        self.next_run_at = self
            .parsed_schedule()
            .ok()
            .and_then(|s| s.next_after(now, &self.zone(&TimeZone::system()), now));
    }
    fn increment_run_count(&mut self) {
        self.run_count += 1;
    }
    fn increment_failed_count(&mut self) {
        self.failed_count += 1;
    }
    fn serialize(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::InvalidInput {
            what: format!("task {:?}", self.id),
            message: format!("cannot serialise: {e}"),
        })
    }
    fn deserialize(&mut self, data: &[u8]) -> Result<()> {
        let mut t: DefaultTask = serde_json::from_slice(data).map_err(|e| Error::InvalidInput {
            what: "task JSON".into(),
            message: e.to_string(),
        })?;
        if t.handler_name.is_empty()
            || self.handler.as_ref().is_some_and(|h| h.name() == &*t.handler_name)
        {
            t.handler = self.handler.clone();
            if t.handler_name.is_empty() {
                t.handler_name = self.handler_name.clone();
            }
        }
        *self = t;
        Ok(())
    }
    fn validate(&self) -> Result<()> {
        self.validate_parsed().map(|_| ())
    }
    fn clone_task(&self) -> Box<dyn Task> {
        Box::new(self.clone())
    }
}

/// The seed's `TaskBuilder`, plus what users of Laravel and gocron expect.
///
/// ```
/// use rota::{FuncHandler, MisfirePolicy, Task, TaskBuilder};
/// use std::time::Duration;
///
/// let h = FuncHandler::new("backup", |_ctx| async { Ok(()) });
/// let task = TaskBuilder::new("backup", "Database backup", "0 2 * * *", h)
///     .timeout(Duration::from_secs(30 * 60))
///     .max_retries(3)
///     .retry_delay(Duration::from_secs(300))
///     .tag("type", "backup")
///     .tag("priority", "high")
///     .time_zone("Europe/London")
///     .misfire(MisfirePolicy::RunOnce)
///     .build();
/// assert_eq!(task.max_retries(), 3);
/// assert_eq!(task.tags()["priority"], "high");
/// ```
#[derive(Debug)]
pub struct TaskBuilder {
    task: DefaultTask,
}

impl TaskBuilder {
    /// The seed's `NewTaskBuilder`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        schedule: impl Into<String>,
        handler: Arc<dyn TaskHandler>,
    ) -> Self {
        TaskBuilder { task: DefaultTask::new(name, description, schedule, handler) }
    }

    /// Starts from an existing task.
    pub fn from_task(task: DefaultTask) -> Self {
        TaskBuilder { task }
    }

    /// Timeout of one attempt (`SetTimeout`); zero means none.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.task.timeout = d;
        self
    }

    /// Retries after the first attempt (`SetMaxRetries`).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.task.max_retries = n;
        self
    }

    /// Delay between attempts (`SetRetryDelay`).
    pub fn retry_delay(mut self, d: Duration) -> Self {
        self.task.retry_delay = d;
        self
    }

    /// Adds a tag (`AddTag`).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.task.tags).insert(key.into(), value.into());
        self
    }

    /// Evaluates the schedule in this IANA zone (a `CRON_TZ=` prefix still wins).
    pub fn time_zone(mut self, zone: impl Into<String>) -> Self {
        self.task.time_zone = Some(arc(zone));
        self
    }

    /// The overlap policy.
    pub fn overlap(mut self, p: OverlapPolicy) -> Self {
        self.task.overlap = p;
        self
    }

    /// The misfire policy.
    pub fn misfire(mut self, p: MisfirePolicy) -> Self {
        self.task.misfire = p;
        self
    }

    /// How late a fire may start before it counts as missed.
    pub fn misfire_grace(mut self, d: Duration) -> Self {
        self.task.misfire_grace = d;
        self
    }

    /// Whether the task starts enabled.
    pub fn enabled(mut self, on: bool) -> Self {
        self.task.enabled = on;
        self
    }

    /// An explicit ID instead of the one derived from the name.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.task.id = arc(id);
        self
    }

    /// The description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.task.description = arc(d);
        self
    }

    /// The task (`Build`). Validation happens when it is added.
    pub fn build(self) -> DefaultTask {
        self.task
    }
}

fn named(schedule: String, what: &str, handler: Arc<dyn TaskHandler>) -> DefaultTask {
    let name = handler.name().to_string();
    DefaultTask::new(name, what, schedule, handler)
}

/// Every `minutes` minutes (the seed's `Every`): aligned to the clock when
/// `minutes` divides an hour (`every(15, h)` fires at :00, :15, :30, :45) or a
/// day, else an interval from the task's start. The task is named after the
/// handler. Zero or negative minutes fail validation with `InvalidSchedule`.
pub fn every(minutes: i64, handler: Arc<dyn TaskHandler>) -> DefaultTask {
    let schedule = if minutes > 0 && 60 % minutes == 0 {
        format!("0 */{minutes} * * * *")
    } else if minutes > 0 && minutes % 60 == 0 && 24 % (minutes / 60) == 0 {
        format!("0 0 */{} * * *", minutes / 60)
    } else {
        format!("@every {minutes}m")
    };
    named(schedule, &format!("every {minutes} minutes"), handler)
}

/// Every hour on the hour (the seed's `EveryHour`).
pub fn every_hour(handler: Arc<dyn TaskHandler>) -> DefaultTask {
    named("0 0 * * * *".into(), "every hour", handler)
}

/// Every day at midnight (the seed's `EveryDay`).
pub fn every_day(handler: Arc<dyn TaskHandler>) -> DefaultTask {
    named("0 0 0 * * *".into(), "every day", handler)
}

/// Every day at `hour:minute` (the seed's `Daily`); out-of-range values fail
/// validation naming the field.
pub fn daily(hour: i64, minute: i64, handler: Arc<dyn TaskHandler>) -> DefaultTask {
    named(format!("0 {minute} {hour} * * *"), &format!("daily at {hour:02}:{minute:02}"), handler)
}

/// A cron expression (the seed's `Cron`).
pub fn cron(expr: impl Into<String>, handler: Arc<dyn TaskHandler>) -> DefaultTask {
    named(expr.into(), "cron", handler)
}

/// Every day at `"HH:MM"` or `"HH:MM:SS"` (the seed's `At`). A malformed time
/// fails validation with `InvalidTimeFormat`.
pub fn at(time: &str, handler: Arc<dyn TaskHandler>) -> DefaultTask {
    match parse_time_of_day(time) {
        Ok((h, m, s)) => named(format!("{s} {m} {h} * * *"), &format!("daily at {time}"), handler),
        Err(e) => {
            let mut t = named(String::new(), &format!("daily at {time}"), handler);
            t.pending_error = Some(Box::new(e));
            t
        }
    }
}

/// Parses `HH:MM` or `HH:MM:SS` (24-hour clock).
pub(crate) fn parse_time_of_day(s: &str) -> std::result::Result<(u32, u32, u32), ParseError> {
    let bad = |reason: String| ParseError::new(ErrorKind::InvalidTimeFormat, s, None, reason);
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len()) {
        return Err(bad("expected HH:MM or HH:MM:SS".into()));
    }
    let mut vals = [0u32; 3];
    for (i, (p, (name, max))) in
        parts.iter().zip([("hour", 23), ("minute", 59), ("second", 59)]).enumerate()
    {
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("{name} {p:?} must be two digits")));
        }
        let v: u32 = p.parse().map_err(|_| bad(format!("{name} {p:?} is not a number")))?;
        if v > max {
            return Err(bad(format!("{name} {v} is out of range 0-{max}")));
        }
        vals[i] = v;
    }
    Ok((vals[0], vals[1], vals[2]))
}
