//! Many tasks on the manual clock: every task fires exactly at its own
//! instants, tasks with equal definitions stay independent, and a removed
//! task never fires again, also when its slot and ID are reused.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use rota::clock::{Clock, ManualClock};
use rota::{
    DefaultScheduler, DefaultTask, FuncHandler, MemoryStore, Scheduler, SchedulerConfig, Task,
};

const N: usize = 20_000;
const SCHEDULES: [&str; 4] = ["* * * * * *", "*/2 * * * * *", "@every 3s", "0 * * * * *"];

struct Counts {
    runs: Vec<AtomicU32>,
    /// Fires whose scheduled instant was not a whole second, or later than
    /// the clock when they started.
    wrong: Mutex<Vec<(usize, Timestamp)>>,
}

fn handler(i: usize, counts: &Arc<Counts>, clock: &ManualClock) -> Arc<dyn rota::TaskHandler> {
    let counts = counts.clone();
    let clock = clock.clone();
    FuncHandler::new(format!("h{i}"), move |ctx| {
        counts.runs[i].fetch_add(1, Relaxed);
        let at = ctx.scheduled_at();
        if at.subsec_nanosecond() != 0 || at > clock.now() {
            counts.wrong.lock().unwrap().push((i, at));
        }
        std::future::ready(Ok(()))
    })
}

fn total(c: &Counts) -> u64 {
    c.runs.iter().map(|r| u64::from(r.load(Relaxed))).sum()
}

/// Moves the clock one second at a time, waiting each time until the runs
/// due by then have all been counted.
async fn step(clock: &ManualClock, sched: &DefaultScheduler, c: &Counts, secs: u32, want: u64) {
    for _ in 0..secs {
        clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for _ in 0..20_000 {
        if total(c) >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sched.wait_idle().await;
    assert_eq!(total(c), want, "runs counted");
}

#[tokio::test(start_paused = true)]
async fn twenty_thousand_tasks_fire_exactly_and_removed_ones_never_again() {
    let clock = ManualClock::new("2026-12-04T10:00:00Z".parse().unwrap());
    let sched = SchedulerConfig::new()
        .store(Arc::new(MemoryStore::new()))
        .clock(Arc::new(clock.clone()))
        .time_zone(TimeZone::UTC)
        .build()
        .unwrap();
    let counts = Arc::new(Counts {
        runs: (0..2 * N).map(|_| AtomicU32::new(0)).collect(),
        wrong: Mutex::default(),
    });
    for i in 0..N {
        let h = handler(i, &counts, &clock);
        sched.add(DefaultTask::new(format!("t{i}"), "same", SCHEDULES[i % 4], h)).await.unwrap();
    }
    sched.start().await.unwrap();

    // 10:00:06: each second (6), even seconds (3), every 3 s from the add (2),
    // each minute (0).
    let per = [6, 3, 2, 0];
    step(&clock, &sched, &counts, 6, (N / 4 * (6 + 3 + 2)) as u64).await;
    for (i, r) in counts.runs.iter().take(N).enumerate() {
        assert_eq!(r.load(Relaxed), per[i % 4], "task t{i} ({})", SCHEDULES[i % 4]);
    }

    // Every other every-second task goes; half of those come back under the
    // same ID with a new handler (so its own counter) and a new schedule.
    let removed: Vec<usize> = (0..N).step_by(8).collect();
    for &i in &removed {
        sched.remove(&format!("t{i}")).await.unwrap();
    }
    for &i in removed.iter().step_by(2) {
        let h = handler(N + i, &counts, &clock);
        sched.add(DefaultTask::new(format!("t{i}"), "back", "*/2 * * * * *", h)).await.unwrap();
    }
    assert_eq!(sched.get_all().len(), N - removed.len() / 2);
    assert_eq!(sched.get("t16").unwrap().description(), "back");
    assert_eq!(sched.get("t4").unwrap().description(), "same");
    assert!(sched.get("t8").is_err(), "t8 was removed and not added back");

    // To 10:00:10: each second +4, even seconds +2, every 3 s +1 (10:00:09),
    // the re-added every-2-s tasks +2, the removed ones nothing.
    let before: Vec<u32> = counts.runs.iter().map(|r| r.load(Relaxed)).collect();
    let staying_each_second = (N / 4 - removed.len()) as u64;
    let want = total(&counts)
        + staying_each_second * 4
        + (N / 4) as u64 * 2
        + (N / 4) as u64
        + (removed.len().div_ceil(2)) as u64 * 2;
    step(&clock, &sched, &counts, 4, want).await;
    for &i in &removed {
        assert_eq!(counts.runs[i].load(Relaxed), before[i], "removed task t{i} fired");
    }
    for &i in removed.iter().step_by(2) {
        assert_eq!(counts.runs[N + i].load(Relaxed), 2, "re-added task t{i}");
    }
    assert!(counts.wrong.lock().unwrap().is_empty(), "{:?}", &counts.wrong.lock().unwrap()[..1]);
    let stats = sched.stats();
    assert_eq!(stats.total_runs as u64, total(&counts));
    assert_eq!(stats.total_failed, 0);
    sched.stop().await.unwrap();
}
