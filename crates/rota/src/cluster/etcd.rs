//! The etcd cluster backend (cargo feature `cluster-etcd`): the seed's
//! `EtcdCluster` on an etcd v3 cluster (tested against etcd 3.4), built on
//! etcd's own primitives: leases with keep-alive, transactions on a key's
//! create revision, and watches.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use rota::cluster::{Cluster, EtcdCluster, EtcdClusterConfig, Leadership};
//!
//! # async fn demo() -> rota::Result<()> {
//! let cluster = EtcdCluster::new(EtcdClusterConfig {
//!     endpoints: vec!["127.0.0.1:2379".into()],
//!     node_id: "node-1".into(),
//!     ..EtcdClusterConfig::default()
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
//! Every key starts with the prefix (`{p}` below, `"/rota/cluster/"` by
//! default):
//!
//! | key | lease | holds |
//! | --- | --- | --- |
//! | `{p}lock/{key}` | one per grant, the lock's TTL | the holder's node ID |
//! | `{p}leader` | one per term, `election_ttl` | the leader's node ID |
//! | `{p}node/{id}` | per node, `node_ttl` | the node's [`NodeInfo`] as JSON |
//! | `{p}seen/{id}` | per node, `forget_after` | the [`NodeInfo`] with its last heartbeat |
//! | `{p}bus/{node}/{start}-{seq}` | shared, 10 s | a broadcast message as JSON |
//! | `{p}mark/{key}` | none | a mark of [`Cluster::advance_mark`], as 20 characters (below) |
//!
//! A lock is a transaction: if the key's create revision is 0 (it does not
//! exist), put it with a fresh lease of the lock's TTL. The **fencing token
//! is the key's create revision**: etcd's revision grows with every write to
//! the whole store, so every grant of a key gets a larger one (also across
//! server restarts, since etcd persists its revision). Renewing is a
//! keep-alive of the grant's lease (or, for a longer TTL than granted, a
//! new lease swapped in by a transaction on the create revision). Releasing
//! is a transaction that deletes the key only if its create revision is
//! still the token, followed by revoking the lease. A guard's watch on the
//! key marks it lost as soon as the key is deleted (expired, released).
//!
//! Leadership is the same lock on `{p}leader`; its term is the create
//! revision. Candidates that lose watch the leader key and try again as soon
//! as it is deleted (a leader's lease ran out or it stepped down), so
//! failover takes the remaining lease time plus one round trip.
//!
//! The registry keeps two keys per node: `{p}node/{id}` on a lease of
//! `node_ttl` and `{p}seen/{id}` on a lease of `forget_after`, both kept
//! alive by heartbeats every `node_ttl / 3`. A node whose heartbeats stop
//! loses `{p}node/{id}` after `node_ttl` (shown [`NodeStatus::Offline`]) and
//! `{p}seen/{id}` after `forget_after` (forgotten). Expiry is decided by the
//! etcd server, so node clocks do not need to agree; `last_seen` is the
//! heartbeating node's clock.
//!
//! A mark is stored so that byte order is numeric order, which etcd's value
//! comparison can then check: a value `v >= 0` as 20 zero-padded decimal
//! digits (`00000001733356800000`), a negative one as `-` followed by the
//! 19 zero-padded digits of `v - i64::MIN`. For fires, `fire-mark/{task}`
//! holds the task's latest claimed fire (ms). [`Cluster::advance_mark`] is
//! one transaction (one round trip): if the stored value is lower, put the
//! new one (returning the previous one); else, in a nested transaction, put
//! it if the key does not exist (create revision 0), else read it.
//!
//! Broadcast puts each message under `{p}bus/` on a short shared lease;
//! subscribers watch the prefix and receive puts in revision order, so
//! messages from one sender arrive in the order sent.
//!
//! # Guarantees
//!
//! Those of [`Cluster`], on an etcd cluster that keeps quorum.
//!
//! ### Note: TTLs are whole seconds
//! etcd leases have a TTL in whole seconds, and a server minimum (1.5 s
//! rounded up to 2 s with etcd's default election timeout). A TTL given here
//! is rounded up to whole seconds for the server, which may round it up
//! further; the local [`LockGuard::deadline`] still counts the TTL you asked
//! for, so a guard turns lost locally before the server frees the key. Locks
//! may therefore stay held on the server somewhat longer than their TTL.
//!
//! ### Note: broadcast
//! A subscriber that loses its connection watches again from the revision
//! after the last one it saw, so it catches up on what it missed as long as
//! the messages (lease: 10 s) and etcd's history (not compacted) still hold
//! them. Callbacks run one at a time on the subscriber task.
//!
//! ### Note: server restarts and dropped connections
//! etcd keeps its data, and its leases, across a restart: on start it gives
//! every lease its full TTL again, so a lock or leadership whose holder died
//! just before may be held up to one TTL longer than without the restart.
//! Nothing is granted twice: a grant still stands after the restart, or is
//! gone and the next one gets a larger token. While the server is away,
//! holders whose renewals fail lose their locks and leadership at their local
//! deadline; heartbeats register a node again if its lease ran out;
//! subscribers watch again from where they were. The connection (gRPC over
//! HTTP/2, with keep-alive pings every 2 s) is re-established on the next
//! request. The test file covers both a restart of a private `etcd` and a
//! proxy dropping every connection.
//!

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use jiff::Timestamp;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    lease_deadline, start_bus, Cluster, ClusterMessage, ElectionSlot, Leadership,
    LeadershipCallback, LeaseOps, LeaseWatch, LockGuard, MessageCallback, NodeInfo, NodeStatus,
    Subscribers,
};
use crate::error::{Error, Result};

