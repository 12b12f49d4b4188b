//! The SQLite store: tasks and their execution history in one file, with no
//! server (feature `sqlite`).
//!
//! [`SqliteStore`] keeps everything in a single SQLite database in WAL mode.
//! It is the store to use when nothing else needs to run: the daemon's
//! default, and the right choice for one scheduler on one machine. SQLite is
//! compiled in (rusqlite's `bundled` feature), so nothing has to be installed.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use rota::{Retention, SchedulerConfig, SqliteOptions, SqliteStore, Store};
//!
//! # async fn demo() -> rota::Result<()> {
//! // Creates the file if it does not exist (its directory must exist).
//! let store = SqliteStore::open("/var/lib/rota/rota.db").await?;
//! let scheduler = SchedulerConfig::new().store(Arc::new(store)).build()?;
//!
//! // Keep less history, and fsync every commit (survives power loss too).
//! let store = SqliteStore::open_with(
//!     "/var/lib/rota/other.db",
//!     SqliteOptions {
//!         retention: Retention { max_per_task: 20, ..Retention::default() },
//!         synchronous_full: true,
//!     },
//! )
//! .await?;
//! let report = store.load_all().await?;
//! for e in &report.errors {
//!     eprintln!("skipped a task that does not load: {e}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! SQLite keeps two files next to the database while it is open, `<path>-wal`
//! and `<path>-shm`: they are part of the database. Copy all three, or copy
//! the database with SQLite's backup API (`sqlite3 rota.db ".backup copy.db"`).
//!
//! # Durability
//!
//! Every write ([`save`](Store::save), [`save_batch`](Store::save_batch),
//! [`record_executions`](Store::record_executions), ...) is one SQLite
//! transaction: all of it is in the file, or none of it.
//!
//! By default the store runs with `PRAGMA synchronous=NORMAL`, SQLite's
//! recommended setting in WAL mode: a commit is written to the WAL before the
//! call returns, but not fsynced. A write that has returned survives the
//! process crashing or being killed (the test suite SIGKILLs a writer and
//! checks every acknowledged task is there). After a power loss or an OS
//! crash the last commits before it may be lost, never half-applied: the
//! database stays consistent. Set [`SqliteOptions::synchronous_full`] to
//! fsync on every commit (`synchronous=FULL`), so that returned writes survive
//! power loss too, at the cost of a disk flush per write.
//!
//! # Schema
//!
//! The schema's version is SQLite's `PRAGMA user_version`
//! ([`SqliteStore::SCHEMA_VERSION`]). Opening a file runs the migration steps
//! it lacks, in order, in one transaction; a file written by a newer rota (a
//! higher version) is refused with an error rather than misread. The file is
//! marked as rota's with `PRAGMA application_id`.
//!
//! * `tasks(id PRIMARY KEY, name, enabled, handler, data)`: `data` is the
//!   task's JSON (the seed's format, as [`Task::serialize`](crate::Task::serialize)
//!   writes it); the other columns repeat fields of it for SQL.
//! * `task_tags(task_id, key, value)`: one row per tag, for
//!   [`get_by_tags`](Store::get_by_tags).
//! * `executions(seq AUTOINCREMENT, task_id, node_id, status, scheduled_at,
//!   started_at, ended_at, error, attempts, duration_ns, output)`: the history;
//!   instants and the duration are integer nanoseconds (Unix epoch).
//! * `meta(key, value)`: the time of the last write (`last_sync`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::types::{Value, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::{
    ExecutionQuery, ExecutionStatus, LoadError, LoadReport, Retention, Store, StoreStats,
    TaskExecution,
};
use crate::error::{Error, Result};
use crate::task::DefaultTask;

/// The backend name in errors.
const BACKEND: &str = "sqlite store";

/// `PRAGMA application_id` of a rota database: "rota" in ASCII.
const APPLICATION_ID: i32 = 0x726f_7461;

