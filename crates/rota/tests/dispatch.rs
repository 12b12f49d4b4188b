//! Fires prepared ahead of their instant (`Clock::prepare_ahead`): they
//! never start early, and a change made between the preparation and the
//! instant (pause, remove, update, a run that ends) is honoured. Each test
//! runs on a manual clock that allows a lead, like the system clock does.
//! With a few tasks the scheduler prepares about 1 ms ahead, so the tests
//! stop the clock half a millisecond before an instant (`EARLY`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use rota::clock::{BoxFuture, Clock, ManualClock};
use rota::{
    DefaultScheduler, DefaultTask, FuncHandler, MemoryStore, MisfirePolicy, Scheduler,
    SchedulerConfig, TaskBuilder, TaskHandler,
};

const T0: &str = "2026-12-04T10:00:00Z";
const LEAD: Duration = Duration::from_millis(100);
/// How long before an instant the tests look: inside the lead.
const EARLY: u64 = 500;

/// A manual clock that lets the scheduler prepare fires `LEAD` ahead.
#[derive(Debug, Clone)]
struct LeadClock(ManualClock);

impl Clock for LeadClock {
    fn now(&self) -> Timestamp {
        self.0.now()
    }

    fn sleep_until(&self, deadline: Timestamp) -> BoxFuture<'static, ()> {
        self.0.sleep_until(deadline)
    }

    fn prepare_ahead(&self) -> Duration {
        LEAD
    }
}

struct Harness {
    clock: ManualClock,
    sched: DefaultScheduler,
}

fn harness() -> Harness {
    let clock = ManualClock::new(T0.parse().unwrap());
    let sched = SchedulerConfig::new()
        .store(Arc::new(MemoryStore::new()))
        .clock(Arc::new(LeadClock(clock.clone())))
        .time_zone(TimeZone::UTC)
        .build()
        .unwrap();
    Harness { clock, sched }
}