const BACKEND: &str = "etcd cluster";

/// The TTL of the lease broadcast messages live on, in seconds.
const BUS_TTL_SECS: i64 = 10;

/// The configuration of an [`EtcdCluster`]: the seed's `EtcdClusterConfig`
/// (`Endpoints`, `Username`, `Password`, `NodeID`) plus prefix and timings.
#[derive(Clone)]
pub struct EtcdClusterConfig {
    /// The etcd endpoints, as `host:port` or `http://host:port`; at least one.
    pub endpoints: Vec<String>,
    /// The user name for etcd authentication, or empty for none.
    pub username: String,
    /// The password for etcd authentication.
    pub password: String,
    /// This node's ID; must not be empty.
    pub node_id: String,
    /// The prefix of every key (default `"/rota/cluster/"`). Clusters that
    /// share an etcd need prefixes of their own.
    pub key_prefix: String,
    /// A node without a heartbeat for this long shows offline (default 10 s).
    /// Heartbeats are sent every third of it. Rounded up to whole seconds.
    pub node_ttl: Duration,
    /// A node without a heartbeat for this long is forgotten (default 30 s);
    /// at least `node_ttl`. Rounded up to whole seconds.
    pub forget_after: Duration,
    /// The leader's lease (default 5 s), renewed every third of it. A killed
    /// leader is replaced within about this long. Rounded up to whole seconds.
    pub election_ttl: Duration,
    /// How long connecting may take (default 5 s); also the bound of every
    /// request.
    pub connect_timeout: Duration,
}

