//! The Redis cluster backend (cargo feature `cluster-redis`): the seed's
//! `RedisCluster` on one Redis server (2.6.12 or later for `SET PX`, scripts
//! with `TIME`: 5 or later).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use rota::cluster::{Cluster, Leadership, RedisCluster, RedisClusterConfig};
//!
//! # async fn demo() -> rota::Result<()> {
//! let cluster = RedisCluster::new(RedisClusterConfig {
//!     addr: "localhost:6379".into(),
//!     node_id: "node-1".into(),
//!     ..RedisClusterConfig::default()
//! })
//! .await?;
//! if let Some(guard) = cluster.acquire_lock("nightly-report", Duration::from_secs(30)).await? {
//!     // ... pass guard.token() along with every write the job makes ...
//!     guard.release().await?;
//! }
//! cluster
//!     .start_election(Arc::new(|event| match event {
//!         Leadership::Elected { term } => println!("leader for term {term}"),
//!         Leadership::Lost { term } => println!("no longer leader (term {term})"),
//!     }))
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Key layout
//!
//! Every key starts with the prefix (`{p}` below, `"rota:cluster:"` by default):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{p}lock:{key}` | string, TTL | the holder of lock `key`: `{node_id}:{fencing token}` |
//! | `{p}fence:{key}` | integer | the last fencing token granted for `key` (`INCR`) |
//! | `{p}leader` | string, TTL | the leader: `{node_id}:{term}` |
//! | `{p}leader:term` | integer | the last term granted |
//! | `{p}nodes` | sorted set | node IDs scored by their last heartbeat (server time, ms) |
//! | `{p}node:{id}` | string, TTL | the node's [`NodeInfo`] as JSON, expiring after `forget_after` |
//! | `{p}bus` | pub/sub channel | broadcast messages as JSON |
//! | `{p}mark:{key}` | integer | a mark of [`Cluster::advance_mark`]; for fires, `fire-mark/{task}` holds the task's latest claimed fire (ms) |
//!
//! A batch of fires is claimed by one script in one round trip
//! ([`Cluster::claim_fires`]): for each fire, raise the task's mark to the
//! fire's instant if it is lower (else the fire is taken), then take the
//! task's run lock as `acquire_lock` does if the fire asks for it.
//! Releases of lock guards are batched the same way: those that come while
//! one batch is on its way go out together in the next, one script call.
//!
//! A lock is taken by one script: if `{p}lock:{key}` does not exist, `INCR
//! {p}fence:{key}` and `SET {p}lock:{key} {node}:{token} PX ttl`. A fence
//! that does not exist yet starts from the server's clock in microseconds
//! (`TIME`), so tokens keep growing even after a restart that lost the data,
//! as long as the server's clock does not step back. Renew and
//! release are scripts that compare the exact value first, so a node never
//! extends or deletes another grant. Heartbeats stamp nodes with the server's
//! `TIME`, so node clocks do not need to agree.
//!
//! # Guarantees
//!
//! Those of [`Cluster`], on one Redis server that keeps its data.
//!
//! ### Note: one server, no failover
//! Leases live on one server. With replication and failover (Sentinel), an
//! acknowledged lock may be lost when a replica that had not seen it is
//! promoted; two nodes may then hold it at once. The same holds for a restart
//! that loses the data (no RDB or AOF): the old holder learns of the loss only
//! when its watch next looks (every TTL / 3, at most 1 s apart), a leader at
//! its next renewal (every TTL / 3), and another node may be granted the lock
//! or leadership before that. Fencing tokens and terms still grow (see above):
//! check them. After such a restart, heartbeats register the nodes again and
//! subscribers subscribe again on their own.
//!
//! ### Note: broadcast is Redis pub/sub
//! Delivery is at most once: a subscriber that is disconnected (the server
//! restarted, the network dropped) misses what is published until it has
//! resubscribed, which it does on its own with backoff. Messages from one
//! sender arrive in the order sent. Callbacks run one at a time on the
//! subscriber task: a slow callback delays the ones after it.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::ConnectionManager;
use ::redis::{
    Client, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisError, Script,
};
use async_trait::async_trait;
use futures_util::StreamExt;
use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    fire_mark_key, lease_deadline, run_lock_key, start_bus, Cluster, ClusterMessage, ElectionSlot,
    FireClaim, FireRequest, Leadership, LeadershipCallback, LeaseOps, LeaseWatch, LockGuard,
    MessageCallback, NodeInfo, NodeStatus, Subscribers,
};
use crate::error::{Error, Result};

const BACKEND: &str = "redis cluster";

