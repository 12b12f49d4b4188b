//! The PostgreSQL store: tasks and execution history in a PostgreSQL database,
//! shared safely by several schedulers (feature `postgres`).
//!
//! [`PostgresStore`] keeps a pool of connections (deadpool) and all its tables
//! in one schema (`rota` unless [`PostgresOptions::schema`] says otherwise),
//! which it creates and migrates when it connects. Several schedulers can point
//! at the same schema: migrations run under an advisory lock, every write is a
//! single statement or one transaction, and history retention is serialised
//! across processes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use rota::{PostgresOptions, PostgresStore, Retention, SchedulerConfig, Store};
//!
//! # async fn demo() -> rota::Result<()> {
//! // Defaults: schema "rota", 8 connections, 5 s connect timeout.
//! let store = PostgresStore::connect("postgres://rota@db.internal:5432/jobs").await?;
//! store.close().await?;
//!
//! // Or with options: another schema, a smaller pool, shorter history.
//! let store = PostgresStore::connect_with(
//!     "postgres://rota:secret@db.internal:5432/jobs",
//!     PostgresOptions {
//!         schema: "billing_jobs".into(),
//!         pool_size: 4,
//!         connect_timeout: Duration::from_secs(2),
//!         retention: Retention { max_per_task: 50, ..Retention::default() },
//!     },
//! )
//! .await?;
//! let scheduler = SchedulerConfig::new().store(Arc::new(store)).build()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Tables
//!
//! All in the configured schema:
//!
//! * `schema_migrations (version int primary key, applied_at timestamptz)`: the
//!   migration steps applied.
//! * `tasks (id text primary key, name text, enabled bool, handler text,
//!   tags jsonb, data text, updated_at timestamptz)`: `data` is the task's JSON
//!   (the seed's format, as [`Task::serialize`](crate::Task::serialize) writes
//!   it), kept verbatim; `tags` has a GIN index for [`Store::get_by_tags`]. IDs
//!   use the `"C"` collation so tasks list in byte order, like every store.
//! * `executions (seq bigserial primary key, task_id, node_id, status,
//!   scheduled_at, started_at, ended_at, error, attempts, duration_ns,
//!   output)`: instants are `bigint` nanoseconds since the Unix epoch (exact,
//!   for instants from 1677 to 2262), indexed on `(task_id, seq)`,
//!   `(status, seq)` and `started_at`.
//!
//! # Limits
//!
//! * Connections are made without TLS (`sslmode=require` fails).
//! * PostgreSQL's `text` and `jsonb` can't hold the NUL character. A task ID
//!   with one is refused; in a task's other fields it is kept (the task's
//!   JSON escapes it), though the `name`, `handler` and `tags` columns show
//!   U+FFFD instead (tag queries match either way). In execution history it
//!   becomes U+FFFD.
//! * [`StoreStats::last_sync`] is the latest write seen by this process or
//!   recorded on a task row; a delete by another process is not seen there.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use jiff::Timestamp;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

use super::TaskExecution;
use super::{ExecutionQuery, ExecutionStatus, LoadError, LoadReport, Retention, Store, StoreStats};
use crate::error::{Error, Result};
use crate::task::DefaultTask;

const BACKEND: &str = "postgres store";

/// Rows per statement when saving a batch of tasks or executions.
const CHUNK: usize = 5_000;

/// The migration steps, in order. `{s}` is replaced with the quoted schema.
/// Never edit a released step: add a new one.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    r#"
CREATE TABLE {s}.tasks (
    id         text COLLATE "C" PRIMARY KEY,
    name       text NOT NULL,
    enabled    boolean NOT NULL,
    handler    text NOT NULL DEFAULT '',
    tags       jsonb NOT NULL DEFAULT '{}'::jsonb,
    data       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_tags_idx ON {s}.tasks USING gin (tags jsonb_path_ops);
CREATE TABLE {s}.executions (
    seq          bigserial PRIMARY KEY,
    task_id      text NOT NULL,
    node_id      text NOT NULL,
    status       text NOT NULL,
    scheduled_at bigint NOT NULL,
    started_at   bigint NOT NULL,
    ended_at     bigint,
    error        text NOT NULL DEFAULT '',
    attempts     bigint NOT NULL,
    duration_ns  bigint NOT NULL,
    output       text NOT NULL DEFAULT ''
);
CREATE INDEX executions_task_idx ON {s}.executions (task_id, seq);
CREATE INDEX executions_status_idx ON {s}.executions (status, seq);
CREATE INDEX executions_started_idx ON {s}.executions (started_at);
"#,
)];