/// Lets every other task run until all are idle (paused time auto-advances).
async fn settle() {
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Harness {
    /// Moves the clock by `us` microseconds and lets the scheduler react.
    async fn advance_us(&self, us: u64) {
        self.clock.advance(Duration::from_micros(us));
        settle().await;
    }
}

/// Every call: (scheduled instant, the clock when the handler started).
type Calls = Arc<Mutex<Vec<(Timestamp, Timestamp)>>>;

fn recorder(name: &str, clock: &ManualClock) -> (Arc<dyn TaskHandler>, Calls) {
    let calls: Calls = Arc::default();
    let c = calls.clone();
    let clock = clock.clone();
    let h = FuncHandler::new(name, move |ctx| {
        c.lock().unwrap().push((ctx.scheduled_at(), clock.now()));
        std::future::ready(Ok(()))
    });
    (h, calls)
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_prepared_fire_waits_for_its_instant() {
    let h = harness();
    let (handler, calls) = recorder("tick", &h.clock);
    h.sched.add(DefaultTask::new("tick", "", "* * * * * *", handler)).await.unwrap();
    h.sched.start().await.unwrap();
    h.advance_us(1_000_000 - EARLY).await;
    // Prepared (the task's next fire moved on), not started.
    assert_eq!(h.sched.task_stats("tick").unwrap().next_run_at, Some(ts("2026-12-04T10:00:02Z")));
    assert!(calls.lock().unwrap().is_empty(), "started early");
    h.advance_us(EARLY - 1).await;
    assert!(calls.lock().unwrap().is_empty(), "started 1 µs early");
    h.advance_us(1).await;
    let got = calls.lock().unwrap().clone();
    assert_eq!(got, [(ts("2026-12-04T10:00:01Z"), ts("2026-12-04T10:00:01Z"))]);
    h.advance_us(1_000_000).await;
    assert_eq!(calls.lock().unwrap().len(), 2);
    assert_eq!(h.sched.task_stats("tick").unwrap().run_count, 2);
}

/// Pauses between the preparation and the instant, resumes 5 s later.
async fn pause_in_the_lead(policy: MisfirePolicy) -> (Vec<Timestamp>, i64) {
    let h = harness();
    let (handler, calls) = recorder("p", &h.clock);
    let task = TaskBuilder::new("p", "", "*/10 * * * * *", handler).misfire(policy).build();
    h.sched.add(task).await.unwrap();
    h.sched.start().await.unwrap();
    h.advance_us(10_000_000 - EARLY).await; // 10:00:10 prepared
    h.sched.pause().await.unwrap();
    h.advance_us(5_000_000 + EARLY).await; // 10:00:15
    assert!(calls.lock().unwrap().is_empty(), "a prepared fire ran while paused");
    h.sched.resume().await.unwrap();
    settle().await;
    h.advance_us(5_000_000).await; // 10:00:20 runs as usual
    let got = calls.lock().unwrap().iter().map(|(at, _)| *at).collect();
    (got, h.sched.task_stats("p").unwrap().missed_fires)
}

#[tokio::test(start_paused = true)]
async fn a_fire_prepared_before_a_pause_is_missed_under_the_misfire_policy() {
    let (got, missed) = pause_in_the_lead(MisfirePolicy::Skip).await;
    assert_eq!(got, [ts("2026-12-04T10:00:20Z")]);
    assert_eq!(missed, 1);
    let (got, missed) = pause_in_the_lead(MisfirePolicy::RunOnce).await;
    assert_eq!(got, [ts("2026-12-04T10:00:10Z"), ts("2026-12-04T10:00:20Z")]);
    assert_eq!(missed, 0);
}

#[tokio::test(start_paused = true)]
async fn a_task_removed_after_its_fire_was_prepared_does_not_run() {
    let h = harness();
    let (handler, calls) = recorder("gone", &h.clock);
    h.sched.add(DefaultTask::new("gone", "", "* * * * * *", handler)).await.unwrap();
    let (other, other_calls) = recorder("stays", &h.clock);
    h.sched.add(DefaultTask::new("stays", "", "* * * * * *", other)).await.unwrap();
    h.sched.start().await.unwrap();
    h.advance_us(1_000_000 - EARLY).await;
    h.sched.remove("gone").await.unwrap();
    h.advance_us(EARLY).await;
    h.advance_us(1_000_000).await;
    h.advance_us(1_000_000).await;
    assert!(calls.lock().unwrap().is_empty());
    // The other fires of that instant ran.
    assert_eq!(other_calls.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_task_removed_and_added_again_after_the_preparation_fires_once() {
    let h = harness();
    let (old, old_calls) = recorder("old", &h.clock);
    h.sched.add(DefaultTask::new("r", "", "* * * * * *", old)).await.unwrap();
    h.sched.start().await.unwrap();
    h.advance_us(1_000_000 - EARLY).await; // 10:00:01 prepared for the first "r"
    h.sched.remove("r").await.unwrap();
    let (new, new_calls) = recorder("new", &h.clock);
    h.sched.add(DefaultTask::new("r", "", "* * * * * *", new)).await.unwrap();
    h.advance_us(EARLY).await;
    assert!(old_calls.lock().unwrap().is_empty());
    let got: Vec<Timestamp> = new_calls.lock().unwrap().iter().map(|(at, _)| *at).collect();
    assert_eq!(got, [ts("2026-12-04T10:00:01Z")]);
    // Its run count and overlap accounting are its own: the next fire runs.
    h.sched.wait_idle().await;
    h.advance_us(1_000_000).await;
    assert_eq!(new_calls.lock().unwrap().len(), 2);
    assert_eq!(h.sched.task_stats("r").unwrap().run_count, 2);
    assert_eq!(h.sched.task_stats("r").unwrap().skipped_fires, 0);
}

#[tokio::test(start_paused = true)]
async fn an_update_after_the_preparation_decides_the_fire() {
    let h = harness();
    let (old, old_calls) = recorder("old", &h.clock);
    h.sched.add(DefaultTask::new("u", "", "* * * * * *", old)).await.unwrap();
    h.sched.start().await.unwrap();
    h.advance_us(1_000_000 - EARLY).await; // 10:00:01 prepared with the old handler
                                           // Same schedule, new handler: the fire runs, with the new handler.
    let (new, new_calls) = recorder("new", &h.clock);
    h.sched.update(DefaultTask::new("u", "", "* * * * * *", new)).await.unwrap();
    h.advance_us(EARLY).await;
    assert!(old_calls.lock().unwrap().is_empty());
    assert_eq!(new_calls.lock().unwrap().len(), 1);
    // A schedule without the prepared instant: that fire does not run.
    h.advance_us(1_000_000 - EARLY).await; // 10:00:02 prepared
    let (hourly, hourly_calls) = recorder("hourly", &h.clock);
    h.sched.update(DefaultTask::new("u", "", "0 0 * * * *", hourly)).await.unwrap();
    h.advance_us(3_000_000 + EARLY).await;
    assert_eq!(new_calls.lock().unwrap().len(), 1);
    assert!(hourly_calls.lock().unwrap().is_empty());
    assert_eq!(h.sched.task_stats("u").unwrap().next_run_at, Some(ts("2026-12-04T11:00:00Z")));
}

#[tokio::test(start_paused = true)]
async fn a_run_that_ends_before_the_instant_does_not_make_it_skip() {
    let h = harness();
    let release = Arc::new(tokio::sync::Notify::new());
    let calls: Calls = Arc::default();
    let (r, c, clock) = (release.clone(), calls.clone(), h.clock.clone());
    let handler = FuncHandler::new("long", move |ctx| {
        let (r, c, clock) = (r.clone(), c.clone(), clock.clone());
        async move {
            c.lock().unwrap().push((ctx.scheduled_at(), clock.now()));
            if ctx.scheduled_at() == ts("2026-12-04T10:00:01Z") {
                r.notified().await;
            }
            Ok(())
        }
    });
    h.sched.add(DefaultTask::new("long", "", "* * * * * *", handler)).await.unwrap();
    h.sched.start().await.unwrap();
    h.advance_us(1_000_000).await; // 10:00:01 starts and keeps going
    h.advance_us(1_000_000 - EARLY).await; // 10:00:02 prepared while it still runs
    release.notify_one();
    settle().await;
    h.advance_us(EARLY).await; // 10:00:02: the first run has ended
    let got: Vec<Timestamp> = calls.lock().unwrap().iter().map(|(at, _)| *at).collect();
    assert_eq!(got, [ts("2026-12-04T10:00:01Z"), ts("2026-12-04T10:00:02Z")]);
    assert_eq!(h.sched.stats().skipped_fires, 0);
    // And one still running at the instant is skipped, as without a lead.
    let release2 = Arc::new(tokio::sync::Notify::new());
    let r2 = release2.clone();
    let slow = FuncHandler::new("slow", move |_ctx| {
        let r2 = r2.clone();
        async move {
            r2.notified().await;
            Ok(())
        }
    });
    h.sched.add(DefaultTask::new("slow", "", "* * * * * *", slow)).await.unwrap();
    h.advance_us(1_000_000).await; // 10:00:03 starts "slow"
    h.advance_us(1_000_000).await; // 10:00:04: still going, skipped
    assert_eq!(h.sched.task_stats("slow").unwrap().skipped_fires, 1);
    release2.notify_one();
    settle().await;
}

/// A batch big enough for the runners on blocking threads: 300 fires share
/// an instant. Real (short) sleeps: those runners watch the clock from OS
/// threads, which tokio's paused time does not drive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_batch_starts_together_at_its_instant_and_never_early() {
    let h = harness();
    let calls: Calls = Arc::default();
    for i in 0..300 {
        let c = calls.clone();
        let clock = h.clock.clone();
        let handler = FuncHandler::new(format!("h{i}"), move |ctx| {
            c.lock().unwrap().push((ctx.scheduled_at(), clock.now()));
            std::future::ready(Ok(()))
        });
        h.sched.add(DefaultTask::new(format!("t{i}"), "", "0 * * * * *", handler)).await.unwrap();
    }
    h.sched.start().await.unwrap();
    h.clock.advance(Duration::from_micros(60_000_000 - EARLY)); // all prepared
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(calls.lock().unwrap().is_empty(), "fires started before their instant");
    h.clock.advance(Duration::from_micros(EARLY)); // 10:01:00
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while calls.lock().unwrap().len() < 300 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = calls.lock().unwrap().clone();
    assert_eq!(got.len(), 300);
    let at = ts("2026-12-04T10:01:00Z");
    assert!(got.iter().all(|&(s, started)| s == at && started == at), "{got:?}");
    h.sched.wait_idle().await;
    assert_eq!(h.sched.stats().total_runs, 300);
}