/// The migration steps: step `i` takes the schema from version `i` to `i + 1`.
/// Append new steps; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: tasks, tags, history, meta.
    "CREATE TABLE tasks (
        id      TEXT PRIMARY KEY NOT NULL,
        name    TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        handler TEXT NOT NULL,
        data    TEXT NOT NULL
    );
    CREATE INDEX tasks_name ON tasks (name);
    CREATE INDEX tasks_handler ON tasks (handler);
    CREATE TABLE task_tags (
        task_id TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        key     TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (task_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX task_tags_key_value ON task_tags (key, value);
    CREATE TABLE executions (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id      TEXT NOT NULL,
        node_id      TEXT NOT NULL,
        status       TEXT NOT NULL,
        scheduled_at INTEGER NOT NULL,
        started_at   INTEGER NOT NULL,
        ended_at     INTEGER,
        error        TEXT NOT NULL DEFAULT '',
        attempts     INTEGER NOT NULL,
        duration_ns  INTEGER NOT NULL,
        output       TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX executions_task_seq ON executions (task_id, seq);
    CREATE INDEX executions_status_seq ON executions (status, seq);
    CREATE INDEX executions_started_at ON executions (started_at);
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value
    ) WITHOUT ROWID;",
];

/// How a [`SqliteStore`] is opened.
///
/// ```
/// use rota::{Retention, SqliteOptions};
///
/// let opts = SqliteOptions {
///     retention: Retention { max_per_task: 10, ..Retention::default() },
///     ..SqliteOptions::default()
/// };
/// assert!(!opts.synchronous_full);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SqliteOptions {
    /// How much execution history to keep (enforced after each write of history).
    pub retention: Retention,
    /// `PRAGMA synchronous=FULL` instead of `NORMAL`: fsync every commit, so
    /// that a write that returned survives power loss, not only a crash of the
    /// process. See the module's "Durability".
    pub synchronous_full: bool,
}

/// Tasks and history in one SQLite file (WAL mode): see the [module](self).
///
/// Calls run on tokio's blocking pool, one at a time on one connection; no
/// lock is held across an await. Every method fails with
/// [`ErrorKind::StoreNotInitialized`](crate::ErrorKind) after
/// [`close`](Store::close), and with [`ErrorKind::Backend`](crate::ErrorKind)
/// when SQLite fails (the message names the operation and the file).
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    conn: Mutex<Option<Connection>>,
    /// Set by `close`, so that calls fail without waiting for the connection.
    closed: AtomicBool,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// A task ready to be written: its columns and its tags.
struct TaskRow {
    id: String,
    name: String,
    enabled: bool,
    handler: String,
    data: String,
    tags: Vec<(String, String)>,
}

/// An execution record ready to be written.
struct ExecRow {
    task_id: String,
    node_id: String,
    status: &'static str,
    scheduled_at: i64,
    started_at: i64,
    ended_at: Option<i64>,
    error: String,
    attempts: i64,
    duration_ns: i64,
    output: String,
}

impl SqliteStore {
    /// The schema version this rota writes (`PRAGMA user_version` of a
    /// migrated file).
    pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

    /// Opens (or creates) the database at `path` with default options:
    /// default [`Retention`], `synchronous=NORMAL`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Backend`](crate::ErrorKind), naming the path, if the
    /// directory does not exist, the file is not a SQLite database (or is
    /// another program's), its schema is newer than this rota knows, or
    /// SQLite fails.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (or creates) the database at `path` with `options`.
    ///
    /// A missing file is created; a missing directory is an error (it is not
    /// created). The schema is created or migrated to
    /// [`SCHEMA_VERSION`](Self::SCHEMA_VERSION). The path `":memory:"` opens
    /// a private in-memory database, gone when the store is dropped (for tests).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub async fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let opts = options.clone();
        let p = path.clone();
        let conn = tokio::task::spawn_blocking(move || open_connection(&p, &opts))
            .await
            .map_err(|e| Error::backend(BACKEND, format!("open {}: {e}", path.display())))??;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                options,
                conn: Mutex::new(Some(conn)),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The database file's path, as given to [`open`](Self::open).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.inner.options
    }

    /// `StoreNotInitialized` once closed.
    fn check(&self, op: &str) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(self.inner.closed(op));
        }
        Ok(())
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> Result<T> + Send + 'static,
    {
        self.check(op)?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic in an earlier call left no transaction open (rusqlite
            // rolls back on drop), so a poisoned lock is still usable.
            let mut guard = inner.conn.lock().unwrap_or_else(PoisonError::into_inner);
            let conn = guard.as_mut().ok_or_else(|| inner.closed(op))?;
            f(conn, &inner)
        })
        .await
        .map_err(|e| self.inner.err(op)(e))?
    }
}

