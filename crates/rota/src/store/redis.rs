//! The Redis store (cargo feature `redis`): tasks and execution history in a
//! Redis server, under a key prefix of their own.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use rota::{RedisOptions, RedisStore, Retention, SchedulerConfig};
//!
//! # async fn demo() -> rota::Result<()> {
//! // The defaults: prefix "rota:", a 5 s connect timeout, the default retention.
//! let store = RedisStore::connect("redis://127.0.0.1:6379/0").await?;
//!
//! // Or with a prefix of its own, so that several schedulers share one server.
//! let store = RedisStore::connect_with(
//!     "redis://127.0.0.1:6379/0",
//!     RedisOptions {
//!         prefix: "billing:".into(),
//!         connect_timeout: Duration::from_secs(2),
//!         retention: Retention { max_per_task: 50, ..Retention::default() },
//!         ..RedisOptions::default()
//!     },
//! )
//! .await?;
//! let scheduler = SchedulerConfig::new().store(Arc::new(store)).build()?;
//! # let _ = scheduler;
//! # Ok(())
//! # }
//! ```
//!
//! # Key layout
//!
//! Every key starts with the prefix (`{p}` below, `"rota:"` by default):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{p}task:{id}` | string | the task, as the seed's JSON |
//! | `{p}tasks` | set | every task ID |
//! | `{p}enabled` | set | the IDs of enabled tasks (for [`Store::stats`]) |
//! | `{p}tag:{n}:{key}={value}` | set | the IDs of the tasks tagged `key=value`; `n` is the byte length of `key`, so an `=` in a key or value cannot make two tags collide |
//! | `{p}meta` | hash | `last_sync`: when the store was last written (RFC 3339) |
//! | `{p}exec:{id}` | list | the task's runs as JSON, newest first, at most `max_per_task` |
//! | `{p}exec` | list | every task's runs as JSON, newest first, at most `max_total` |
//!
//! Writes of tasks go through Lua scripts, so a task, its ID sets and its tag
//! index change together: a save reads the task's previous tags inside the
//! same script and takes the task out of their sets. [`Store::save_batch`] and
//! [`Store::record_executions`] send their scripts in chunks inside one
//! `MULTI`/`EXEC`, so a batch is written all or nothing.
//!
//! The history is bounded by the store's [`Retention`]: each write trims the
//! task's list to `max_per_task` and the global list to `max_total`. With
//! `max_age`, records older than the newest written one by more than `max_age`
//! are dropped from the tails of the lists written, and those lists expire
//! when nothing has been written to them for `max_age`. A task's runs are
//! read from its own list; a query by status alone reads the global list, so
//! it sees the newest `max_total` runs of all tasks.
//!
//! [`Store::clear`] deletes only the keys above under this store's prefix
//! (found with `SCAN`, never `FLUSHDB`); it is not atomic with respect to
//! writers running at the same time. Give stores that share a server
//! prefixes that end with a separator such as `:`.
//!
//! The connection is a [`ConnectionManager`]: it reconnects on its own after
//! the server goes away. The call that finds the connection broken fails with
//! a backend error, and so do calls made while the server is unreachable; the
//! ones after it succeed again. A write whose reply times out may still have
//! been applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::RwLock;
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{Client, Cmd, RedisError, Script};
use async_trait::async_trait;
use jiff::{tz::TimeZone, Timestamp};

use super::{
    has_tags, ExecutionQuery, LoadError, LoadReport, Retention, Store, StoreStats, TaskExecution,
};
use crate::error::{Error, Result};
use crate::task::DefaultTask;

const BACKEND: &str = "redis store";

/// Tasks per script call, and script calls per `MULTI`, when writing a batch.
const WRITE_CHUNK: usize = 1_000;
/// Keys per `MGET`.
const READ_CHUNK: usize = 1_000;
/// `MGET`s per round trip.
const READS_PER_TRIP: usize = 10;
/// History records per `LRANGE` when a query has to filter the global list.
const SCAN_PAGE: isize = 1_000;

