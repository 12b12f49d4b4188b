//! The Consul cluster backend (cargo feature `cluster-consul`): the seed's
//! `ConsulCluster` on Consul's HTTP API (sessions, KV with
//! `acquire`/`release`, blocking queries).
//!
//! **Tested against a fake, not against Consul.** No Consul server can be
//! installed where this crate is developed, so this module is written from
//! Consul's HTTP API documentation and tested against an in-repo fake
//! (`crates/rota/tests/support/consul_fake.rs`) that implements exactly the
//! endpoints below with their documented semantics: sessions that expire
//! after their TTL (Consul: between TTL and 2 × TTL), lock-delay after a
//! session is invalidated, and blocking queries that return when the index
//! passes the one given or after `wait`. Behaviour of a real Consul beyond
//! what its documentation states has not been checked.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use rota::cluster::{Cluster, ConsulCluster, ConsulClusterConfig};
//!
//! # async fn demo() -> rota::Result<()> {
//! let cluster = ConsulCluster::new(ConsulClusterConfig {
//!     address: "127.0.0.1:8500".into(),
//!     node_id: "node-1".into(),
//!     ..ConsulClusterConfig::default()
//! })
//! .await?;
//! if let Some(guard) = cluster.acquire_lock("nightly-report", Duration::from_secs(30)).await? {
//!     // ... pass guard.token() along with every write the job makes ...
//!     guard.release().await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Endpoints used
//!
//! | request | for |
//! | --- | --- |
//! | `PUT /v1/session/create` `{Name, TTL, Behavior: "delete", LockDelay}` | one session per handle |
//! | `PUT /v1/session/renew/{id}` | every `session_ttl / 2` |
//! | `PUT /v1/session/destroy/{id}` | a session this handle gave up on |
//! | `PUT /v1/kv/{key}?acquire={session}` / `?release={session}` | locks, leadership, registry |
//! | `GET /v1/kv/{key}` (`?recurse`, `?index=N&wait=D`) | reads and watches |
//! | `PUT /v1/kv/{key}`, `DELETE /v1/kv/{key}` | last-seen stamps, broadcast, clean-up |
//! | `PUT /v1/kv/{key}?cas={index}` | marks ([`Cluster::advance_mark`]) |
//!
//! The token, if any, goes in the `X-Consul-Token` header.
//!
//! # Key layout
//!
//! Every key starts with the prefix (`{p}`, `"rota/cluster/"` by default):
//!
//! | key | bound to the session | holds |
//! | --- | --- | --- |
//! | `{p}locks/{key}` | yes | the holder's node ID |
//! | `{p}leader` | yes | the leader's node ID |
//! | `{p}nodes/{id}` | yes | the node's [`NodeInfo`] as JSON: present while the node lives |
//! | `{p}seen/{id}` | no | the node's [`NodeInfo`] with its last heartbeat (node clock) |
//! | `{p}bus/{node}/{seq}` | no | a broadcast [`ClusterMessage`] as JSON |
//! | `{p}marks/{key}` | no | a mark of [`Cluster::advance_mark`], in decimal |
//!
//! # How the primitives map
//!
//! * **Session**: one per handle, `Behavior=delete` (keys it holds are
//!   deleted when it is invalidated) and `LockDelay` = `lock_delay`, renewed
//!   every `session_ttl / 2`. If a renewal answers 404 (the session was
//!   invalidated) or no renewal succeeds for `session_ttl`, every lock and the
//!   leadership of this handle are marked lost and a new session is created.
//! * **Locks**: `PUT {p}locks/{key}?acquire={session}`. The **fencing token**
//!   is the key's `ModifyIndex` right after the grant: Consul's indexes are
//!   the Raft index, which grows with every write, so every grant of a key
//!   gets a larger token than the grants before it. The lock is lost when the
//!   session is invalidated or a blocking query on the key sees another
//!   `Session` or `ModifyIndex`. The per-lock `ttl` is enforced by this
//!   handle: when a guard is not renewed in time, the handle releases the key
//!   (`?release=` with its session). If the process dies, the session's expiry
//!   (TTL to 2 × TTL) and then the lock-delay bound how long the lock stays
//!   taken. Release is `?release={session}`: Consul only lets the holding
//!   session release, so a release never frees another node's lock; within a
//!   handle, a stale guard's release is refused locally.
//! * **Election**: acquire `{p}leader`; the **term** is its `ModifyIndex`.
//!   Candidates wait on a blocking query and try again when the key is free
//!   (and after the lock-delay).
//! * **Registry**: `{p}nodes/{id}` is acquired with the session (so it
//!   disappears when the session dies); `{p}seen/{id}` is rewritten with each
//!   heartbeat. A node is online while the first exists, offline after, and
//!   forgotten `forget_after` after its last heartbeat.
//! * **Marks**: [`Cluster::advance_mark`] reads the mark and its
//!   `ModifyIndex`, then writes the new value with `?cas={ModifyIndex}`
//!   (`?cas=0`, create only, if absent): two round trips. A `false` (another
//!   node raced it) reads again. For fires, `fire-mark/{task}` holds the
//!   task's latest claimed fire (ms).
//! * **Broadcast**: each message is a key `{p}bus/{node}/{seq}`; subscribers
//!   run a blocking recursive query on `{p}bus/` and deliver new keys in
//!   `CreateIndex` order (so per sender in the order sent). A sender deletes
//!   its messages after [`BUS_RETENTION`].
//!
//! # Guarantees
//!
//! Those of [`Cluster`], as far as Consul's documented semantics hold.
//!
//! ### Note: session TTL limits
//! Consul accepts session TTLs from 10 s to 24 h and lock-delays up to 60 s;
//! other values are refused by the server when the session is created. A
//! killed leader is replaced after its session expires (up to 2 ×
//! `session_ttl`) plus `lock_delay`.
//!
//! ### Note: renewing a guard
//! On Consul a lock lives as long as the session that holds it; the handle
//! renews the session on its own. [`LockGuard::renew`] checks (one `GET`)
//! that the key is still this grant and moves the guard's local deadline.
//!
//! ### Note: data loss
//! Fencing tokens and terms are Raft indexes. A Consul cluster that loses its
//! data (a new data directory) starts its indexes again from 1: tokens would
//! then go back. Consul's own restarts keep the Raft log and do not.
//!
//! ### Note: broadcast cost
//! Every subscriber re-reads every retained message of the bus on each
//! change (a recursive query), so the cost grows with the number of messages
//! sent in the last [`BUS_RETENTION`]. The bus suits cluster events, not
//! high-volume traffic. Delivery is at least as good as at-most-once: a
//! subscriber that was cut off gets, when back, the messages still retained.
//!
//! ### Note: clocks
//! `last_seen` is written with the heartbeating node's clock and "forgotten"
//! is judged on the reader's clock: nodes' clocks should roughly agree.
//! Online/offline does not depend on clocks (the server's session decides).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    lease_deadline, parse_decimal_mark, Cluster, ClusterMessage, ElectionSlot, Leadership,
    LeadershipCallback, LeaseOps, LeaseWatch, LockGuard, MessageCallback, NodeInfo, NodeStatus,
    Subscribers,
};
use crate::error::{Error, Result};

