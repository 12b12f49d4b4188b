//! The scheduler's behaviour, each on the manual clock and tokio's paused time:
//! exact and fast, no real sleeping.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use rota::clock::{Clock, ManualClock};
use rota::{
    DefaultScheduler, DefaultTask, ErrorKind, Event, ExecutionQuery, ExecutionStatus, FuncHandler,
    MemoryStore, MisfirePolicy, OverlapPolicy, Scheduler, SchedulerConfig, Status, Store, Task,
    TaskBuilder, TaskHandler,
};

const T0: &str = "2026-12-04T10:00:00Z";

struct Harness {
    clock: ManualClock,
    sched: DefaultScheduler,
    store: Arc<MemoryStore>,
    events: Arc<Mutex<Vec<Event>>>,
}

fn harness_with(config: impl FnOnce(SchedulerConfig) -> SchedulerConfig) -> Harness {
    let clock = ManualClock::new(T0.parse().unwrap());
    let store = Arc::new(MemoryStore::new());
    let sched = config(
        SchedulerConfig::new()
            .store(store.clone())
            .clock(Arc::new(clock.clone()))
            .time_zone(TimeZone::UTC),
    )
    .build()
    .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    sched.on_event(move |e| ev.lock().unwrap().push(e.clone()));
    Harness { clock, sched, store, events }
}

fn harness() -> Harness {
    harness_with(|c| c)
}

/// Lets every other task run until all are idle (paused time auto-advances).
async fn settle() {
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Harness {
    async fn tick(&self, secs: u64) {
        for _ in 0..secs {
            self.clock.advance(Duration::from_secs(1));
            settle().await;
        }
    }

    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.lock().unwrap().iter().filter(|e| f(e)).count()
    }
}

/// A handler that records the (scheduled instant, attempt) of every call.
type Calls = Arc<Mutex<Vec<(Timestamp, u32)>>>;