impl Default for EtcdClusterConfig {
    /// `127.0.0.1:2379`, no authentication, an empty node ID (to be set),
    /// prefix `"/rota/cluster/"`, node TTL 10 s, forgotten after 30 s,
    /// election TTL 5 s, connect timeout 5 s.
    fn default() -> Self {
        EtcdClusterConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            username: String::new(),
            password: String::new(),
            node_id: String::new(),
            key_prefix: "/rota/cluster/".into(),
            node_ttl: Duration::from_secs(10),
            forget_after: Duration::from_secs(30),
            election_ttl: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for EtcdClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClusterConfig")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &if self.password.is_empty() { "" } else { "***" })
            .field("node_id", &self.node_id)
            .field("key_prefix", &self.key_prefix)
            .field("node_ttl", &self.node_ttl)
            .field("forget_after", &self.forget_after)
            .field("election_ttl", &self.election_ttl)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The seed's `EtcdCluster`: a [`Cluster`] on etcd. See the
/// [module documentation](self) for the key layout and sharp edges.
///
/// Dropping it stops its background tasks as [`Cluster::close`] does, without
/// telling the election callback.
pub struct EtcdCluster {
    inner: Arc<Inner>,
}

/// A registered node's leases.
#[derive(Debug, Clone)]
struct Registration {
    info: NodeInfo,
    node_lease: i64,
    seen_lease: i64,
}

struct Inner {
    node_id: String,
    prefix: String,
    endpoints: String,
    node_ttl: Duration,
    forget_after: Duration,
    election_ttl: Duration,
    connect_timeout: Duration,
    client: Client,
    closed: CancellationToken,
    /// The lease of each live grant, by lock key and token.
    grants: Mutex<HashMap<(String, u64), Grant>>,
    /// This node's latest grant of each lock key, for `release_lock`.
    held: Mutex<HashMap<String, u64>>,
    /// The nodes this handle heartbeats, by ID.
    registered: Mutex<HashMap<String, Registration>>,
    heartbeat_task: Mutex<Option<JoinHandle<()>>>,
    election: ElectionSlot,
    subscribers: Subscribers,
    /// The lease broadcasts are put with, and when it was granted.
    bus_lease: tokio::sync::Mutex<Option<(i64, Instant)>>,
    /// Distinguishes this handle's broadcast keys from an earlier one's.
    started: i64,
    seq: AtomicU64,
    /// Requests sent to the server, for [`Cluster::requests_sent`].
    requests: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Grant {
    lease: i64,
    /// The TTL the server granted, in seconds.
    secs: i64,
}

/// The outcome of one attempt at a lock.
enum Attempt {
    Won {
        token: u64,
        grant: Grant,
    },
    /// Held by someone; the store's revision when it was found held.
    Held {
        revision: i64,
    },
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("node_id", &self.inner.node_id)
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClusterInner").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

fn invalid(what: &str, message: impl Into<String>) -> Error {
    Error::InvalidInput { what: what.into(), message: message.into() }
}

fn check_ttl(what: &str, ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(invalid(what, "must be greater than zero"));
    }
    Ok(())
}

/// A mark as stored: 20 bytes whose byte order is the numeric order.
fn encode_mark(v: i64) -> String {
    if v >= 0 {
        format!("{v:020}")
    } else {
        // v - i64::MIN is in 0..=i64::MAX: 19 digits at most.
        format!("-{:019}", v.wrapping_sub(i64::MIN))
    }
}

/// The inverse of [`encode_mark`].
fn decode_mark(key: &str, bytes: &[u8]) -> Result<i64> {
    let bad = || {
        Error::backend(
            BACKEND,
            format!("mark {key:?} holds {:?}, not a mark", String::from_utf8_lossy(bytes)),
        )
    };
    let s = std::str::from_utf8(bytes).map_err(|_| bad())?;
    if s.len() != 20 || !s.as_bytes()[1..].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    match s.strip_prefix('-') {
        Some(rest) => rest.parse::<i64>().map(|d| d.wrapping_add(i64::MIN)).map_err(|_| bad()),
        None => s.parse().map_err(|_| bad()),
    }
}

/// `d` in whole seconds, rounded up, at least 1: etcd lease TTLs are seconds.
fn lease_secs(d: Duration) -> i64 {
    let ms = d.as_millis().div_ceil(1000);
    i64::try_from(ms).unwrap_or(i64::MAX).max(1)
}

impl EtcdCluster {
    /// Connects to the etcd of `config` (the seed's `NewEtcdCluster`).
    ///
    /// Fails with [`Error::InvalidInput`] naming the field for an empty
    /// `node_id` or `endpoints` or a zero TTL, and with a backend error naming
    /// the endpoints within `connect_timeout` if etcd cannot be reached (or
    /// refuses the credentials).
    pub async fn new(config: EtcdClusterConfig) -> Result<EtcdCluster> {
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
        let endpoints: Vec<String> =
            config.endpoints.iter().map(|e| e.trim().to_string()).collect();
        if endpoints.is_empty() {
            return Err(invalid("endpoints", "no etcd endpoint given (expected host:port)"));
        }
        if endpoints.iter().any(String::is_empty) {
            return Err(invalid("endpoints", "an etcd endpoint is empty (expected host:port)"));
        }
        let shown = endpoints.join(", ");
        let timeout = config.connect_timeout;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(Duration::from_secs(2), timeout)
            .with_keep_alive_while_idle(true);
        if !config.username.is_empty() {
            options = options.with_user(config.username.clone(), config.password.clone());
        }
        let probe_key = format!("{}leader", config.key_prefix);
        let connect = async {
            let mut client = Client::connect(&endpoints, Some(options)).await?;
            // Connecting is lazy: one read proves the server answers.
            client.get(probe_key, Some(GetOptions::new().with_count_only())).await?;
            Ok::<_, etcd_client::Error>(client)
        };
        let client = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(etcd_client::Error::InvalidUri(e))) => {
                return Err(invalid("endpoints", format!("{shown:?}: {e}")));
            }
            Ok(Err(e)) => {
                return Err(Error::backend(BACKEND, format!("cannot connect to {shown}: {e}")));
            }
            Err(_) => {
                return Err(Error::backend(
                    BACKEND,
                    format!("cannot connect to {shown}: no answer within {timeout:?}"),
                ));
            }
        };
        let started = Timestamp::now().as_millisecond();
        Ok(EtcdCluster {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                prefix: config.key_prefix,
                endpoints: shown,
                node_ttl: config.node_ttl,
                forget_after: config.forget_after,
                election_ttl: config.election_ttl,
                connect_timeout: config.connect_timeout,
                client,
                closed: CancellationToken::new(),
                grants: Mutex::new(HashMap::new()),
                held: Mutex::new(HashMap::new()),
                registered: Mutex::new(HashMap::new()),
                heartbeat_task: Mutex::new(None),
                election: ElectionSlot::default(),
                subscribers: Subscribers::default(),
                bus_lease: tokio::sync::Mutex::new(None),
                started,
                seq: AtomicU64::new(0),
                // The probe read, and the authentication of `connect`.
                requests: AtomicU64::new(1 + u64::from(!config.username.is_empty())),
            }),
        })
    }

    /// The prefix of every key this cluster uses.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.inner.closed.cancel();
    }
}

impl Inner {
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn lock_key(&self, key: &str) -> String {
        self.key(&format!("lock/{key}"))
    }

    fn mark_key(&self, key: &str) -> String {
        self.key(&format!("mark/{key}"))
    }

