//! Where the scheduler gets wall-clock time: [`SystemClock`] in production,
//! [`ManualClock`] in tests.
//!
//! Cron schedules are about wall-clock time, which tokio's paused test clock
//! does not move (it moves `Instant`, not `SystemTime`). So the scheduler
//! reads time from a [`Clock`], and tests drive a [`ManualClock`] by hand:
//! exact and fast, with no real sleeping.
//!
//! ```
//! use rota::clock::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new("2026-12-04T10:00:00Z".parse()?);
//! clock.advance(Duration::from_secs(90));
//! assert_eq!(clock.now().to_string(), "2026-12-04T10:01:30Z");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A boxed future, as returned by [`Clock::sleep_until`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of wall-clock time the scheduler can wait on.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;

    /// Completes when [`now`](Self::now) has reached `deadline`, or earlier
    /// (callers re-check the time and sleep again). A system clock wakes at
    /// least once a second so that a step of the wall clock (NTP, suspend and
    /// resume) is noticed within a second.
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The longest a [`SystemClock`] sleeps before looking at the time again.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let wait = deadline.duration_since(Timestamp::now());
        let wait = if wait.is_negative() {
            Duration::ZERO
        } else {
            Duration::try_from(wait).unwrap_or(MAX_SLEEP).min(MAX_SLEEP)
        };
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to: for tests of timing semantics.
///
/// `advance` and `set` wake every task sleeping on this clock. `set` may also
/// move time backward, to test wall-clock steps.
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    now: Mutex<Timestamp>,
    // A counter bumped on every change; sleepers watch it to re-check the time.
    changed: watch::Sender<u64>,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn new(start: Timestamp) -> Self {
        let (tx, _) = watch::channel(0);
        ManualClock { inner: Arc::new(ManualInner { now: Mutex::new(start), changed: tx }) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.inner.now.lock().unwrap();
        *now += SignedDuration::try_from(d).expect("duration fits");
        drop(now);
        self.inner.changed.send_modify(|v| *v += 1);
    }

    /// Sets the clock to `t`, forward or backward.
    pub fn set(&self, t: Timestamp) {
        *self.inner.now.lock().unwrap() = t;
        self.inner.changed.send_modify(|v| *v += 1);
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock").field("now", &self.now()).finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.inner.now.lock().unwrap()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        let me = self.clone();
        let mut rx = self.inner.changed.subscribe();
        Box::pin(async move {
            while me.now() < deadline {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// The shared clock handle used throughout rota.
pub type SharedClock = Arc<dyn Clock>;

/// Converts a std `Duration` to jiff's, saturating.
pub(crate) fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// `b - a` as a std `Duration`, zero if negative.
pub(crate) fn elapsed(a: Timestamp, b: Timestamp) -> Duration {
    Duration::try_from(b.duration_since(a)).unwrap_or(Duration::ZERO)
}