impl Inner {
    fn closed(&self, op: &str) -> Error {
        Error::StoreNotInitialized {
            what: format!("sqlite store at {} is closed ({op})", self.path.display()),
        }
    }

    /// Maps an error of `what` to a backend error naming the file.
    fn err<E: fmt::Display>(&self, what: &str) -> impl Fn(E) -> Error + '_ {
        let what = what.to_string();
        move |e| Error::backend(BACKEND, format!("{what} {}: {e}", self.path.display()))
    }

    /// A task read back from its columns; `Err` says why it cannot be.
    fn decode(id: &str, data: ValueRef<'_>) -> std::result::Result<DefaultTask, String> {
        let bytes = match data {
            ValueRef::Text(b) | ValueRef::Blob(b) => b,
            ValueRef::Null => return Err("its data is NULL".into()),
            other => return Err(format!("its data is not JSON text but {:?}", other.data_type())),
        };
        let t: DefaultTask =
            serde_json::from_slice(bytes).map_err(|e| format!("its JSON does not parse: {e}"))?;
        if &*t.id != id {
            return Err(format!("it is stored under ID {id:?} but its JSON has ID {:?}", t.id));
        }
        Ok(t)
    }

    /// Decodes a task for a call that fails on a bad row.
    fn decode_or_err(&self, id: &str, data: ValueRef<'_>) -> Result<DefaultTask> {
        Self::decode(id, data).map_err(|reason| {
            Error::backend(
                BACKEND,
                format!("task {id:?} in {} cannot be read: {reason}", self.path.display()),
            )
        })
    }

    /// Every task whose ID `sql` selects (columns: id, data), strict.
    fn query_tasks(
        &self,
        conn: &Connection,
        op: &str,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<DefaultTask>> {
        let err = self.err(op);
        let mut stmt = conn.prepare_cached(sql).map_err(&err)?;
        let mut rows = stmt.query(args).map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            let id: String = row.get(0).map_err(&err)?;
            out.push(self.decode_or_err(&id, row.get_ref(1).map_err(&err)?)?);
        }
        Ok(out)
    }

    fn write_tasks(&self, conn: &mut Connection, op: &str, rows: &[TaskRow]) -> Result<()> {
        let err = self.err(op);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO tasks (id, name, enabled, handler, data) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                        enabled = excluded.enabled, handler = excluded.handler, data = excluded.data",
                )
                .map_err(&err)?;
            let mut untag =
                tx.prepare_cached("DELETE FROM task_tags WHERE task_id = ?1").map_err(&err)?;
            let mut tag = tx
                .prepare_cached("INSERT INTO task_tags (task_id, key, value) VALUES (?1, ?2, ?3)")
                .map_err(&err)?;
            for r in rows {
                upsert
                    .execute(params![r.id, r.name, r.enabled, r.handler, r.data])
                    .map_err(&err)?;
                untag.execute([&r.id]).map_err(&err)?;
                for (k, v) in &r.tags {
                    tag.execute([&r.id, k, v]).map_err(&err)?;
                }
            }
        }
        touch(&tx).map_err(&err)?;
        tx.commit().map_err(&err)
    }

    /// Rewrites each row still stored with the same `updated_at`.
    fn write_run_state(&self, conn: &mut Connection, rows: &[(TaskRow, String)]) -> Result<()> {
        let err = self.err("save_run_state");
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE tasks SET enabled = ?2, data = ?3
                     WHERE id = ?1 AND json_extract(data, '$.updated_at') = ?4",
                )
                .map_err(&err)?;
            for (r, updated_at) in rows {
                update.execute(params![r.id, r.enabled, r.data, updated_at]).map_err(&err)?;
            }
        }
        touch(&tx).map_err(&err)?;
        tx.commit().map_err(&err)
    }

    fn write_executions(&self, conn: &mut Connection, op: &str, rows: &[ExecRow]) -> Result<()> {
        let err = self.err(op);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO executions (task_id, node_id, status, scheduled_at, started_at,
                        ended_at, error, attempts, duration_ns, output)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(&err)?;
            for r in rows {
                insert
                    .execute(params![
                        r.task_id,
                        r.node_id,
                        r.status,
                        r.scheduled_at,
                        r.started_at,
                        r.ended_at,
                        r.error,
                        r.attempts,
                        r.duration_ns,
                        r.output
                    ])
                    .map_err(&err)?;
            }
            self.enforce_retention(&tx, rows).map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    /// Drops the oldest records beyond the retention: per task (for the
    /// tasks just written), in all, and by age (relative to the newest start
    /// just written, so it works on a manual clock too).
    fn enforce_retention(&self, conn: &Connection, rows: &[ExecRow]) -> rusqlite::Result<()> {
        let r = self.options.retention;
        let per_task = clamp_i64(r.max_per_task);
        let tasks: BTreeSet<&str> = rows.iter().map(|r| r.task_id.as_str()).collect();
        let mut trim = conn.prepare_cached(
            "DELETE FROM executions WHERE task_id = ?1 AND seq <= (SELECT seq FROM executions
                WHERE task_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        )?;
        for t in tasks {
            trim.execute(params![t, per_task])?;
        }
        // The span of sequence numbers bounds the count: only when it exceeds
        // the limit is a count of the rows needed.
        let (lo, hi): (Option<i64>, Option<i64>) =
            conn.query_row("SELECT min(seq), max(seq) FROM executions", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
        if let (Some(lo), Some(hi)) = (lo, hi) {
            let total = clamp_i64(r.max_total);
            if hi - lo >= total {
                conn.prepare_cached(
                    "DELETE FROM executions WHERE seq <= (SELECT seq FROM executions
                        ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
                )?
                .execute([total])?;
            }
        }
        if let Some(age) = r.max_age {
            if let Some(newest) = rows.iter().map(|r| r.started_at).max() {
                let cutoff = newest.saturating_sub(clamp_i64(age.as_nanos()));
                conn.prepare_cached("DELETE FROM executions WHERE started_at < ?1")?
                    .execute([cutoff])?;
            }
        }
        Ok(())
    }
}

/// Records the time of this write (`stats().last_sync`).
fn touch(conn: &Connection) -> rusqlite::Result<()> {
    let now = i64::try_from(Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX);
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES ('last_sync', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([now])?;
    Ok(())
}

fn clamp_i64<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// Opens the file, sets the pragmas and migrates the schema.
fn open_connection(path: &Path, options: &SqliteOptions) -> Result<Connection> {
    let shown = path.display();
    let fail = |msg: String| Error::backend(BACKEND, format!("open {shown}: {msg}"));
    let in_memory = path.as_os_str() == ":memory:";
    if !in_memory {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(fail(format!(
                    "directory {} does not exist (it is not created)",
                    dir.display()
                )));
            }
        }
        if path.is_dir() {
            return Err(fail("is a directory, not a database file".into()));
        }
    }
    let sql = |e: rusqlite::Error| fail(e.to_string());
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    // The first read of the file: "file is not a database" shows here.
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(sql)?;
    check_version(version).map_err(fail)?;
    let app: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(sql)?;
    if app != 0 && app != APPLICATION_ID {
        return Err(fail(format!(
            "not a rota database (application_id {app:#x}, rota's is {APPLICATION_ID:#x})"
        )));
    }
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)).map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") && !in_memory {
        return Err(fail(format!("cannot use WAL mode (journal_mode is {mode:?})")));
    }
    let sync = if options.synchronous_full { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", sync).map_err(sql)?;
    conn.pragma_update(None, "foreign_keys", true).map_err(sql)?;
    // After a large batch the WAL file is cut back to this size once
    // checkpointed, instead of staying as large as the batch made it.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024).map_err(sql)?;
    if version < SqliteStore::SCHEMA_VERSION {
        migrate(&mut conn).map_err(fail)?;
    }
    Ok(conn)
}