    fn check_open(&self, what: &str) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(Error::backend(BACKEND, format!("{what}: the cluster is closed")));
        }
        Ok(())
    }

    /// Counts one request to the server, sent when `request` is first polled.
    async fn sent<T>(&self, request: impl Future<Output = T>) -> T {
        self.requests.fetch_add(1, Ordering::Relaxed);
        request.await
    }

    /// Runs one request, bounded by the connect timeout.
    async fn timed<T>(
        &self,
        what: impl fmt::Display,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.connect_timeout, self.sent(fut)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::backend(BACKEND, format!("{what} ({}): {e}", self.endpoints))),
            Err(_) => Err(Error::backend(
                BACKEND,
                format!("{what} ({}): no answer within {:?}", self.endpoints, self.connect_timeout),
            )),
        }
    }

    /// Grants a lease of `ttl` (rounded up to seconds).
    async fn grant(&self, ttl: Duration) -> Result<Grant> {
        let mut client = self.client.clone();
        let resp = self.timed("grant lease", client.lease_grant(lease_secs(ttl), None)).await?;
        Ok(Grant { lease: resp.id(), secs: resp.ttl() })
    }

    /// Revokes `lease` in the background, ignoring failures (the lease then
    /// runs out on its own).
    fn revoke_later(&self, lease: i64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut client = self.client.clone();
        let timeout = self.connect_timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, client.lease_revoke(lease)).await;
        });
    }

    /// Sends one keep-alive for `lease`. `Ok(false)`: the lease is gone.
    async fn keep_alive(&self, lease: i64) -> Result<bool> {
        let mut client = self.client.clone();
        let keep_alive = self.sent(client.lease_keep_alive(lease));
        match tokio::time::timeout(self.connect_timeout, keep_alive).await {
            Ok(Ok(_)) => Ok(true),
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(_))) => Ok(false),
            Ok(Err(e)) => {
                Err(Error::backend(BACKEND, format!("keep lease alive ({}): {e}", self.endpoints)))
            }
            Err(_) => Err(Error::backend(
                BACKEND,
                format!(
                    "keep lease alive ({}): no answer within {:?}",
                    self.endpoints, self.connect_timeout
                ),
            )),
        }
    }

    /// Takes `lock` for `ttl` on a fresh lease.
    async fn try_acquire(&self, lock: &str, ttl: Duration) -> Result<Attempt> {
        let grant = self.grant(ttl).await?;
        let txn =
            Txn::new().when([Compare::create_revision(lock, CompareOp::Equal, 0)]).and_then([
                TxnOp::put(
                    lock,
                    self.node_id.as_str(),
                    Some(PutOptions::new().with_lease(grant.lease)),
                ),
            ]);
        let mut client = self.client.clone();
        let resp = self.timed(format!("acquire {lock:?}"), client.txn(txn)).await;
        let revision = match &resp {
            Ok(r) => r.header().map(|h| h.revision()).unwrap_or(0),
            Err(_) => 0,
        };
        match resp {
            Ok(r) if r.succeeded() && revision > 0 => {
                Ok(Attempt::Won { token: revision as u64, grant })
            }
            Ok(_) => {
                self.revoke_later(grant.lease);
                Ok(Attempt::Held { revision })
            }
            Err(e) => {
                // The put may have happened: revoking frees it.
                self.revoke_later(grant.lease);
                Err(e)
            }
        }
    }

    /// Whether `lock` is still the grant `token`.
    async fn still_ours(&self, lock: &str, token: u64) -> Result<bool> {
        let mut client = self.client.clone();
        let resp = self.timed(format!("read {lock:?}"), client.get(lock, None)).await?;
        Ok(resp.kvs().first().is_some_and(|kv| kv.create_revision() as u64 == token))
    }

    /// Extends the grant `token` of `lock` on `grant` to `ttl`. Returns the
    /// grant now in force, or `None` if the lock is no longer this grant.
    async fn renew_raw(
        &self,
        lock: &str,
        token: u64,
        grant: Grant,
        ttl: Duration,
    ) -> Result<Option<Grant>> {
        if lease_secs(ttl) <= grant.secs {
            if !self.keep_alive(grant.lease).await? {
                return Ok(None);
            }
            return Ok(self.still_ours(lock, token).await?.then_some(grant));
        }
        // Longer than the lease: move the key to a new lease, if still ours.
        let new = self.grant(ttl).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(lock, CompareOp::Equal, token as i64)])
            .and_then([TxnOp::put(
                lock,
                self.node_id.as_str(),
                Some(PutOptions::new().with_lease(new.lease)),
            )]);
        let mut client = self.client.clone();
        match self.timed(format!("renew {lock:?}"), client.txn(txn)).await {
            Ok(r) if r.succeeded() => {
                self.revoke_later(grant.lease);
                Ok(Some(new))
            }
            Ok(_) => {
                self.revoke_later(new.lease);
                Ok(None)
            }
            Err(e) => {
                self.revoke_later(new.lease);
                Err(e)
            }
        }
    }

    /// Deletes `lock` if it is still the grant `token`, then revokes `lease`.
    async fn release_raw(&self, lock: &str, token: u64, lease: Option<i64>) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::create_revision(lock, CompareOp::Equal, token as i64)])
            .and_then([TxnOp::delete(lock, None)]);
        let mut client = self.client.clone();
        let resp = self.timed(format!("release {lock:?}"), client.txn(txn)).await?;
        if let Some(lease) = lease {
            self.revoke_later(lease);
        }
        Ok(resp.succeeded())
    }

    fn grant_of(&self, key: &str, token: u64) -> Option<Grant> {
        self.grants.lock().unwrap().get(&(key.to_string(), token)).copied()
    }

    /// Grants the leases of `info` and writes its two keys.
    async fn register_node(&self, info: &NodeInfo) -> Result<Registration> {
        let id = &info.id;
        let node = self.grant(self.node_ttl).await?;
        let seen = match self.grant(self.forget_after).await {
            Ok(seen) => seen,
            Err(e) => {
                self.revoke_later(node.lease);
                return Err(e);
            }
        };
        let reg =
            Registration { info: info.clone(), node_lease: node.lease, seen_lease: seen.lease };
        if let Err(e) = self.write_node(&reg, true).await {
            self.revoke_later(node.lease);
            self.revoke_later(seen.lease);
            return Err(e);
        }
        tracing::debug!(node = %id, "registered in etcd");
        Ok(reg)
    }

    /// Writes the seen key of `reg` stamped now (and its node key if `both`).
    async fn write_node(&self, reg: &Registration, both: bool) -> Result<()> {
        let id = &reg.info.id;
        let mut info = reg.info.clone();
        info.last_seen = Timestamp::now();
        info.status = NodeStatus::Online;
        let json = serde_json::to_string(&info)
            .map_err(|e| Error::backend(BACKEND, format!("encode node {id:?}: {e}")))?;
        let mut ops = vec![TxnOp::put(
            self.key(&format!("seen/{id}")),
            json.as_str(),
            Some(PutOptions::new().with_lease(reg.seen_lease)),
        )];
        if both {
            ops.push(TxnOp::put(
                self.key(&format!("node/{id}")),
                json.as_str(),
                Some(PutOptions::new().with_lease(reg.node_lease)),
            ));
        }
        let mut client = self.client.clone();
        self.timed(format!("heartbeat of node {id:?}"), client.txn(Txn::new().and_then(ops)))
            .await?;
        Ok(())
    }

    /// One heartbeat of `reg`: keeps both leases alive, or registers again if
    /// they ran out. Returns the registration now in force.
    async fn beat(&self, reg: &Registration) -> Result<Registration> {
        let alive =
            self.keep_alive(reg.node_lease).await? && self.keep_alive(reg.seen_lease).await?;
        if alive {
            self.write_node(reg, false).await?;
            return Ok(reg.clone());
        }
        tracing::warn!(node = %reg.info.id, "node lease ran out; registering again");
        self.revoke_later(reg.node_lease);
        self.revoke_later(reg.seen_lease);
        self.register_node(&reg.info).await
    }

    /// The lease broadcasts go on: reused while younger than half its TTL.
    async fn bus_lease(&self, fresh: bool) -> Result<i64> {
        let mut cached = self.bus_lease.lock().await;
        if let Some((lease, granted)) = *cached {
            if !fresh && granted.elapsed() < Duration::from_secs(BUS_TTL_SECS as u64 / 2) {
                return Ok(lease);
            }
        }
        let granted = Instant::now();
        let grant = self.grant(Duration::from_secs(BUS_TTL_SECS as u64)).await?;
        *cached = Some((grant.lease, granted));
        Ok(grant.lease)
    }
}

