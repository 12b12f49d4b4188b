//! The PostgreSQL store: the conformance suite, plus what only a shared SQL
//! database has (migration races, corrupt rows, newer schemas, unreachable
//! servers, a writer killed mid-write).
//!
//! Needs a server: `postgres://root@127.0.0.1:5432/test` unless
//! `ROTA_TEST_PG_URL` says otherwise (see `scripts/services.sh`). Each test
//! uses its own schema, `rota_test_<pid>_<n>`; schemas left by earlier runs
//! whose process is gone are dropped on the next run.

#![cfg(feature = "postgres")]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use rota::{
    DefaultTask, ErrorKind, ExecutionQuery, ExecutionStatus, PostgresOptions, PostgresStore,
    Retention, Store, Task, TaskExecution,
};
use support::conformance::task;

/// Retention used by every store under test: 10 records per task.
fn test_retention() -> Retention {
    Retention { max_per_task: 10, ..Retention::default() }
}

fn url() -> String {
    std::env::var("ROTA_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_string())
}

/// A schema no other test (or test process) uses.
fn fresh_schema() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("rota_test_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A plain connection, for poking at the tables behind the store's back.
async fn raw() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL (is it running? see scripts/services.sh)");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Drops the schemas (and roles) of earlier test processes that are gone
/// (once per process).
async fn drop_stale_schemas() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::AcqRel) || !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let gone = |name: &str| {
        let pid = name.split('_').nth(2).unwrap_or("");
        !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    };
    let c = raw().await;
    let roles = c
        .query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'rota\\_test\\_%'", &[])
        .await
        .unwrap();
    for row in roles {
        let name: String = row.get(0);
        if gone(&name) {
            let _ = c
                .batch_execute(&format!("DROP OWNED BY \"{name}\"; DROP ROLE IF EXISTS \"{name}\""))
                .await;
        }
    }
    let schemas = c
        .query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'rota\\_test\\_%'", &[])
        .await
        .unwrap();
    for row in schemas {
        let name: String = row.get(0);
        if gone(&name) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).await;
        }
    }
}

async fn drop_schema(schema: &str) {
    raw()
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
}

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: schema.to_string(),
        retention: test_retention(),
        ..Default::default()
    }
}

async fn open(schema: &str) -> PostgresStore {
    PostgresStore::connect_with(&url(), options(schema)).await.unwrap()
}

/// A store on a schema of its own.
async fn fresh() -> PostgresStore {
    drop_stale_schemas().await;
    open(&fresh_schema()).await
}

store_conformance!(postgres, || async { Arc::new(fresh().await) as Arc<dyn Store> });

