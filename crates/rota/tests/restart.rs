//! A scheduler restarted on the same store carries on where it stopped:
//! run state comes back, missed fires follow each task's misfire policy,
//! handlers are bound again by name, and tasks whose handler is unknown are
//! held intact. Each scenario runs on the memory store and on SQLite.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use rota::clock::ManualClock;
use rota::{
    DefaultScheduler, ExecutionQuery, ExecutionStatus, FuncHandler, HandlerRegistry, MisfirePolicy,
    Scheduler, SchedulerConfig, Store, Task, TaskBuilder, TaskHandler,
};

type Calls = Arc<Mutex<Vec<Timestamp>>>;

fn recorder(name: &str) -> (Arc<dyn TaskHandler>, Calls) {
    let calls: Calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let h = FuncHandler::new(name, move |ctx| {
        let c = c.clone();
        async move {
            c.lock().unwrap().push(ctx.scheduled_at());
            Ok(())
        }
    });
    (h, calls)
}

async fn settle() {
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn tick(clock: &ManualClock, secs: u64) {
    for _ in 0..secs {
        clock.advance(Duration::from_secs(1));
        settle().await;
    }
}

fn scheduler(
    store: Arc<dyn Store>,
    clock: &ManualClock,
    registry: HandlerRegistry,
) -> DefaultScheduler {
    SchedulerConfig::new()
        .store(store)
        .clock(Arc::new(clock.clone()))
        .time_zone(TimeZone::UTC)
        .registry(registry)
        .node_id("node-a")
        .build()
        .unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Runs a task every 10 s from 10:00:00 to 10:00:30 on a first scheduler,
/// stops it, moves the clock to 10:01:35, and starts a second scheduler on the
/// same store that knows the handler only by registry.
async fn restart_with(
    store: Arc<dyn Store>,
    policy: MisfirePolicy,
) -> (Calls, DefaultScheduler, ManualClock) {
    let clock = ManualClock::new(ts("2026-12-04T10:00:00Z"));
    let (h, calls) = recorder("job");
    let a = scheduler(store.clone(), &clock, HandlerRegistry::new());
    a.add(TaskBuilder::new("job", "", "*/10 * * * * *", h.clone()).misfire(policy).build())
        .await
        .unwrap();
    a.start().await.unwrap();
    tick(&clock, 30).await;
    a.stop().await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 3);
    assert_eq!(store.get("job").await.unwrap().run_count(), 3, "run state is in the store");
    clock.set(ts("2026-12-04T10:01:35Z"));
    let registry = HandlerRegistry::new();
    registry.register(h);
    let b = scheduler(store, &clock, registry);
    b.start().await.unwrap();
    settle().await;
    (calls, b, clock)
}

fn after(calls: &Calls, n: usize) -> Vec<String> {
    calls.lock().unwrap()[n..].iter().map(|t| t.to_string()).collect()
}

async fn misfire_policies_apply_after_downtime(make: impl Fn() -> Arc<dyn Store>) {
    // Missed while down: 10:00:40, :50, 10:01:00, :10, :20, :30.
    let (calls, b, clock) = restart_with(make(), MisfirePolicy::Skip).await;
    assert!(after(&calls, 3).is_empty());
    let st = b.task_stats("job").unwrap();
    assert_eq!((st.run_count, st.missed_fires), (3, 6));
    tick(&clock, 5).await;
    assert_eq!(after(&calls, 3), ["2026-12-04T10:01:40Z"]);
    assert_eq!(b.task_stats("job").unwrap().run_count, 4, "counts continue");
    let missed =
        b.executions(&ExecutionQuery::task("job").status(ExecutionStatus::Missed)).await.unwrap();
    assert_eq!(missed.len(), 1);
    assert!(missed[0].error.contains("6 missed fires"), "{}", missed[0].error);

    let (calls, b, _) = restart_with(make(), MisfirePolicy::RunOnce).await;
    assert_eq!(after(&calls, 3), ["2026-12-04T10:01:30Z"]);
    assert_eq!(b.task_stats("job").unwrap().missed_fires, 5);

    let (calls, b, _) = restart_with(make(), MisfirePolicy::RunAll { max: 3 }).await;
    assert_eq!(
        after(&calls, 3),
        ["2026-12-04T10:01:10Z", "2026-12-04T10:01:20Z", "2026-12-04T10:01:30Z"]
    );
    assert_eq!(b.task_stats("job").unwrap().missed_fires, 3);
    let runs = b
        .executions(&ExecutionQuery::task("job").status(ExecutionStatus::Completed))
        .await
        .unwrap();
    assert_eq!(runs.len(), 6);
    assert!(runs.iter().all(|e| e.node_id == "node-a" && e.attempts == 1));
}

async fn a_task_whose_handler_is_unknown_is_held_intact(make: impl Fn() -> Arc<dyn Store>) {
    let store = make();
    let clock = ManualClock::new(ts("2026-12-04T10:00:00Z"));
    let (h, calls) = recorder("mailer");
    let a = scheduler(store.clone(), &clock, HandlerRegistry::new());
    a.add(TaskBuilder::new("mail", "", "*/10 * * * * *", h.clone()).build()).await.unwrap();
    a.start().await.unwrap();
    tick(&clock, 10).await;
    a.stop().await.unwrap();

    let b = scheduler(store.clone(), &clock, HandlerRegistry::new());
    b.start().await.unwrap();
    let held = b.get("mail").unwrap();
    assert!(!held.enabled());
    assert!(held.last_error().contains("\"mailer\" is not registered"), "{}", held.last_error());
    assert_eq!(b.run_now("mail").await.unwrap_err().kind(), rota::ErrorKind::TaskDisabled);
    assert_eq!(b.enable("mail").await.unwrap_err().kind(), rota::ErrorKind::TaskHandlerRequired);
    tick(&clock, 20).await;
    assert_eq!(calls.lock().unwrap().len(), 1, "a held task does not fire");
    let stored = store.get("mail").await.unwrap();
    assert!(stored.enabled(), "the store keeps the task as it was");
    assert_eq!(stored.last_error(), "");
    assert_eq!(stored.run_count(), 1);

    b.register_handler(h).await.unwrap();
    let t = b.get("mail").unwrap();
    assert!(t.enabled());
    assert_eq!(t.last_error(), "");
    tick(&clock, 10).await;
    assert_eq!(calls.lock().unwrap().len(), 2, "it fires once its handler is registered");
    b.stop().await.unwrap();
}

async fn tasks_declared_in_code_take_their_run_state_from_the_store(
    make: impl Fn() -> Arc<dyn Store>,
) {
    let store = make();
    let clock = ManualClock::new(ts("2026-12-04T10:00:00Z"));
    let (h, calls) = recorder("decl");
    let task = || {
        TaskBuilder::new("decl", "", "*/10 * * * * *", h.clone())
            .misfire(MisfirePolicy::RunOnce)
            .build()
    };
    let a = scheduler(store.clone(), &clock, HandlerRegistry::new());
    a.add(task()).await.unwrap();
    a.start().await.unwrap();
    tick(&clock, 20).await;
    a.stop().await.unwrap();
    clock.advance(Duration::from_secs(60));
    // The seed's style: every process declares its tasks, then starts.
    let b = scheduler(store.clone(), &clock, HandlerRegistry::new());
    b.add(task()).await.unwrap();
    b.start().await.unwrap();
    settle().await;
    let t = b.get("decl").unwrap();
    assert_eq!(t.run_count(), 3, "2 runs before, 1 catch-up run");
    assert_eq!(calls.lock().unwrap().last().unwrap().to_string(), "2026-12-04T10:01:20Z");
    b.stop().await.unwrap();
}

mod memory {
    use super::*;
    use rota::MemoryStore;

    fn make() -> impl Fn() -> Arc<dyn Store> {
        || Arc::new(MemoryStore::new()) as Arc<dyn Store>
    }

    #[tokio::test(start_paused = true)]
    async fn misfire_policies_apply_after_downtime() {
        super::misfire_policies_apply_after_downtime(make()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_whose_handler_is_unknown_is_held_intact() {
        super::a_task_whose_handler_is_unknown_is_held_intact(make()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_declared_in_code_take_their_run_state_from_the_store() {
        super::tasks_declared_in_code_take_their_run_state_from_the_store(make()).await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use rota::SqliteStore;
    use std::sync::atomic::{AtomicU32, Ordering};

    static N: AtomicU32 = AtomicU32::new(0);

    /// Opens a fresh file per call; the same file is reopened by a second
    /// scheduler only through the returned Arc (the store outlives scheduler A).
    fn path() -> std::path::PathBuf {
        let n = N.fetch_add(1, Ordering::SeqCst);
        std::env::temp_dir().join(format!("rota-restart-{}-{n}.db", std::process::id()))
    }

    fn make() -> impl Fn() -> Arc<dyn Store> {
        || {
            let p = path();
            let _ = std::fs::remove_file(&p);
            let store = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(SqliteStore::open(&p))
                    .unwrap()
            })
            .join()
            .unwrap();
            Arc::new(store) as Arc<dyn Store>
        }
    }

    #[tokio::test(start_paused = true)]
    async fn misfire_policies_apply_after_downtime() {
        super::misfire_policies_apply_after_downtime(make()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_whose_handler_is_unknown_is_held_intact() {
        super::a_task_whose_handler_is_unknown_is_held_intact(make()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_declared_in_code_take_their_run_state_from_the_store() {
        super::tasks_declared_in_code_take_their_run_state_from_the_store(make()).await;
    }

    /// A real restart: the second scheduler opens the file anew.
    #[tokio::test(start_paused = true)]
    async fn a_new_process_on_the_same_file_carries_on() {
        let p = path();
        let clock = ManualClock::new(ts("2026-12-04T10:00:00Z"));
        let (h, calls) = recorder("job");
        {
            let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&p).await.unwrap());
            let a = scheduler(store.clone(), &clock, HandlerRegistry::new());
            a.add(TaskBuilder::new("job", "", "*/10 * * * * *", h.clone()).build()).await.unwrap();
            a.start().await.unwrap();
            tick(&clock, 30).await;
            a.stop().await.unwrap();
            store.close().await.unwrap();
        }
        clock.advance(Duration::from_secs(5));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&p).await.unwrap());
        let registry = HandlerRegistry::new();
        registry.register(h);
        let b = scheduler(store, &clock, registry);
        b.start().await.unwrap();
        tick(&clock, 10).await;
        let t = b.get("job").unwrap();
        assert_eq!(t.run_count(), 4);
        assert_eq!(calls.lock().unwrap().last().unwrap().to_string(), "2026-12-04T10:00:40Z");
        let hist = b.executions(&ExecutionQuery::task("job")).await.unwrap();
        assert_eq!(hist.len(), 4);
        b.stop().await.unwrap();
        let _ = std::fs::remove_file(&p);
    }
}