#[async_trait]
impl LeaseOps for Inner {
    async fn renew(&self, key: &str, token: u64, ttl: Duration) -> Result<bool> {
        self.check_open("renew lock")?;
        let Some(grant) = self.grant_of(key, token) else { return Ok(false) };
        match self.renew_raw(&self.lock_key(key), token, grant, ttl).await? {
            Some(new) => {
                if let Some(g) = self.grants.lock().unwrap().get_mut(&(key.to_string(), token)) {
                    *g = new;
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn release(&self, key: &str, token: u64) -> Result<bool> {
        self.check_open("release lock")?;
        let grant = self.grants.lock().unwrap().remove(&(key.to_string(), token));
        {
            let mut held = self.held.lock().unwrap();
            if held.get(key) == Some(&token) {
                held.remove(key);
            }
        }
        self.release_raw(&self.lock_key(key), token, grant.map(|g| g.lease)).await
    }
}

/// Watches a lock until its guard is done: marks it lost when its local
/// deadline passes or the key is deleted or replaced.
async fn watch_lock(inner: Arc<Inner>, watch: LeaseWatch, key: String, token: u64) {
    let lock = inner.lock_key(&key);
    let mut next = token as i64 + 1;
    let lost = 'outer: loop {
        let mut client = inner.client.clone();
        let opened = tokio::select! {
            _ = watch.done() => break false,
            _ = inner.closed.cancelled() => break true,
            _ = tokio::time::sleep_until(watch.deadline()) => {
                if Instant::now() >= watch.deadline() { break true }
                continue;
            }
            r = tokio::time::timeout(
                inner.connect_timeout,
                inner.sent(client.watch(
                    lock.as_str(),
                    Some(WatchOptions::new().with_start_revision(next)),
                )),
            ) => r,
        };
        if let Ok(Ok(mut stream)) = opened {
            loop {
                let msg = tokio::select! {
                    _ = watch.done() => break 'outer false,
                    _ = inner.closed.cancelled() => break 'outer true,
                    _ = tokio::time::sleep_until(watch.deadline()) => {
                        if Instant::now() >= watch.deadline() { break 'outer true }
                        continue;
                    }
                    m = stream.message() => m,
                };
                let Ok(Some(resp)) = msg else { break };
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    if event.event_type() == EventType::Delete
                        || kv.create_revision() as u64 != token
                    {
                        break 'outer true;
                    }
                    next = kv.mod_revision() + 1;
                }
                if resp.canceled() {
                    // Compacted past `next`: read the key instead.
                    match inner.still_ours(&lock, token).await {
                        Ok(false) => break 'outer true,
                        Ok(true) => next = resp.compact_revision().max(next),
                        Err(_) => {}
                    }
                    break;
                }
            }
        }
        // No watch: the local deadline decides until one is open again.
        tokio::select! {
            _ = watch.done() => break false,
            _ = inner.closed.cancelled() => break true,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    if lost {
        watch.mark_lost();
    }
    inner.grants.lock().unwrap().remove(&(key, token));
}

/// Waits until the key `lock` changes after `revision` (at most `limit`), or
/// `stop` is cancelled.
async fn wait_for_change(
    inner: &Inner,
    lock: &str,
    revision: i64,
    limit: Duration,
    stop: &CancellationToken,
) {
    let until = Instant::now() + limit;
    let mut client = inner.client.clone();
    let opts = WatchOptions::new().with_start_revision(revision + 1);
    let watch = inner.sent(client.watch(lock, Some(opts)));
    let opened = tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep_until(until) => return,
        r = tokio::time::timeout(inner.connect_timeout, watch) => r,
    };
    let Ok(Ok(mut stream)) = opened else {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100).min(limit)) => {}
        }
        return;
    };
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(until) => return,
            m = stream.message() => m,
        };
        match msg {
            Ok(Some(resp)) => {
                if resp.canceled()
                    || resp.events().iter().any(|e| e.event_type() == EventType::Delete)
                {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Runs for leadership until `stop` is cancelled.
async fn run_election(inner: Arc<Inner>, callback: LeadershipCallback, stop: CancellationToken) {
    let ttl = inner.election_ttl;
    let renew_every = ttl / 3;
    let lock = inner.key("leader");
    loop {
        let sent = Instant::now();
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = inner.try_acquire(&lock, ttl) => r,
        };
        match attempt {
            Ok(Attempt::Won { token: term, mut grant }) => {
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
                        r = inner.renew_raw(&lock, term, grant, ttl) => r,
                    };
                    match renewed {
                        Ok(Some(g)) => {
                            grant = g;
                            deadline = lease_deadline(sent, ttl);
                        }
                        Ok(None) => break false,
                        Err(e) => {
                            tracing::warn!(node = %inner.node_id, "leader lease renewal failed: {e}")
                        }
                    }
                };
                callback(Leadership::Lost { term });
                if stopped {
                    if !inner.closed.is_cancelled() {
                        if let Err(e) = inner.release_raw(&lock, term, Some(grant.lease)).await {
                            tracing::warn!(node = %inner.node_id, "stepping down: {e}");
                        }
                    }
                    return;
                }
                inner.revoke_later(grant.lease);
            }
            Ok(Attempt::Held { revision }) => {
                // Try again as soon as the leader key is deleted; look again
                // after a TTL in any case.
                wait_for_change(&inner, &lock, revision, ttl, &stop).await;
            }
            Err(e) => {
                tracing::warn!(node = %inner.node_id, "election: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep((ttl / 4).min(Duration::from_millis(500))) => {}
                }
            }
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
        let nodes: Vec<Registration> = inner.registered.lock().unwrap().values().cloned().collect();
        for reg in nodes {
            match inner.beat(&reg).await {
                Ok(now) => {
                    let mut registered = inner.registered.lock().unwrap();
                    match registered.get_mut(&reg.info.id) {
                        Some(r) if r.node_lease == reg.node_lease => *r = now,
                        // Unregistered or registered again meanwhile.
                        _ => {
                            if now.node_lease != reg.node_lease {
                                inner.revoke_later(now.node_lease);
                                inner.revoke_later(now.seen_lease);
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(node = %reg.info.id, "{e}"),
            }
        }
    }
}

/// Receives broadcasts until closed, watching again after disconnections from
/// the revision after the last one seen. Reports the first watch's outcome on
/// `ready`.
async fn run_bus(inner: Arc<Inner>, mut ready: Option<oneshot::Sender<Result<()>>>) {
    let prefix = inner.key("bus/");
    let mut next: i64 = 0;
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut client = inner.client.clone();
        let mut opts = WatchOptions::new().with_prefix();
        if next > 0 {
            opts = opts.with_start_revision(next);
        }
        let attempt = async {
            let mut stream = inner.sent(client.watch(prefix.as_str(), Some(opts))).await?;
            let first = stream.message().await?;
            Ok::<_, etcd_client::Error>((stream, first))
        };
        let opened = tokio::select! {
            _ = inner.closed.cancelled() => return,
            r = tokio::time::timeout(inner.connect_timeout, attempt) => r,
        };
        let failure = match opened {
            Ok(Ok((mut stream, Some(first)))) if first.created() && !first.canceled() => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Ok(()));
                }
                if next == 0 {
                    next = first.header().map(|h| h.revision() + 1).unwrap_or(1);
                }
                backoff = Duration::from_millis(50);
                loop {
                    let msg = tokio::select! {
                        _ = inner.closed.cancelled() => return,
                        m = stream.message() => m,
                    };
                    let resp = match msg {
                        Ok(Some(resp)) => resp,
                        _ => break,
                    };
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        next = next.max(kv.mod_revision() + 1);
                        if event.event_type() != EventType::Put {
                            continue;
                        }
                        match serde_json::from_slice::<ClusterMessage>(kv.value()) {
                            Ok(message) => {
                                let callbacks = inner.subscribers.callbacks();
                                for callback in callbacks {
                                    callback(message.clone());
                                }
                            }
                            Err(e) => tracing::warn!("ignoring a malformed cluster message: {e}"),
                        }
                    }
                    if resp.canceled() {
                        if resp.compact_revision() > next {
                            tracing::warn!(
                                node = %inner.node_id,
                                "cluster bus history compacted; messages before revision {} lost",
                                resp.compact_revision()
                            );
                            next = resp.compact_revision();
                        }
                        break;
                    }
                }
                tracing::warn!(node = %inner.node_id, "cluster bus watch ended; watching again");
                None
            }
            Ok(Ok(_)) => Some("the watch was not created".to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {:?}", inner.connect_timeout)),
        };
        if let Some(why) = failure {
            if let Some(tx) = ready.take() {
                let _ = tx.send(Err(Error::backend(
                    BACKEND,
                    format!("subscribe ({}): {why}", inner.endpoints),
                )));
                return;
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
impl Cluster for EtcdCluster {
    fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    async fn register(&self, info: NodeInfo) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("register")?;
        if info.id.is_empty() {
            return Err(invalid("node_id", "the node ID must not be empty"));
        }
        let reg = inner.register_node(&info).await?;
        let old = inner.registered.lock().unwrap().insert(info.id.clone(), reg);
        if let Some(old) = old {
            inner.revoke_later(old.node_lease);
            inner.revoke_later(old.seen_lease);
        }
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
        let old = inner.registered.lock().unwrap().remove(id);
        let txn = Txn::new().and_then([
            TxnOp::delete(inner.key(&format!("node/{id}")), None),
            TxnOp::delete(inner.key(&format!("seen/{id}")), None),
        ]);
        let mut client = inner.client.clone();
        inner.timed(format!("unregister node {id:?}"), client.txn(txn)).await?;
        if let Some(old) = old {
            inner.revoke_later(old.node_lease);
            inner.revoke_later(old.seen_lease);
        }
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let inner = &self.inner;
        inner.check_open("nodes")?;
        let node_prefix = inner.key("node/");
        let seen_prefix = inner.key("seen/");
        let txn = Txn::new().and_then([
            TxnOp::get(node_prefix.as_str(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(seen_prefix.as_str(), Some(GetOptions::new().with_prefix())),
            TxnOp::get(inner.key("leader"), None),
        ]);
        let mut client = inner.client.clone();
        let resp = inner.timed("read nodes", client.txn(txn)).await?;
        let bad = || Error::backend(BACKEND, "read nodes: bad reply");
        let gets: Vec<_> = resp
            .op_responses()
            .into_iter()
            .filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g),
                _ => None,
            })
            .collect();
        let [live, seen, leader] = gets.as_slice() else { return Err(bad()) };
        let leader = leader.kvs().first().map(|kv| kv.value().to_vec());
        let id_of = |key: &[u8], prefix: &str| {
            std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(prefix)).map(str::to_string)
        };
        let live: HashMap<String, &[u8]> = live
            .kvs()
            .iter()
            .filter_map(|kv| Some((id_of(kv.key(), &node_prefix)?, kv.value())))
            .collect();
        let mut entries: HashMap<String, &[u8]> = seen
            .kvs()
            .iter()
            .filter_map(|kv| Some((id_of(kv.key(), &seen_prefix)?, kv.value())))
            .collect();
        for (id, json) in &live {
            entries.entry(id.clone()).or_insert(json);
        }
        let mut out = Vec::new();
        for (id, json) in entries {
            let mut node: NodeInfo = match serde_json::from_slice(json) {
                Ok(node) => node,
                Err(e) => {
                    tracing::warn!(node = %id, "skipping a malformed node entry: {e}");
                    continue;
                }
            };
            node.status = if !live.contains_key(&id) {
                NodeStatus::Offline
            } else if leader.as_deref() == Some(id.as_bytes()) {
                NodeStatus::Leader
            } else {
                NodeStatus::Online
            };
            node.id = id;
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
        check_ttl("ttl", ttl)?;
        let sent = Instant::now();
        let Attempt::Won { token, grant } = inner.try_acquire(&inner.lock_key(key), ttl).await?
        else {
            return Ok(None);
        };
        inner.grants.lock().unwrap().insert((key.to_string(), token), grant);
        inner.held.lock().unwrap().insert(key.to_string(), token);
        let ops: Arc<dyn LeaseOps> = inner.clone();
        let (guard, watch) = LockGuard::new(key, token, lease_deadline(sent, ttl), ops);
        tokio::spawn(watch_lock(inner.clone(), watch, key.to_string(), token));
        Ok(Some(guard))
    }

    async fn release_lock(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("release lock")?;
        if key.is_empty() {
            return Err(invalid("key", "the lock key must not be empty"));
        }
        let token = inner.held.lock().unwrap().remove(key);
        if let Some(token) = token {
            let grant = inner.grants.lock().unwrap().remove(&(key.to_string(), token));
            inner.release_raw(&inner.lock_key(key), token, grant.map(|g| g.lease)).await?;
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
        let seq = inner.seq.fetch_add(1, Ordering::SeqCst);
        let key = inner.key(&format!("bus/{}/{}-{seq:020}", inner.node_id, inner.started));
        let mut fresh = false;
        loop {
            let lease = inner.bus_lease(fresh).await?;
            let mut client = inner.client.clone();
            let put =
                client.put(key.as_str(), json.as_str(), Some(PutOptions::new().with_lease(lease)));
            match inner.timed("broadcast", put).await {
                Ok(_) => return Ok(()),
                // The lease may be gone (etcd restarted, a long pause): once
                // more on a fresh one.
                Err(_) if !fresh => fresh = true,
                Err(e) => return Err(e),
            }
        }
    }

    async fn subscribe(&self, callback: MessageCallback) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("subscribe")?;
        let start = || start_bus(BACKEND, |tx| tokio::spawn(run_bus(inner.clone(), Some(tx))));
        inner.subscribers.subscribe(callback, start).await
    }

    async fn advance_mark(&self, key: &str, value: i64) -> Result<Option<Option<i64>>> {
        let inner = &self.inner;
        inner.check_open("advance mark")?;
        if key.is_empty() {
            return Err(invalid("key", "the mark key must not be empty"));
        }
        let mark = inner.mark_key(key);
        let stored = encode_mark(value);
        let put =
            || TxnOp::put(mark.as_str(), stored.as_str(), Some(PutOptions::new().with_prev_key()));
        // A value comparison fails on an absent key: the else branch creates it.
        let create = Txn::new()
            .when([Compare::create_revision(mark.as_str(), CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(mark.as_str(), None)]);
        let txn = Txn::new()
            .when([Compare::value(mark.as_str(), CompareOp::Less, stored.as_str())])
            .and_then([put()])
            .or_else([TxnOp::txn(create)]);
        let mut client = inner.client.clone();
        let resp = inner.timed(format!("advance mark {key:?}"), client.txn(txn)).await?;
        let bad = || Error::backend(BACKEND, format!("advance mark {key:?}: bad reply"));
        let (raised, ops) = match resp.op_responses().pop() {
            Some(TxnOpResponse::Txn(create)) if !resp.succeeded() => {
                (create.succeeded(), create.op_responses())
            }
            Some(op) if resp.succeeded() => (true, vec![op]),
            _ => return Err(bad()),
        };
        if !raised {
            return Ok(None);
        }
        match ops.first() {
            Some(TxnOpResponse::Put(p)) => {
                p.prev_key().map(|kv| decode_mark(key, kv.value())).transpose().map(Some)
            }
            _ => Err(bad()),
        }
    }

    fn requests_sent(&self) -> Option<u64> {
        Some(self.inner.requests.load(Ordering::Relaxed))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_sort_as_bytes_in_numeric_order() {
        let values = [i64::MIN, i64::MIN + 1, -1_000, -1, 0, 1, 9, 10, 1_733_356_800_000, i64::MAX];
        let encoded: Vec<String> = values.iter().map(|&v| encode_mark(v)).collect();
        for (v, e) in values.iter().zip(&encoded) {
            assert_eq!(e.len(), 20, "{e}");
            assert_eq!(decode_mark("k", e.as_bytes()).unwrap(), *v);
        }
        assert!(encoded.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()), "{encoded:?}");
        assert_eq!(encode_mark(42), "00000000000000000042");
        assert!(decode_mark("k", b"42").is_err());
        assert!(decode_mark("k", b"-0000000000000000x42").is_err());
    }
}