/// How [`PostgresStore::connect_with`] sets up the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The schema that holds the store's tables; created if missing
    /// (default `"rota"`). Stores on different schemas of one database are
    /// independent. At most 63 bytes (PostgreSQL's identifier limit).
    pub schema: String,
    /// The most connections the pool opens (default 8, at least 1).
    pub pool_size: usize,
    /// How long to wait for a new connection to be established (default 5 s).
    /// It overrides a `connect_timeout` given in the URL.
    pub connect_timeout: Duration,
    /// How much execution history to keep.
    pub retention: Retention,
}

impl Default for PostgresOptions {
    /// Schema `rota`, 8 connections, a 5 s connect timeout, the default retention.
    fn default() -> Self {
        PostgresOptions {
            schema: "rota".into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            retention: Retention::default(),
        }
    }
}

/// Tasks and history in PostgreSQL; see the [module docs](self).
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// Where the server is, for error messages (no password).
    addr: String,
    sql: Sql,
    retention: Retention,
    connect_timeout: Duration,
    retention_lock: i64,
    closed: AtomicBool,
    last_sync: Mutex<Option<Timestamp>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("addr", &self.addr)
            .field("schema", &self.schema)
            .field("pool_size", &status.max_size)
            .field("connections", &status.size)
            .field("retention", &self.retention)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// The store's statements, with the schema filled in.
#[derive(Debug)]
struct Sql {
    save: String,
    save_batch: String,
    save_run_state: String,
    get: String,
    get_all: String,
    by_tags: String,
    delete: String,
    clear_tasks: String,
    clear_executions: String,
    stats: String,
    record: String,
    trim_per_task: String,
    trim_total: String,
    trim_age: String,
    executions: String,
}

impl Sql {
    fn new(s: &str) -> Self {
        const UPSERT: &str = "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, \
             enabled = EXCLUDED.enabled, handler = EXCLUDED.handler, tags = EXCLUDED.tags, \
             data = EXCLUDED.data, updated_at = EXCLUDED.updated_at";
        Sql {
            save: format!(
                "INSERT INTO {s}.tasks (id, name, enabled, handler, tags, data, updated_at) \
                 VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, now()) {UPSERT}"
            ),
            save_batch: format!(
                "INSERT INTO {s}.tasks (id, name, enabled, handler, tags, data, updated_at) \
                 SELECT u.id, u.name, u.enabled, u.handler, u.tags::jsonb, u.data, now() \
                 FROM unnest($1::text[], $2::text[], $3::bool[], $4::text[], $5::text[], $6::text[]) \
                 AS u(id, name, enabled, handler, tags, data) {UPSERT}"
            ),
            // `json`, not `jsonb`: the text may hold \u0000, which jsonb refuses.
            save_run_state: format!(
                "UPDATE {s}.tasks AS t SET enabled = u.enabled, data = u.data, updated_at = now() \
                 FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[]) \
                 AS u(id, enabled, data, upd) \
                 WHERE t.id = u.id AND (t.data::json ->> 'updated_at') = u.upd"
            ),
            get: format!("SELECT id, data FROM {s}.tasks WHERE id = $1"),
            get_all: format!("SELECT id, data FROM {s}.tasks ORDER BY id"),
            by_tags: format!(
                "SELECT id, data FROM {s}.tasks WHERE tags @> $1::text::jsonb ORDER BY id"
            ),
            delete: format!("DELETE FROM {s}.tasks WHERE id = $1"),
            // Rows are locked in ID order, as `save_batch` locks them.
            clear_tasks: format!(
                "DELETE FROM {s}.tasks WHERE id IN \
                 (SELECT id FROM {s}.tasks ORDER BY id FOR UPDATE)"
            ),
            clear_executions: format!("DELETE FROM {s}.executions"),
            stats: format!(
                "SELECT count(*)::bigint, (count(*) FILTER (WHERE enabled))::bigint, \
                 (extract(epoch FROM max(updated_at)) * 1000000)::bigint FROM {s}.tasks"
            ),
            record: format!(
                "INSERT INTO {s}.executions (task_id, node_id, status, scheduled_at, started_at, \
                 ended_at, error, attempts, duration_ns, output) \
                 SELECT task_id, node_id, status, scheduled_at, started_at, ended_at, error, \
                 attempts, duration_ns, output \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], \
                 $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::text[]) \
                 WITH ORDINALITY AS u(task_id, node_id, status, scheduled_at, started_at, \
                 ended_at, error, attempts, duration_ns, output, ord) ORDER BY ord"
            ),
            trim_per_task: format!(
                "DELETE FROM {s}.executions WHERE seq IN (SELECT seq FROM (\
                 SELECT seq, row_number() OVER (PARTITION BY task_id ORDER BY seq DESC) AS rn \
                 FROM {s}.executions WHERE task_id = ANY($1::text[])) r WHERE rn > $2)"
            ),
            trim_total: format!(
                "DELETE FROM {s}.executions WHERE seq <= \
                 (SELECT seq FROM {s}.executions ORDER BY seq DESC OFFSET $1 LIMIT 1)"
            ),
            trim_age: format!("DELETE FROM {s}.executions WHERE started_at < $1"),
            executions: format!(
                "SELECT task_id, node_id, status, scheduled_at, started_at, ended_at, error, \
                 attempts, duration_ns, output FROM (SELECT * FROM {s}.executions {{where}} \
                 ORDER BY seq DESC LIMIT {{limit}}) x \
                 ORDER BY started_at DESC, scheduled_at DESC, seq DESC"
            ),
        }
    }
}