const BACKEND: &str = "consul cluster";

/// How long a broadcast message stays in the KV store before its sender
/// deletes it.
pub const BUS_RETENTION: Duration = Duration::from_secs(30);

/// How long a blocking query waits at most (the `wait` parameter).
const BLOCK_WAIT: Duration = Duration::from_secs(5);

/// The configuration of a [`ConsulCluster`]: the seed's `ConsulClusterConfig`
/// (`Address`, `Token`, `NodeID`) plus prefix and timings.
#[derive(Clone)]
pub struct ConsulClusterConfig {
    /// The agent: `host:port` (as `"127.0.0.1:8500"`) or an `http://` /
    /// `https://` URL.
    pub address: String,
    /// The ACL token, or empty for none.
    pub token: String,
    /// This node's ID; must not be empty.
    pub node_id: String,
    /// The prefix of every key (default `"rota/cluster/"`).
    pub key_prefix: String,
    /// The session TTL (default 10 s, Consul's minimum), renewed every half
    /// of it.
    pub session_ttl: Duration,
    /// The session's lock-delay (default 1 s): after the session is
    /// invalidated, its keys cannot be acquired for this long.
    pub lock_delay: Duration,
    /// A node without a heartbeat for this long is forgotten (default 60 s);
    /// at least `session_ttl`.
    pub forget_after: Duration,
    /// How long connecting may take (default 5 s); also the reply timeout of
    /// requests that do not block.
    pub connect_timeout: Duration,
}

