//! The one error type of rota, with the seed's 17 kinds.
//!
//! Every variant says which task (or expression) and what went wrong. Match on
//! [`Error::kind`] to classify an error without caring about its details; the
//! kinds map one to one to the seed's `Err*` values (see README, "Porting from
//! Laravel-Go").

use std::fmt;
use std::time::Duration;

/// A specialised `Result` for rota.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kind of an [`Error`]: the seed's 17 errors plus the few rota adds.
///
/// ```
/// use rota::{CronExpression, ErrorKind};
///
/// let err = CronExpression::parse("61 0 * * *").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidCronExpression);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `ErrTaskNotFound`: no task with that ID.
    TaskNotFound,
    /// `ErrSchedulerAlreadyRunning`: `start` on a running scheduler.
    SchedulerAlreadyRunning,
    /// `ErrSchedulerAlreadyStopped`: `stop` on a stopped scheduler.
    SchedulerAlreadyStopped,
    /// `ErrSchedulerNotRunning`: `pause` on a scheduler that is not running.
    SchedulerNotRunning,
    /// `ErrSchedulerNotPaused`: `resume` on a scheduler that is not paused.
    SchedulerNotPaused,
    /// `ErrInvalidSchedule`: a schedule that is not a valid form, or can never fire.
    InvalidSchedule,
    /// `ErrTaskHandlerRequired`: a task without a handler.
    TaskHandlerRequired,
    /// `ErrTaskNameRequired`: a task without a name.
    TaskNameRequired,
    /// `ErrTaskIDRequired`: a task without an ID.
    TaskIdRequired,
    /// `ErrStoreNotInitialized`: the global API used before `init`, or a closed store.
    StoreNotInitialized,
    /// `ErrTaskExecutionTimeout`: a run exceeded its timeout.
    TaskExecutionTimeout,
    /// `ErrTaskExecutionFailed`: a handler returned an error or panicked.
    TaskExecutionFailed,
    /// `ErrInvalidCronExpression`: a cron expression that does not parse.
    InvalidCronExpression,
    /// `ErrInvalidTimeFormat`: a time of day or timestamp that does not parse.
    InvalidTimeFormat,
    /// `ErrTaskAlreadyExists`: adding a task whose ID is taken.
    TaskAlreadyExists,
    /// `ErrTaskDisabled`: running a disabled task.
    TaskDisabled,
    /// `ErrTaskMaxRetriesExceeded`: a run failed on its last allowed attempt.
    TaskMaxRetriesExceeded,
    /// Not in the seed: a store or cluster backend failed (I/O, protocol, corrupt data).
    Backend,
    /// Not in the seed: a value outside what rota accepts (for example a zero concurrency).
    InvalidInput,
}

/// A field of a cron expression, named in parse errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CronField {
    /// Seconds, 0-59.
    Second,
    /// Minutes, 0-59.
    Minute,
    /// Hours, 0-23.
    Hour,
    /// Day of month, 1-31.
    DayOfMonth,
    /// Month, 1-12 or `JAN`-`DEC`.
    Month,
    /// Day of week, 0-7 (0 and 7 are Sunday) or `SUN`-`SAT`.
    DayOfWeek,
    /// Year, 1970-2199.
    Year,
}

impl CronField {
    /// The field's name as used in error messages (`"minute"`, `"day-of-month"`).
    pub fn name(self) -> &'static str {
        match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
            CronField::Year => "year",
        }
    }
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Details of a schedule that failed to parse: the expression, the field (if one
/// is to blame) and the reason.
///
/// Displays as `invalid cron expression "0 61 * * *": minute: 61 is out of range 0-59`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub(crate) kind: ErrorKind,
    pub(crate) expr: String,
    pub(crate) field: Option<CronField>,
    pub(crate) reason: String,
}

impl ParseError {
    pub(crate) fn new(
        kind: ErrorKind,
        expr: &str,
        field: Option<CronField>,
        reason: impl Into<String>,
    ) -> Self {
        ParseError { kind, expr: expr.to_string(), field, reason: reason.into() }
    }

    /// The whole expression as given.
    pub fn expression(&self) -> &str {
        &self.expr
    }

    /// The field the error is in, if the error is about one field.
    pub fn field(&self) -> Option<CronField> {
        self.field
    }

    /// Why the expression was rejected, without the expression and field.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The kind: [`ErrorKind::InvalidCronExpression`], [`ErrorKind::InvalidSchedule`]
    /// or [`ErrorKind::InvalidTimeFormat`].
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::InvalidTimeFormat => "invalid time format",
            ErrorKind::InvalidSchedule => "invalid schedule",
            _ => "invalid cron expression",
        };
        write!(f, "{what} {:?}: ", self.expr)?;
        if let Some(field) = self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ParseError {}