fn check_version(version: i64) -> std::result::Result<(), String> {
    if version > SqliteStore::SCHEMA_VERSION {
        return Err(format!(
            "schema version {version} is newer than this rota knows ({}); \
             it was written by a newer rota: upgrade rota to open it",
            SqliteStore::SCHEMA_VERSION
        ));
    }
    if version < 0 {
        return Err(format!("schema version {version} is not rota's"));
    }
    Ok(())
}

/// Applies the missing migration steps in one transaction. Another process
/// migrating at the same time waits for the write lock, then sees the work done.
fn migrate(conn: &mut Connection) -> std::result::Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| format!("cannot start the migration: {e}"))?;
    let version: i64 =
        tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(|e| e.to_string())?;
    check_version(version)?;
    if version == 0 {
        let tables: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| e.to_string())?;
        if tables > 0 {
            return Err(format!(
                "the database has {tables} tables or indexes but no rota schema \
                 (user_version 0): not a rota database, refusing to change it"
            ));
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID).map_err(|e| e.to_string())?;
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(step).map_err(|e| format!("migration to version {}: {e}", i + 1))?;
    }
    tx.pragma_update(None, "user_version", SqliteStore::SCHEMA_VERSION)
        .map_err(|e| e.to_string())?;
    tx.commit().map_err(|e| format!("cannot commit the migration: {e}"))
}