fn recorder(name: &str) -> (Arc<dyn TaskHandler>, Calls) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let h = FuncHandler::new(name, move |ctx| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push((ctx.scheduled_at(), ctx.attempt()));
            Ok(())
        }
    });
    (h, calls)
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn fires_at_each_scheduled_instant() {
    let h = harness();
    let (handler, calls) = recorder("tick");
    h.sched.add(DefaultTask::new("tick", "", "*/2 * * * * *", handler)).await.unwrap();
    h.sched.start().await.unwrap();
    h.tick(6).await;
    let got: Vec<String> = calls.lock().unwrap().iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(got, ["2026-12-04T10:00:02Z", "2026-12-04T10:00:04Z", "2026-12-04T10:00:06Z"]);
    let stats = h.sched.task_stats("tick").unwrap();
    assert_eq!(stats.run_count, 3);
    assert_eq!(stats.next_run_at, Some(ts("2026-12-04T10:00:08Z")));
    assert_eq!(stats.average_latency, Duration::ZERO);
    // Run state reaches the store after each run.
    assert_eq!(h.store.get("tick").await.unwrap().run_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_the_handler() {
    let h = harness();
    let saw_cancel = Arc::new(AtomicU32::new(0));
    let s = saw_cancel.clone();
    let handler = FuncHandler::new("slow", move |ctx| {
        let s = s.clone();
        async move {
            ctx.cancelled().await;
            s.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let task = TaskBuilder::new("slow", "", "0 0 0 1 1 *", handler)
        .timeout(Duration::from_secs(5))
        .build();
    h.sched.add(task).await.unwrap();
    let clock = h.clock.clone();
    let run = tokio::spawn({
        let s = h.sched.clone();
        async move { s.run_now("slow").await }
    });
    settle().await;
    clock.advance(Duration::from_secs(5));
    let err = run.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TaskExecutionTimeout, "{err}");
    assert_eq!(saw_cancel.load(Ordering::SeqCst), 1);
    assert_eq!(h.count(|e| matches!(e, Event::TaskTimedOut { .. })), 1);
    let t = h.sched.get("slow").unwrap();
    assert_eq!(t.failed_count(), 1);
    assert!(t.last_error().contains("timed out"), "{}", t.last_error());
}

#[tokio::test(start_paused = true)]
async fn retries_belong_to_the_fire_they_retry() {
    let h = harness();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let handler = FuncHandler::new("flaky", move |ctx| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push((ctx.scheduled_at(), ctx.attempt()));
            if ctx.attempt() < 3 {
                Err(format!("boom {}", ctx.attempt()).into())
            } else {
                Ok(())
            }
        }
    });
    let task = TaskBuilder::new("flaky", "", "0 * * * * *", handler)
        .max_retries(3)
        .retry_delay(Duration::from_secs(10))
        .build();
    h.sched.add(task).await.unwrap();
    h.sched.start().await.unwrap();
    h.tick(60).await; // fire at 10:01:00
    h.tick(20).await; // two retries, 10 s apart
    let got = calls.lock().unwrap().clone();
    let fire = ts("2026-12-04T10:01:00Z");
    assert_eq!(got, vec![(fire, 1), (fire, 2), (fire, 3)]);
    let t = h.sched.get("flaky").unwrap();
    assert_eq!((t.run_count(), t.failed_count(), t.retry_count()), (1, 0, 2));
    assert_eq!(t.last_error(), "");
    assert_eq!(h.count(|e| matches!(e, Event::TaskRetried { .. })), 2);
    assert_eq!(h.count(|e| matches!(e, Event::TaskSucceeded { .. })), 1);
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fail_with_the_last_error() {
    let h = harness();
    let handler = FuncHandler::new("bad", |ctx| async move {
        Err(format!("attempt {} failed", ctx.attempt()).into())
    });
    let task = TaskBuilder::new("bad", "", "0 0 0 1 1 *", handler).max_retries(2).build();
    h.sched.add(task).await.unwrap();
    let err = h.sched.run_now("bad").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TaskMaxRetriesExceeded);
    assert!(err.to_string().contains("attempt 3 failed"), "{err}");
    let t = h.sched.get("bad").unwrap();
    assert_eq!((t.run_count(), t.failed_count(), t.retry_count()), (1, 1, 2));
    assert_eq!(t.last_error(), "attempt 3 failed");
    let hist = h.sched.executions(&ExecutionQuery::task("bad")).await.unwrap();
    assert_eq!(hist.len(), 1);
    assert_eq!((hist[0].status, hist[0].attempts), (ExecutionStatus::Failed, 3));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_a_failed_run_and_the_scheduler_goes_on() {
    let h = harness();
    let handler = FuncHandler::new("panics", |_ctx| async move {
        if true {
            panic!("kaboom");
        }
        Ok(())
    });
    let (ok, calls) = recorder("ok");
    h.sched.add(DefaultTask::new("panics", "", "* * * * * *", handler)).await.unwrap();
    h.sched.add(DefaultTask::new("ok", "", "* * * * * *", ok)).await.unwrap();
    h.sched.start().await.unwrap();
    h.tick(3).await;
    let t = h.sched.get("panics").unwrap();
    assert_eq!((t.run_count(), t.failed_count()), (3, 3));
    assert!(t.last_error().contains("kaboom"), "{}", t.last_error());
    assert_eq!(calls.lock().unwrap().len(), 3);
    assert_eq!(h.sched.status().status, Status::Running);
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_bounds_running_handlers_and_the_wait_shows_in_latency() {
    let h = harness_with(|c| c.max_concurrency(2));
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    for i in 0..4 {
        let (r, p, clock) = (running.clone(), peak.clone(), h.clock.clone());
        let handler = FuncHandler::new(format!("job{i}"), move |_ctx| {
            let (r, p, clock) = (r.clone(), p.clone(), clock.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                let until = clock.now() + jiff::SignedDuration::from_secs(3);
                while clock.now() < until {
                    clock.sleep_until(until).await;
                }
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        });
        h.sched.add(DefaultTask::new(format!("job{i}"), "", "0 * * * * *", handler)).await.unwrap();
    }
    h.sched.start().await.unwrap();
    h.tick(60).await;
    assert_eq!(running.load(Ordering::SeqCst), 2);
    h.tick(10).await;
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    let latencies: Vec<Duration> =
        (0..4).map(|i| h.sched.task_stats(&format!("job{i}")).unwrap().average_latency).collect();
    let mut sorted = latencies.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [Duration::ZERO, Duration::ZERO, Duration::from_secs(3), Duration::from_secs(3)]
    );
}

#[tokio::test(start_paused = true)]
async fn overlapping_fires_are_skipped_by_default_and_allowed_on_request() {
    for (policy, expect_runs, expect_skipped) in
        [(OverlapPolicy::Skip, 2, 3), (OverlapPolicy::Allow, 5, 0)]
    {
        let h = harness();
        let clock = h.clock.clone();
        let started = Arc::new(AtomicU32::new(0));
        let s = started.clone();
        let handler = FuncHandler::new("long", move |_ctx| {
            let (clock, s) = (clock.clone(), s.clone());
            async move {
                s.fetch_add(1, Ordering::SeqCst);
                let until = clock.now() + jiff::SignedDuration::from_millis(3500);
                while clock.now() < until {
                    clock.sleep_until(until).await;
                }
                Ok(())
            }
        });
        let task = TaskBuilder::new("long", "", "* * * * * *", handler).overlap(policy).build();
        h.sched.add(task).await.unwrap();
        h.sched.start().await.unwrap();
        // Fires at :01..:05; a run takes 3.5 s: with Skip, :02-:04 are skipped, :05 runs.
        for _ in 0..11 {
            h.clock.advance(Duration::from_millis(500));
            settle().await;
        }
        assert_eq!(started.load(Ordering::SeqCst), expect_runs, "{policy:?}");
        let stats = h.sched.task_stats("long").unwrap();
        assert_eq!(stats.skipped_fires, expect_skipped, "{policy:?}");
        assert_eq!(h.count(|e| matches!(e, Event::TaskSkipped { .. })), expect_skipped as usize);
    }
}

async fn pause_resume_with(policy: MisfirePolicy) -> (Vec<String>, i64) {
    let h = harness();
    let (handler, calls) = recorder("m");
    let task = TaskBuilder::new("m", "", "*/10 * * * * *", handler).misfire(policy).build();
    h.sched.add(task).await.unwrap();
    h.sched.start().await.unwrap();
    h.tick(10).await; // 10:00:10 runs
    h.sched.pause().await.unwrap();
    h.tick(45).await; // 20, 30, 40, 50 missed while paused
    assert_eq!(calls.lock().unwrap().len(), 1, "no fires while paused");
    h.sched.resume().await.unwrap();
    settle().await;
    h.tick(5).await; // 11:00 runs normally
    let got = calls.lock().unwrap().iter().map(|(t, _)| t.to_string()).collect();
    (got, h.sched.task_stats("m").unwrap().missed_fires)
}

#[tokio::test(start_paused = true)]
async fn resume_follows_the_misfire_policy() {
    let (runs, missed) = pause_resume_with(MisfirePolicy::Skip).await;
    assert_eq!(runs, ["2026-12-04T10:00:10Z", "2026-12-04T10:01:00Z"]);
    assert_eq!(missed, 4);
    let (runs, missed) = pause_resume_with(MisfirePolicy::RunOnce).await;
    assert_eq!(runs, ["2026-12-04T10:00:10Z", "2026-12-04T10:00:50Z", "2026-12-04T10:01:00Z"]);
    assert_eq!(missed, 3);
    let (runs, missed) = pause_resume_with(MisfirePolicy::RunAll { max: 2 }).await;
    assert_eq!(
        runs,
        [
            "2026-12-04T10:00:10Z",
            "2026-12-04T10:00:40Z",
            "2026-12-04T10:00:50Z",
            "2026-12-04T10:01:00Z"
        ]
    );
    assert_eq!(missed, 2);
}

#[tokio::test(start_paused = true)]
async fn a_fire_still_within_its_grace_at_resume_runs_whatever_the_policy() {
    for policy in [MisfirePolicy::Skip, MisfirePolicy::RunOnce] {
        let h = harness();
        let (handler, calls) = recorder("g");
        let task = TaskBuilder::new("g", "", "*/10 * * * * *", handler)
            .misfire(policy)
            .misfire_grace(Duration::from_secs(3))
            .build();
        h.sched.add(task).await.unwrap();
        h.sched.start().await.unwrap();
        h.tick(10).await; // 10:00:10 runs
        h.sched.pause().await.unwrap();
        h.tick(32).await; // resumed at 10:00:42: 20 and 30 are late, 40 is 2 s late
        h.sched.resume().await.unwrap();
        settle().await;
        let got: Vec<String> = calls.lock().unwrap().iter().map(|(t, _)| t.to_string()).collect();
        assert_eq!(got, ["2026-12-04T10:00:10Z", "2026-12-04T10:00:40Z"], "{policy:?}");
        assert_eq!(h.sched.task_stats("g").unwrap().missed_fires, 2, "{policy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn stop_waits_for_running_handlers_then_cancels_after_the_grace() {
    let h = harness_with(|c| c.stop_grace(Duration::from_secs(2)));
    let finished = Arc::new(AtomicU32::new(0));
    let cancelled = Arc::new(AtomicU32::new(0));
    let (f, c) = (finished.clone(), cancelled.clone());
    let handler = FuncHandler::new("stubborn", move |ctx| {
        let (f, c) = (f.clone(), c.clone());
        async move {
            tokio::select! {
                _ = ctx.cancelled() => { c.fetch_add(1, Ordering::SeqCst); }
                _ = tokio::time::sleep(Duration::from_secs(3600)) => { f.fetch_add(1, Ordering::SeqCst); }
            }
            Ok(())
        }
    });
    h.sched.add(DefaultTask::new("stubborn", "", "* * * * * *", handler)).await.unwrap();
    h.sched.start().await.unwrap();
    h.tick(1).await;
    h.sched.stop().await.unwrap();
    assert_eq!((finished.load(Ordering::SeqCst), cancelled.load(Ordering::SeqCst)), (0, 1));
    assert_eq!(h.sched.status().status, Status::Stopped);

    // A quick handler finishes within the grace and is not cancelled.
    let h = harness();
    let quick_done = Arc::new(AtomicU32::new(0));
    let q = quick_done.clone();
    let handler = FuncHandler::new("quick", move |ctx| {
        let q = q.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(!ctx.is_cancelled());
            q.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    });
    h.sched.add(DefaultTask::new("quick", "", "* * * * * *", handler)).await.unwrap();
    h.sched.start().await.unwrap();
    h.clock.advance(Duration::from_secs(1));
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    h.sched.stop().await.unwrap();
    assert_eq!(quick_done.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn state_errors_are_the_seeds() {
    let h = harness();
    assert_eq!(h.sched.stop().await.unwrap_err().kind(), ErrorKind::SchedulerAlreadyStopped);
    assert_eq!(h.sched.pause().await.unwrap_err().kind(), ErrorKind::SchedulerNotRunning);
    assert_eq!(h.sched.resume().await.unwrap_err().kind(), ErrorKind::SchedulerNotPaused);
    h.sched.start().await.unwrap();
    assert_eq!(h.sched.start().await.unwrap_err().kind(), ErrorKind::SchedulerAlreadyRunning);
    assert_eq!(h.sched.resume().await.unwrap_err().kind(), ErrorKind::SchedulerNotPaused);
    h.sched.pause().await.unwrap();
    assert_eq!(h.sched.pause().await.unwrap_err().kind(), ErrorKind::SchedulerNotRunning);
    assert_eq!(h.sched.start().await.unwrap_err().kind(), ErrorKind::SchedulerAlreadyRunning);
    h.sched.resume().await.unwrap();
    h.sched.stop().await.unwrap();
    let kinds: Vec<&str> = h
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            Event::SchedulerStarted => "started",
            Event::SchedulerPaused => "paused",
            Event::SchedulerResumed => "resumed",
            Event::SchedulerStopped => "stopped",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["started", "paused", "resumed", "stopped"]);
}

#[tokio::test(start_paused = true)]
async fn run_now_works_stopped_and_refuses_disabled_tasks() {
    let h = harness();
    let (handler, calls) = recorder("manual");
    h.sched.add(DefaultTask::new("manual", "", "0 0 0 1 1 *", handler)).await.unwrap();
    h.sched.run_now("manual").await.unwrap();
    assert_eq!(calls.lock().unwrap()[0], (ts(T0), 1));
    h.sched.disable("manual").await.unwrap();
    assert_eq!(h.sched.run_now("manual").await.unwrap_err().kind(), ErrorKind::TaskDisabled);
    assert_eq!(h.sched.run_now("nope").await.unwrap_err().kind(), ErrorKind::TaskNotFound);
    h.sched.enable("manual").await.unwrap();
    let (other, other_calls) = recorder("other");
    h.sched.add(DefaultTask::new("other", "", "0 0 0 1 1 *", other)).await.unwrap();
    h.sched.run_all().await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 2);
    assert_eq!(other_calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn add_remove_update_while_running_take_effect_at_once() {
    let h = harness();
    let (handler, calls) = recorder("t");
    h.sched.start().await.unwrap();
    h.sched.add(DefaultTask::new("t", "", "* * * * * *", handler.clone())).await.unwrap();
    let dup =
        h.sched.add(DefaultTask::new("t", "", "* * * * * *", handler.clone())).await.unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::TaskAlreadyExists);
    h.tick(2).await;
    assert_eq!(calls.lock().unwrap().len(), 2);
    // Update: every 10 s from the next fire on.
    h.sched.update(DefaultTask::new("t", "", "*/10 * * * * *", handler.clone())).await.unwrap();
    h.tick(8).await;
    let got: Vec<String> = calls.lock().unwrap().iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(got, ["2026-12-04T10:00:01Z", "2026-12-04T10:00:02Z", "2026-12-04T10:00:10Z"]);
    h.sched.remove("t").await.unwrap();
    h.tick(30).await;
    assert_eq!(calls.lock().unwrap().len(), 3);
    assert_eq!(h.sched.remove("t").await.unwrap_err().kind(), ErrorKind::TaskNotFound);
    assert_eq!(h.store.get("t").await.unwrap_err().kind(), ErrorKind::TaskNotFound);
}

#[tokio::test(start_paused = true)]
async fn invalid_tasks_are_refused_with_the_precise_error() {
    let h = harness();
    let (handler, _) = recorder("x");
    let e =
        h.sched.add(DefaultTask::new("x", "", "0 61 * * *", handler.clone())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidCronExpression);
    assert!(e.to_string().contains("task \"x\"") && e.to_string().contains("hour: 61"), "{e}");
    let e = h.sched.add(DefaultTask::new("", "", "* * * * *", handler.clone())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TaskNameRequired);
    let e = h.sched.add(rota::at("25:00", handler.clone())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidTimeFormat);
    assert!(e.to_string().contains("hour 25 is out of range 0-23"), "{e}");
    let e = h.sched.add(rota::every(0, handler.clone())).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSchedule);
    let e = h.sched.add(rota::daily(9, 75, handler.clone())).await.unwrap_err();
    assert!(e.to_string().contains("minute: 75 is out of range"), "{e}");
    let mut t = DefaultTask::new("noid", "", "* * * * *", handler.clone());
    t.set_id("");
    assert_eq!(h.sched.add(t).await.unwrap_err().kind(), ErrorKind::TaskIdRequired);
    let mut t = DefaultTask::new("nohandler", "", "* * * * *", handler.clone());
    t.deserialize(br#"{"id":"nohandler","name":"nohandler","schedule":"* * * * *","handler":"gone","enabled":true,"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","last_run_at":null,"next_run_at":null}"#).unwrap();
    assert_eq!(h.sched.add(t).await.unwrap_err().kind(), ErrorKind::TaskHandlerRequired);
    assert!(h.sched.get_all().is_empty(), "nothing invalid was added");
}

#[tokio::test(start_paused = true)]
async fn clock_jumps_fire_once_under_the_policy_and_never_twice() {
    let h = harness();
    let (handler, calls) = recorder("j");
    let task =
        TaskBuilder::new("j", "", "0 * * * * *", handler).misfire(MisfirePolicy::RunOnce).build();
    h.sched.add(task).await.unwrap();
    h.sched.start().await.unwrap();
    h.tick(60).await; // 10:01:00
                      // Suspend for an hour, then resume: one catch-up run, no flood.
    h.clock.advance(Duration::from_secs(3600));
    settle().await;
    let n = calls.lock().unwrap().len();
    assert_eq!(n, 2);
    assert_eq!(calls.lock().unwrap()[1].0, ts("2026-12-04T11:01:00Z"));
    assert_eq!(h.sched.task_stats("j").unwrap().missed_fires, 59);
    // Step back ten minutes: the fires of 10:52..11:01 already ran or were missed; none repeats.
    h.clock.set(ts("2026-12-04T10:51:30Z"));
    settle().await;
    h.tick(660).await; // back to 11:02:30
    let got: Vec<Timestamp> = calls.lock().unwrap().iter().map(|(t, _)| *t).collect();
    assert_eq!(
        got,
        [ts("2026-12-04T10:01:00Z"), ts("2026-12-04T11:01:00Z"), ts("2026-12-04T11:02:00Z")]
    );
    let mut sorted = got.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len());
}

#[tokio::test(start_paused = true)]
async fn every_interval_counts_from_the_tasks_start() {
    let h = harness();
    h.clock.advance(Duration::from_secs(7)); // start at 10:00:07
    let (handler, calls) = recorder("iv");
    h.sched.add(DefaultTask::new("iv", "", "@every 90s", handler)).await.unwrap();
    h.sched.start().await.unwrap();
    h.tick(180).await;
    let got: Vec<String> = calls.lock().unwrap().iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(got, ["2026-12-04T10:01:37Z", "2026-12-04T10:03:07Z"]);
}

#[tokio::test(start_paused = true)]
async fn stats_and_monitor_see_runs_failures_and_latency() {
    let h = harness_with(|c| c.max_concurrency(1));
    let (ok, _) = recorder("ok");
    let bad = FuncHandler::new("bad", |_ctx| async { Err("nope".into()) });
    h.sched.add(DefaultTask::new("ok", "", "* * * * * *", ok)).await.unwrap();
    h.sched.add(DefaultTask::new("bad", "", "*/2 * * * * *", bad)).await.unwrap();
    h.sched.start().await.unwrap();
    h.tick(4).await;
    let s = h.sched.stats();
    assert_eq!((s.total_tasks, s.enabled_tasks, s.total_runs, s.total_failed), (2, 2, 6, 2));
    assert!((s.success_rate - 66.666).abs() < 0.01, "{}", s.success_rate);
    let m = h.sched.monitor().task_metrics("bad").unwrap();
    assert_eq!((m.total_executions, m.failed_runs), (2, 2));
    assert_eq!(m.last_error, "nope");
    let sm = h.sched.monitor().scheduler_metrics();
    assert_eq!((sm.total_tasks, sm.total_executions, sm.failed_runs), (2, 6, 2));
}

#[tokio::test(start_paused = true)]
async fn the_seeds_json_round_trips() {
    let (handler, _) = recorder("json");
    let task = TaskBuilder::new("json", "d", "0 2 * * *", handler.clone())
        .timeout(Duration::from_secs(1800))
        .retry_delay(Duration::from_secs(300))
        .tag("type", "backup")
        .build();
    let bytes = task.serialize().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    for key in [
        "id",
        "name",
        "description",
        "schedule",
        "enabled",
        "created_at",
        "updated_at",
        "last_run_at",
        "next_run_at",
        "run_count",
        "failed_count",
        "last_error",
        "timeout",
        "retry_count",
        "retry_delay",
        "max_retries",
        "tags",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["timeout"], 1_800_000_000_000u64);
    assert_eq!(v["handler"], "json");
    let mut back = DefaultTask::new("other", "", "* * * * *", handler);
    back.deserialize(&bytes).unwrap();
    assert_eq!(
        (back.id(), back.schedule(), back.timeout()),
        ("json", "0 2 * * *", Duration::from_secs(1800))
    );
    assert!(back.handler().is_some(), "the handler of the same name is kept");
    assert_eq!(back.to_string(), "Task{ID: json, Name: json, Schedule: 0 2 * * *, Enabled: true}");
    let cloned = back.clone_task();
    assert_eq!(cloned.id(), "json");
}

#[tokio::test(start_paused = true)]
async fn convenience_constructors_make_the_expected_schedules() {
    let (h, _) = recorder("c");
    let clock = ManualClock::new(ts(T0));
    let next = |t: DefaultTask| {
        let s = t.parsed_schedule().unwrap();
        s.next_after(clock.now(), &TimeZone::UTC, clock.now()).unwrap().to_string()
    };
    assert_eq!(next(rota::every(15, h.clone())), "2026-12-04T10:15:00Z");
    assert_eq!(next(rota::every(120, h.clone())), "2026-12-04T12:00:00Z");
    assert_eq!(next(rota::every(7, h.clone())), "2026-12-04T10:07:00Z");
    assert_eq!(next(rota::every_hour(h.clone())), "2026-12-04T11:00:00Z");
    assert_eq!(next(rota::every_day(h.clone())), "2026-12-05T00:00:00Z");
    assert_eq!(next(rota::daily(9, 30, h.clone())), "2026-12-05T09:30:00Z");
    assert_eq!(next(rota::at("15:30", h.clone())), "2026-12-04T15:30:00Z");
    assert_eq!(next(rota::at("15:30:45", h.clone())), "2026-12-04T15:30:45Z");
    assert_eq!(next(rota::cron("0 0 2 * * *", h.clone())), "2026-12-05T02:00:00Z");
    for bad in ["1530", "15:3", "24:00", "12:60", "12:00:61", "aa:bb"] {
        assert_eq!(
            rota::at(bad, h.clone()).validate().unwrap_err().kind(),
            ErrorKind::InvalidTimeFormat,
            "{bad}"
        );
    }
    // Stable IDs derived from the name.
    assert_eq!(
        DefaultTask::new("Nightly backup", "", "@daily", h.clone()).id(),
        rota::task_id_for("Nightly backup")
    );
}

#[tokio::test(start_paused = true)]
async fn the_global_api_needs_init_and_never_panics() {
    // Before init (this test binary's only use of the global scheduler).
    for e in [
        rota::global::get_task("x").unwrap_err(),
        rota::global::get_scheduler_status().unwrap_err(),
        rota::global::start_scheduler().await.unwrap_err(),
        rota::global::run_now("x").await.unwrap_err(),
        rota::global::monitor().unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::StoreNotInitialized);
    }
    rota::global::init(Arc::new(MemoryStore::new()));
    let (handler, calls) = recorder("g");
    rota::global::add_task(DefaultTask::new("g", "", "0 0 0 1 1 *", handler)).await.unwrap();
    rota::global::run_now("g").await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!(rota::global::get_task_stats("g").unwrap().run_count, 1);
    assert_eq!(rota::global::get_all_tasks().unwrap().len(), 1);
    assert_eq!(rota::global::get_enabled_tasks().unwrap().len(), 1);
    rota::global::start_scheduler().await.unwrap();
    rota::global::pause_scheduler().await.unwrap();
    rota::global::resume_scheduler().await.unwrap();
    assert_eq!(rota::global::get_scheduler_status().unwrap().status, Status::Running);
    assert_eq!(rota::global::get_scheduler_stats().unwrap().total_runs, 1);
    assert!(rota::global::get_performance_metrics().unwrap().memory_usage > 0.0);
    rota::global::run_all().await.unwrap();
    rota::global::remove_task("g").await.unwrap();
    rota::global::stop_scheduler().await.unwrap();
}