impl PostgresStore {
    /// Connects with the default [`PostgresOptions`] (schema `rota`).
    ///
    /// `url` is a libpq-style URL (`postgres://user:password@host:5432/db`) or
    /// key-value string (`host=... user=... dbname=...`).
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        Self::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects, creates the schema and tables if missing and applies pending
    /// migrations.
    ///
    /// Fails if the server can't be reached within `connect_timeout` (the
    /// error names the address), if the connection string is invalid, or if
    /// the schema was migrated by a newer version of rota.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresStore> {
        let PostgresOptions { schema, pool_size, connect_timeout, retention } = options;
        if schema.is_empty() || schema.len() > 63 || schema.contains('\0') {
            return Err(Error::InvalidInput {
                what: "postgres schema".into(),
                message: format!("{schema:?} must be 1 to 63 bytes, without NUL"),
            });
        }
        if pool_size == 0 {
            return Err(Error::InvalidInput {
                what: "postgres pool_size".into(),
                message: "must be at least 1".into(),
            });
        }
        if connect_timeout.is_zero() {
            return Err(Error::InvalidInput {
                what: "postgres connect_timeout".into(),
                message: "must be more than zero".into(),
            });
        }
        let mut cfg = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::backend(BACKEND, format!("invalid connection string: {}", describe(&e)))
        })?;
        cfg.connect_timeout(connect_timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("rota");
        }
        let addr = address(&cfg);
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Verified },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|e| Error::backend(BACKEND, format!("cannot build the pool: {e}")))?;
        let quoted = quote_ident(&schema);
        let store = PostgresStore {
            sql: Sql::new(&quoted),
            retention_lock: lock_key("retention", &schema),
            pool,
            schema,
            addr,
            retention,
            connect_timeout,
            closed: AtomicBool::new(false),
            last_sync: Mutex::new(None),
        };
        let mut client = store.client("connect").await?;
        store.migrate(&mut client, &quoted).await?;
        Ok(store)
    }

    /// The schema that holds this store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Applies pending migrations in one transaction, under an advisory lock
    /// keyed on the schema, so concurrent starts don't race.
    async fn migrate(&self, client: &mut Object, quoted: &str) -> Result<()> {
        let ctx = |what: &str| format!("migrating schema {:?}: {what}", self.schema);
        let tx = client.transaction().await.map_err(|e| self.err(&ctx("begin"), &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key("migrate", &self.schema)])
            .await
            .map_err(|e| self.err(&ctx("advisory lock"), &e))?;
        // DDL only when something is missing, so that a role without CREATE
        // rights can use a schema that is already migrated.
        let row = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                 to_regclass($2) IS NOT NULL",
                &[&self.schema, &format!("{quoted}.schema_migrations")],
            )
            .await
            .map_err(|e| self.err(&ctx("looking for the schema"), &e))?;
        let (has_schema, has_table): (bool, bool) = (row.get(0), row.get(1));
        if !has_schema {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
                .await
                .map_err(|e| self.err(&ctx("creating the schema"), &e))?;
        }
        if !has_table {
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations (\
                 version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .map_err(|e| self.err(&ctx("creating schema_migrations"), &e))?;
        }
        let row = tx
            .query_one(&format!("SELECT max(version) FROM {quoted}.schema_migrations"), &[])
            .await
            .map_err(|e| self.err(&ctx("reading the version"), &e))?;
        let current: i32 = row.get::<_, Option<i32>>(0).unwrap_or(0);
        let known = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > known {
            return Err(Error::backend(
                BACKEND,
                format!(
                    "schema {:?} is at migration version {current}, newer than this version of \
                     rota knows (up to {known}); upgrade rota, or use another schema",
                    self.schema
                ),
            ));
        }
        for (version, step) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            tx.batch_execute(&step.replace("{s}", quoted))
                .await
                .map_err(|e| self.err(&ctx(&format!("applying version {version}")), &e))?;
            tx.execute(
                &format!("INSERT INTO {quoted}.schema_migrations (version) VALUES ($1)"),
                &[version],
            )
            .await
            .map_err(|e| self.err(&ctx(&format!("recording version {version}")), &e))?;
        }
        tx.commit().await.map_err(|e| self.err(&ctx("commit"), &e))
    }

    fn check(&self, what: &str) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed(what));
        }
        Ok(())
    }

    /// A pooled connection, or a clear error.
    async fn client(&self, what: &str) -> Result<Object> {
        self.check(what)?;
        self.pool.get().await.map_err(|e| match e {
            PoolError::Closed => closed(what),
            PoolError::Backend(e) => Error::backend(
                BACKEND,
                format!("{what}: cannot connect to {}: {}", self.addr, describe(&e)),
            ),
            PoolError::Timeout(_) => Error::backend(
                BACKEND,
                format!(
                    "{what}: timed out after {:?} connecting to {}",
                    self.connect_timeout, self.addr
                ),
            ),
            e => Error::backend(BACKEND, format!("{what}: {} ({e})", self.addr)),
        })
    }

    fn err(&self, what: &str, e: &tokio_postgres::Error) -> Error {
        Error::backend(BACKEND, format!("{what} (schema {:?}): {}", self.schema, describe(e)))
    }

    fn touch(&self) {
        *self.last_sync.lock().unwrap() = Some(Timestamp::now());
    }

    /// Reads `(id, data)` rows into tasks, one error per row that doesn't parse.
    fn parse_rows(rows: &[tokio_postgres::Row]) -> Result<LoadReport> {
        let mut report = LoadReport { tasks: Vec::with_capacity(rows.len()), errors: Vec::new() };
        for row in rows {
            let id: String = row.try_get(0).map_err(|e| Error::backend(BACKEND, describe(&e)))?;
            let data: &str = row.try_get(1).map_err(|e| Error::backend(BACKEND, describe(&e)))?;
            match parse_task(&id, data) {
                Ok(t) => report.tasks.push(t),
                Err(reason) => report.errors.push(LoadError { id, reason }),
            }
        }
        Ok(report)
    }

    /// Tasks from `(id, data)` rows; a row that doesn't parse fails the call.
    fn tasks_from(rows: &[tokio_postgres::Row]) -> Result<Vec<DefaultTask>> {
        let report = Self::parse_rows(rows)?;
        match report.errors.first() {
            None => Ok(report.tasks),
            Some(e) => Err(Error::backend(
                BACKEND,
                match report.errors.len() - 1 {
                    0 => format!("{e}"),
                    more => format!("{e} (and {more} more unreadable tasks; load_all skips them)"),
                },
            )),
        }
    }
}