impl Default for ConsulClusterConfig {
    /// `127.0.0.1:8500`, no token, an empty node ID (to be set), prefix
    /// `"rota/cluster/"`, session TTL 10 s, lock-delay 1 s, forgotten after
    /// 60 s, connect timeout 5 s.
    fn default() -> Self {
        ConsulClusterConfig {
            address: "127.0.0.1:8500".into(),
            token: String::new(),
            node_id: String::new(),
            key_prefix: "rota/cluster/".into(),
            session_ttl: Duration::from_secs(10),
            lock_delay: Duration::from_secs(1),
            forget_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for ConsulClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulClusterConfig")
            .field("address", &self.address)
            .field("token", &if self.token.is_empty() { "" } else { "***" })
            .field("node_id", &self.node_id)
            .field("key_prefix", &self.key_prefix)
            .field("session_ttl", &self.session_ttl)
            .field("lock_delay", &self.lock_delay)
            .field("forget_after", &self.forget_after)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The seed's `ConsulCluster`: a [`Cluster`] on Consul's HTTP API. See the
/// [module documentation](self) for the key layout and what was tested how.
///
/// Dropping it stops its background tasks as [`Cluster::close`] does, without
/// telling the election callback.
pub struct ConsulCluster {
    inner: Arc<Inner>,
}

impl fmt::Debug for ConsulCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulCluster")
            .field("node_id", &self.inner.node_id)
            .field("address", &self.inner.base)
            .field("prefix", &self.inner.prefix)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A live session of this handle.
#[derive(Debug)]
struct Session {
    id: String,
    /// Cancelled once the session is known or presumed invalidated.
    lost: CancellationToken,
}

/// A grant of a lock, as this handle remembers it.
#[derive(Debug, Clone)]
struct Grant {
    token: u64,
    session: String,
}

struct Inner {
    node_id: String,
    prefix: String,
    base: String,
    token: String,
    session_ttl: Duration,
    lock_delay: Duration,
    forget_after: Duration,
    connect_timeout: Duration,
    http: reqwest::Client,
    closed: CancellationToken,
    session: Mutex<Option<Arc<Session>>>,
    /// Serializes this handle's lock acquires and releases.
    lock_ops: tokio::sync::Mutex<()>,
    /// This handle's current grant of each lock key.
    held: Mutex<HashMap<String, Grant>>,
    /// The nodes this handle heartbeats: ID → NodeInfo.
    registered: Mutex<HashMap<String, NodeInfo>>,
    /// Broadcast keys sent, with when, for clean-up.
    sent: Mutex<Vec<(String, Instant)>>,
    next_seq: Mutex<u64>,
    /// The session task, then the heartbeat task once a node is registered.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    heartbeats_started: std::sync::atomic::AtomicBool,
    election: ElectionSlot,
    subscribers: Subscribers,
    /// HTTP requests sent, for [`Cluster::requests_sent`].
    requests: AtomicU64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulClusterInner").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

/// A KV entry as Consul returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvEntry {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    create_index: u64,
    #[serde(default)]
    modify_index: u64,
}

impl KvEntry {
    fn bytes(&self) -> Vec<u8> {
        self.value.as_deref().and_then(super::base64_bytes::decode).unwrap_or_default()
    }
}

/// A reply: status, `X-Consul-Index`, body.
struct Reply {
    status: StatusCode,
    index: u64,
    body: Vec<u8>,
}

fn invalid(what: &str, message: impl Into<String>) -> Error {
    Error::InvalidInput { what: what.into(), message: message.into() }
}

fn check_duration(what: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(invalid(what, "must be greater than zero"));
    }
    if d < Duration::from_millis(1) {
        return Err(invalid(what, "must be at least 1 ms"));
    }
    Ok(())
}

/// A Go duration string in milliseconds, as Consul parses it.
fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Percent-encodes a KV key for the URL path, keeping `/`.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The base URL for `address`.
fn base_url(address: &str) -> Result<String> {
    let address = address.trim();
    if address.is_empty() {
        return Err(invalid("address", "the Consul address is empty (expected host:port)"));
    }
    let rest = address.strip_prefix("http://").or_else(|| address.strip_prefix("https://"));
    if rest.is_some_and(|r| r.trim_end_matches('/').is_empty()) {
        return Err(invalid("address", format!("{address:?} has no host")));
    }
    let address = address.trim_end_matches('/');
    let url = if rest.is_some() {
        address.to_string()
    } else if address.contains("://") {
        return Err(invalid("address", format!("{address:?}: only http:// and https:// work")));
    } else {
        format!("http://{address}")
    };
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| invalid("address", format!("{address:?} is not host:port or a URL: {e}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("address", format!("{address:?} has no host")));
    }
    Ok(url)
}

impl ConsulCluster {
    /// Connects to the agent of `config` (the seed's `NewConsulCluster`) and
    /// creates this handle's session.
    ///
    /// Fails with [`Error::InvalidInput`] naming the field for an empty
    /// `node_id` or `address` or a zero duration, and with a backend error
    /// naming the address within `connect_timeout` if the agent cannot be
    /// reached (or refuses the session, e.g. a TTL under Consul's 10 s).
    pub async fn new(config: ConsulClusterConfig) -> Result<ConsulCluster> {
        if config.node_id.is_empty() {
            return Err(invalid("node_id", "the node ID must not be empty"));
        }
        check_duration("session_ttl", config.session_ttl)?;
        check_duration("connect_timeout", config.connect_timeout)?;
        if config.forget_after < config.session_ttl {
            return Err(invalid(
                "forget_after",
                format!(
                    "{:?} is shorter than session_ttl {:?}",
                    config.forget_after, config.session_ttl
                ),
            ));
        }
        let base = base_url(&config.address)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| Error::backend(BACKEND, format!("HTTP client: {e}")))?;
        let start_seq = u64::try_from(Timestamp::now().as_microsecond()).unwrap_or(0);
        let inner = Arc::new(Inner {
            node_id: config.node_id,
            prefix: config.key_prefix,
            base,
            token: config.token,
            session_ttl: config.session_ttl,
            lock_delay: config.lock_delay,
            forget_after: config.forget_after,
            connect_timeout: config.connect_timeout,
            http,
            closed: CancellationToken::new(),
            session: Mutex::new(None),
            lock_ops: tokio::sync::Mutex::new(()),
            held: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
            sent: Mutex::new(Vec::new()),
            next_seq: Mutex::new(start_seq),
            tasks: Mutex::new(Vec::new()),
            heartbeats_started: std::sync::atomic::AtomicBool::new(false),
            election: ElectionSlot::default(),
            subscribers: Subscribers::default(),
            requests: AtomicU64::new(0),
        });
        let sent = Instant::now();
        let session = inner.create_session().await?;
        *inner.session.lock().unwrap() = Some(session.clone());
        let task = tokio::spawn(run_session(
            inner.clone(),
            session,
            lease_deadline(sent, inner.session_ttl),
        ));
        inner.tasks.lock().unwrap().push(task);
        Ok(ConsulCluster { inner })
    }

    /// The prefix of every key this cluster uses.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The ID of this handle's current session, if it has one.
    pub fn session_id(&self) -> Option<String> {
        self.inner.live_session().map(|s| s.id.clone())
    }

    /// The name this handle gives its sessions: `"rota:{node_id}"`.
    pub fn session_name(&self) -> String {
        self.inner.session_name()
    }
}

impl Drop for ConsulCluster {
    fn drop(&mut self) {
        self.inner.closed.cancel();
    }
}

impl Inner {
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn session_name(&self) -> String {
        format!("rota:{}", self.node_id)
    }

    fn check_open(&self, what: &str) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(Error::backend(BACKEND, format!("{what}: the cluster is closed")));
        }
        Ok(())
    }