/// A task's columns, or `TaskIdRequired`.
fn task_row(t: &DefaultTask) -> Result<TaskRow> {
    if t.id.is_empty() {
        return Err(Error::TaskIdRequired { name: t.name.to_string() });
    }
    let data = serde_json::to_string(t).map_err(|e| Error::InvalidInput {
        what: format!("task {:?}", t.id),
        message: format!("cannot serialise: {e}"),
    })?;
    Ok(TaskRow {
        id: t.id.to_string(),
        name: t.name.to_string(),
        enabled: t.enabled,
        handler: t.handler_name.to_string(),
        data,
        tags: t.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    })
}

fn nanos(what: &str, t: Timestamp) -> Result<i64> {
    i64::try_from(t.as_nanosecond()).map_err(|_| Error::InvalidInput {
        what: what.to_string(),
        message: format!("{t} is outside the range the sqlite store keeps (years 1678-2261)"),
    })
}

fn exec_row(e: &TaskExecution) -> Result<ExecRow> {
    Ok(ExecRow {
        task_id: e.task_id.clone(),
        node_id: e.node_id.clone(),
        status: e.status.as_str(),
        scheduled_at: nanos("execution scheduled_at", e.scheduled_at)?,
        started_at: nanos("execution started_at", e.started_at)?,
        ended_at: e.ended_at.map(|t| nanos("execution ended_at", t)).transpose()?,
        error: e.error.clone(),
        attempts: i64::from(e.attempts),
        duration_ns: clamp_i64(e.duration.as_nanos()),
        output: e.output.clone(),
    })
}

fn parse_status(s: &str) -> Option<ExecutionStatus> {
    Some(match s {
        "running" => ExecutionStatus::Running,
        "completed" => ExecutionStatus::Completed,
        "failed" => ExecutionStatus::Failed,
        "missed" => ExecutionStatus::Missed,
        "skipped" => ExecutionStatus::Skipped,
        _ => return None,
    })
}

/// An execution record from its row (columns in `EXEC_COLUMNS` order).
fn exec_from_row(row: &rusqlite::Row<'_>) -> std::result::Result<TaskExecution, String> {
    let seq: i64 = row.get(0).map_err(|e| e.to_string())?;
    let bad = |what: &str| format!("execution record {seq}: {what}");
    let get_i64 = |i: usize| row.get::<_, i64>(i).map_err(|e| bad(&e.to_string()));
    let ts = |i: usize, name: &str| -> std::result::Result<Timestamp, String> {
        let n = get_i64(i)?;
        Timestamp::from_nanosecond(i128::from(n)).map_err(|e| bad(&format!("{name}: {e}")))
    };
    let status: String = row.get(3).map_err(|e| bad(&e.to_string()))?;
    let ended_at = match row.get::<_, Option<i64>>(6).map_err(|e| bad(&e.to_string()))? {
        Some(_) => Some(ts(6, "ended_at")?),
        None => None,
    };
    let attempts = get_i64(8)?;
    let duration = get_i64(9)?;
    Ok(TaskExecution {
        task_id: row.get(1).map_err(|e| bad(&e.to_string()))?,
        node_id: row.get(2).map_err(|e| bad(&e.to_string()))?,
        status: parse_status(&status).ok_or_else(|| bad(&format!("unknown status {status:?}")))?,
        scheduled_at: ts(4, "scheduled_at")?,
        started_at: ts(5, "started_at")?,
        ended_at,
        error: row.get(7).map_err(|e| bad(&e.to_string()))?,
        attempts: u32::try_from(attempts).map_err(|_| bad(&format!("attempts {attempts}")))?,
        duration: Duration::from_nanos(
            u64::try_from(duration).map_err(|_| bad(&format!("duration {duration} ns")))?,
        ),
        output: row.get(10).map_err(|e| bad(&e.to_string()))?,
    })
}