/// One task row: the JSON must parse and carry the row's ID.
fn parse_task(id: &str, data: &str) -> std::result::Result<DefaultTask, String> {
    let t: DefaultTask =
        serde_json::from_str(data).map_err(|e| format!("corrupt task JSON: {e}"))?;
    if &*t.id != id {
        return Err(format!("the stored task's JSON has ID {:?}, not the row's", t.id));
    }
    Ok(t)
}

fn closed(what: &str) -> Error {
    Error::StoreNotInitialized { what: format!("postgres store is closed ({what})") }
}

/// A task's ID must be non-empty and fit in a `text` column (no NUL).
/// `tasks` checked, by ID. The last of several tasks with one ID wins, as with
/// one save each (one statement can't touch a row twice). Rows go in ID order,
/// so that concurrent batches on shared IDs lock rows in the same order and
/// can't deadlock.
fn by_id(tasks: &[DefaultTask]) -> Result<BTreeMap<&str, &DefaultTask>> {
    let mut by_id = BTreeMap::new();
    for t in tasks {
        check_id(t)?;
        by_id.insert(&*t.id, t);
    }
    Ok(by_id)
}

fn check_id(t: &DefaultTask) -> Result<()> {
    if t.id.is_empty() {
        return Err(Error::TaskIdRequired { name: t.name.to_string() });
    }
    if t.id.contains('\0') {
        return Err(Error::InvalidInput {
            what: format!("task ID {:?}", t.id),
            message: "the postgres store can't keep a NUL character in an ID".into(),
        });
    }
    Ok(())
}