/// Takes a lock. `KEYS`: lock, fence. `ARGV`: node ID, TTL in ms. Returns the
/// fencing token (as a string: Lua numbers lose digits), or `'0'` if the lock
/// is held. A missing fence starts from the server time in microseconds.
const ACQUIRE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return '0' end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] .. string.format('%06d', tonumber(t[2])))
end
redis.call('INCR', KEYS[2])
local f = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. f, 'PX', ARGV[2])
return f
"#;

/// Raises a mark. `KEYS`: mark. `ARGV`: value. Returns `{1, previous or ''}`
/// if raised, `{0, ''}` if the mark is already that high.
const ADVANCE_LUA: &str = r#"
local prev = redis.call('GET', KEYS[1])
if prev and tonumber(prev) >= tonumber(ARGV[1]) then return {0, ''} end
redis.call('SET', KEYS[1], ARGV[1])
return {1, prev or ''}
"#;

/// Claims fires. `KEYS`: mark, lock, fence for each fire. `ARGV`: node ID,
/// then instant (ms) and run-lock TTL (ms, `0` for none) for each fire.
/// Returns outcome (`won`, `busy`, `taken`), previous mark, token per fire.
const CLAIM_LUA: &str = r#"
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local mark, lock, fence = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local at, ttl = ARGV[2 * i + 2], ARGV[2 * i + 3]
  local prev = redis.call('GET', mark)
  if prev and tonumber(prev) >= tonumber(at) then
    out[#out + 1] = 'taken'; out[#out + 1] = ''; out[#out + 1] = '0'
  else
    redis.call('SET', mark, at)
    prev = prev or ''
    if ttl == '0' then
      out[#out + 1] = 'won'; out[#out + 1] = prev; out[#out + 1] = '0'
    else
      -- The next token (a busy lock wastes one: tokens only have to grow).
      -- A new fence starts from the server's time, as in ACQUIRE_LUA.
      -- Tokens stay below 2^53, so Lua's numbers hold them exactly.
      local f = redis.call('INCR', fence)
      if f == 1 then
        local t = redis.call('TIME')
        f = tonumber(t[1]) * 1000000 + tonumber(t[2]) + 1
        redis.call('SET', fence, string.format('%.0f', f))
      end
      f = string.format('%.0f', f)
      if redis.call('SET', lock, ARGV[1] .. ':' .. f, 'PX', ttl, 'NX') then
        out[#out + 1] = 'won'; out[#out + 1] = prev; out[#out + 1] = f
      else
        out[#out + 1] = 'busy'; out[#out + 1] = prev; out[#out + 1] = '0'
      end
    end
  end
end
return out
"#;

/// Extends a lock if it holds exactly `ARGV[1]`. `ARGV[2]`: TTL in ms.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Deletes a lock if it holds exactly `ARGV[1]`.
const RELEASE_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Deletes each lock `KEYS[i]` that holds exactly `ARGV[i]`. Returns 1 or 0
/// per lock.
const RELEASE_MANY_LUA: &str = r#"
local out = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then
    out[i] = redis.call('DEL', KEYS[i])
  else
    out[i] = 0
  end
end
return out
"#;

/// A heartbeat. `KEYS`: nodes set, node key. `ARGV`: node ID, JSON, forget
/// after (ms). Returns the server time in ms.
const HEARTBEAT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return now
"#;

/// Reads the registry. `KEYS`: nodes set, leader key. `ARGV`: node key prefix,
/// forget after (ms). Returns the server time (ms), the leader value (or
/// ''), then ID, last heartbeat (ms), JSON for each node.
const NODES_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf', 'WITHSCORES')
local out = {tostring(now), redis.call('GET', KEYS[2]) or ''}
for i = 1, #entries, 2 do
  local json = redis.call('GET', ARGV[1] .. entries[i])
  if json then
    out[#out + 1] = entries[i]
    out[#out + 1] = entries[i + 1]
    out[#out + 1] = json
  end
end
return out
"#;

/// The configuration of a [`RedisCluster`]: the seed's `RedisClusterConfig`
/// (`Addr`, `Password`, `DB`, `NodeID`) plus prefix and timings.
#[derive(Clone)]
pub struct RedisClusterConfig {
    /// `host:port` (the seed's form, as `"localhost:6379"`), or a
    /// `redis://` URL.
    pub addr: String,
    /// The password, or empty for none.
    pub password: String,
    /// The database number.
    pub db: i64,
    /// This node's ID; must not be empty.
    pub node_id: String,
    /// The prefix of every key (default `"rota:cluster:"`). Clusters that
    /// share a server need prefixes of their own.
    pub key_prefix: String,
    /// A node without a heartbeat for this long shows offline (default 10 s).
    /// Heartbeats are sent every third of it.
    pub node_ttl: Duration,
    /// A node without a heartbeat for this long is forgotten (default 30 s);
    /// at least `node_ttl`.
    pub forget_after: Duration,
    /// The leader's lease (default 5 s), renewed every third of it. A killed
    /// leader is replaced within about this long.
    pub election_ttl: Duration,
    /// How long connecting may take (default 5 s); also the reply timeout.
    pub connect_timeout: Duration,
}

impl Default for RedisClusterConfig {
    /// `127.0.0.1:6379`, db 0, no password, an empty node ID (to be set),
    /// prefix `"rota:cluster:"`, node TTL 10 s, forgotten after 30 s,
    /// election TTL 5 s, connect timeout 5 s.
    fn default() -> Self {
        RedisClusterConfig {
            addr: "127.0.0.1:6379".into(),
            password: String::new(),
            db: 0,
            node_id: String::new(),
            key_prefix: "rota:cluster:".into(),
            node_ttl: Duration::from_secs(10),
            forget_after: Duration::from_secs(30),
            election_ttl: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for RedisClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClusterConfig")
            .field("addr", &self.addr)
            .field("password", &if self.password.is_empty() { "" } else { "***" })
            .field("db", &self.db)
            .field("node_id", &self.node_id)
            .field("key_prefix", &self.key_prefix)
            .field("node_ttl", &self.node_ttl)
            .field("forget_after", &self.forget_after)
            .field("election_ttl", &self.election_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The seed's `RedisCluster`: a [`Cluster`] on one Redis server. See the
/// [module documentation](self) for the key layout and sharp edges.
///
/// Dropping it stops its background tasks as [`Cluster::close`] does, without
/// telling the election callback.
pub struct RedisCluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    prefix: String,
    addr: String,
    node_ttl: Duration,
    forget_after: Duration,
    election_ttl: Duration,
    connect_timeout: Duration,
    client: Client,
    con: ConnectionManager,
    /// Requests sent (see [`Cluster::requests_sent`]).
    requests: Arc<AtomicU64>,
    /// Releases waiting to go out in the next batch.
    releases: mpsc::UnboundedSender<Release>,
    closed: CancellationToken,
    acquire: Script,
    renew: Script,
    release: Script,
    heartbeat: Script,
    nodes: Script,
    advance: Script,
    claim: Script,
    /// This node's latest grant of each lock key, for `release_lock`.
    held: Mutex<HashMap<String, u64>>,
    /// The nodes this handle heartbeats, by ID.
    registered: Mutex<HashMap<String, String>>,
    heartbeat_task: Mutex<Option<JoinHandle<()>>>,
    election: ElectionSlot,
    subscribers: Subscribers,
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node_id", &self.inner.node_id)
            .field("addr", &self.inner.addr)
            .field("prefix", &self.inner.prefix)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClusterInner").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

fn invalid(what: &str, message: impl Into<String>) -> Error {
    Error::InvalidInput { what: what.into(), message: message.into() }
}

fn check_ttl(what: &str, ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(invalid(what, "must be greater than zero"));
    }
    if ttl < Duration::from_millis(1) {
        return Err(invalid(what, "must be at least 1 ms"));
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The connection info for `config`: `host:port` or a URL, with password and
/// database applied.
fn connection_info(config: &RedisClusterConfig) -> Result<ConnectionInfo> {
    let addr = config.addr.trim();
    if addr.is_empty() {
        return Err(invalid("addr", "the Redis address is empty (expected host:port)"));
    }
    let info = if addr.contains("://") {
        addr.into_connection_info()
            .map_err(|e| invalid("addr", format!("{addr:?} is not a Redis URL: {e}")))?
    } else {
        let (host, port) = match addr.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| invalid("addr", format!("{addr:?}: {port:?} is not a port")))?;
                (host.trim_start_matches('[').trim_end_matches(']'), port)
            }
            None => (addr, 6379),
        };
        if host.is_empty() {
            return Err(invalid("addr", format!("{addr:?} has no host")));
        }
        (host.to_string(), port)
            .into_connection_info()
            .map_err(|e| invalid("addr", format!("{addr:?}: {e}")))?
    };
    if config.password.is_empty() && config.db == 0 {
        return Ok(info);
    }
    let mut settings = RedisConnectionInfo::default().set_db(config.db);
    if !config.password.is_empty() {
        settings = settings.set_password(&config.password);
    }
    Ok(info.set_redis_settings(settings))
}

impl RedisCluster {
    /// Connects to the server of `config` (the seed's `NewRedisCluster`).
    ///
    /// Fails with [`Error::InvalidInput`] naming the field for an empty
    /// `node_id` or `addr` or a zero TTL, and with a backend error naming the
    /// address within `connect_timeout` if the server cannot be reached.
    pub async fn new(config: RedisClusterConfig) -> Result<RedisCluster> {
        if config.node_id.is_empty() {
            return Err(invalid("node_id", "the node ID must not be empty"));
        }
        check_ttl("node_ttl", config.node_ttl)?;
        check_ttl("election_ttl", config.election_ttl)?;
        check_ttl("connect_timeout", config.connect_timeout)?;
        if config.forget_after < config.node_ttl {
            return Err(invalid(
                "forget_after",
                format!("{:?} is shorter than node_ttl {:?}", config.forget_after, config.node_ttl),
            ));
        }
        let info = connection_info(&config)?;
        let addr = info.addr().to_string();
        let client = Client::open(info)
            .map_err(|e| Error::backend(BACKEND, format!("cannot connect to {addr}: {e}")))?;
        let timeout = config.connect_timeout;
        let con = crate::redis_conn::connect_manager(
            &client,
            BACKEND,
            &addr,
            timeout,
            Some(timeout),
            Duration::from_secs(1),
        )
        .await?;
        let requests = Arc::new(AtomicU64::new(0));
        let (releases, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_releases(con.clone(), addr.clone(), requests.clone(), rx));
        Ok(RedisCluster {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                prefix: config.key_prefix,
                addr,
                node_ttl: config.node_ttl,
                forget_after: config.forget_after,
                election_ttl: config.election_ttl,
                connect_timeout: config.connect_timeout,
                client,
                con,
                closed: CancellationToken::new(),
                requests,
                releases,
                acquire: Script::new(ACQUIRE_LUA),
                renew: Script::new(RENEW_LUA),
                release: Script::new(RELEASE_LUA),
                heartbeat: Script::new(HEARTBEAT_LUA),
                nodes: Script::new(NODES_LUA),
                advance: Script::new(ADVANCE_LUA),
                claim: Script::new(CLAIM_LUA),
                held: Mutex::new(HashMap::new()),
                registered: Mutex::new(HashMap::new()),
                heartbeat_task: Mutex::new(None),
                election: ElectionSlot::default(),
                subscribers: Subscribers::default(),
            }),
        })
    }

    /// The prefix of every key this cluster uses.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl RedisCluster {
    /// Claims `reqs` with one script call (one round trip).
    async fn claim_batch(&self, reqs: &[FireRequest]) -> Result<Vec<FireClaim>> {
        let inner = &self.inner;
        inner.check_open("claim fires")?;
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = inner.claim.prepare_invoke();
        call.arg(&inner.node_id);
        for r in reqs {
            if r.task_id.is_empty() {
                return Err(invalid("task_id", "a fire's task ID must not be empty"));
            }
            if let Some(ttl) = r.run_lock {
                check_ttl("run_lock", ttl)?;
            }
            let lock_key = run_lock_key(&r.task_id);
            call.key(inner.key(&format!("mark:{}", fire_mark_key(&r.task_id))))
                .key(inner.key(&format!("lock:{lock_key}")))
                .key(inner.key(&format!("fence:{lock_key}")))
                .arg(r.scheduled_ms)
                .arg(r.run_lock.map_or(0, millis));
        }
        let mut con = inner.conn();
        let sent = Instant::now();
        let out: Vec<String> = call
            .invoke_async(&mut con)
            .await
            .map_err(inner.err(format_args!("claim {} fires", reqs.len())))?;
        if out.len() != reqs.len() * 3 {
            return Err(Error::backend(
                BACKEND,
                format!("claim fires: {} answers for {} fires", out.len() / 3, reqs.len()),
            ));
        }
        let mut claims = Vec::with_capacity(reqs.len());
        for (r, a) in reqs.iter().zip(out.chunks(3)) {
            let key = fire_mark_key(&r.task_id);
            claims.push(match a[0].as_str() {
                "taken" => FireClaim::Taken,
                "busy" => FireClaim::Busy { previous: parse_mark(&key, &a[1])? },
                _ => {
                    let previous = parse_mark(&key, &a[1])?;
                    let guard = match r.run_lock {
                        None => None,
                        Some(ttl) => {
                            let token: u64 = a[2].parse().map_err(|_| {
                                Error::backend(BACKEND, format!("claim fire: bad token {:?}", a[2]))
                            })?;
                            // Unwatched: the run renews it, and learns of its
                            // loss then (or at its local deadline).
                            Some(inner.guard_unwatched(run_lock_key(&r.task_id), token, sent, ttl))
                        }
                    };
                    FireClaim::Won { previous, guard }
                }
            });
        }
        Ok(claims)
    }
}

/// A stored mark: empty for none.
fn parse_mark(key: &str, s: &str) -> Result<Option<i64>> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| Error::backend(BACKEND, format!("mark {key:?} holds {s:?}, not an integer")))
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.inner.closed.cancel();
    }
}

impl Inner {
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The connection, for one request (counted).
    fn conn(&self) -> ConnectionManager {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.con.clone()
    }

    fn value(&self, token: u64) -> String {
        format!("{}:{token}", self.node_id)
    }

    fn check_open(&self, what: &str) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(Error::backend(BACKEND, format!("{what}: the cluster is closed")));
        }
        Ok(())
    }

    fn err<'a>(&'a self, what: impl fmt::Display + 'a) -> impl FnOnce(RedisError) -> Error + 'a {
        move |e| Error::backend(BACKEND, format!("{what} ({}): {e}", self.addr))
    }

    /// Takes `lock` for `ttl` with a token from `fence`: the token, or `None`.
    async fn try_acquire(&self, lock: &str, fence: &str, ttl: Duration) -> Result<Option<u64>> {
        let mut con = self.conn();
        let token: String = self
            .acquire
            .key(lock)
            .key(fence)
            .arg(&self.node_id)
            .arg(millis(ttl))
            .invoke_async(&mut con)
            .await
            .map_err(self.err(format_args!("acquire {lock:?}")))?;
        let token: u64 = token.parse().map_err(|_| {
            Error::backend(BACKEND, format!("acquire {lock:?}: bad fencing token {token:?}"))
        })?;
        Ok((token > 0).then_some(token))
    }

    async fn renew_raw(&self, lock: &str, token: u64, ttl: Duration) -> Result<bool> {
        let mut con = self.conn();
        let n: i64 = self
            .renew
            .key(lock)
            .arg(self.value(token))
            .arg(millis(ttl))
            .invoke_async(&mut con)
            .await
            .map_err(self.err(format_args!("renew {lock:?}")))?;
        Ok(n == 1)
    }

    async fn release_raw(&self, lock: &str, token: u64) -> Result<bool> {
        let mut con = self.conn();
        let n: i64 = self
            .release
            .key(lock)
            .arg(self.value(token))
            .invoke_async(&mut con)
            .await
            .map_err(self.err(format_args!("release {lock:?}")))?;
        Ok(n == 1)
    }

    /// The guard of grant `token` of lock `key`, requested at `sent`, and
    /// its watch; the grant is remembered for `release_lock`.
    fn new_guard(
        self: &Arc<Self>,
        key: String,
        token: u64,
        sent: Instant,
        ttl: Duration,
    ) -> (LockGuard, LeaseWatch) {
        self.held.lock().unwrap().insert(key.clone(), token);
        let ops: Arc<dyn LeaseOps> = self.clone();
        LockGuard::new(key, token, lease_deadline(sent, ttl), ops)
    }

    /// A guard without a task watching the key: its holder learns of a loss
    /// when renewing, or at the local deadline. Not remembered
    /// for `release_lock`: its holder releases the guard.
    fn guard_unwatched(
        self: &Arc<Self>,
        key: String,
        token: u64,
        sent: Instant,
        ttl: Duration,
    ) -> LockGuard {
        let ops: Arc<dyn LeaseOps> = self.clone();
        LockGuard::new(key, token, lease_deadline(sent, ttl), ops).0
    }

    /// A guard with a task watching the key, so a loss is told at once.
    fn guard(self: &Arc<Self>, key: String, token: u64, sent: Instant, ttl: Duration) -> LockGuard {
        let lock = self.key(&format!("lock:{key}"));
        let (guard, watch) = self.new_guard(key, token, sent, ttl);
        tokio::spawn(watch_lock(self.clone(), watch, lock, self.value(token), ttl));
        guard
    }

    async fn beat(&self, id: &str, json: &str) -> Result<()> {
        let mut con = self.conn();
        self.heartbeat
            .key(self.key("nodes"))
            .key(self.key(&format!("node:{id}")))
            .arg(id)
            .arg(json)
            .arg(millis(self.forget_after))
            .invoke_async::<i64>(&mut con)
            .await
            .map_err(self.err(format_args!("heartbeat of node {id:?}")))?;
        Ok(())
    }
}

#[async_trait]
impl LeaseOps for Inner {
    async fn renew(&self, key: &str, token: u64, ttl: Duration) -> Result<bool> {
        self.check_open("renew lock")?;
        self.renew_raw(&self.key(&format!("lock:{key}")), token, ttl).await
    }

    /// Guards are released in batches: releases that come while one batch
    /// is on its way go out together in the next (one round trip).
    async fn release(&self, key: &str, token: u64) -> Result<bool> {
        self.check_open("release lock")?;
        let (tx, rx) = oneshot::channel();
        let release =
            Release { lock: self.key(&format!("lock:{key}")), value: self.value(token), reply: tx };
        if self.releases.send(release).is_err() {
            return Err(Error::backend(BACKEND, "release lock: the cluster is closed"));
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::backend(BACKEND, "release lock: the cluster is closed")))
    }
}

/// A release waiting for its batch.
struct Release {
    lock: String,
    value: String,
    reply: oneshot::Sender<Result<bool>>,
}

/// The most releases sent in one request.
const RELEASE_BATCH: usize = 256;

/// Sends queued releases, a batch per request, until the cluster is dropped.
async fn run_releases(
    con: ConnectionManager,
    addr: String,
    requests: Arc<AtomicU64>,
    mut rx: mpsc::UnboundedReceiver<Release>,
) {
    let script = Script::new(RELEASE_MANY_LUA);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < RELEASE_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut call = script.prepare_invoke();
        for r in &batch {
            call.key(&r.lock).arg(&r.value);
        }
        requests.fetch_add(1, Ordering::Relaxed);
        let mut c = con.clone();
        let answer: std::result::Result<Vec<i64>, RedisError> = call.invoke_async(&mut c).await;
        match answer {
            Ok(held) if held.len() == batch.len() => {
                for (r, h) in batch.into_iter().zip(held) {
                    let _ = r.reply.send(Ok(h == 1));
                }
            }
            Ok(held) => {
                let e = format!("release {} locks: {} answers", batch.len(), held.len());
                for r in batch {
                    let _ = r.reply.send(Err(Error::backend(BACKEND, &e)));
                }
            }
            Err(e) => {
                for r in batch {
                    let msg = format!("release {:?} ({addr}): {e}", r.lock);
                    let _ = r.reply.send(Err(Error::backend(BACKEND, msg)));
                }
            }
        }
    }
}

