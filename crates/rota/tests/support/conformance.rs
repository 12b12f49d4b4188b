//! One conformance suite for every [`Store`]: written once, run against the
//! memory store and each backend (see `stores.rs`).
//!
//! Each check takes a fresh, empty store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota::{
    DefaultTask, ErrorKind, ExecutionQuery, ExecutionStatus, FuncHandler, MisfirePolicy,
    OverlapPolicy, Store, Task, TaskBuilder, TaskExecution, TaskHandler,
};

fn handler() -> Arc<dyn TaskHandler> {
    FuncHandler::new("h", |_ctx| async { Ok(()) })
}

/// A task with every field set to something other than its default.
pub fn full_task(name: &str) -> DefaultTask {
    let mut t = TaskBuilder::new(name, "a description", "0 */5 * * * *", handler())
        .timeout(Duration::from_secs(30))
        .max_retries(3)
        .retry_delay(Duration::from_millis(1500))
        .tag("team", "ops")
        .tag("tier", "1")
        .time_zone("Europe/London")
        .overlap(OverlapPolicy::Allow)
        .misfire(MisfirePolicy::RunAll { max: 4 })
        .misfire_grace(Duration::from_secs(7))
        .build();
    t.increment_run_count();
    t.increment_run_count();
    t.increment_failed_count();
    t.set_next_run_at(Some("2026-12-04T10:05:00Z".parse().unwrap()));
    t
}

pub fn task(name: &str, tags: &[(&str, &str)], enabled: bool) -> DefaultTask {
    let mut b = TaskBuilder::new(name, "", "* * * * *", handler()).enabled(enabled);
    for (k, v) in tags {
        b = b.tag(*k, *v);
    }
    b.build()
}

fn json(t: &DefaultTask) -> serde_json::Value {
    serde_json::from_slice(&t.serialize().unwrap()).unwrap()
}

pub async fn save_and_get_round_trip_every_field(s: Arc<dyn Store>) {
    let t = full_task("full");
    s.save(&t).await.unwrap();
    let back = s.get("full").await.unwrap();
    assert_eq!(json(&back), json(&t));
    assert!(back.handler().is_none(), "handlers are not stored");
    assert_eq!(back.handler_name(), "h");
    assert_eq!(back.misfire(), MisfirePolicy::RunAll { max: 4 });
    assert_eq!(back.time_zone(), Some("Europe/London"));
}

pub async fn run_state_saves_leave_removed_and_redefined_tasks_alone(s: Arc<dyn Store>) {
    let t = task("rs", &[], true);
    s.save(&t).await.unwrap();
    // The run state of the stored definition is written.
    let mut ran = t.clone();
    ran.increment_run_count();
    ran.set_next_run_at(Some("2026-12-04T10:06:00Z".parse().unwrap()));
    s.save_run_state(std::slice::from_ref(&ran)).await.unwrap();
    let back = s.get("rs").await.unwrap();
    assert_eq!(back.run_count(), 1);
    assert_eq!(back.next_run_at(), ran.next_run_at());
    // Another process redefines it: run state of the older definition is
    // not written over the newer one.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let mut newer = t.clone();
    newer.set_schedule("0 * * * * *");
    assert_ne!(newer.updated_at(), t.updated_at());
    s.save(&newer).await.unwrap();
    let mut stale = ran.clone();
    stale.increment_run_count();
    s.save_run_state(&[stale]).await.unwrap();
    let back = s.get("rs").await.unwrap();
    assert_eq!(back.schedule(), "0 * * * * *");
    assert_eq!(back.run_count(), 0);
    // Another process removes it: run state does not bring it back.
    s.delete("rs").await.unwrap();
    s.save_run_state(&[ran]).await.unwrap();
    assert_eq!(s.get("rs").await.unwrap_err().kind(), ErrorKind::TaskNotFound);
    assert_eq!(s.stats().await.unwrap().total_tasks, 0);
}

pub async fn missing_tasks_are_not_found(s: Arc<dyn Store>) {
    assert_eq!(s.get("nope").await.unwrap_err().kind(), ErrorKind::TaskNotFound);
    assert_eq!(s.delete("nope").await.unwrap_err().kind(), ErrorKind::TaskNotFound);
}