/// The task's tags (for the `tags` column) and its JSON (for `data`).
fn task_json(t: &DefaultTask) -> Result<(String, String)> {
    let data = serde_json::to_string(t).map_err(|e| Error::InvalidInput {
        what: format!("task {:?}", t.id),
        message: format!("cannot serialise: {e}"),
    })?;
    Ok((tags_json(&t.tags)?, data))
}

/// Tags as JSON for the `jsonb` column, which can't hold NUL: it becomes
/// U+FFFD there (the task's JSON in `data` keeps it), in queries too.
fn tags_json(tags: &BTreeMap<String, String>) -> Result<String> {
    let json = if tags.iter().any(|(k, v)| k.contains('\0') || v.contains('\0')) {
        let clean: BTreeMap<Cow<'_, str>, Cow<'_, str>> =
            tags.iter().map(|(k, v)| (pg_text(k), pg_text(v))).collect();
        serde_json::to_string(&clean)
    } else {
        serde_json::to_string(tags)
    };
    json.map_err(|e| Error::InvalidInput { what: "tags".into(), message: e.to_string() })
}

/// PostgreSQL's `text` can't hold NUL: it becomes U+FFFD.
fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn nanos(t: Timestamp, what: &str, task: &str) -> Result<i64> {
    i64::try_from(t.as_nanosecond()).map_err(|_| Error::InvalidInput {
        what: format!("execution of task {task:?}"),
        message: format!("{what} {t} is outside what the postgres store keeps (1677 to 2262)"),
    })
}

fn from_nanos(n: i64) -> Result<Timestamp> {
    Timestamp::from_nanosecond(i128::from(n))
        .map_err(|e| Error::backend(BACKEND, format!("corrupt execution instant {n}: {e}")))
}

fn parse_status(s: &str) -> Result<ExecutionStatus> {
    Ok(match s {
        "running" => ExecutionStatus::Running,
        "completed" => ExecutionStatus::Completed,
        "failed" => ExecutionStatus::Failed,
        "missed" => ExecutionStatus::Missed,
        "skipped" => ExecutionStatus::Skipped,
        other => {
            return Err(Error::backend(BACKEND, format!("corrupt execution status {other:?}")))
        }
    })
}

/// A quoted SQL identifier.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A stable advisory-lock key (FNV-1a, 64 bits) for `purpose` on `schema`:
/// the same in every process and every build.
fn lock_key(purpose: &str, schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let parts: [&[u8]; 4] = [b"rota:", purpose.as_bytes(), b":", schema.as_bytes()];
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// `host:port` of every host in `cfg`, plus database and user (no password).
fn address(cfg: &tokio_postgres::Config) -> String {
    let ports = cfg.get_ports();
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
        })
        .collect();
    if hosts.is_empty() {
        hosts = cfg
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{a}:{}", port(i)))
            .collect();
    }
    let mut s = if hosts.is_empty() { "(no host)".to_string() } else { hosts.join(",") };
    if let Some(db) = cfg.get_dbname() {
        s.push_str(&format!(" (database {db:?}"));
        if let Some(user) = cfg.get_user() {
            s.push_str(&format!(", user {user:?}"));
        }
        s.push(')');
    }
    s
}

/// A PostgreSQL error with its cause, SQLSTATE, detail and hint.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; detail: {d}"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Columns of a batch of tasks, for `unnest`.
#[derive(Default)]
struct TaskColumns<'a> {
    ids: Vec<&'a str>,
    names: Vec<Cow<'a, str>>,
    enabled: Vec<bool>,
    handlers: Vec<Cow<'a, str>>,
    tags: Vec<String>,
    data: Vec<String>,
}

/// Columns of a batch of executions, for `unnest`.
#[derive(Default)]
struct ExecColumns<'a> {
    task_ids: Vec<Cow<'a, str>>,
    node_ids: Vec<Cow<'a, str>>,
    statuses: Vec<&'static str>,
    scheduled: Vec<i64>,
    started: Vec<i64>,
    ended: Vec<Option<i64>>,
    errors: Vec<Cow<'a, str>>,
    attempts: Vec<i64>,
    durations: Vec<i64>,
    outputs: Vec<Cow<'a, str>>,
}

#[async_trait]
impl Store for PostgresStore {
    fn is_shared(&self) -> bool {
        true
    }