    fn live_session(&self) -> Option<Arc<Session>> {
        self.session.lock().unwrap().clone().filter(|s| !s.lost.is_cancelled())
    }

    fn need_session(&self, what: &str) -> Result<Arc<Session>> {
        self.live_session().ok_or_else(|| {
            Error::backend(
                BACKEND,
                format!("{what} ({}): no live session (re-creating it)", self.base),
            )
        })
    }

    /// Sends one request. `wait`: the blocking time of a blocking query, added
    /// to the reply timeout.
    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        wait: Duration,
    ) -> Result<Reply> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).map_err(|e| {
            Error::backend(BACKEND, format!("{what} ({}): bad URL: {e}", self.base))
        })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                if value.is_empty() {
                    pairs.append_key_only(name);
                } else {
                    pairs.append_pair(name, value);
                }
            }
        }
        // A blocking query may return up to wait + wait/16 late (jitter).
        let timeout = self.connect_timeout + wait + wait / 16;
        let mut request = self.http.request(method, url).timeout(timeout);
        if !self.token.is_empty() {
            request = request.header("X-Consul-Token", &self.token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let err = |e: String| Error::backend(BACKEND, format!("{what} ({}): {e}", self.base));
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                err(format!("timed out after {timeout:?}"))
            } else if e.is_connect() {
                err(format!("cannot connect: {e}"))
            } else {
                err(e.to_string())
            }
        })?;
        let status = response.status();
        let index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = response.bytes().await.map_err(|e| err(e.to_string()))?.to_vec();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(Reply { status, index, body });
        }
        let text = String::from_utf8_lossy(&body);
        if status == StatusCode::FORBIDDEN {
            return Err(err(format!("permission denied (check the token): {text}")));
        }
        Err(err(format!("HTTP {status}: {}", text.trim())))
    }

    async fn create_session(&self) -> Result<Arc<Session>> {
        let body = serde_json::json!({
            "Name": self.session_name(),
            "TTL": go_duration(self.session_ttl),
            "Behavior": "delete",
            "LockDelay": go_duration(self.lock_delay),
        });
        let reply = self
            .call(
                "create session",
                Method::PUT,
                "/v1/session/create",
                &[],
                Some(body.to_string().into_bytes()),
                Duration::ZERO,
            )
            .await?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let created: Created = serde_json::from_slice(&reply.body).map_err(|e| {
            Error::backend(BACKEND, format!("create session ({}): bad reply: {e}", self.base))
        })?;
        Ok(Arc::new(Session { id: created.id, lost: CancellationToken::new() }))
    }

    /// Renews `id`: `Ok(false)` if the session no longer exists.
    async fn renew_session(&self, id: &str) -> Result<bool> {
        let path = format!("/v1/session/renew/{id}");
        let reply =
            self.call("renew session", Method::PUT, &path, &[], None, Duration::ZERO).await?;
        Ok(reply.status != StatusCode::NOT_FOUND)
    }

    async fn destroy_session(&self, id: &str) -> Result<()> {
        let path = format!("/v1/session/destroy/{id}");
        self.call("destroy session", Method::PUT, &path, &[], None, Duration::ZERO).await?;
        Ok(())
    }

    /// `PUT` on a key; returns the `true`/`false` reply.
    async fn put(
        &self,
        what: &str,
        key: &str,
        query: &[(&str, String)],
        body: &[u8],
    ) -> Result<bool> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let reply =
            self.call(what, Method::PUT, &path, query, Some(body.to_vec()), Duration::ZERO).await?;
        Ok(reply.body.trim_ascii() == b"true")
    }

    async fn delete(&self, what: &str, key: &str, recurse: bool) -> Result<()> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let query: Vec<(&str, String)> =
            if recurse { vec![("recurse", String::new())] } else { Vec::new() };
        self.call(what, Method::DELETE, &path, &query, None, Duration::ZERO).await?;
        Ok(())
    }

    /// Reads a key or (with `recurse`) a prefix; with `index` > 0, a blocking
    /// query waiting up to `wait`. Returns the entries and `X-Consul-Index`.
    async fn get(
        &self,
        what: &str,
        key: &str,
        recurse: bool,
        index: u64,
        wait: Duration,
    ) -> Result<(Vec<KvEntry>, u64)> {
        let path = format!("/v1/kv/{}", encode_key(key));
        let mut query: Vec<(&str, String)> = Vec::new();
        if recurse {
            query.push(("recurse", String::new()));
        }
        let wait = if index > 0 {
            query.push(("index", index.to_string()));
            query.push(("wait", go_duration(wait)));
            wait
        } else {
            Duration::ZERO
        };
        let reply = self.call(what, Method::GET, &path, &query, None, wait).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok((Vec::new(), reply.index));
        }
        let entries: Vec<KvEntry> = serde_json::from_slice(&reply.body).map_err(|e| {
            Error::backend(BACKEND, format!("{what} ({}): bad reply: {e}", self.base))
        })?;
        Ok((entries, reply.index))
    }

    /// Acquires `key` with `session`; the `ModifyIndex` of the grant, or
    /// `None` if held by another session (or in its lock-delay).
    async fn acquire(
        &self,
        what: &str,
        key: &str,
        session: &Session,
        value: &[u8],
    ) -> Result<Option<u64>> {
        if !self.put(what, key, &[("acquire", session.id.clone())], value).await? {
            return Ok(None);
        }
        let (entries, _) = self.get(what, key, false, 0, Duration::ZERO).await?;
        match entries.first() {
            Some(e) if e.session.as_deref() == Some(session.id.as_str()) => {
                Ok(Some(e.modify_index))
            }
            // Invalidated between the two requests.
            _ => Ok(None),
        }
    }

    /// Raises mark `key` to `value`; see [`Cluster::advance_mark`].
    async fn advance(&self, key: &str, value: i64) -> Result<Option<Option<i64>>> {
        let what = format!("advance mark {key:?}");
        let mark = self.key(&format!("marks/{key}"));
        let data = value.to_string();
        loop {
            let (entries, _) = self.get(&what, &mark, false, 0, Duration::ZERO).await?;
            let (stored, cas) = match entries.first() {
                None => (None, 0),
                Some(e) => {
                    let stored = parse_decimal_mark(BACKEND, &what, &mark, &e.bytes())?;
                    (Some(stored), e.modify_index)
                }
            };
            if stored.is_some_and(|s| s >= value) {
                return Ok(None);
            }
            if self.put(&what, &mark, &[("cas", cas.to_string())], data.as_bytes()).await? {
                return Ok(Some(stored));
            }
            // Written meanwhile: look again.
        }
    }

    /// Releases this handle's grant `token` of lock `key` if it is still
    /// the current one.
    async fn release_grant(&self, key: &str, token: u64) -> Result<bool> {
        let _ops = self.lock_ops.lock().await;
        let grant = {
            let mut held = self.held.lock().unwrap();
            match held.get(key) {
                Some(g) if g.token == token => held.remove(key),
                _ => None,
            }
        };
        let Some(grant) = grant else { return Ok(false) };
        self.put(
            &format!("release lock {key:?}"),
            &self.key(&format!("locks/{key}")),
            &[("release", grant.session)],
            b"",
        )
        .await
    }

    /// One heartbeat for node `info`: stamp `seen/{id}`, hold `nodes/{id}`.
    async fn beat(&self, info: &NodeInfo) -> Result<()> {
        let mut info = info.clone();
        info.last_seen = Timestamp::now();
        let json = serde_json::to_vec(&info)
            .map_err(|e| Error::backend(BACKEND, format!("encode node {:?}: {e}", info.id)))?;
        let what = format!("heartbeat of node {:?}", info.id);
        self.put(&what, &self.key(&format!("seen/{}", info.id)), &[], &json).await?;
        if let Some(session) = self.live_session() {
            // Fails while another (older) session of the node still holds it
            // or during its lock-delay: the next heartbeat tries again.
            self.put(
                &what,
                &self.key(&format!("nodes/{}", info.id)),
                &[("acquire", session.id.clone())],
                &json,
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl LeaseOps for Inner {
    async fn renew(&self, key: &str, token: u64, _ttl: Duration) -> Result<bool> {
        self.check_open("renew lock")?;
        let grant = self.held.lock().unwrap().get(key).cloned();
        let Some(grant) = grant.filter(|g| g.token == token) else { return Ok(false) };
        if self.live_session().is_none_or(|s| s.id != grant.session) {
            return Ok(false);
        }
        let what = format!("renew lock {key:?}");
        let (entries, _) =
            self.get(&what, &self.key(&format!("locks/{key}")), false, 0, Duration::ZERO).await?;
        Ok(entries.first().is_some_and(|e| {
            e.session.as_deref() == Some(grant.session.as_str()) && e.modify_index == token
        }))
    }

    async fn release(&self, key: &str, token: u64) -> Result<bool> {
        self.check_open("release lock")?;
        self.release_grant(key, token).await
    }
}

/// Keeps the session alive; replaces it when it is lost.
async fn run_session(inner: Arc<Inner>, mut session: Arc<Session>, mut deadline: Instant) {
    let ttl = inner.session_ttl;
    let every = (ttl / 2).max(Duration::from_millis(5));
    // After a failed renewal, retry sooner than `every`.
    let retry = (ttl / 10).clamp(Duration::from_millis(5), Duration::from_millis(500));
    let mut failed = false;
    loop {
        let wake = deadline.min(Instant::now() + if failed { retry } else { every });
        tokio::select! {
            _ = inner.closed.cancelled() => {
                session.lost.cancel();
                return;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
        let sent = Instant::now();
        let renewed = if Instant::now() >= deadline {
            Ok(false)
        } else {
            tokio::select! {
                _ = inner.closed.cancelled() => continue,
                _ = tokio::time::sleep_until(deadline) => Ok(false),
                r = inner.renew_session(&session.id) => r,
            }
        };
        match renewed {
            Ok(true) => {
                deadline = lease_deadline(sent, ttl);
                failed = false;
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(node = %inner.node_id, "session renewal failed: {e}");
                failed = true;
                if Instant::now() < deadline {
                    continue;
                }
            }
        }
        // Lost (invalidated, or not renewed in time): everything bound to it
        // is lost; give it up and make a new one.
        tracing::warn!(node = %inner.node_id, session = %session.id, "session lost");
        session.lost.cancel();
        let old = session.id.clone();
        let mut backoff = Duration::from_millis(50);
        loop {
            if inner.closed.is_cancelled() {
                return;
            }
            let _ = inner.destroy_session(&old).await;
            let sent = Instant::now();
            match inner.create_session().await {
                Ok(new) => {
                    session = new;
                    failed = false;
                    deadline = lease_deadline(sent, ttl);
                    *inner.session.lock().unwrap() = Some(session.clone());
                    break;
                }
                Err(e) => tracing::warn!(node = %inner.node_id, "creating a session: {e}"),
            }
            tokio::select! {
                _ = inner.closed.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        // Re-register right away on the new session.
        let nodes: Vec<NodeInfo> = inner.registered.lock().unwrap().values().cloned().collect();
        for node in nodes {
            if let Err(e) = inner.beat(&node).await {
                tracing::warn!(node = %node.id, "{e}");
            }
        }
    }
}

/// Heartbeats registered nodes and deletes old broadcast messages.
async fn run_heartbeats(inner: Arc<Inner>) {
    let every = (inner.session_ttl / 2).max(Duration::from_millis(5));
    loop {
        tokio::select! {
            _ = inner.closed.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let nodes: Vec<NodeInfo> = inner.registered.lock().unwrap().values().cloned().collect();
        for node in nodes {
            if let Err(e) = inner.beat(&node).await {
                tracing::warn!(node = %node.id, "{e}");
            }
        }
        let old: Vec<String> = {
            let mut sent = inner.sent.lock().unwrap();
            let keep = sent.iter().position(|(_, at)| at.elapsed() < BUS_RETENTION);
            let cut = keep.unwrap_or(sent.len());
            sent.drain(..cut).map(|(k, _)| k).collect()
        };
        for key in old {
            let _ = inner.delete("delete old message", &key, false).await;
        }
    }
}

/// Watches a lock grant: lost when the session is, when the key changes
/// hands, or (not renewed) at its local deadline, when it is released.
async fn watch_lock(
    inner: Arc<Inner>,
    watch: LeaseWatch,
    key: String,
    token: u64,
    session: Arc<Session>,
) {
    let lock = inner.key(&format!("locks/{key}"));
    let mut index = 1;
    let still_ours =
        |inner: &Inner| inner.held.lock().unwrap().get(&key).is_some_and(|g| g.token == token);
    let mut dropped = false;
    loop {
        let deadline = watch.deadline();
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(BLOCK_WAIT)
            .max(Duration::from_millis(1));
        tokio::select! {
            _ = inner.closed.cancelled() => {
                watch.mark_lost();
                return;
            }
            _ = session.lost.cancelled() => {
                watch.mark_lost();
                inner.held.lock().unwrap().retain(|k, g| !(k == &key && g.token == token));
                return;
            }
            _ = watch.done(), if !dropped => {
                if !still_ours(&inner) {
                    // Released (or lost).
                    return;
                }
                // Dropped without release: it stays held until its deadline.
                dropped = true;
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if Instant::now() < watch.deadline() {
                    // Renewed meanwhile.
                    continue;
                }
                // Not renewed in time: the lease is over; free it.
                watch.mark_lost();
                if let Err(e) = inner.release_grant(&key, token).await {
                    tracing::warn!(node = %inner.node_id, "releasing expired lock {key:?}: {e}");
                }
                return;
            }
            r = inner.get("watch lock", &lock, false, index, wait) => {
                match r {
                    Ok((entries, new_index)) => {
                        let ours = entries.first().is_some_and(|e| {
                            e.session.as_deref() == Some(session.id.as_str()) && e.modify_index == token
                        });
                        if !ours {
                            watch.mark_lost();
                            inner.held.lock().unwrap().retain(|k, g| !(k == &key && g.token == token));
                            return;
                        }
                        index = if new_index < index { 1 } else { new_index.max(1) };
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    }
}

/// Runs for leadership until `stop` is cancelled.
async fn run_election(inner: Arc<Inner>, callback: LeadershipCallback, stop: CancellationToken) {
    let key = inner.key("leader");
    let retry = (inner.lock_delay / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
    let mut index = 0;
    let mut saw_free = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let Some(session) = inner.live_session() else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(retry) => continue,
            }
        };
        let won = tokio::select! {
            _ = stop.cancelled() => return,
            r = inner.acquire("election", &key, &session, inner.node_id.as_bytes()) => r,
        };
        if let Ok(Some(term)) = won {
            callback(Leadership::Elected { term });
            let mut index = 1;
            let stopped = loop {
                let got = tokio::select! {
                    _ = stop.cancelled() => break true,
                    _ = session.lost.cancelled() => break false,
                    r = inner.get("watch leader", &key, false, index, BLOCK_WAIT) => r,
                };
                match got {
                    Ok((entries, new_index)) => {
                        let ours = entries.first().is_some_and(|e| {
                            e.session.as_deref() == Some(session.id.as_str())
                                && e.modify_index == term
                        });
                        if !ours {
                            break false;
                        }
                        index = if new_index < index { 1 } else { new_index.max(1) };
                    }
                    Err(_) => {
                        tokio::select! {
                            _ = stop.cancelled() => break true,
                            _ = session.lost.cancelled() => break false,
                            _ = tokio::time::sleep(retry) => {}
                        }
                    }
                }
            };
            callback(Leadership::Lost { term });
            if stopped {
                if !inner.closed.is_cancelled() {
                    let released =
                        inner.put("step down", &key, &[("release", session.id.clone())], b"").await;
                    if let Err(e) = released {
                        tracing::warn!(node = %inner.node_id, "stepping down: {e}");
                    }
                }
                return;
            }
            continue;
        }
        // Not won. Refused although the key looked free: the lock-delay (or
        // a race); retry shortly. Else wait until the key looks free.
        if saw_free {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
        }
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            r = inner.get("watch leader", &key, false, index, BLOCK_WAIT) => r,
        };
        match got {
            Ok((entries, new_index)) => {
                saw_free = entries.first().is_none_or(|e| e.session.is_none());
                index = if saw_free || new_index < index { 0 } else { new_index };
            }
            Err(_) => {
                saw_free = false;
                index = 0;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
            }
        }
    }
}

/// Delivers broadcast messages to subscribers until closed. `index`: the
/// index of the first read; only keys created after it are delivered.
async fn run_bus(inner: Arc<Inner>, mut index: u64) {
    let bus = inner.key("bus/");
    let mut delivered = index;
    loop {
        let got = tokio::select! {
            _ = inner.closed.cancelled() => return,
            r = inner.get("subscribe", &bus, true, index.max(1), BLOCK_WAIT) => r,
        };
        match got {
            Ok((mut entries, new_index)) => {
                index = if new_index < index { 1 } else { new_index };
                entries.retain(|e| e.create_index > delivered);
                entries.sort_by_key(|e| e.create_index);
                for entry in entries {
                    delivered = entry.create_index;
                    match serde_json::from_slice::<ClusterMessage>(&entry.bytes()) {
                        Ok(message) => {
                            let callbacks = inner.subscribers.callbacks();
                            for callback in callbacks {
                                callback(message.clone());
                            }
                        }
                        Err(e) => {
                            tracing::warn!(key = %entry.key, "ignoring a malformed cluster message: {e}")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(node = %inner.node_id, "cluster bus: {e}");
                tokio::select! {
                    _ = inner.closed.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

#[async_trait]
impl Cluster for ConsulCluster {
    fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    async fn register(&self, info: NodeInfo) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("register")?;
        if info.id.is_empty() {
            return Err(invalid("node_id", "the node ID must not be empty"));
        }
        inner.beat(&info).await?;
        inner.registered.lock().unwrap().insert(info.id.clone(), info);
        if !inner.heartbeats_started.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let task = tokio::spawn(run_heartbeats(inner.clone()));
            inner.tasks.lock().unwrap().push(task);
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
        inner.delete("unregister", &inner.key(&format!("nodes/{id}")), false).await?;
        inner.delete("unregister", &inner.key(&format!("seen/{id}")), false).await
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let inner = &self.inner;
        inner.check_open("nodes")?;
        let z = Duration::ZERO;
        let (seen, _) = inner.get("read nodes", &inner.key("seen/"), true, 0, z).await?;
        let (live, _) = inner.get("read nodes", &inner.key("nodes/"), true, 0, z).await?;
        let (leader, _) = inner.get("read nodes", &inner.key("leader"), false, 0, z).await?;
        let leader = leader
            .first()
            .filter(|e| e.session.is_some())
            .map(|e| String::from_utf8_lossy(&e.bytes()).into_owned());
        let live: std::collections::HashSet<String> = live
            .iter()
            .filter(|e| e.session.is_some())
            .filter_map(|e| e.key.strip_prefix(&inner.key("nodes/")).map(str::to_string))
            .collect();
        let now = Timestamp::now();
        let forget =
            jiff::SignedDuration::try_from(inner.forget_after).unwrap_or(jiff::SignedDuration::MAX);
        let mut out = Vec::new();
        for entry in seen {
            let Some(id) = entry.key.strip_prefix(&inner.key("seen/")) else { continue };
            let mut node: NodeInfo = match serde_json::from_slice(&entry.bytes()) {
                Ok(node) => node,
                Err(e) => {
                    tracing::warn!(node = %id, "skipping a malformed node entry: {e}");
                    continue;
                }
            };
            node.id = id.to_string();
            if !live.contains(id) && now.duration_since(node.last_seen) > forget {
                let _ = inner.delete("forget node", &entry.key, false).await;
                continue;
            }
            node.status = if !live.contains(id) {
                NodeStatus::Offline
            } else if leader.as_deref() == Some(id) {
                NodeStatus::Leader
            } else {
                NodeStatus::Online
            };
            out.push(node);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockGuard>> {
        let inner = &self.inner;
        inner.check_open("acquire lock")?;
        if key.is_empty() {
            return Err(invalid("key", "the lock key must not be empty"));
        }
        check_duration("ttl", ttl)?;
        let what = format!("acquire lock {key:?}");
        let _ops = inner.lock_ops.lock().await;
        if inner.held.lock().unwrap().contains_key(key) {
            // This handle's earlier grant (same session) still holds it.
            return Ok(None);
        }
        let session = inner.need_session(&what)?;
        let sent = Instant::now();
        let lock = inner.key(&format!("locks/{key}"));
        let Some(token) = inner.acquire(&what, &lock, &session, inner.node_id.as_bytes()).await?
        else {
            return Ok(None);
        };
        inner
            .held
            .lock()
            .unwrap()
            .insert(key.to_string(), Grant { token, session: session.id.clone() });
        let ops: Arc<dyn LeaseOps> = inner.clone();
        let (guard, watch) = LockGuard::new(key, token, lease_deadline(sent, ttl), ops);
        tokio::spawn(watch_lock(inner.clone(), watch, key.to_string(), token, session));
        Ok(Some(guard))
    }

    async fn release_lock(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("release lock")?;
        if key.is_empty() {
            return Err(invalid("key", "the lock key must not be empty"));
        }
        let grant = inner.held.lock().unwrap().get(key).cloned();
        if let Some(grant) = grant {
            inner.release_grant(key, grant.token).await?;
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
        let json = serde_json::to_vec(&msg)
            .map_err(|e| Error::backend(BACKEND, format!("encode message: {e}")))?;
        let seq = {
            let mut next = inner.next_seq.lock().unwrap();
            *next += 1;
            *next
        };
        let key = inner.key(&format!("bus/{}/{seq:020}", inner.node_id));
        inner.put("broadcast", &key, &[], &json).await?;
        inner.sent.lock().unwrap().push((key, Instant::now()));
        Ok(())
    }

    async fn subscribe(&self, callback: MessageCallback) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("subscribe")?;
        let start = || async {
            let (_, index) =
                inner.get("subscribe", &inner.key("bus/"), true, 0, Duration::ZERO).await?;
            Ok(tokio::spawn(run_bus(inner.clone(), index)))
        };
        inner.subscribers.subscribe(callback, start).await
    }

    async fn advance_mark(&self, key: &str, value: i64) -> Result<Option<Option<i64>>> {
        let inner = &self.inner;
        inner.check_open("advance mark")?;
        if key.is_empty() {
            return Err(invalid("key", "the mark key must not be empty"));
        }
        inner.advance(key, value).await
    }

    fn requests_sent(&self) -> Option<u64> {
        Some(self.inner.requests.load(Ordering::Relaxed))
    }

    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        inner.closed.cancel();
        // The election task tells its callback of the loss on its way out.
        self.stop_election().await?;
        let tasks: Vec<JoinHandle<()>> = inner.tasks.lock().unwrap().drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
        if let Some(task) = inner.subscribers.take_task().await {
            let _ = task.await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded_but_keep_slashes() {
        assert_eq!(encode_key("rota/cluster/locks/a b?&c"), "rota/cluster/locks/a%20b%3F%26c");
        assert_eq!(encode_key("é"), "%C3%A9");
    }

    #[test]
    fn addresses_become_base_urls() {
        assert_eq!(base_url("127.0.0.1:8500").unwrap(), "http://127.0.0.1:8500");
        assert_eq!(base_url("https://consul:8501/").unwrap(), "https://consul:8501");
        for bad in ["", "  ", "http://", "https:///", "ftp://x:1", "host:notaport"] {
            let err = base_url(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidInput { what, .. } if what == "address"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10000ms");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }
}
