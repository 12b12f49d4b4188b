//! The SQLite store: the conformance suite, plus what only a file-backed
//! store has: reopening, corrupt rows, schema migrations, a missing
//! directory, retention in SQL, and crash safety under SIGKILL.
#![cfg(feature = "sqlite")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::Timestamp;
use rota::{
    DefaultTask, ErrorKind, ExecutionQuery, ExecutionStatus, LoadReport, Retention, SqliteOptions,
    SqliteStore, Store, StoreStats, Task, TaskExecution,
};
use support::conformance::{full_task, task};

/// Retention used by every store under test: 10 records per task.
fn test_retention() -> Retention {
    Retention { max_per_task: 10, ..Retention::default() }
}

/// A path in the temp directory that no other test (or test process) uses.
fn temp_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("rota-test-{tag}-{}-{n}-{nanos}.db", std::process::id()))
}

/// Removes a database file and SQLite's side files.
fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Deletes a database file when dropped (also when the test panics).
struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> Self {
        TempDb(temp_path(tag))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        remove_db(&self.0);
    }
}

/// A store on a fresh file, deleted with the store.
#[derive(Debug)]
struct Scratch {
    store: Option<SqliteStore>,
    path: PathBuf,
}

impl Scratch {
    async fn new() -> Self {
        let path = temp_path("conformance");
        let opts = SqliteOptions { retention: test_retention(), ..SqliteOptions::default() };
        let store = SqliteStore::open_with(&path, opts).await.unwrap();
        Scratch { store: Some(store), path }
    }

    fn s(&self) -> &SqliteStore {
        self.store.as_ref().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        drop(self.store.take());
        remove_db(&self.path);
    }
}

#[async_trait]
impl Store for Scratch {
    async fn save(&self, task: &DefaultTask) -> rota::Result<()> {
        self.s().save(task).await
    }
    async fn get(&self, id: &str) -> rota::Result<DefaultTask> {
        self.s().get(id).await
    }
    async fn get_all(&self) -> rota::Result<Vec<DefaultTask>> {
        self.s().get_all().await
    }
    async fn delete(&self, id: &str) -> rota::Result<()> {
        self.s().delete(id).await
    }
    async fn clear(&self) -> rota::Result<()> {
        self.s().clear().await
    }
    async fn save_batch(&self, tasks: &[DefaultTask]) -> rota::Result<()> {
        self.s().save_batch(tasks).await
    }
    async fn save_run_state(&self, tasks: &[DefaultTask]) -> rota::Result<()> {
        self.s().save_run_state(tasks).await
    }
    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> rota::Result<Vec<DefaultTask>> {
        self.s().get_by_tags(tags).await
    }
    async fn stats(&self) -> rota::Result<StoreStats> {
        self.s().stats().await
    }
    async fn close(&self) -> rota::Result<()> {
        self.s().close().await
    }
    async fn record_execution(&self, e: &TaskExecution) -> rota::Result<()> {
        self.s().record_execution(e).await
    }
    async fn executions(&self, q: &ExecutionQuery) -> rota::Result<Vec<TaskExecution>> {
        self.s().executions(q).await
    }
    async fn load_all(&self) -> rota::Result<LoadReport> {
        self.s().load_all().await
    }
    async fn record_executions(&self, batch: &[TaskExecution]) -> rota::Result<()> {
        self.s().record_executions(batch).await
    }
}

store_conformance!(sqlite, || async { Arc::new(Scratch::new().await) as Arc<dyn Store> });