/// Saves tasks (distinct IDs, at most a few thousand). `ARGV`: prefix, now
/// (RFC 3339), then for each task: ID, JSON, `1` if enabled else `0`, the
/// number of tags, and the tags as key, value.
/// Writes run state. `ARGV`: prefix, then ID, JSON, `updated_at` as the JSON
/// writes it, enabled (`1`/`0`) per task. A task is written only if its
/// stored copy has the same `updated_at`. Returns how many were written.
const RUN_STATE_LUA: &str = r#"
local p, n = ARGV[1], 0
for i = 2, #ARGV, 4 do
  local id, json, upd, on = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local key = p .. 'task:' .. id
  local old = redis.call('GET', key)
  if old then
    local ok, t = pcall(cjson.decode, old)
    if ok and type(t) == 'table' and t.updated_at == upd then
      redis.call('SET', key, json)
      if on == '1' then
        redis.call('SADD', p .. 'enabled', id)
      else
        redis.call('SREM', p .. 'enabled', id)
      end
      n = n + 1
    end
  end
end
return n
"#;

const SAVE_LUA: &str = r#"
local p = ARGV[1]
local function tagkey(k, v) return p .. 'tag:' .. #k .. ':' .. k .. '=' .. v end
local ids, keys, kv, on, off, tags = {}, {}, {}, {}, {}, {}
local i = 3
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 3])
  local key = p .. 'task:' .. id
  ids[#ids + 1] = id
  keys[#keys + 1] = key
  kv[#kv + 1] = key
  kv[#kv + 1] = ARGV[i + 1]
  if ARGV[i + 2] == '1' then on[#on + 1] = id else off[#off + 1] = id end
  for j = 1, n do
    tags[#tags + 1] = tagkey(ARGV[i + 2 + 2 * j], ARGV[i + 3 + 2 * j])
    tags[#tags + 1] = id
  end
  i = i + 4 + 2 * n
end
if #ids == 0 then return 0 end
-- Take each task out of the sets of its previous tags.
local olds = redis.call('MGET', unpack(keys))
for j = 1, #ids do
  local old = olds[j]
  if old then
    local ok, t = pcall(cjson.decode, old)
    if ok and type(t) == 'table' and type(t.tags) == 'table' then
      for k, v in pairs(t.tags) do
        if type(k) == 'string' and type(v) == 'string' then
          redis.call('SREM', tagkey(k, v), ids[j])
        end
      end
    end
  end
end
redis.call('MSET', unpack(kv))
redis.call('SADD', p .. 'tasks', unpack(ids))
if #on > 0 then redis.call('SADD', p .. 'enabled', unpack(on)) end
if #off > 0 then redis.call('SREM', p .. 'enabled', unpack(off)) end
for j = 1, #tags, 2 do redis.call('SADD', tags[j], tags[j + 1]) end
redis.call('HSET', p .. 'meta', 'last_sync', ARGV[2])
return 1
"#;

/// Deletes a task. `ARGV`: prefix, now, ID. Returns 0 if there was no task.
const DELETE_LUA: &str = r#"
local p, id = ARGV[1], ARGV[3]
local key = p .. 'task:' .. id
local old = redis.call('GET', key)
redis.call('SREM', p .. 'tasks', id)
redis.call('SREM', p .. 'enabled', id)
redis.call('HSET', p .. 'meta', 'last_sync', ARGV[2])
if not old then return 0 end
local ok, t = pcall(cjson.decode, old)
if ok and type(t) == 'table' and type(t.tags) == 'table' then
  for k, v in pairs(t.tags) do
    if type(k) == 'string' and type(v) == 'string' then
      redis.call('SREM', p .. 'tag:' .. #k .. ':' .. k .. '=' .. v, id)
    end
  end
end
redis.call('DEL', key)
return 1
"#;

/// Appends runs. `ARGV`: prefix, last index kept per task (`''`: keep none),
/// last index kept in all (`''`: keep none), age cutoff (`''`: none; else
/// `YYYY-MM-DDTHH:MM:SS` plus 9 digits of nanoseconds, UTC), expiry in ms
/// (`''`: none), then for each run: task ID, JSON.
const RECORD_LUA: &str = r#"
local p = ARGV[1]
local per, total, cutoff, ttl = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local global = p .. 'exec'
local seen, order = {}, {}
for i = 6, #ARGV, 2 do
  local k = p .. 'exec:' .. ARGV[i]
  redis.call('LPUSH', k, ARGV[i + 1])
  redis.call('LPUSH', global, ARGV[i + 1])
  if not seen[k] then
    seen[k] = true
    order[#order + 1] = k
  end
end
local function norm(s)
  local main, frac = string.match(s, '^(%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d)%.?(%d*)Z$')
  if not main or #frac > 9 then return nil end
  return main .. frac .. string.rep('0', 9 - #frac)
end
local function trim(k, stop)
  if stop == '' then
    redis.call('DEL', k)
    return
  end
  redis.call('LTRIM', k, 0, stop)
  if cutoff ~= '' then
    while true do
      local last = redis.call('LINDEX', k, -1)
      if not last then break end
      local ok, e = pcall(cjson.decode, last)
      local at = ok and type(e) == 'table' and type(e.started_at) == 'string' and norm(e.started_at)
      if at and at < cutoff then
        redis.call('RPOP', k)
      else
        break
      end
    end
  end
  if ttl ~= '' then redis.call('PEXPIRE', k, ttl) end
end
for _, k in ipairs(order) do trim(k, per) end
trim(global, total)
return 1
"#;

/// How to open a [`RedisStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Put before every key (default `"rota:"`): stores with different prefixes
    /// share a server without seeing each other.
    pub prefix: String,
    /// How long connecting may take, retries included (default 5 s).
    pub connect_timeout: Duration,
    /// How long one command may wait for its reply (default 30 s).
    pub response_timeout: Duration,
    /// How much execution history to keep.
    pub retention: Retention,
}

impl Default for RedisOptions {
    /// Prefix `"rota:"`, 5 s to connect, 30 s per reply, the default retention.
    fn default() -> Self {
        RedisOptions {
            prefix: "rota:".into(),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            retention: Retention::default(),
        }
    }
}

/// Tasks and history in Redis (see the [module docs](self) for the key layout).
pub struct RedisStore {
    /// `None` once closed.
    con: RwLock<Option<ConnectionManager>>,
    prefix: String,
    /// The server's address, for messages (no credentials).
    addr: String,
    retention: Retention,
    save_script: Script,
    run_state_script: Script,
    delete_script: Script,
    record_script: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .field("retention", &self.retention)
            .field("closed", &self.con.read().unwrap().is_none())
            .finish()
    }
}

impl RedisStore {
    /// Connects to the server at `url` (`redis://[:password@]host:port/db`,
    /// or `redis+unix:///path/to/socket`) with the default [`RedisOptions`].
    pub async fn connect(url: &str) -> Result<RedisStore> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Connects to the server at `url` with `options`.
    ///
    /// Fails within `options.connect_timeout` if the server cannot be reached,
    /// with an error that names its address.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<RedisStore> {
        let client = Client::open(url).map_err(|e| {
            Error::backend(BACKEND, format!("invalid redis URL {}: {e}", redact(url)))
        })?;
        let addr = client.get_connection_info().addr().to_string();
        let timeout = options.connect_timeout;
        let response_timeout = Some(options.response_timeout).filter(|d| !d.is_zero());
        let con = crate::redis_conn::connect_manager(
            &client,
            BACKEND,
            &addr,
            timeout,
            response_timeout,
            Duration::from_secs(2),
        )
        .await?;
        Ok(RedisStore {
            con: RwLock::new(Some(con)),
            prefix: options.prefix,
            addr,
            retention: options.retention,
            save_script: Script::new(SAVE_LUA),
            run_state_script: Script::new(RUN_STATE_LUA),
            delete_script: Script::new(DELETE_LUA),
            record_script: Script::new(RECORD_LUA),
        })
    }

    /// The prefix of every key this store writes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key that holds task `id`'s JSON.
    pub fn task_key(&self, id: &str) -> String {
        format!("{}task:{id}", self.prefix)
    }

    /// The connection, or `StoreNotInitialized` once closed.
    fn con(&self, what: &str) -> Result<ConnectionManager> {
        self.con.read().unwrap().clone().ok_or_else(|| Error::StoreNotInitialized {
            what: format!("redis store is closed ({what})"),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Maps a Redis error to a backend error that says what was being done.
    fn err<'a>(&'a self, what: impl fmt::Display + 'a) -> impl FnOnce(RedisError) -> Error + 'a {
        move |e| Error::backend(BACKEND, format!("{what} ({}): {e}", self.addr))
    }

    /// Runs `script` once per chunk of `args` (each chunk after `head`), all
    /// in one `MULTI`/`EXEC` when there is more than one chunk.
    async fn run_chunks(
        &self,
        con: &mut ConnectionManager,
        script: &Script,
        source: &str,
        head: &[String],
        chunks: Vec<Vec<Vec<u8>>>,
        what: &str,
    ) -> Result<()> {
        match chunks.len() {
            0 => Ok(()),
            1 => {
                let mut inv = script.prepare_invoke();
                inv.arg(head).arg(&chunks[0]);
                inv.invoke_async::<()>(con).await.map_err(self.err(what))
            }
            _ => {
                // EVAL rather than EVALSHA: a script missing from the server's
                // cache would fail inside the transaction, after other chunks ran.
                let mut pipe = ::redis::pipe();
                pipe.atomic();
                for chunk in &chunks {
                    let mut c = Cmd::new();
                    c.arg("EVAL").arg(source).arg(0).arg(head).arg(chunk);
                    pipe.add_command(c).ignore();
                }
                pipe.query_async::<()>(con).await.map_err(self.err(what))
            }
        }
    }

    /// Writes `tasks` (already validated) atomically.
    async fn write_tasks(&self, tasks: &[DefaultTask], what: &str) -> Result<()> {
        let mut con = self.con(what)?;
        // The script reads a chunk's previous values before writing any: an ID
        // given twice would leave the first copy's tags in the index. The last
        // copy wins, as if the tasks were saved one by one.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            last.insert(&t.id, i);
        }
        let tasks: Vec<&DefaultTask> = if last.len() == tasks.len() {
            tasks.iter().collect()
        } else {
            tasks.iter().enumerate().filter(|(i, t)| last[&*t.id] == *i).map(|(_, t)| t).collect()
        };
        let mut chunks = Vec::with_capacity(tasks.len().div_ceil(WRITE_CHUNK));
        for part in tasks.chunks(WRITE_CHUNK) {
            let mut args: Vec<Vec<u8>> = Vec::with_capacity(part.len() * 4);
            for &t in part {
                let json = serde_json::to_vec(t).map_err(|e| {
                    Error::backend(BACKEND, format!("cannot serialise task {:?}: {e}", t.id))
                })?;
                args.push(t.id.as_bytes().to_vec());
                args.push(json);
                args.push(if t.enabled { b"1".to_vec() } else { b"0".to_vec() });
                args.push(t.tags.len().to_string().into_bytes());
                for (k, v) in t.tags.iter() {
                    args.push(k.clone().into_bytes());
                    args.push(v.clone().into_bytes());
                }
            }
            chunks.push(args);
        }
        let head = [self.prefix.clone(), Timestamp::now().to_string()];
        self.run_chunks(&mut con, &self.save_script, SAVE_LUA, &head, chunks, what).await
    }

    /// The raw values of tasks `ids`, in order (`None`: no such key).
    async fn fetch(
        &self,
        con: &mut ConnectionManager,
        ids: &[String],
        what: &str,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(ids.len());
        for trip in ids.chunks(READ_CHUNK * READS_PER_TRIP) {
            let mut pipe = ::redis::pipe();
            for chunk in trip.chunks(READ_CHUNK) {
                let mut c = ::redis::cmd("MGET");
                for id in chunk {
                    c.arg(self.task_key(id));
                }
                pipe.add_command(c);
            }
            let values: Vec<Vec<Option<Vec<u8>>>> =
                pipe.query_async(con).await.map_err(self.err(what))?;
            out.extend(values.into_iter().flatten());
        }
        Ok(out)
    }

    /// Reads tasks `ids` (sorted): the ones that parse, and an error for each
    /// that does not or whose value is missing though its ID is still listed
    /// in `{p}tasks` (an ID deleted meanwhile is skipped).
    async fn read_tasks(
        &self,
        con: &mut ConnectionManager,
        ids: Vec<String>,
        what: &str,
    ) -> Result<LoadReport> {
        let values = self.fetch(con, &ids, what).await?;
        let mut report = LoadReport::default();
        let mut missing = Vec::new();
        for (id, value) in ids.into_iter().zip(values) {
            match value {
                Some(bytes) => match parse_task(&id, &bytes) {
                    Ok(t) => report.tasks.push(t),
                    Err(reason) => report.errors.push(LoadError { id, reason }),
                },
                None => missing.push(id),
            }
        }
        if !missing.is_empty() {
            let mut pipe = ::redis::pipe();
            for id in &missing {
                pipe.sismember(self.key("tasks"), id);
            }
            let listed: Vec<bool> = pipe.query_async(con).await.map_err(self.err(what))?;
            for (id, listed) in missing.into_iter().zip(listed) {
                if listed {
                    let reason = format!(
                        "listed in {} but {} is missing",
                        self.key("tasks"),
                        self.task_key(&id)
                    );
                    report.errors.push(LoadError { id, reason });
                }
            }
            report.errors.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(report)
    }

    /// All task IDs, sorted.
    async fn ids(&self, con: &mut ConnectionManager, what: &str) -> Result<Vec<String>> {
        let mut ids: Vec<String> = ::redis::cmd("SMEMBERS")
            .arg(self.key("tasks"))
            .query_async(con)
            .await
            .map_err(self.err(what))?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Fails on the first task of `report` that could not be read.
    fn strict(report: LoadReport) -> Result<Vec<DefaultTask>> {
        match report.errors.into_iter().next() {
            None => Ok(report.tasks),
            Some(e) => {
                Err(Error::backend(BACKEND, format!("cannot read task {:?}: {}", e.id, e.reason)))
            }
        }
    }

    /// Appends `batch` to the history atomically.
    async fn write_executions(&self, batch: &[TaskExecution], what: &str) -> Result<()> {
        let mut con = self.con(what)?;
        if batch.is_empty() {
            return Ok(());
        }
        let r = self.retention;
        let stop = |n: usize| {
            if n == 0 {
                String::new()
            } else {
                (n.min(i64::MAX as usize) as i64 - 1).to_string()
            }
        };
        let (cutoff, ttl) = match r.max_age {
            None => (String::new(), String::new()),
            Some(age) => {
                let newest = batch.iter().map(|e| e.started_at).max().expect("not empty");
                let cutoff = newest
                    .checked_sub(crate::clock::signed(age))
                    .ok()
                    .and_then(sortable)
                    .unwrap_or_default();
                // At most about 31,700 years: Redis refuses expiries that overflow.
                let ms = age.as_millis().clamp(1, 1_000_000_000_000_000);
                (cutoff, ms.to_string())
            }
        };
        let head = [self.prefix.clone(), stop(r.max_per_task), stop(r.max_total), cutoff, ttl];
        let mut chunks = Vec::with_capacity(batch.len().div_ceil(WRITE_CHUNK));
        for part in batch.chunks(WRITE_CHUNK) {
            let mut args = Vec::with_capacity(part.len() * 2);
            for e in part {
                let json = serde_json::to_vec(e).map_err(|err| {
                    Error::backend(
                        BACKEND,
                        format!("cannot serialise a run of task {:?}: {err}", e.task_id),
                    )
                })?;
                args.push(e.task_id.clone().into_bytes());
                args.push(json);
            }
            chunks.push(args);
        }
        self.run_chunks(&mut con, &self.record_script, RECORD_LUA, &head, chunks, what).await
    }
}

/// Parses a stored task; the error is the reason, for [`LoadError`].
fn parse_task(id: &str, bytes: &[u8]) -> std::result::Result<DefaultTask, String> {
    let t: DefaultTask =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid task JSON: {e}"))?;
    if &*t.id != id {
        return Err(format!("the value holds task {:?}", t.id));
    }
    Ok(t)
}

/// `t` as `YYYY-MM-DDTHH:MM:SS` plus 9 digits of nanoseconds, in UTC: text that
/// sorts as time does (what the record script compares). `None` outside years
/// 0-9999, which the script does not compare.
fn sortable(t: Timestamp) -> Option<String> {
    let dt = t.to_zoned_datetime(TimeZone::UTC).datetime();
    if !(0..=9999).contains(&dt.year()) {
        return None;
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{:09}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond()
    ))
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// Escapes the glob characters of `s` for `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// True for the keys of the layout (the part after the prefix), so that
/// `clear` leaves alone keys of a store whose prefix extends this one's.
fn is_store_key(rest: &[u8]) -> bool {
    matches!(rest, b"tasks" | b"enabled" | b"meta" | b"exec")
        || rest.starts_with(b"task:")
        || rest.starts_with(b"tag:")
        || rest.starts_with(b"exec:")
}

#[async_trait]
impl Store for RedisStore {
    fn is_shared(&self) -> bool {
        true
    }

    async fn save(&self, task: &DefaultTask) -> Result<()> {
        self.con("save")?;
        if task.id.is_empty() {
            return Err(Error::TaskIdRequired { name: task.name.to_string() });
        }
        self.write_tasks(std::slice::from_ref(task), &format!("save task {:?}", task.id)).await
    }

    async fn get(&self, id: &str) -> Result<DefaultTask> {
        let mut con = self.con("get")?;
        let what = format!("get task {id:?}");
        let value: Option<Vec<u8>> = ::redis::cmd("GET")
            .arg(self.task_key(id))
            .query_async(&mut con)
            .await
            .map_err(self.err(&what))?;
        let bytes = value.ok_or_else(|| Error::TaskNotFound { id: id.to_string() })?;
        parse_task(id, &bytes)
            .map_err(|reason| Error::backend(BACKEND, format!("cannot read task {id:?}: {reason}")))
    }

    async fn get_all(&self) -> Result<Vec<DefaultTask>> {
        let mut con = self.con("get_all")?;
        let ids = self.ids(&mut con, "get_all").await?;
        let report = self.read_tasks(&mut con, ids, "get_all").await?;
        Self::strict(report)
    }

    async fn load_all(&self) -> Result<LoadReport> {
        let mut con = self.con("load_all")?;
        let ids = self.ids(&mut con, "load_all").await?;
        self.read_tasks(&mut con, ids, "load_all").await
    }

    async fn delete(&self, id: &str) -> Result<()> {
        let mut con = self.con("delete")?;
        let mut inv = self.delete_script.prepare_invoke();
        inv.arg(&self.prefix).arg(Timestamp::now().to_string()).arg(id);
        let deleted: i64 =
            inv.invoke_async(&mut con).await.map_err(self.err(format!("delete task {id:?}")))?;
        if deleted == 0 {
            return Err(Error::TaskNotFound { id: id.to_string() });
        }
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        let mut con = self.con("clear")?;
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = ::redis::cmd("SCAN")
                .cursor_arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut con)
                .await
                .map_err(self.err("clear: scan"))?;
            let ours: Vec<Vec<u8>> = keys
                .into_iter()
                .filter(|k| k.strip_prefix(self.prefix.as_bytes()).is_some_and(is_store_key))
                .collect();
            if !ours.is_empty() {
                ::redis::cmd("DEL")
                    .arg(&ours)
                    .query_async::<()>(&mut con)
                    .await
                    .map_err(self.err("clear: delete"))?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        ::redis::cmd("HSET")
            .arg(self.key("meta"))
            .arg("last_sync")
            .arg(Timestamp::now().to_string())
            .query_async::<()>(&mut con)
            .await
            .map_err(self.err("clear"))
    }

    async fn save_batch(&self, tasks: &[DefaultTask]) -> Result<()> {
        self.con("save_batch")?;
        // Validate first so the batch is all or nothing.
        for t in tasks {
            if t.id.is_empty() {
                return Err(Error::TaskIdRequired { name: t.name.to_string() });
            }
        }
        if tasks.is_empty() {
            return Ok(());
        }
        self.write_tasks(tasks, &format!("save_batch of {} tasks", tasks.len())).await
    }

    async fn save_run_state(&self, tasks: &[DefaultTask]) -> Result<()> {
        let mut con = self.con("save_run_state")?;
        if tasks.is_empty() {
            return Ok(());
        }
        let mut call = self.run_state_script.prepare_invoke();
        call.arg(&self.prefix);
        for t in tasks {
            let json = serde_json::to_vec(t).map_err(|e| {
                Error::backend(BACKEND, format!("cannot serialise task {:?}: {e}", t.id))
            })?;
            call.arg(&*t.id).arg(json).arg(super::updated_at_json(t)).arg(if t.enabled {
                "1"
            } else {
                "0"
            });
        }
        call.invoke_async::<i64>(&mut con)
            .await
            .map_err(self.err(format!("save_run_state of {} tasks", tasks.len())))?;
        Ok(())
    }

    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<DefaultTask>> {
        let mut con = self.con("get_by_tags")?;
        if tags.is_empty() {
            let ids = self.ids(&mut con, "get_by_tags").await?;
            return Self::strict(self.read_tasks(&mut con, ids, "get_by_tags").await?);
        }
        let mut sinter = ::redis::cmd("SINTER");
        for (k, v) in tags {
            sinter.arg(self.key(&format!("tag:{}:{k}={v}", k.len())));
        }
        let ids: BTreeSet<String> =
            sinter.query_async(&mut con).await.map_err(self.err("get_by_tags"))?;
        let ids: Vec<String> = ids.into_iter().collect();
        let values = self.fetch(&mut con, &ids, "get_by_tags").await?;
        let mut out = Vec::new();
        for (id, value) in ids.iter().zip(values) {
            // A missing value: deleted meanwhile.
            let Some(bytes) = value else { continue };
            let t = parse_task(id, &bytes).map_err(|reason| {
                Error::backend(BACKEND, format!("cannot read task {id:?}: {reason}"))
            })?;
            // The index is kept by the scripts; checking again costs nothing.
            if has_tags(&t, tags) {
                out.push(t);
            }
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<StoreStats> {
        let mut con = self.con("stats")?;
        let (total, enabled, last_sync): (i64, i64, Option<String>) = ::redis::pipe()
            .scard(self.key("tasks"))
            .scard(self.key("enabled"))
            .hget(self.key("meta"), "last_sync")
            .query_async(&mut con)
            .await
            .map_err(self.err("stats"))?;
        let last_sync = match last_sync {
            None => None,
            Some(s) => Some(s.parse::<Timestamp>().map_err(|e| {
                Error::backend(BACKEND, format!("stats: invalid last_sync {s:?}: {e}"))
            })?),
        };
        Ok(StoreStats { total_tasks: total, enabled_tasks: enabled, last_sync })
    }

    async fn close(&self) -> Result<()> {
        // Dropping the manager closes the connection once no call holds it.
        self.con.write().unwrap().take();
        Ok(())
    }

    async fn record_execution(&self, execution: &TaskExecution) -> Result<()> {
        self.write_executions(
            std::slice::from_ref(execution),
            &format!("record a run of task {:?}", execution.task_id),
        )
        .await
    }

    async fn record_executions(&self, batch: &[TaskExecution]) -> Result<()> {
        self.write_executions(batch, &format!("record {} runs", batch.len())).await
    }

    async fn executions(&self, query: &ExecutionQuery) -> Result<Vec<TaskExecution>> {
        let mut con = self.con("executions")?;
        let max = query.max();
        if max == 0 {
            return Ok(Vec::new());
        }
        let key = match &query.task_id {
            Some(id) => self.key(&format!("exec:{id}")),
            None => self.key("exec"),
        };
        let filtered = query.status.is_some();
        let mut out = Vec::new();
        // Unfiltered: exactly the newest `max`. Filtered: page until enough match.
        let page = if filtered { SCAN_PAGE } else { max.min(isize::MAX as usize) as isize };
        let mut start: isize = 0;
        loop {
            let values: Vec<Vec<u8>> = ::redis::cmd("LRANGE")
                .arg(&key)
                .arg(start)
                .arg(start + page - 1)
                .query_async(&mut con)
                .await
                .map_err(self.err("executions"))?;
            let n = values.len();
            for v in values {
                match serde_json::from_slice::<TaskExecution>(&v) {
                    Ok(e) if query.matches(&e) => out.push(e),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "redis store: skipping a corrupt history record")
                    }
                }
                if out.len() == max {
                    break;
                }
            }
            if !filtered || out.len() == max || (n as isize) < page {
                break;
            }
            start += page;
        }
        out.sort_by(|a, b| {
            b.started_at.cmp(&a.started_at).then(b.scheduled_at.cmp(&a.scheduled_at))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_times_sort_as_time() {
        let t = |s: &str| sortable(s.parse().unwrap()).unwrap();
        assert_eq!(t("2027-01-15T08:00:00Z"), "2027-01-15T08:00:00000000000");
        assert_eq!(t("2027-01-15T08:00:00.5Z"), "2027-01-15T08:00:00500000000");
        assert!(t("2027-01-15T08:00:00Z") < t("2027-01-15T08:00:00.000000001Z"));
        assert!(sortable("-000001-01-01T00:00:00Z".parse().unwrap()).is_none());
    }

    #[test]
    fn timestamps_serialise_as_the_record_script_expects() {
        // The script's pattern: YYYY-MM-DDTHH:MM:SS, an optional fraction, Z.
        for s in
            ["2027-01-15T08:00:00Z", "2027-01-15T08:00:00.25Z", "2027-01-15T08:00:00.000000001Z"]
        {
            let t: Timestamp = s.parse().unwrap();
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(s));
        }
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact("redis://:secret@host:6379/0"), "redis://***@host:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn only_layout_keys_are_cleared() {
        assert!(is_store_key(b"tasks"));
        assert!(is_store_key(b"task:a"));
        assert!(is_store_key(b"tag:4:team=ops"));
        assert!(is_store_key(b"exec:a"));
        assert!(!is_store_key(b"nested:task:a"));
        assert!(!is_store_key(b"tasksx"));
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
