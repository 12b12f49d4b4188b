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
    /// (callers re-check the time and sleep again). A system clock wakes
    /// when the wall clock is stepped (NTP, `date -s`, resume from suspend),
    /// so a step is noticed at once (within a second where the operating
    /// system cannot tell).
    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()>;

    /// How far ahead of a fire's instant the scheduler may at most prepare
    /// it: take it off its queue, check it and gather what its run needs, so
    /// that when thousands of fires share one instant they all start right
    /// at it. A fire never starts before its instant, whatever this says.
    ///
    /// The default, zero, prepares each fire at its instant: right for a
    /// clock moved by hand, where a test expects nothing to happen before
    /// it moves the clock. [`SystemClock`] says [`PREPARE_AHEAD`].
    fn prepare_ahead(&self) -> Duration {
        Duration::ZERO
    }
}

/// How far ahead [`SystemClock`] lets the scheduler prepare fires: at most
/// this, and less when it holds fewer tasks (about 1 ms, plus 2 µs per
/// task in its queue).
pub const PREPARE_AHEAD: Duration = Duration::from_millis(250);

/// The operating system's clock.
///
/// A sleep is a tokio timer for the whole wait (no periodic wake-up, so an
/// idle scheduler costs nothing). On Linux, a thread of its own (started
/// once, blocked in `read` the rest of the time) holds a `timerfd` on
/// `CLOCK_REALTIME` with `TFD_TIMER_CANCEL_ON_SET`: when the wall clock is
/// stepped (NTP step, `date -s`, resume from suspend), every sleeper wakes at
/// once and looks at the time again. Elsewhere a sleep wakes every
/// [`MAX_SLEEP`] to look.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// Where steps of the wall clock cannot be watched, the longest a
/// [`SystemClock`] sleeps before looking at the time again.
pub const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What is left until `deadline`, zero if it passed.
fn until(deadline: Timestamp) -> Duration {
    let wait = deadline.duration_since(Timestamp::now());
    if wait.is_negative() {
        Duration::ZERO
    } else {
        Duration::try_from(wait).unwrap_or(Duration::MAX)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        #[cfg(target_os = "linux")]
        if let Some(stepped) = steps::watch() {
            return Box::pin(async move {
                let notified = stepped.notified();
                tokio::pin!(notified);
                // Listen before reading the clock, so no step is missed.
                notified.as_mut().enable();
                tokio::select! {
                    _ = tokio::time::sleep(until(deadline)) => {}
                    _ = notified => {}
                }
            });
        }
        Box::pin(tokio::time::sleep(until(deadline).min(MAX_SLEEP)))
    }

    fn prepare_ahead(&self) -> Duration {
        PREPARE_AHEAD
    }
}

/// Steps of the wall clock, from a `TFD_TIMER_CANCEL_ON_SET` timerfd.
#[cfg(target_os = "linux")]
mod steps {
    use std::sync::OnceLock;

    use rustix::io::Errno;
    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    use tokio::sync::Notify;

    /// Arms `fd` for an absolute instant far away: only a step wakes it.
    fn arm(fd: &rustix::fd::OwnedFd) -> rustix::io::Result<()> {
        let far = Itimerspec {
            it_interval: Timespec { tv_sec: 0, tv_nsec: 0 },
            // 2200-01-01T00:00:00Z.
            it_value: Timespec { tv_sec: 7_258_118_400, tv_nsec: 0 },
        };
        timerfd_settime(fd, TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET, &far)
            .map(|_| ())
    }

    /// Notified on every step; `None` if the watch could not be set up.
    pub(super) fn watch() -> Option<&'static Notify> {
        static WATCH: OnceLock<Option<&'static Notify>> = OnceLock::new();
        *WATCH.get_or_init(|| {
            let fd = timerfd_create(TimerfdClockId::Realtime, TimerfdFlags::CLOEXEC).ok()?;
            arm(&fd).ok()?;
            let stepped: &'static Notify = Box::leak(Box::new(Notify::new()));
            std::thread::Builder::new()
                .name("rota-clock-steps".into())
                .spawn(move || loop {
                    let mut expirations = [0u8; 8];
                    match rustix::io::read(&fd, &mut expirations) {
                        Err(Errno::INTR) => {}
                        Err(Errno::CANCELED) | Ok(_) => {
                            stepped.notify_waiters();
                            if arm(&fd).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                })
                .ok()?;
            Some(stepped)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The one test on real time: a sleep longer than `MAX_SLEEP` on the
    /// system clock neither wakes before its deadline nor long after it.
    #[tokio::test]
    async fn a_long_system_sleep_ends_at_its_deadline() {
        #[cfg(target_os = "linux")]
        assert!(steps::watch().is_some(), "the clock-step watch could not be set up");
        let start = std::time::Instant::now();
        let deadline = Timestamp::now() + SignedDuration::from_millis(1200);
        SystemClock.sleep_until(deadline).await;
        assert!(Timestamp::now() >= deadline, "woke before the deadline");
        assert!(start.elapsed() < Duration::from_millis(1700), "woke {:?} late", start.elapsed());
    }
}