/// The error type of rota.
///
/// Each variant carries the task or expression concerned. [`Error::kind`]
/// classifies it as one of the seed's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No task with this ID.
    #[error("task not found: {id:?}")]
    TaskNotFound {
        /// The ID looked up.
        id: String,
    },
    /// `start` on a running (or paused) scheduler.
    #[error("scheduler is already running")]
    SchedulerAlreadyRunning,
    /// `stop` on a stopped scheduler.
    #[error("scheduler is already stopped")]
    SchedulerAlreadyStopped,
    /// `pause` (or another call that needs a running scheduler) on one that is not running.
    #[error("scheduler is not running (status: {status})")]
    SchedulerNotRunning {
        /// The state the scheduler was in.
        status: String,
    },
    /// `resume` on a scheduler that is not paused.
    #[error("scheduler is not paused (status: {status})")]
    SchedulerNotPaused {
        /// The state the scheduler was in.
        status: String,
    },
    /// A schedule, cron expression or time of day that does not parse, or can never fire.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A schedule error attached to the task that carries it.
    #[error("task {task:?}: {source}")]
    TaskSchedule {
        /// The task's name.
        task: String,
        /// The parse error.
        source: ParseError,
    },
    /// A task without a handler.
    #[error("task {task:?}: a handler is required")]
    TaskHandlerRequired {
        /// The task's name or ID.
        task: String,
    },
    /// A task without a name.
    #[error("task name is required (task id {id:?})")]
    TaskNameRequired {
        /// The task's ID, if it has one.
        id: String,
    },
    /// A task without an ID.
    #[error("task ID is required (task {name:?})")]
    TaskIdRequired {
        /// The task's name.
        name: String,
    },
    /// The global API was used before `init`, or a store was used after `close`.
    #[error("store is not initialized: {what}")]
    StoreNotInitialized {
        /// What was attempted.
        what: String,
    },
    /// A run exceeded its timeout and was cancelled.
    #[error("task {task:?}: execution timed out after {timeout:?} (attempt {attempt})")]
    TaskExecutionTimeout {
        /// The task's ID.
        task: String,
        /// The timeout that was exceeded.
        timeout: Duration,
        /// The attempt that timed out (1 is the first).
        attempt: u32,
    },
    /// A handler returned an error or panicked.
    #[error("task {task:?}: execution failed (attempt {attempt}): {message}")]
    TaskExecutionFailed {
        /// The task's ID.
        task: String,
        /// The attempt that failed (1 is the first).
        attempt: u32,
        /// The handler's error, or the panic message.
        message: String,
    },
    /// A task with this ID is already there.
    #[error("task already exists: {id:?}")]
    TaskAlreadyExists {
        /// The ID that is taken.
        id: String,
    },
    /// A disabled task was asked to run.
    #[error("task is disabled: {id:?}")]
    TaskDisabled {
        /// The task's ID.
        id: String,
    },
    /// The last allowed attempt of a run failed.
    #[error("task {task:?}: max retries exceeded ({retries} retries): {last_error}")]
    TaskMaxRetriesExceeded {
        /// The task's ID.
        task: String,
        /// How many retries were made.
        retries: u32,
        /// The error of the last attempt.
        last_error: String,
    },
    /// A store or cluster backend failed.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend (`"sqlite store"`, `"redis cluster"`...).
        backend: String,
        /// What failed.
        message: String,
    },
    /// A value outside what rota accepts.
    #[error("invalid {what}: {message}")]
    InvalidInput {
        /// The field or argument.
        what: String,
        /// Why it was refused, with the allowed range.
        message: String,
    },
}

impl Error {
    /// The seed error this corresponds to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::TaskNotFound { .. } => ErrorKind::TaskNotFound,
            Error::SchedulerAlreadyRunning => ErrorKind::SchedulerAlreadyRunning,
            Error::SchedulerAlreadyStopped => ErrorKind::SchedulerAlreadyStopped,
            Error::SchedulerNotRunning { .. } => ErrorKind::SchedulerNotRunning,
            Error::SchedulerNotPaused { .. } => ErrorKind::SchedulerNotPaused,
            Error::Parse(p) | Error::TaskSchedule { source: p, .. } => p.kind,
            Error::TaskHandlerRequired { .. } => ErrorKind::TaskHandlerRequired,
            Error::TaskNameRequired { .. } => ErrorKind::TaskNameRequired,
            Error::TaskIdRequired { .. } => ErrorKind::TaskIdRequired,
            Error::StoreNotInitialized { .. } => ErrorKind::StoreNotInitialized,
            Error::TaskExecutionTimeout { .. } => ErrorKind::TaskExecutionTimeout,
            Error::TaskExecutionFailed { .. } => ErrorKind::TaskExecutionFailed,
            Error::TaskAlreadyExists { .. } => ErrorKind::TaskAlreadyExists,
            Error::TaskDisabled { .. } => ErrorKind::TaskDisabled,
            Error::TaskMaxRetriesExceeded { .. } => ErrorKind::TaskMaxRetriesExceeded,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
        }
    }

    /// A backend error: `backend` names the store or cluster (`"sqlite store"`),
    /// `message` says what failed.
    pub fn backend(backend: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Backend { backend: backend.into(), message: message.to_string() }
    }

    /// The parse error inside, if this is a schedule error.
    pub fn as_parse_error(&self) -> Option<&ParseError> {
        match self {
            Error::Parse(p) | Error::TaskSchedule { source: p, .. } => Some(p),
            _ => None,
        }
    }
}