/// Watches a lock until its guard is done: marks it lost when its local
/// deadline passes or the key no longer holds this grant.
async fn watch_lock(
    inner: Arc<Inner>,
    watch: LeaseWatch,
    lock: String,
    value: String,
    ttl: Duration,
) {
    let every = (ttl / 3).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut con = inner.con.clone();
    loop {
        let wake = watch.deadline().min(Instant::now() + every);
        tokio::select! {
            _ = watch.done() => return,
            _ = inner.closed.cancelled() => {
                watch.mark_lost();
                return;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= watch.deadline() {
            watch.mark_lost();
            return;
        }
        inner.requests.fetch_add(1, Ordering::Relaxed);
        let current: std::result::Result<Option<String>, RedisError> =
            ::redis::cmd("GET").arg(&lock).query_async(&mut con).await;
        match current {
            Ok(Some(v)) if v == value => {}
            Ok(_) => {
                watch.mark_lost();
                return;
            }
            // No answer from the server: the local deadline decides.
            Err(_) => {}
        }
    }
}

/// Runs for leadership until `stop` is cancelled.
async fn run_election(inner: Arc<Inner>, callback: LeadershipCallback, stop: CancellationToken) {
    let ttl = inner.election_ttl;
    let renew_every = ttl / 3;
    let poll = (ttl / 4).clamp(Duration::from_millis(10), Duration::from_millis(500));
    let lock = inner.key("leader");
    let fence = inner.key("leader:term");
    loop {
        let sent = Instant::now();
        let won = tokio::select! {
            _ = stop.cancelled() => return,
            r = inner.try_acquire(&lock, &fence, ttl) => r,
        };
        if let Ok(Some(term)) = won {
            callback(Leadership::Elected { term });
            let mut deadline = lease_deadline(sent, ttl);
            let stopped = loop {
                let wake = deadline.min(Instant::now() + renew_every);
                tokio::select! {
                    _ = stop.cancelled() => break true,
                    _ = tokio::time::sleep_until(wake) => {}
                }
                if Instant::now() >= deadline {
                    break false;
                }
                let sent = Instant::now();
                let renewed = tokio::select! {
                    _ = stop.cancelled() => break true,
                    _ = tokio::time::sleep_until(deadline) => break false,
                    r = inner.renew_raw(&lock, term, ttl) => r,
                };
                match renewed {
                    Ok(true) => deadline = lease_deadline(sent, ttl),
                    Ok(false) => break false,
                    Err(e) => {
                        tracing::warn!(node = %inner.node_id, "leader lease renewal failed: {e}")
                    }
                }
            };
            callback(Leadership::Lost { term });
            if stopped {
                if !inner.closed.is_cancelled() {
                    if let Err(e) = inner.release_raw(&lock, term).await {
                        tracing::warn!(node = %inner.node_id, "stepping down: {e}");
                    }
                }
                return;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Heartbeats every registered node until closed.
async fn run_heartbeats(inner: Arc<Inner>) {
    let every = (inner.node_ttl / 3).max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = inner.closed.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let nodes: Vec<(String, String)> =
            inner.registered.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, json) in nodes {
            if let Err(e) = inner.beat(&id, &json).await {
                tracing::warn!(node = %id, "{e}");
            }
        }
    }
}

/// Receives broadcasts until closed, resubscribing after disconnections.
/// Reports the first subscription's outcome on `ready`.
async fn run_bus(inner: Arc<Inner>, mut ready: Option<oneshot::Sender<Result<()>>>) {
    let channel = inner.key("bus");
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            let mut pubsub = inner.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let subscribed = tokio::select! {
            _ = inner.closed.cancelled() => return,
            r = tokio::time::timeout(inner.connect_timeout, attempt) => r,
        };
        match subscribed {
            Ok(Ok(pubsub)) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(()));
                }
                backoff = Duration::from_millis(50);
                let mut stream = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        _ = inner.closed.cancelled() => return,
                        m = stream.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    match serde_json::from_slice::<ClusterMessage>(msg.get_payload_bytes()) {
                        Ok(message) => {
                            let callbacks = inner.subscribers.callbacks();
                            for callback in callbacks {
                                callback(message.clone());
                            }
                        }
                        Err(e) => tracing::warn!("ignoring a malformed cluster message: {e}"),
                    }
                }
                tracing::warn!(node = %inner.node_id, "cluster bus disconnected; resubscribing");
            }
            Ok(Err(e)) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(Error::backend(
                        BACKEND,
                        format!("subscribe ({}): {e}", inner.addr),
                    )));
                    return;
                }
            }
            Err(_) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(Error::backend(
                        BACKEND,
                        format!(
                            "subscribe ({}): timed out after {:?}",
                            inner.addr, inner.connect_timeout
                        ),
                    )));
                    return;
                }
            }
        }
        tokio::select! {
            _ = inner.closed.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[async_trait]
impl Cluster for RedisCluster {
    fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    async fn register(&self, info: NodeInfo) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("register")?;
        if info.id.is_empty() {
            return Err(invalid("node_id", "the node ID must not be empty"));
        }
        let json = serde_json::to_string(&info)
            .map_err(|e| Error::backend(BACKEND, format!("encode node {:?}: {e}", info.id)))?;
        inner.beat(&info.id, &json).await?;
        inner.registered.lock().unwrap().insert(info.id.clone(), json);
        let mut task = inner.heartbeat_task.lock().unwrap();
        if task.is_none() {
            *task = Some(tokio::spawn(run_heartbeats(inner.clone())));
        }
        Ok(())
    }

    async fn unregister(&self, id: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("unregister")?;
        if id.is_empty() {
            return Err(invalid("node_id", "the node ID must not be empty"));
        }
        inner.registered.lock().unwrap().remove(id);
        let mut con = inner.conn();
        ::redis::pipe()
            .atomic()
            .cmd("ZREM")
            .arg(inner.key("nodes"))
            .arg(id)
            .ignore()
            .cmd("DEL")
            .arg(inner.key(&format!("node:{id}")))
            .ignore()
            .query_async::<()>(&mut con)
            .await
            .map_err(inner.err(format_args!("unregister node {id:?}")))
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let inner = &self.inner;
        inner.check_open("nodes")?;
        let mut con = inner.conn();
        let reply: Vec<String> = inner
            .nodes
            .key(inner.key("nodes"))
            .key(inner.key("leader"))
            .arg(inner.key("node:"))
            .arg(millis(inner.forget_after))
            .invoke_async(&mut con)
            .await
            .map_err(inner.err("read nodes"))?;
        let bad = |what: &str| Error::backend(BACKEND, format!("read nodes: bad reply ({what})"));
        let now_ms: i64 = reply.first().and_then(|s| s.parse().ok()).ok_or_else(|| bad("time"))?;
        let leader = reply.get(1).and_then(|v| v.rsplit_once(':')).map(|(id, _)| id.to_string());
        let ttl_ms = i64::try_from(inner.node_ttl.as_millis()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for entry in reply.get(2..).unwrap_or_default().chunks(3) {
            let [id, score, json] = entry else { return Err(bad("entry")) };
            let seen_ms = score.parse::<f64>().map_err(|_| bad("score"))? as i64;
            let mut node: NodeInfo = match serde_json::from_str(json) {
                Ok(node) => node,
                Err(e) => {
                    tracing::warn!(node = %id, "skipping a malformed node entry: {e}");
                    continue;
                }
            };
            node.id = id.clone();
            node.last_seen = Timestamp::from_millisecond(seen_ms).unwrap_or(node.last_seen);
            node.status = if now_ms - seen_ms > ttl_ms {
                NodeStatus::Offline
            } else if leader.as_deref() == Some(id.as_str()) {
                NodeStatus::Leader
            } else {
                NodeStatus::Online
            };
            out.push(node);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn advance_mark(&self, key: &str, value: i64) -> Result<Option<Option<i64>>> {
        let inner = &self.inner;
        inner.check_open("advance mark")?;
        if key.is_empty() {
            return Err(invalid("key", "the mark key must not be empty"));
        }
        let mut con = inner.conn();
        let (raised, prev): (i64, String) = inner
            .advance
            .key(inner.key(&format!("mark:{key}")))
            .arg(value)
            .invoke_async(&mut con)
            .await
            .map_err(inner.err(format_args!("advance mark {key:?}")))?;
        if raised == 0 {
            return Ok(None);
        }
        Ok(Some(parse_mark(key, &prev)?))
    }

    fn requests_sent(&self) -> Option<u64> {
        Some(self.inner.requests.load(Ordering::Relaxed))
    }

    async fn claim_fire(&self, req: &FireRequest) -> Result<FireClaim> {
        self.claim_fires(std::slice::from_ref(req)).await.pop().expect("one answer per request")
    }

    async fn claim_fires(&self, reqs: &[FireRequest]) -> Vec<Result<FireClaim>> {
        match self.claim_batch(reqs).await {
            Ok(claims) => claims.into_iter().map(Ok).collect(),
            Err(e) => {
                let msg = e.to_string();
                reqs.iter().map(|_| Err(Error::backend(BACKEND, msg.clone()))).collect()
            }
        }
    }

    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockGuard>> {
        let inner = &self.inner;
        inner.check_open("acquire lock")?;
        if key.is_empty() {
            return Err(invalid("key", "the lock key must not be empty"));
        }
        check_ttl("ttl", ttl)?;
        let lock = inner.key(&format!("lock:{key}"));
        let sent = Instant::now();
        let Some(token) =
            inner.try_acquire(&lock, &inner.key(&format!("fence:{key}")), ttl).await?
        else {
            return Ok(None);
        };
        Ok(Some(inner.guard(key.to_string(), token, sent, ttl)))
    }

    async fn release_lock(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("release lock")?;
        if key.is_empty() {
            return Err(invalid("key", "the lock key must not be empty"));
        }
        let token = inner.held.lock().unwrap().remove(key);
        if let Some(token) = token {
            inner.release_raw(&inner.key(&format!("lock:{key}")), token).await?;
        }
        Ok(())
    }

    async fn start_election(&self, callback: LeadershipCallback) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("start election")?;
        inner.election.start(BACKEND, &inner.closed, |stop| {
            tokio::spawn(run_election(inner.clone(), callback, stop))
        })
    }

    async fn stop_election(&self) -> Result<()> {
        self.inner.election.stop().await;
        Ok(())
    }

    async fn broadcast(&self, mut msg: ClusterMessage) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("broadcast")?;
        if msg.node_id.is_empty() {
            msg.node_id = inner.node_id.clone();
        }
        let json = serde_json::to_string(&msg)
            .map_err(|e| Error::backend(BACKEND, format!("encode message: {e}")))?;
        let mut con = inner.conn();
        ::redis::cmd("PUBLISH")
            .arg(inner.key("bus"))
            .arg(json)
            .query_async::<i64>(&mut con)
            .await
            .map_err(inner.err("broadcast"))?;
        Ok(())
    }

    async fn subscribe(&self, callback: MessageCallback) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("subscribe")?;
        let start = || start_bus(BACKEND, |tx| tokio::spawn(run_bus(inner.clone(), Some(tx))));
        inner.subscribers.subscribe(callback, start).await
    }

    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        inner.closed.cancel();
        // The election task tells its callback of the loss on its way out.
        self.stop_election().await?;
        let heartbeat = inner.heartbeat_task.lock().unwrap().take();
        if let Some(task) = heartbeat {
            let _ = task.await;
        }
        if let Some(task) = inner.subscribers.take_task().await {
            let _ = task.await;
        }
        Ok(())
    }
}
