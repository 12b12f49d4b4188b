//! The Redis store: the conformance suite, plus what only Redis has (key
//! prefixes, corrupt values, an unreachable server, the tag index).
//!
//! Needs a server at `redis://127.0.0.1:6379/0`, or `ROTA_TEST_REDIS_URL`.
//! Each store gets a prefix of its own (`rota-test:<pid>:<n>:`), and its keys
//! are deleted when the test drops it.
#![cfg(feature = "redis")]

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use rota::{
    DefaultTask, ErrorKind, ExecutionQuery, ExecutionStatus, LoadReport, RedisOptions, RedisStore,
    Retention, Store, StoreStats, Task, TaskExecution,
};
use support::conformance::task;

fn url() -> String {
    std::env::var("ROTA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Retention used by every store under test: 10 records per task.
fn test_retention() -> Retention {
    Retention { max_per_task: 10, ..Retention::default() }
}

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("rota-test:{}:{}:", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn raw() -> ::redis::Connection {
    ::redis::Client::open(url()).unwrap().get_connection().unwrap()
}

/// Deletes every key under `prefix`.
fn delete_keys(prefix: &str) {
    let Ok(mut con) = ::redis::Client::open(url()).and_then(|c| c.get_connection()) else {
        return;
    };
    let mut cursor = 0u64;
    loop {
        let Ok((next, keys)): ::redis::RedisResult<(u64, Vec<Vec<u8>>)> = ::redis::cmd("SCAN")
            .cursor_arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
        else {
            return;
        };
        if !keys.is_empty() {
            let _ = ::redis::cmd("DEL").arg(&keys).exec(&mut con);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Keys under `prefix`.
fn count_keys(prefix: &str) -> usize {
    let mut con = raw();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg(format!("{prefix}*")).query(&mut con).unwrap();
    keys.len()
}

async fn open_with(prefix: &str, retention: Retention) -> RedisStore {
    let options = RedisOptions { prefix: prefix.to_string(), retention, ..RedisOptions::default() };
    RedisStore::connect_with(&url(), options).await.unwrap()
}

/// A store whose keys are deleted when it is dropped (the conformance checks
/// take the store and drop it at their end, passed or failed).
#[derive(Debug)]
struct Scoped(RedisStore);

impl Scoped {
    async fn new() -> Self {
        Scoped(open_with(&unique_prefix(), test_retention()).await)
    }
}

impl Drop for Scoped {
    fn drop(&mut self) {
        delete_keys(self.0.prefix());
    }
}

impl std::ops::Deref for Scoped {
    type Target = RedisStore;
    fn deref(&self) -> &RedisStore {
        &self.0
    }
}

#[async_trait]
impl Store for Scoped {
    async fn save(&self, task: &DefaultTask) -> rota::Result<()> {
        self.0.save(task).await
    }
    async fn get(&self, id: &str) -> rota::Result<DefaultTask> {
        self.0.get(id).await
    }
    async fn get_all(&self) -> rota::Result<Vec<DefaultTask>> {
        self.0.get_all().await
    }
    async fn delete(&self, id: &str) -> rota::Result<()> {
        self.0.delete(id).await
    }
    async fn clear(&self) -> rota::Result<()> {
        self.0.clear().await
    }
    async fn save_batch(&self, tasks: &[DefaultTask]) -> rota::Result<()> {
        self.0.save_batch(tasks).await
    }
    async fn save_run_state(&self, tasks: &[DefaultTask]) -> rota::Result<()> {
        self.0.save_run_state(tasks).await
    }
    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> rota::Result<Vec<DefaultTask>> {
        self.0.get_by_tags(tags).await
    }
    async fn stats(&self) -> rota::Result<StoreStats> {
        self.0.stats().await
    }
    async fn close(&self) -> rota::Result<()> {
        self.0.close().await
    }
    async fn record_execution(&self, execution: &TaskExecution) -> rota::Result<()> {
        self.0.record_execution(execution).await
    }
    async fn executions(&self, query: &ExecutionQuery) -> rota::Result<Vec<TaskExecution>> {
        self.0.executions(query).await
    }
    async fn load_all(&self) -> rota::Result<LoadReport> {
        self.0.load_all().await
    }
    async fn record_executions(&self, batch: &[TaskExecution]) -> rota::Result<()> {
        self.0.record_executions(batch).await
    }
}

store_conformance!(redis, || async { Arc::new(Scoped::new().await) as Arc<dyn Store> });

fn ids(v: &[DefaultTask]) -> Vec<&str> {
    v.iter().map(|t| t.id()).collect()
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn run(task: &str, at: &str) -> TaskExecution {
    let t: Timestamp = at.parse().unwrap();
    TaskExecution {
        task_id: task.into(),
        node_id: "n1".into(),
        status: ExecutionStatus::Completed,
        scheduled_at: t,
        started_at: t,
        ended_at: Some(t),
        error: String::new(),
        attempts: 1,
        duration: Duration::ZERO,
        output: String::new(),
    }
}

#[tokio::test]
async fn prefixes_keep_stores_apart() {
    let a = Scoped::new().await;
    // A prefix that extends a's: a's clear must still leave it alone.
    let b_prefix = format!("{}nested:", a.prefix());
    let b = open_with(&b_prefix, test_retention()).await;
    let c = Scoped::new().await;

    a.save(&task("x", &[("team", "ops")], true)).await.unwrap();
    b.save(&task("x", &[("team", "web")], false)).await.unwrap();
    b.save(&task("y", &[("team", "web")], true)).await.unwrap();
    c.save(&task("z", &[], true)).await.unwrap();
    a.record_execution(&run("x", "2027-01-01T00:00:00Z")).await.unwrap();
    b.record_execution(&run("x", "2027-01-01T00:00:01Z")).await.unwrap();

    assert_eq!(ids(&a.get_all().await.unwrap()), ["x"]);
    assert_eq!(ids(&b.get_all().await.unwrap()), ["x", "y"]);
    assert_eq!(ids(&c.get_all().await.unwrap()), ["z"]);
    assert_eq!(a.get("x").await.unwrap().tags()["team"], "ops");
    assert!(a.get_by_tags(&tags(&[("team", "web")])).await.unwrap().is_empty());
    assert_eq!(ids(&b.get_by_tags(&tags(&[("team", "web")])).await.unwrap()), ["x", "y"]);
    let (sa, sb) = (a.stats().await.unwrap(), b.stats().await.unwrap());
    assert_eq!((sa.total_tasks, sa.enabled_tasks), (1, 1));
    assert_eq!((sb.total_tasks, sb.enabled_tasks), (2, 1));

    a.clear().await.unwrap();
    assert!(a.get_all().await.unwrap().is_empty());
    assert!(a.executions(&ExecutionQuery::default()).await.unwrap().is_empty());
    assert_eq!(a.stats().await.unwrap().total_tasks, 0);
    assert_eq!(ids(&b.get_all().await.unwrap()), ["x", "y"]);
    assert_eq!(ids(&b.get_by_tags(&tags(&[("team", "web")])).await.unwrap()), ["x", "y"]);
    assert_eq!(b.executions(&ExecutionQuery::task("x")).await.unwrap().len(), 1);
    assert_eq!(ids(&c.get_all().await.unwrap()), ["z"]);
    // Only a's meta hash (last_sync) is left under a's own layout.
    let mut con = raw();
    let exists: bool = ::redis::cmd("EXISTS").arg(b.task_key("x")).query(&mut con).unwrap();
    assert!(exists);
    let a_keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{}*", a.prefix()))
        .query::<Vec<String>>(&mut con)
        .unwrap()
        .into_iter()
        .filter(|k| !k.starts_with(&b_prefix))
        .collect();
    assert_eq!(a_keys, [format!("{}meta", a.prefix())]);

    b.clear().await.unwrap();
    delete_keys(&b_prefix);
}

#[tokio::test]
async fn a_corrupt_value_affects_only_its_task() {
    let s = Scoped::new().await;
    for id in ["a", "b", "c"] {
        s.save(&task(id, &[], true)).await.unwrap();
    }
    let mut con = raw();
    ::redis::cmd("SET").arg(s.task_key("b")).arg("{not json").exec(&mut con).unwrap();
    // An ID listed with no value behind it.
    ::redis::cmd("SADD").arg(format!("{}tasks", s.prefix())).arg("ghost").exec(&mut con).unwrap();

    let report = s.load_all().await.unwrap();
    assert_eq!(ids(&report.tasks), ["a", "c"]);
    let bad: Vec<&str> = report.errors.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(bad, ["b", "ghost"]);
    assert!(report.errors[0].reason.contains("JSON"), "{}", report.errors[0]);
    assert!(report.errors[1].reason.contains("missing"), "{}", report.errors[1]);

    let e = s.get("b").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("\"b\""), "{e}");
    let e = s.get_all().await.unwrap_err();
    assert!(e.to_string().contains("\"b\""), "{e}");
    assert_eq!(s.get("ghost").await.unwrap_err().kind(), ErrorKind::TaskNotFound);

    // The corrupt task can still be replaced, or deleted.
    s.save(&task("b", &[("team", "ops")], true)).await.unwrap();
    assert_eq!(s.get("b").await.unwrap().id(), "b");
    s.delete("b").await.unwrap();
    assert_eq!(s.get("b").await.unwrap_err().kind(), ErrorKind::TaskNotFound);
}

#[tokio::test]
async fn an_unreachable_server_fails_quickly_naming_it() {
    let started = Instant::now();
    let e = RedisStore::connect("redis://127.0.0.1:1").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");

    // A server that never answers: the connect timeout bounds the wait.
    let started = Instant::now();
    let options =
        RedisOptions { connect_timeout: Duration::from_millis(500), ..RedisOptions::default() };
    let e = RedisStore::connect_with("redis://10.255.255.1:6379", options).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(e.to_string().contains("10.255.255.1:6379"), "{e}");

    let e = RedisStore::connect("http://nope").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    let e = RedisStore::connect("redis://:secret@127.0.0.1:1").await.unwrap_err();
    assert!(!e.to_string().contains("secret"), "{e}");
}

#[tokio::test]
async fn the_tag_index_follows_tag_changes() {
    let s = Scoped::new().await;
    s.save(&task("a", &[("team", "ops"), ("env", "prod")], true)).await.unwrap();
    s.save(&task("b", &[("team", "ops")], true)).await.unwrap();
    assert_eq!(ids(&s.get_by_tags(&tags(&[("team", "ops")])).await.unwrap()), ["a", "b"]);

    s.save(&task("a", &[("team", "web")], true)).await.unwrap();
    assert_eq!(ids(&s.get_by_tags(&tags(&[("team", "ops")])).await.unwrap()), ["b"]);
    assert!(s.get_by_tags(&tags(&[("env", "prod")])).await.unwrap().is_empty());
    assert_eq!(ids(&s.get_by_tags(&tags(&[("team", "web")])).await.unwrap()), ["a"]);
    // The old tag's set is gone from the server, not just filtered out.
    let mut con = raw();
    let n: i64 =
        ::redis::cmd("SCARD").arg(format!("{}tag:3:env=prod", s.prefix())).query(&mut con).unwrap();
    assert_eq!(n, 0);

    // The same through save_batch, and through delete.
    s.save_batch(&[task("b", &[("tier", "1")], true)]).await.unwrap();
    assert!(s.get_by_tags(&tags(&[("team", "ops")])).await.unwrap().is_empty());
    assert_eq!(ids(&s.get_by_tags(&tags(&[("tier", "1")])).await.unwrap()), ["b"]);
    s.save(&task("b", &[], true)).await.unwrap();
    assert!(s.get_by_tags(&tags(&[("tier", "1")])).await.unwrap().is_empty());
    s.delete("a").await.unwrap();
    assert!(s.get_by_tags(&tags(&[("team", "web")])).await.unwrap().is_empty());

    // A batch that names a task twice: the last copy wins, index included.
    s.save_batch(&[task("d", &[("x", "1")], true), task("d", &[("x", "2")], false)]).await.unwrap();
    assert!(s.get_by_tags(&tags(&[("x", "1")])).await.unwrap().is_empty());
    assert_eq!(ids(&s.get_by_tags(&tags(&[("x", "2")])).await.unwrap()), ["d"]);
    assert_eq!(s.stats().await.unwrap().enabled_tasks, 1, "b only");

    // An `=` inside a key or a value cannot make two tags collide.
    s.save(&task("k", &[("a=b", "c")], true)).await.unwrap();
    s.save(&task("v", &[("a", "b=c")], true)).await.unwrap();
    assert_eq!(ids(&s.get_by_tags(&tags(&[("a=b", "c")])).await.unwrap()), ["k"]);
    assert_eq!(ids(&s.get_by_tags(&tags(&[("a", "b=c")])).await.unwrap()), ["v"]);
    s.clear().await.unwrap();
    assert_eq!(count_keys(s.prefix()), 1, "only meta is left");
}

#[tokio::test]
async fn history_age_limit_trims_old_runs() {
    let retention = Retention { max_age: Some(Duration::from_secs(60)), ..test_retention() };
    let s = Scoped(open_with(&unique_prefix(), retention).await);
    s.record_executions(&[
        run("a", "2027-01-01T00:00:00Z"),
        run("b", "2027-01-01T00:00:10.5Z"),
        run("a", "2027-01-01T00:00:30Z"),
    ])
    .await
    .unwrap();
    assert_eq!(s.executions(&ExecutionQuery::default()).await.unwrap().len(), 3);
    // 60 s after 00:00:10.5 is 00:01:10.5: at 00:01:10.25 b's run is kept.
    s.record_execution(&run("a", "2027-01-01T00:01:10.25Z")).await.unwrap();
    let all = s.executions(&ExecutionQuery::default()).await.unwrap();
    let secs: Vec<String> = all.iter().map(|e| e.started_at.to_string()).collect();
    assert_eq!(secs, ["2027-01-01T00:01:10.25Z", "2027-01-01T00:00:30Z", "2027-01-01T00:00:10.5Z"]);
    assert_eq!(s.executions(&ExecutionQuery::task("a")).await.unwrap().len(), 2);
    s.record_execution(&run("a", "2027-01-01T00:01:11Z")).await.unwrap();
    let all = s.executions(&ExecutionQuery::default()).await.unwrap();
    assert_eq!(all.len(), 3, "b's run is now too old");
    assert_eq!(s.executions(&ExecutionQuery::task("a")).await.unwrap().len(), 3);
    // The lists written expire when idle for max_age.
    let mut con = raw();
    let ttl: i64 =
        ::redis::cmd("PTTL").arg(format!("{}exec:a", s.prefix())).query(&mut con).unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    // b's own list was not written since: trimmed on b's next write.
    assert_eq!(s.executions(&ExecutionQuery::task("b")).await.unwrap().len(), 1);
    assert!(s.executions(&ExecutionQuery::default().limit(0)).await.unwrap().is_empty());
}

#[tokio::test]
async fn status_queries_page_through_the_global_list() {
    let s = Scoped::new().await;
    let mut batch = Vec::new();
    for i in 0..2500 {
        let mut e = run(&format!("t{}", i % 50), "2027-01-01T00:00:00Z");
        e.started_at += jiff::SignedDuration::from_secs(i);
        if i % 1000 == 7 {
            e.status = ExecutionStatus::Failed;
        }
        batch.push(e);
    }
    s.record_executions(&batch).await.unwrap();
    let failed =
        s.executions(&ExecutionQuery::default().status(ExecutionStatus::Failed)).await.unwrap();
    let at: Vec<i64> = failed.iter().map(|e| e.started_at.as_second() % 10_000).collect();
    assert_eq!(failed.len(), 3, "{at:?}");
    assert!(failed.windows(2).all(|w| w[0].started_at > w[1].started_at));
    // Each task keeps its newest 10.
    assert_eq!(s.executions(&ExecutionQuery::task("t7").limit(100)).await.unwrap().len(), 10);
}