    async fn save(&self, task: &DefaultTask) -> Result<()> {
        self.check("save")?;
        check_id(task)?;
        let (tags, data) = task_json(task)?;
        let (name, handler) = (pg_text(&task.name), pg_text(&task.handler_name));
        let client = self.client("save").await?;
        let ctx = || format!("save task {:?}", task.id);
        let stmt = client.prepare_cached(&self.sql.save).await.map_err(|e| self.err(&ctx(), &e))?;
        client
            .execute(&stmt, &[&&*task.id, &name, &task.enabled, &handler, &tags, &data])
            .await
            .map_err(|e| self.err(&ctx(), &e))?;
        self.touch();
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<DefaultTask> {
        let client = self.client("get").await?;
        if id.contains('\0') {
            // No stored ID has one (text can't hold it).
            return Err(Error::TaskNotFound { id: id.to_string() });
        }
        let ctx = || format!("get task {id:?}");
        let stmt = client.prepare_cached(&self.sql.get).await.map_err(|e| self.err(&ctx(), &e))?;
        let rows = client.query(&stmt, &[&id]).await.map_err(|e| self.err(&ctx(), &e))?;
        if rows.is_empty() {
            return Err(Error::TaskNotFound { id: id.to_string() });
        }
        Ok(Self::tasks_from(&rows)?.remove(0))
    }

    async fn get_all(&self) -> Result<Vec<DefaultTask>> {
        let client = self.client("get_all").await?;
        let stmt =
            client.prepare_cached(&self.sql.get_all).await.map_err(|e| self.err("get_all", &e))?;
        let rows = client.query(&stmt, &[]).await.map_err(|e| self.err("get_all", &e))?;
        Self::tasks_from(&rows)
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let client = self.client("delete").await?;
        if id.contains('\0') {
            return Err(Error::TaskNotFound { id: id.to_string() });
        }
        let ctx = || format!("delete task {id:?}");
        let stmt =
            client.prepare_cached(&self.sql.delete).await.map_err(|e| self.err(&ctx(), &e))?;
        let n = client.execute(&stmt, &[&id]).await.map_err(|e| self.err(&ctx(), &e))?;
        self.touch();
        if n == 0 {
            return Err(Error::TaskNotFound { id: id.to_string() });
        }
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        let mut client = self.client("clear").await?;
        let tx = client.transaction().await.map_err(|e| self.err("clear", &e))?;
        tx.execute(&self.sql.clear_tasks, &[]).await.map_err(|e| self.err("clear tasks", &e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.retention_lock])
            .await
            .map_err(|e| self.err("clear: retention lock", &e))?;
        tx.execute(&self.sql.clear_executions, &[])
            .await
            .map_err(|e| self.err("clear executions", &e))?;
        tx.commit().await.map_err(|e| self.err("clear", &e))?;
        self.touch();
        Ok(())
    }

    async fn save_batch(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.check("save_batch")?;
        // Validate and encode everything first: all or nothing.
        let by_id = by_id(tasks)?;
        if by_id.is_empty() {
            return Ok(());
        }
        let mut chunks: Vec<TaskColumns<'_>> = Vec::new();
        for t in by_id.into_values() {
            if chunks.last().is_none_or(|c| c.ids.len() >= CHUNK) {
                chunks.push(TaskColumns::default());
            }
            let c = chunks.last_mut().expect("a chunk was pushed");
            let (tags, data) = task_json(t)?;
            c.ids.push(&t.id);
            c.names.push(pg_text(&t.name));
            c.enabled.push(t.enabled);
            c.handlers.push(pg_text(&t.handler_name));
            c.tags.push(tags);
            c.data.push(data);
        }
        let mut client = self.client("save_batch").await?;
        let ctx = format!("save_batch of {} tasks", tasks.len());
        let tx = client.transaction().await.map_err(|e| self.err(&ctx, &e))?;
        let stmt = tx.prepare_cached(&self.sql.save_batch).await.map_err(|e| self.err(&ctx, &e))?;
        for c in &chunks {
            tx.execute(&stmt, &[&c.ids, &c.names, &c.enabled, &c.handlers, &c.tags, &c.data])
                .await
                .map_err(|e| self.err(&ctx, &e))?;
        }
        tx.commit().await.map_err(|e| self.err(&ctx, &e))?;
        self.touch();
        Ok(())
    }

    async fn save_run_state(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.check("save_run_state")?;
        let by_id = by_id(tasks)?;
        if by_id.is_empty() {
            return Ok(());
        }
        let (mut ids, mut enabled, mut data, mut upd) = (vec![], vec![], vec![], vec![]);
        for t in by_id.into_values() {
            ids.push(&*t.id);
            enabled.push(t.enabled);
            data.push(task_json(t)?.1);
            upd.push(super::updated_at_json(t));
        }
        let mut client = self.client("save_run_state").await?;
        let ctx = format!("save_run_state of {} tasks", ids.len());
        let tx = client.transaction().await.map_err(|e| self.err(&ctx, &e))?;
        let stmt =
            tx.prepare_cached(&self.sql.save_run_state).await.map_err(|e| self.err(&ctx, &e))?;
        tx.execute(&stmt, &[&ids, &enabled, &data, &upd]).await.map_err(|e| self.err(&ctx, &e))?;
        tx.commit().await.map_err(|e| self.err(&ctx, &e))?;
        self.touch();
        Ok(())
    }

    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<DefaultTask>> {
        let want = tags_json(tags)?;
        let client = self.client("get_by_tags").await?;
        let ctx = || format!("get_by_tags {want}");
        let stmt =
            client.prepare_cached(&self.sql.by_tags).await.map_err(|e| self.err(&ctx(), &e))?;
        let rows = client.query(&stmt, &[&want]).await.map_err(|e| self.err(&ctx(), &e))?;
        Self::tasks_from(&rows)
    }

    async fn stats(&self) -> Result<StoreStats> {
        let client = self.client("stats").await?;
        let stmt =
            client.prepare_cached(&self.sql.stats).await.map_err(|e| self.err("stats", &e))?;
        let row = client.query_one(&stmt, &[]).await.map_err(|e| self.err("stats", &e))?;
        let db_sync =
            row.get::<_, Option<i64>>(2).and_then(|us| Timestamp::from_microsecond(us).ok());
        let local = *self.last_sync.lock().unwrap();
        Ok(StoreStats {
            total_tasks: row.get(0),
            enabled_tasks: row.get(1),
            last_sync: local.max(db_sync),
        })
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.pool.close();
        Ok(())
    }

    async fn record_execution(&self, execution: &TaskExecution) -> Result<()> {
        self.record_executions(std::slice::from_ref(execution)).await
    }

    async fn record_executions(&self, batch: &[TaskExecution]) -> Result<()> {
        self.check("record_executions")?;
        if batch.is_empty() {
            return Ok(());
        }
        // Encode everything first: all or nothing.
        let mut chunks: Vec<ExecColumns<'_>> = Vec::new();
        let mut newest = i64::MIN;
        let mut task_ids: HashSet<Cow<'_, str>> = HashSet::new();
        for e in batch {
            let task = e.task_id.as_str();
            if chunks.last().is_none_or(|c| c.task_ids.len() >= CHUNK) {
                chunks.push(ExecColumns::default());
            }
            let c = chunks.last_mut().expect("a chunk was pushed");
            let started = nanos(e.started_at, "started_at", task)?;
            newest = newest.max(started);
            c.task_ids.push(pg_text(task));
            c.node_ids.push(pg_text(&e.node_id));
            c.statuses.push(e.status.as_str());
            c.scheduled.push(nanos(e.scheduled_at, "scheduled_at", task)?);
            c.started.push(started);
            c.ended.push(e.ended_at.map(|t| nanos(t, "ended_at", task)).transpose()?);
            c.errors.push(pg_text(&e.error));
            c.attempts.push(i64::from(e.attempts));
            c.durations.push(i64::try_from(e.duration.as_nanos()).map_err(|_| {
                Error::InvalidInput {
                    what: format!("execution of task {task:?}"),
                    message: format!("duration {:?} is too long to store", e.duration),
                }
            })?);
            c.outputs.push(pg_text(&e.output));
            task_ids.insert(pg_text(task));
        }
        let task_ids: Vec<Cow<'_, str>> = task_ids.into_iter().collect();
        let ctx = format!("record_executions of {} runs", batch.len());
        let mut client = self.client("record_executions").await?;
        let tx = client.transaction().await.map_err(|e| self.err(&ctx, &e))?;
        let stmt = tx.prepare_cached(&self.sql.record).await.map_err(|e| self.err(&ctx, &e))?;
        for c in &chunks {
            tx.execute(
                &stmt,
                &[
                    &c.task_ids,
                    &c.node_ids,
                    &c.statuses,
                    &c.scheduled,
                    &c.started,
                    &c.ended,
                    &c.errors,
                    &c.attempts,
                    &c.durations,
                    &c.outputs,
                ],
            )
            .await
            .map_err(|e| self.err(&ctx, &e))?;
        }
        // Retention, serialised across processes so that concurrent trims
        // neither deadlock nor miss each other's rows.
        let r = self.retention;
        let ctx = format!("{ctx}: retention");
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&self.retention_lock])
            .await
            .map_err(|e| self.err(&ctx, &e))?;
        let per_task = i64::try_from(r.max_per_task).unwrap_or(i64::MAX);
        let stmt =
            tx.prepare_cached(&self.sql.trim_per_task).await.map_err(|e| self.err(&ctx, &e))?;
        tx.execute(&stmt, &[&task_ids, &per_task]).await.map_err(|e| self.err(&ctx, &e))?;
        let total = i64::try_from(r.max_total).unwrap_or(i64::MAX);
        let stmt = tx.prepare_cached(&self.sql.trim_total).await.map_err(|e| self.err(&ctx, &e))?;
        tx.execute(&stmt, &[&total]).await.map_err(|e| self.err(&ctx, &e))?;
        if let Some(age) = r.max_age {
            let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
            let cutoff = newest.saturating_sub(age);
            let stmt =
                tx.prepare_cached(&self.sql.trim_age).await.map_err(|e| self.err(&ctx, &e))?;
            tx.execute(&stmt, &[&cutoff]).await.map_err(|e| self.err(&ctx, &e))?;
        }
        tx.commit().await.map_err(|e| self.err(&ctx, &e))
    }

    async fn executions(&self, query: &ExecutionQuery) -> Result<Vec<TaskExecution>> {
        let client = self.client("executions").await?;
        let limit = i64::try_from(query.max()).unwrap_or(i64::MAX);
        let status = query.status.map(|s| s.as_str());
        // As recorded: NUL stored as U+FFFD.
        let task_id = query.task_id.as_deref().map(pg_text);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        let mut conds: Vec<String> = Vec::new();
        if let Some(id) = &task_id {
            params.push(id);
            conds.push(format!("task_id = ${}", params.len()));
        }
        if let Some(s) = &status {
            params.push(s);
            conds.push(format!("status = ${}", params.len()));
        }
        params.push(&limit);
        let where_ =
            if conds.is_empty() { String::new() } else { format!("WHERE {}", conds.join(" AND ")) };
        let sql = self
            .sql
            .executions
            .replace("{where}", &where_)
            .replace("{limit}", &format!("${}", params.len()));
        let ctx = "executions";
        let stmt = client.prepare_cached(&sql).await.map_err(|e| self.err(ctx, &e))?;
        let rows = client.query(&stmt, &params).await.map_err(|e| self.err(ctx, &e))?;
        let bad = |e: tokio_postgres::Error| {
            Error::backend(BACKEND, format!("executions: {}", describe(&e)))
        };
        rows.iter()
            .map(|row| {
                let attempts: i64 = row.try_get(7).map_err(bad)?;
                let duration: i64 = row.try_get(8).map_err(bad)?;
                Ok(TaskExecution {
                    task_id: row.try_get(0).map_err(bad)?,
                    node_id: row.try_get(1).map_err(bad)?,
                    status: parse_status(row.try_get(2).map_err(bad)?)?,
                    scheduled_at: from_nanos(row.try_get(3).map_err(bad)?)?,
                    started_at: from_nanos(row.try_get(4).map_err(bad)?)?,
                    ended_at: row
                        .try_get::<_, Option<i64>>(5)
                        .map_err(bad)?
                        .map(from_nanos)
                        .transpose()?,
                    error: row.try_get(6).map_err(bad)?,
                    attempts: u32::try_from(attempts).map_err(|_| {
                        Error::backend(BACKEND, format!("corrupt execution attempts {attempts}"))
                    })?,
                    duration: Duration::from_nanos(u64::try_from(duration).map_err(|_| {
                        Error::backend(BACKEND, format!("corrupt execution duration {duration}"))
                    })?),
                    output: row.try_get(9).map_err(bad)?,
                })
            })
            .collect()
    }

    async fn load_all(&self) -> Result<LoadReport> {
        let client = self.client("load_all").await?;
        let stmt =
            client.prepare_cached(&self.sql.get_all).await.map_err(|e| self.err("load_all", &e))?;
        let rows = client.query(&stmt, &[]).await.map_err(|e| self.err("load_all", &e))?;
        Self::parse_rows(&rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("migrate", "rota"), lock_key("migrate", "rota"));
        assert_ne!(lock_key("migrate", "rota"), lock_key("migrate", "rota2"));
        assert_ne!(lock_key("migrate", "rota"), lock_key("retention", "rota"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("rota"), "\"rota\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn addresses_name_host_port_database_and_user() {
        let cfg = tokio_postgres::Config::from_str("postgres://u:secret@127.0.0.1:1/test").unwrap();
        let a = address(&cfg);
        assert_eq!(a, "127.0.0.1:1 (database \"test\", user \"u\")");
        assert!(!a.contains("secret"));
    }
}