pub async fn save_replaces_and_delete_and_clear_remove(s: Arc<dyn Store>) {
    let mut t = task("a", &[], true);
    s.save(&t).await.unwrap();
    t.set_schedule("0 0 * * *");
    t.increment_run_count();
    s.save(&t).await.unwrap();
    let back = s.get("a").await.unwrap();
    assert_eq!((back.schedule(), back.run_count()), ("0 0 * * *", 1));
    s.save(&task("b", &[], true)).await.unwrap();
    s.save(&task("c", &[], true)).await.unwrap();
    let ids: Vec<String> = s.get_all().await.unwrap().iter().map(|t| t.id().to_string()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    s.delete("b").await.unwrap();
    assert_eq!(s.get_all().await.unwrap().len(), 2);
    s.clear().await.unwrap();
    assert!(s.get_all().await.unwrap().is_empty());
}

pub async fn save_batch_is_all_or_nothing(s: Arc<dyn Store>) {
    let good: Vec<DefaultTask> = (0..5).map(|i| task(&format!("g{i}"), &[], true)).collect();
    s.save_batch(&good).await.unwrap();
    assert_eq!(s.get_all().await.unwrap().len(), 5);
    let mut bad = vec![task("x1", &[], true), task("x2", &[], true)];
    let mut broken = task("x3", &[], true);
    broken.set_id("");
    bad.push(broken);
    assert!(s.save_batch(&bad).await.is_err());
    assert_eq!(s.get("x1").await.unwrap_err().kind(), ErrorKind::TaskNotFound);
    assert_eq!(s.get_all().await.unwrap().len(), 5);
}

pub async fn get_by_tags_matches_every_tag(s: Arc<dyn Store>) {
    s.save(&task("a", &[("team", "ops"), ("env", "prod")], true)).await.unwrap();
    s.save(&task("b", &[("team", "ops"), ("env", "dev")], true)).await.unwrap();
    s.save(&task("c", &[("team", "web"), ("env", "prod")], true)).await.unwrap();
    s.save(&task("d", &[], true)).await.unwrap();
    let q = |pairs: &[(&str, &str)]| {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
    };
    let ids = |v: Vec<DefaultTask>| v.iter().map(|t| t.id().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(s.get_by_tags(&q(&[("team", "ops")])).await.unwrap()), ["a", "b"]);
    assert_eq!(ids(s.get_by_tags(&q(&[("team", "ops"), ("env", "prod")])).await.unwrap()), ["a"]);
    assert_eq!(ids(s.get_by_tags(&q(&[("env", "prod")])).await.unwrap()), ["a", "c"]);
    assert!(s.get_by_tags(&q(&[("team", "ops"), ("env", "qa")])).await.unwrap().is_empty());
    assert_eq!(s.get_by_tags(&q(&[])).await.unwrap().len(), 4);
}

pub async fn stats_count_tasks(s: Arc<dyn Store>) {
    let empty = s.stats().await.unwrap();
    assert_eq!((empty.total_tasks, empty.enabled_tasks), (0, 0));
    s.save(&task("a", &[], true)).await.unwrap();
    s.save(&task("b", &[], false)).await.unwrap();
    s.save(&task("c", &[], true)).await.unwrap();
    let st = s.stats().await.unwrap();
    assert_eq!((st.total_tasks, st.enabled_tasks), (3, 2));
    assert!(st.last_sync.is_some());
}

pub async fn concurrent_writers_lose_nothing(s: Arc<dyn Store>) {
    let mut joins = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        joins.push(tokio::spawn(async move {
            for i in 0..50 {
                s.save(&task(&format!("w{w}-{i}"), &[], true)).await.unwrap();
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    assert_eq!(s.get_all().await.unwrap().len(), 400);
    assert_eq!(s.stats().await.unwrap().total_tasks, 400);
}

pub async fn a_hundred_thousand_tasks_save_and_read_back(s: Arc<dyn Store>) {
    let n = 100_000;
    let all: Vec<DefaultTask> =
        (0..n).map(|i| task(&format!("t{i:06}"), &[], i % 3 != 0)).collect();
    for chunk in all.chunks(10_000) {
        s.save_batch(chunk).await.unwrap();
    }
    let back = s.get_all().await.unwrap();
    assert_eq!(back.len(), n);
    assert_eq!(back[0].id(), "t000000");
    assert_eq!(back[n - 1].id(), "t099999");
    let st = s.stats().await.unwrap();
    assert_eq!((st.total_tasks, st.enabled_tasks), (n as i64, (n - n.div_ceil(3)) as i64));
    assert_eq!(s.get("t054321").await.unwrap().schedule(), "* * * * *");
}

pub async fn close_then_use_is_a_clear_error(s: Arc<dyn Store>) {
    s.save(&task("a", &[], true)).await.unwrap();
    s.close().await.unwrap();
    let e = s.get("a").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StoreNotInitialized, "{e}");
    assert!(e.to_string().contains("closed"), "{e}");
    assert_eq!(
        s.save(&task("b", &[], true)).await.unwrap_err().kind(),
        ErrorKind::StoreNotInitialized
    );
}

fn exec(task: &str, status: ExecutionStatus, at: i64) -> TaskExecution {
    let t = Timestamp::from_second(1_800_000_000 + at).unwrap();
    TaskExecution {
        task_id: task.into(),
        node_id: "n1".into(),
        status,
        scheduled_at: t,
        started_at: t,
        ended_at: Some(t + jiff::SignedDuration::from_millis(250)),
        error: if status == ExecutionStatus::Failed { "boom".into() } else { String::new() },
        attempts: 2,
        duration: Duration::from_millis(250),
        output: "line 1\nline 2".into(),
    }
}

pub async fn execution_history_queries(s: Arc<dyn Store>) {
    s.record_execution(&exec("a", ExecutionStatus::Completed, 1)).await.unwrap();
    s.record_executions(&[
        exec("a", ExecutionStatus::Failed, 2),
        exec("b", ExecutionStatus::Completed, 3),
        exec("a", ExecutionStatus::Completed, 4),
        exec("b", ExecutionStatus::Missed, 5),
    ])
    .await
    .unwrap();
    let a = s.executions(&ExecutionQuery::task("a")).await.unwrap();
    let secs: Vec<i64> = a.iter().map(|e| e.started_at.as_second() - 1_800_000_000).collect();
    assert_eq!(secs, [4, 2, 1], "newest first");
    assert_eq!(a[1], exec("a", ExecutionStatus::Failed, 2), "every field round-trips");
    let failed =
        s.executions(&ExecutionQuery::task("a").status(ExecutionStatus::Failed)).await.unwrap();
    assert_eq!(failed.len(), 1);
    let completed =
        s.executions(&ExecutionQuery::default().status(ExecutionStatus::Completed)).await.unwrap();
    assert_eq!(completed.len(), 3);
    let limited = s.executions(&ExecutionQuery::default().limit(2)).await.unwrap();
    let secs: Vec<i64> = limited.iter().map(|e| e.started_at.as_second() - 1_800_000_000).collect();
    assert_eq!(secs, [5, 4]);
}

/// The store must have been opened with a retention of at most 10 records per task.
pub async fn execution_history_is_bounded(s: Arc<dyn Store>) {
    let batch: Vec<TaskExecution> =
        (0..25).map(|i| exec("a", ExecutionStatus::Completed, i)).collect();
    s.record_executions(&batch).await.unwrap();
    for i in 25..30 {
        s.record_execution(&exec("a", ExecutionStatus::Completed, i)).await.unwrap();
    }
    s.record_execution(&exec("b", ExecutionStatus::Completed, 100)).await.unwrap();
    let a = s.executions(&ExecutionQuery::task("a").limit(1000)).await.unwrap();
    let secs: Vec<i64> = a.iter().map(|e| e.started_at.as_second() - 1_800_000_000).collect();
    assert_eq!(secs, (20..30).rev().collect::<Vec<_>>(), "the newest 10 are kept");
    assert_eq!(s.executions(&ExecutionQuery::task("b")).await.unwrap().len(), 1);
}

/// Generates one `#[tokio::test]` per check for a store made by `$make`
/// (an async block giving `Arc<dyn Store>`; give each call a fresh store).
#[macro_export]
macro_rules! store_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::support::conformance as c;
            #[allow(unused_imports)]
            use super::*;

            macro_rules! check {
                ($check:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $check() {
                        let make = $make;
                        c::$check(make().await).await;
                    }
                };
            }
            check!(save_and_get_round_trip_every_field);
            check!(missing_tasks_are_not_found);
            check!(run_state_saves_leave_removed_and_redefined_tasks_alone);
            check!(save_replaces_and_delete_and_clear_remove);
            check!(save_batch_is_all_or_nothing);
            check!(get_by_tags_matches_every_tag);
            check!(stats_count_tasks);
            check!(concurrent_writers_lose_nothing);
            check!(a_hundred_thousand_tasks_save_and_read_back);
            check!(close_then_use_is_a_clear_error);
            check!(execution_history_queries);
            check!(execution_history_is_bounded);
        }
    };
}