const EXEC_COLUMNS: &str = "seq, task_id, node_id, status, scheduled_at, started_at, ended_at, \
                            error, attempts, duration_ns, output";

#[async_trait]
impl Store for SqliteStore {
    async fn save(&self, task: &DefaultTask) -> Result<()> {
        self.check("save")?;
        let row = task_row(task)?;
        self.run("save", move |conn, inner| inner.write_tasks(conn, "save", &[row])).await
    }

    async fn get(&self, id: &str) -> Result<DefaultTask> {
        let id = id.to_string();
        self.run("get", move |conn, inner| {
            let err = inner.err("get");
            let mut stmt =
                conn.prepare_cached("SELECT data FROM tasks WHERE id = ?1").map_err(&err)?;
            let mut rows = stmt.query([&id]).map_err(&err)?;
            match rows.next().map_err(&err)? {
                Some(row) => inner.decode_or_err(&id, row.get_ref(0).map_err(&err)?),
                None => Err(Error::TaskNotFound { id }),
            }
        })
        .await
    }

    async fn get_all(&self) -> Result<Vec<DefaultTask>> {
        self.run("get_all", |conn, inner| {
            inner.query_tasks(conn, "get_all", "SELECT id, data FROM tasks ORDER BY id", &[])
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.run("delete", move |conn, inner| {
            let err = inner.err("delete");
            let tx =
                conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
            // Its tags go with it (ON DELETE CASCADE); its history stays.
            let n = tx.execute("DELETE FROM tasks WHERE id = ?1", [&id]).map_err(&err)?;
            if n == 0 {
                return Err(Error::TaskNotFound { id });
            }
            touch(&tx).map_err(&err)?;
            tx.commit().map_err(&err)
        })
        .await
    }

    async fn clear(&self) -> Result<()> {
        self.run("clear", |conn, inner| {
            let err = inner.err("clear");
            let tx =
                conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(&err)?;
            tx.execute_batch("DELETE FROM task_tags; DELETE FROM tasks; DELETE FROM executions;")
                .map_err(&err)?;
            touch(&tx).map_err(&err)?;
            tx.commit().map_err(&err)
        })
        .await
    }

    async fn save_batch(&self, tasks: &[DefaultTask]) -> Result<()> {
        // Every ID is checked (and every task serialised) before anything is
        // written, and the writes are one transaction: all or nothing.
        self.check("save_batch")?;
        let rows = tasks.iter().map(task_row).collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        self.run("save_batch", move |conn, inner| inner.write_tasks(conn, "save_batch", &rows))
            .await
    }

    async fn save_run_state(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.check("save_run_state")?;
        let rows = tasks
            .iter()
            .map(|t| Ok((task_row(t)?, super::updated_at_json(t))))
            .collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        self.run("save_run_state", move |conn, inner| inner.write_run_state(conn, &rows)).await
    }

    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<DefaultTask>> {
        if tags.is_empty() {
            return self.get_all().await;
        }
        let tags: Vec<(String, String)> =
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.run("get_by_tags", move |conn, inner| {
            // A task matches when it has a row for every (key, value): a task
            // has at most one row per key, so the count says all matched.
            let cond = vec!["(key = ? AND value = ?)"; tags.len()].join(" OR ");
            let sql = format!(
                "SELECT id, data FROM tasks WHERE id IN (SELECT task_id FROM task_tags
                    WHERE {cond} GROUP BY task_id HAVING count(*) = {})
                 ORDER BY id",
                tags.len()
            );
            let args: Vec<&dyn rusqlite::ToSql> =
                tags.iter().flat_map(|(k, v)| [k as &dyn rusqlite::ToSql, v]).collect();
            inner.query_tasks(conn, "get_by_tags", &sql, &args)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.run("stats", |conn, inner| {
            let err = inner.err("stats");
            let (total, enabled): (i64, i64) = conn
                .query_row("SELECT count(*), coalesce(sum(enabled), 0) FROM tasks", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(&err)?;
            let last: Option<i64> = conn
                .query_row("SELECT value FROM meta WHERE key = 'last_sync'", [], |r| r.get(0))
                .optional()
                .map_err(&err)?;
            Ok(StoreStats {
                total_tasks: total,
                enabled_tasks: enabled,
                last_sync: last.and_then(|n| Timestamp::from_nanosecond(i128::from(n)).ok()),
            })
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let conn = inner.conn.lock().unwrap_or_else(PoisonError::into_inner).take();
            match conn {
                // Closing the last connection checkpoints the WAL into the file.
                Some(conn) => conn.close().map_err(|(_, e)| inner.err("close")(e)),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| self.inner.err("close")(e))?
    }

    async fn record_execution(&self, execution: &TaskExecution) -> Result<()> {
        self.check("record_execution")?;
        let row = exec_row(execution)?;
        self.run("record_execution", move |conn, inner| {
            inner.write_executions(conn, "record_execution", &[row])
        })
        .await
    }

    async fn executions(&self, query: &ExecutionQuery) -> Result<Vec<TaskExecution>> {
        let query = query.clone();
        self.run("executions", move |conn, inner| {
            let err = inner.err("executions");
            let mut sql = format!("SELECT {EXEC_COLUMNS} FROM executions");
            let mut args: Vec<Value> = Vec::new();
            let mut conds = Vec::new();
            if let Some(id) = &query.task_id {
                conds.push("task_id = ?");
                args.push(Value::Text(id.clone()));
            }
            if let Some(s) = query.status {
                conds.push("status = ?");
                args.push(Value::Text(s.as_str().to_string()));
            }
            if !conds.is_empty() {
                sql.push_str(" WHERE ");
                sql.push_str(&conds.join(" AND "));
            }
            sql.push_str(" ORDER BY seq DESC LIMIT ?");
            args.push(Value::Integer(clamp_i64(query.max())));
            let mut stmt = conn.prepare_cached(&sql).map_err(&err)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args)).map_err(&err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(&err)? {
                out.push(exec_from_row(row).map_err(inner.err("executions"))?);
            }
            // Newest first, as the memory store orders them.
            out.sort_by(|a, b| {
                b.started_at.cmp(&a.started_at).then(b.scheduled_at.cmp(&a.scheduled_at))
            });
            Ok(out)
        })
        .await
    }

    async fn load_all(&self) -> Result<LoadReport> {
        self.run("load_all", |conn, inner| {
            let err = inner.err("load_all");
            let mut stmt =
                conn.prepare_cached("SELECT id, data FROM tasks ORDER BY id").map_err(&err)?;
            let mut rows = stmt.query([]).map_err(&err)?;
            let mut report = LoadReport::default();
            while let Some(row) = rows.next().map_err(&err)? {
                let id = match row.get_ref(0).map_err(&err)? {
                    ValueRef::Text(b) | ValueRef::Blob(b) => {
                        String::from_utf8_lossy(b).into_owned()
                    }
                    other => format!("{other:?}"),
                };
                match row.get_ref(1).map_err(&err).map(|data| Inner::decode(&id, data)) {
                    Ok(Ok(t)) => report.tasks.push(t),
                    Ok(Err(reason)) => report.errors.push(LoadError { id, reason }),
                    Err(e) => report.errors.push(LoadError { id, reason: e.to_string() }),
                }
            }
            Ok(report)
        })
        .await
    }

    async fn record_executions(&self, batch: &[TaskExecution]) -> Result<()> {
        self.check("record_executions")?;
        let rows = batch.iter().map(exec_row).collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        self.run("record_executions", move |conn, inner| {
            inner.write_executions(conn, "record_executions", &rows)
        })
        .await
    }
}