fn json(t: &DefaultTask) -> serde_json::Value {
    serde_json::from_slice(&t.serialize().unwrap()).unwrap()
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
        attempts: 1,
        duration: Duration::from_millis(250),
        output: String::new(),
    }
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn ids(v: &[DefaultTask]) -> Vec<&str> {
    v.iter().map(|t| t.id()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_keeps_tasks_and_history() {
    let db = TempDb::new("reopen");
    let full = full_task("full");
    let history =
        [exec("full", ExecutionStatus::Completed, 1), exec("full", ExecutionStatus::Failed, 2)];
    {
        let s = SqliteStore::open(&db.0).await.unwrap();
        s.save(&full).await.unwrap();
        s.save_batch(&[task("a", &[("team", "ops")], true), task("b", &[], false)]).await.unwrap();
        s.record_executions(&history).await.unwrap();
        s.close().await.unwrap();
    }
    let last_sync;
    {
        // Closed cleanly above; this time only dropped.
        let s = SqliteStore::open(&db.0).await.unwrap();
        assert_eq!(ids(&s.get_all().await.unwrap()), ["a", "b", "full"]);
        last_sync = s.stats().await.unwrap().last_sync;
        assert!(last_sync.is_some());
        s.record_execution(&exec("a", ExecutionStatus::Missed, 3)).await.unwrap();
    }
    let s = SqliteStore::open(&db.0).await.unwrap();
    assert_eq!(json(&s.get("full").await.unwrap()), json(&full));
    let st = s.stats().await.unwrap();
    assert_eq!((st.total_tasks, st.enabled_tasks), (3, 2));
    assert_eq!(st.last_sync, last_sync, "last_sync is kept in the file");
    let tagged = s.get_by_tags(&[("team".into(), "ops".into())].into()).await.unwrap();
    assert_eq!(ids(&tagged), ["a", "full"], "full_task is tagged team=ops too");
    let got = s.executions(&ExecutionQuery::task("full")).await.unwrap();
    assert_eq!(got, [history[1].clone(), history[0].clone()]);
    assert_eq!(s.executions(&ExecutionQuery::default()).await.unwrap().len(), 3);
    let report = s.load_all().await.unwrap();
    assert_eq!((report.tasks.len(), report.errors.len()), (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_affects_only_its_task() {
    let db = TempDb::new("corrupt");
    let s = SqliteStore::open(&db.0).await.unwrap();
    s.save_batch(&[task("a", &[], true), task("b", &[], true), task("c", &[], true)])
        .await
        .unwrap();
    // Another connection damages two rows while the store is open: bad JSON
    // in b, and in c the JSON of another task.
    let conn = raw(&db.0);
    conn.execute("UPDATE tasks SET data = '{\"id\": \"b\", oops' WHERE id = 'b'", []).unwrap();
    conn.execute(
        "UPDATE tasks SET data = (SELECT data FROM tasks WHERE id = 'a') WHERE id = 'c'",
        [],
    )
    .unwrap();
    drop(conn);

    let report = s.load_all().await.unwrap();
    assert_eq!(ids(&report.tasks), ["a"]);
    let bad: Vec<&str> = report.errors.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(bad, ["b", "c"]);
    assert!(report.errors[0].reason.contains("JSON"), "{}", report.errors[0]);
    assert!(report.errors[1].reason.contains("\"a\""), "{}", report.errors[1]);

    let e = s.get("b").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains("\"b\""), "{e}");
    assert!(e.to_string().contains(&db.0.display().to_string()), "{e}");
    let e = s.get_all().await.unwrap_err();
    assert!(e.to_string().contains("\"b\""), "{e}");
    assert_eq!(s.get("a").await.unwrap().id(), "a");

    // The bad row can be replaced or deleted like any other.
    s.save(&task("b", &[], true)).await.unwrap();
    s.delete("c").await.unwrap();
    let report = s.load_all().await.unwrap();
    assert_eq!((ids(&report.tasks), report.errors.len()), (vec!["a", "b"], 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_versioned() {
    let db = TempDb::new("schema");
    let s = SqliteStore::open(&db.0).await.unwrap();
    s.save(&task("a", &[], true)).await.unwrap();
    s.close().await.unwrap();
    let conn = raw(&db.0);
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, SqliteStore::SCHEMA_VERSION);
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let app: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).unwrap();
    assert_eq!(app, 0x726f_7461);
    drop(conn);

    // Opening an up-to-date file changes nothing.
    let s = SqliteStore::open(&db.0).await.unwrap();
    assert_eq!(s.get("a").await.unwrap().id(), "a");
    drop(s);

    // A file from a newer rota is refused, and left alone.
    raw(&db.0).pragma_update(None, "user_version", 999).unwrap();
    let e = SqliteStore::open(&db.0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    let msg = e.to_string();
    assert!(msg.contains("999") && msg.contains("newer"), "{msg}");
    assert!(msg.contains(&db.0.display().to_string()), "{msg}");
    let version: i64 = raw(&db.0).pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_files_are_refused() {
    // Another program's SQLite database.
    let other = TempDb::new("foreign");
    raw(&other.0).execute_batch("CREATE TABLE notes (body TEXT)").unwrap();
    let e = SqliteStore::open(&other.0).await.unwrap_err();
    assert!(e.to_string().contains("not a rota database"), "{e}");
    let tables: i64 =
        raw(&other.0).query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 1, "the foreign file is not changed");

    // A file that is not SQLite at all.
    let text = TempDb::new("text");
    std::fs::write(
        &text.0,
        "this is not a database, just some text that is long enough\n".repeat(20),
    )
    .unwrap();
    let e = SqliteStore::open(&text.0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    assert!(e.to_string().contains(&text.0.display().to_string()), "{e}");

    // A directory.
    let e = SqliteStore::open(std::env::temp_dir()).await.unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_is_an_error_naming_the_path() {
    let dir = temp_path("missing-dir");
    let path = dir.join("rota.db");
    let e = SqliteStore::open(&path).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend);
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    assert!(!dir.exists(), "the directory is not created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_file_is_created_and_close_names_it() {
    let db = TempDb::new("create");
    assert!(!db.0.exists());
    let opts = SqliteOptions { synchronous_full: true, ..SqliteOptions::default() };
    let s = SqliteStore::open_with(&db.0, opts).await.unwrap();
    assert!(db.0.exists());
    assert_eq!(s.path(), db.0);
    assert!(s.options().synchronous_full);
    s.save(&task("a", &[], true)).await.unwrap();
    s.close().await.unwrap();
    s.close().await.unwrap();
    for e in [
        s.get("a").await.unwrap_err(),
        s.save_batch(&[]).await.unwrap_err(),
        s.load_all().await.unwrap_err(),
        s.record_executions(&[]).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::StoreNotInitialized, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("closed") && msg.contains(&db.0.display().to_string()), "{msg}");
    }
    // Closing checkpointed the WAL: the file alone has the task.
    assert!(!Path::new(&format!("{}-wal", db.0.display())).exists());
    let n: i64 = raw(&db.0).query_row("SELECT count(*) FROM tasks", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_database_works() {
    let s = SqliteStore::open(":memory:").await.unwrap();
    s.save(&task("a", &[("k", "v")], true)).await.unwrap();
    assert_eq!(ids(&s.get_all().await.unwrap()), ["a"]);
    assert_eq!(s.stats().await.unwrap().total_tasks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_rejects_an_empty_id() {
    let db = TempDb::new("empty-id");
    let s = SqliteStore::open(&db.0).await.unwrap();
    let mut t = task("x", &[], true);
    t.set_id("");
    assert_eq!(s.save(&t).await.unwrap_err().kind(), ErrorKind::TaskIdRequired);
    assert!(s.get_all().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bounds_total_and_age() {
    let db = TempDb::new("retention");
    let retention = Retention { max_per_task: 100, max_total: 15, max_age: None };
    let s = SqliteStore::open_with(&db.0, SqliteOptions { retention, ..Default::default() })
        .await
        .unwrap();
    for t in ["a", "b", "c"] {
        let batch: Vec<_> = (0..10).map(|i| exec(t, ExecutionStatus::Completed, i)).collect();
        s.record_executions(&batch).await.unwrap();
    }
    let all = s.executions(&ExecutionQuery::default().limit(1000)).await.unwrap();
    assert_eq!(all.len(), 15, "the newest 15 in all");
    assert_eq!(s.executions(&ExecutionQuery::task("a")).await.unwrap().len(), 0);
    assert_eq!(s.executions(&ExecutionQuery::task("b")).await.unwrap().len(), 5);
    assert_eq!(s.executions(&ExecutionQuery::task("c")).await.unwrap().len(), 10);
    drop(s);

    let retention =
        Retention { max_per_task: 100, max_total: 1000, max_age: Some(Duration::from_secs(60)) };
    let s = SqliteStore::open_with(&db.0, SqliteOptions { retention, ..Default::default() })
        .await
        .unwrap();
    s.clear().await.unwrap();
    let batch: Vec<_> = (0..10).map(|i| exec("a", ExecutionStatus::Completed, i * 30)).collect();
    s.record_executions(&batch).await.unwrap();
    let secs: Vec<i64> = s
        .executions(&ExecutionQuery::task("a"))
        .await
        .unwrap()
        .iter()
        .map(|e| e.started_at.as_second() - 1_800_000_000)
        .collect();
    assert_eq!(secs, [270, 240, 210], "records older than 60 s before the newest are dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_wait_for_each_other() {
    let db = TempDb::new("two");
    let a = Arc::new(SqliteStore::open(&db.0).await.unwrap());
    let b = Arc::new(SqliteStore::open(&db.0).await.unwrap());
    let mut joins = Vec::new();
    for (w, s) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
        joins.push(tokio::spawn(async move {
            for i in 0..100 {
                s.save(&task(&format!("w{w}-{i}"), &[], true)).await.unwrap();
                s.record_execution(&exec("x", ExecutionStatus::Completed, i)).await.unwrap();
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    assert_eq!(a.stats().await.unwrap().total_tasks, 400);
    assert_eq!(b.get_all().await.unwrap().len(), 400);
}

/// The process the crash test kills: writes tasks until it is killed,
/// printing each ID once its write has returned. Does nothing unless
/// `ROTA_CRASH_DB` is set.
#[test]
fn sqlite_crash_child() {
    let Some(path) = std::env::var_os("ROTA_CRASH_DB") else { return };
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let s = SqliteStore::open(&path).await.unwrap();
        let mut out = std::io::stdout();
        // Stops by itself if nobody kills it.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0;
        let mut round = 0u64;
        while Instant::now() < deadline {
            let ids: Vec<String> = if round % 2 == 0 {
                let id = format!("c{n:07}");
                s.save(&task(&id, &[("kind", "single")], true)).await.unwrap();
                vec![id]
            } else {
                let ids: Vec<String> = (n..n + 10).map(|i| format!("c{i:07}")).collect();
                let batch: Vec<_> =
                    ids.iter().map(|id| task(id, &[("kind", "batch")], true)).collect();
                s.save_batch(&batch).await.unwrap();
                ids
            };
            n += ids.len();
            round += 1;
            for id in ids {
                writeln!(out, "saved {id}").unwrap();
            }
            out.flush().unwrap();
        }
    });
}

/// Kills a writer with SIGKILL mid-stream: the file must pass SQLite's
/// integrity check and hold every write the writer saw return.
#[test]
fn sqlite_crash_safety_under_sigkill() {
    let exe = std::env::current_exe().unwrap();
    // The last run writes enough to pass SQLite's automatic checkpoint
    // (1000 pages), so the kill can land in or after one.
    for (run, kill_after) in [300, 1_000, 6_000].into_iter().enumerate() {
        let db = TempDb::new("crash");
        let started = Instant::now();
        let mut child = Command::new(&exe)
            .args(["--exact", "sqlite_crash_child", "--nocapture", "--test-threads=1"])
            .env("ROTA_CRASH_DB", &db.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut acked = BTreeSet::new();
        while acked.len() < kill_after {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(id) = line.strip_prefix("saved ") {
                        acked.insert(id.to_string());
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("run {run}: the child stopped after {} saves: {e}", acked.len());
                }
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "run {run}: the child was still writing");
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "run {run}: {status}");
        // Lines already in the pipe were printed after their write returned.
        reader.join().unwrap();
        acked.extend(rx.try_iter().filter_map(|l| l.strip_prefix("saved ").map(String::from)));

        let size = |suffix: &str| {
            std::fs::metadata(format!("{}{suffix}", db.0.display())).map_or(0, |m| m.len())
        };
        let (db_size, wal_size) = (size(""), size("-wal"));
        let conn = raw(&db.0);
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "run {run}");
        drop(conn);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (stored, errors) = rt.block_on(async {
            let s = SqliteStore::open(&db.0).await.unwrap();
            let report = s.load_all().await.unwrap();
            (
                report.tasks.iter().map(|t| t.id().to_string()).collect::<BTreeSet<_>>(),
                report.errors,
            )
        });
        assert!(errors.is_empty(), "run {run}: {errors:?}");
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(lost.is_empty(), "run {run}: acknowledged but lost: {lost:?}");
        eprintln!(
            "crash run {run}: killed after {} acknowledged saves ({} in the file, {} KiB + \
             {} KiB of WAL) in {:?}",
            acked.len(),
            stored.len(),
            db_size / 1024,
            wal_size / 1024,
            started.elapsed()
        );
    }
}