fn ids(tasks: &[DefaultTask]) -> Vec<String> {
    tasks.iter().map(|t| t.id().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_starting_together_on_one_schema_both_migrate_and_share_data() {
    drop_stale_schemas().await;
    let schema = fresh_schema();
    let mut joins = Vec::new();
    for _ in 0..4 {
        let schema = schema.clone();
        joins.push(tokio::spawn(async move {
            PostgresStore::connect_with(&url(), options(&schema)).await
        }));
    }
    let mut stores = Vec::new();
    for j in joins {
        stores.push(j.await.unwrap().expect("every concurrent connect succeeds"));
    }
    let row = raw()
        .await
        .query_one(
            &format!("SELECT count(*), max(version) FROM \"{schema}\".schema_migrations"),
            &[],
        )
        .await
        .unwrap();
    let (count, version): (i64, i32) = (row.get(0), row.get(1));
    assert_eq!(count, i64::from(version), "each step applied once");

    stores[0].save(&task("from-a", &[("who", "a")], true)).await.unwrap();
    assert_eq!(stores[3].get("from-a").await.unwrap().id(), "from-a");
    stores[3].save_batch(&[task("from-d1", &[], true), task("from-d2", &[], false)]).await.unwrap();
    assert_eq!(ids(&stores[0].get_all().await.unwrap()), ["from-a", "from-d1", "from-d2"]);
    assert_eq!(stores[1].stats().await.unwrap().enabled_tasks, 2);
    for s in &stores {
        s.close().await.unwrap();
    }
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_on_shared_ids_do_not_deadlock() {
    drop_stale_schemas().await;
    let schema = fresh_schema();
    let a = Arc::new(open(&schema).await);
    let b = Arc::new(open(&schema).await);
    let mut joins = Vec::new();
    for (w, s) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        joins.push(tokio::spawn(async move {
            for round in 0..20 {
                let mut batch: Vec<DefaultTask> =
                    (0..200).map(|i| task(&format!("s{i:03}"), &[], true)).collect();
                if (w + round) % 2 == 1 {
                    batch.reverse();
                }
                s.save_batch(&batch).await.unwrap();
                s.record_executions(&[exec("s000", 1_800_000_000_000_000_000 + round as i128)])
                    .await
                    .unwrap();
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    assert_eq!(b.get_all().await.unwrap().len(), 200);
    assert_eq!(a.executions(&ExecutionQuery::task("s000")).await.unwrap().len(), 10);
    a.close().await.unwrap();
    b.close().await.unwrap();
    drop_schema(&schema).await;
}

/// A key-value connection string for the test server, as `user`.
fn url_as(user: &str) -> String {
    use tokio_postgres::config::Host;
    let cfg: tokio_postgres::Config = url().parse().unwrap();
    let host = match &cfg.get_hosts()[0] {
        Host::Tcp(h) => h.clone(),
        Host::Unix(p) => p.display().to_string(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    let db = cfg.get_dbname().unwrap_or("test");
    format!("host={host} port={port} dbname={db} user={user}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_schema_needs_no_create_rights() {
    drop_stale_schemas().await;
    let c = raw().await;
    let superuser: bool = c
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", &[])
        .await
        .unwrap()
        .get(0);
    if !superuser {
        eprintln!("skipped: the test user can't create roles");
        return;
    }
    let schema = fresh_schema();
    open(&schema).await.close().await.unwrap();
    let role = format!("{schema}_app");
    c.batch_execute(&format!(
        "CREATE ROLE \"{role}\" LOGIN;
         GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\";
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\";"
    ))
    .await
    .unwrap();

    let app = PostgresStore::connect_with(&url_as(&role), options(&schema)).await.unwrap();
    app.save(&task("x", &[], true)).await.unwrap();
    app.record_execution(&exec("x", 1_800_000_000_000_000_000)).await.unwrap();
    assert_eq!(app.load_all().await.unwrap().tasks.len(), 1);
    app.close().await.unwrap();

    // Without rights, a new schema is a clear error.
    let e =
        PostgresStore::connect_with(&url_as(&role), options(&fresh_schema())).await.unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");

    drop_schema(&schema).await;
    c.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_is_reported_and_the_others_load() {
    drop_stale_schemas().await;
    let schema = fresh_schema();
    let s = open(&schema).await;
    for id in ["a", "b", "c", "d", "e"] {
        s.save(&task(id, &[("k", "v")], true)).await.unwrap();
    }
    let c = raw().await;
    let t = format!("\"{schema}\".tasks");
    c.batch_execute(&format!(
        "UPDATE {t} SET data = 'not json {{' WHERE id = 'b';
         UPDATE {t} SET data = '{{\"id\": 5, \"enabled\": \"yes\"}}' WHERE id = 'c';
         UPDATE {t} SET data = (SELECT data FROM {t} WHERE id = 'a') WHERE id = 'd';"
    ))
    .await
    .unwrap();

    let report = s.load_all().await.unwrap();
    assert_eq!(ids(&report.tasks), ["a", "e"]);
    let bad: Vec<&str> = report.errors.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(bad, ["b", "c", "d"], "{:?}", report.errors);
    assert!(report.errors.iter().all(|e| !e.reason.is_empty()));
    assert!(report.errors[2].reason.contains("\"a\""), "{}", report.errors[2]);

    assert_eq!(s.get("a").await.unwrap().id(), "a");
    let e = s.get("b").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("\"b\""), "{e}");
    eprintln!("{e}");
    let e = s.get_all().await.unwrap_err();
    assert!(e.to_string().contains("\"b\""), "{e}");
    eprintln!("{e}");
    s.close().await.unwrap();
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_rota_is_a_clear_error() {
    drop_stale_schemas().await;
    let schema = fresh_schema();
    let s = open(&schema).await;
    raw()
        .await
        .execute(&format!("INSERT INTO \"{schema}\".schema_migrations (version) VALUES (999)"), &[])
        .await
        .unwrap();
    let e = PostgresStore::connect_with(&url(), options(&schema)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    let msg = e.to_string();
    assert!(msg.contains("999") && msg.contains("newer") && msg.contains(&schema), "{msg}");
    eprintln!("{msg}");
    s.close().await.unwrap();
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_fast_naming_the_address() {
    let start = Instant::now();
    let e = PostgresStore::connect("postgres://root@127.0.0.1:1/test").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(6), "took {:?}", start.elapsed());
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    eprintln!("refused after {:?}: {e}", start.elapsed());

    // A server that accepts the connection but never answers: the connect
    // timeout still applies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let start = Instant::now();
    let opts =
        PostgresOptions { connect_timeout: Duration::from_millis(500), ..Default::default() };
    let e = PostgresStore::connect_with(&format!("postgres://root@{addr}/test"), opts)
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "took {took:?}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    eprintln!("no answer after {took:?}: {e}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_and_urls_are_refused() {
    let e = PostgresStore::connect("postgres://root@127.0.0.1:5432/test?sslmode=bogus")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("connection string"), "{e}");
    for opts in [
        PostgresOptions { schema: String::new(), ..Default::default() },
        PostgresOptions { schema: "x".repeat(64), ..Default::default() },
        PostgresOptions { pool_size: 0, ..Default::default() },
    ] {
        let e = PostgresStore::connect_with(&url(), opts).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}

fn exec(task: &str, started_ns: i128) -> TaskExecution {
    let t = Timestamp::from_nanosecond(started_ns).unwrap();
    TaskExecution {
        task_id: task.into(),
        node_id: "node-7".into(),
        status: ExecutionStatus::Skipped,
        scheduled_at: Timestamp::from_nanosecond(started_ns - 123).unwrap(),
        started_at: t,
        ended_at: None,
        error: String::new(),
        attempts: u32::MAX,
        duration: Duration::from_nanos(987_654_321),
        output: "üñí\u{1F600}".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nanoseconds_duplicates_and_retention_limits() {
    drop_stale_schemas().await;
    let schema = fresh_schema();
    let s = PostgresStore::connect_with(
        &url(),
        PostgresOptions {
            schema: schema.clone(),
            pool_size: 2,
            retention: Retention {
                max_per_task: 100,
                max_total: 5,
                max_age: Some(Duration::from_secs(60)),
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.schema(), schema);

    // Every field of an execution, to the nanosecond.
    let base: i128 = 1_800_000_000_123_456_789;
    let e = exec("n", base);
    s.record_execution(&e).await.unwrap();
    assert_eq!(s.executions(&ExecutionQuery::task("n")).await.unwrap(), [e]);

    // At most 5 records in all: the oldest go.
    let batch: Vec<TaskExecution> = (1..=7).map(|i| exec(&format!("t{i}"), base + i)).collect();
    s.record_executions(&batch).await.unwrap();
    let all = s.executions(&ExecutionQuery::default()).await.unwrap();
    let tasks: Vec<&str> = all.iter().map(|e| e.task_id.as_str()).collect();
    assert_eq!(tasks, ["t7", "t6", "t5", "t4", "t3"]);

    // Records more than 60 s older than the newest go.
    s.record_execution(&exec("late", base + 61_000_000_000)).await.unwrap();
    let all = s.executions(&ExecutionQuery::default()).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(s.executions(&ExecutionQuery::default().limit(0)).await.unwrap().is_empty());

    // Several tasks with one ID in a batch: the last wins.
    let mut second = task("dup", &[("n", "2")], false);
    second.set_schedule("0 0 * * *");
    s.save_batch(&[task("dup", &[("n", "1")], true), second]).await.unwrap();
    let back = s.get("dup").await.unwrap();
    assert_eq!(
        (back.schedule(), back.tags()["n"].as_str(), back.enabled()),
        ("0 0 * * *", "2", false)
    );
    let by_tag = s.get_by_tags(&BTreeMap::from([("n".to_string(), "2".to_string())])).await;
    assert_eq!(ids(&by_tag.unwrap()), ["dup"]);

    // NUL, which PostgreSQL text can't hold: kept in tasks, replaced in history.
    let nul = task("nul", &[("k\0", "v\0")], true);
    s.save(&nul).await.unwrap();
    s.save_batch(std::slice::from_ref(&nul)).await.unwrap();
    let back = s.get("nul").await.unwrap();
    assert_eq!(back.tags(), nul.tags());
    let q = BTreeMap::from([("k\0".to_string(), "v\0".to_string())]);
    assert_eq!(ids(&s.get_by_tags(&q).await.unwrap()), ["nul"]);
    let mut e = exec("nul\0", base + 61_000_000_001);
    e.output = "a\0b".into();
    s.record_execution(&e).await.unwrap();
    let back = s.executions(&ExecutionQuery::task("nul\0")).await.unwrap();
    assert_eq!((back[0].task_id.as_str(), back[0].output.as_str()), ("nul\u{FFFD}", "a\u{FFFD}b"));
    s.delete("nul").await.unwrap();
    let mut bad = task("bad", &[], true);
    bad.set_id("a\0b");
    assert_eq!(s.save(&bad).await.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(s.get("a\0b").await.unwrap_err().kind(), ErrorKind::TaskNotFound);

    // An empty ID is refused, even alone.
    let mut blank = task("blank", &[], true);
    blank.set_id("");
    assert_eq!(s.save(&blank).await.unwrap_err().kind(), ErrorKind::TaskIdRequired);

    // IDs list in byte order whatever the database's collation.
    for id in ["B", "a", "_", "Z9", "é"] {
        let mut t = task(id, &[], true);
        t.set_id(id);
        s.save(&t).await.unwrap();
    }
    let mut want = vec!["B", "a", "_", "Z9", "é", "dup"];
    want.sort();
    assert_eq!(ids(&s.get_all().await.unwrap()), want);
    s.close().await.unwrap();
    s.close().await.unwrap();
    assert_eq!(s.stats().await.unwrap_err().kind(), ErrorKind::StoreNotInitialized);
    drop_schema(&schema).await;
}

/// The child of the crash test: saves until killed, acknowledging each save
/// on stdout once it returned. Does nothing unless `ROTA_CRASH_SCHEMA` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_child() {
    let Ok(schema) = std::env::var("ROTA_CRASH_SCHEMA") else { return };
    let s = open(&schema).await;
    let mut out = std::io::stdout();
    let start = Instant::now();
    let mut n = 0usize;
    // Bounded, in case the parent is gone.
    while start.elapsed() < Duration::from_secs(120) {
        if n % 20 == 0 {
            let t = task(&format!("c{n:07}"), &[("kind", "single")], true);
            s.save(&t).await.unwrap();
            writeln!(out, "saved {}", t.id()).unwrap();
            n += 1;
        } else {
            let batch: Vec<DefaultTask> = (n..n + 10)
                .map(|i| task(&format!("c{i:07}"), &[("kind", "batch")], true))
                .collect();
            s.save_batch(&batch).await.unwrap();
            for t in &batch {
                writeln!(out, "saved {}", t.id()).unwrap();
            }
            n += 10;
        }
        out.flush().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_killed_mid_write_loses_no_acknowledged_save() {
    drop_stale_schemas().await;
    let schema = fresh_schema();
    open(&schema).await.close().await.unwrap();
    let exe = std::env::current_exe().unwrap();
    let child_schema = schema.clone();
    let (acked, killed_at) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(exe)
            .args(["--exact", "postgres_crash_child", "--nocapture", "--test-threads=1"])
            .env("ROTA_CRASH_SCHEMA", &child_schema)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let target = 300 + (std::process::id() as usize % 97);
        let mut acked = Vec::new();
        for line in lines.by_ref() {
            if let Some(id) = line.unwrap().strip_prefix("saved ") {
                acked.push(id.to_string());
                if acked.len() >= target {
                    break;
                }
            }
        }
        let killed_at = acked.len();
        child.kill().unwrap();
        // Saves acknowledged between our last read and the kill count too.
        for line in lines {
            match line {
                Ok(l) => {
                    if let Some(id) = l.strip_prefix("saved ") {
                        acked.push(id.to_string());
                    }
                }
                Err(_) => break,
            }
        }
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "the child was still writing when killed: {status}");
        (acked, killed_at)
    })
    .await
    .unwrap();
    assert!(killed_at >= 300, "the child acknowledged only {killed_at} saves");

    let s = open(&schema).await;
    let report = s.load_all().await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let have: HashSet<String> = report.tasks.iter().map(|t| t.id().to_string()).collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !have.contains(*id)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    assert!(have.len() >= acked.len());
    eprintln!(
        "crash test: {} saves acknowledged ({} when killed), {} tasks found",
        acked.len(),
        killed_at,
        have.len()
    );
    s.close().await.unwrap();
    drop_schema(&schema).await;
}
