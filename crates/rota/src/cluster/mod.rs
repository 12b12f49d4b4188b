//! Clusters: the seed's `Cluster` interface, so that several schedulers can
//! share work. A cluster backend offers a node registry, locks with fencing
//! tokens, leader election and a broadcast bus.
//!
//! The backends:
//!
//! * `RedisCluster` (cargo feature `cluster-redis`): one Redis server; SET NX
//!   PX with Lua compare-and-extend/delete, INCR fencing, pub/sub broadcast.
//! * `EtcdCluster` (`cluster-etcd`): leases with keep-alive, transactions on
//!   create revision (the fencing token), watches.
//! * `ZookeeperCluster` (`cluster-zookeeper`): sessions, ephemeral-sequential
//!   locks and election (watch the predecessor only), czxid as the token.
//! * `ConsulCluster` (`cluster-consul`): sessions with TTL, KV acquire/release,
//!   ModifyIndex as the token, blocking queries. **Tested against an in-repo
//!   fake of Consul's HTTP API** (`tests/support/consul_fake.rs`), not a real
//!   Consul: no Consul server can be installed here under an open licence.
//!
//! # Guarantees
//!
//! Every backend gives these, and the conformance suite checks them:
//!
//! * **Mutual exclusion, as far as leases can give it**: at any moment the
//!   backend considers at most one [`LockGuard`] per key held.
//! * **Fencing tokens**: each grant of a key carries a token larger than every
//!   token granted for that key before it. Leadership carries one too, its
//!   term.
//! * **Only the holder releases**: [`Cluster::release_lock`] and
//!   [`LockGuard::release`] delete the lock only if it is still the caller's
//!   own grant; a lock that expired and went to another node is left alone.
//! * **Loss is told**: a guard whose lease ran out or was taken reports it
//!   ([`LockGuard::lost`], [`LockGuard::is_lost`]); an election callback is
//!   told of loss ([`Leadership::Lost`]) as well as gain.
//! * **Liveness of the registry**: a node that stops heartbeating shows as
//!   [`NodeStatus::Offline`] after the backend's node TTL, and is forgotten
//!   after a longer bound.
//!
//! ### Note: a lease is not a mutex
//! Locks and leadership are *leases*. A node that pauses (GC, `SIGSTOP`, a
//! slow disk) past its lease may wake up still believing it holds the lock,
//! while another node already holds it. Before any side effect that must not
//! happen twice, check [`LockGuard::is_lost`] **and** pass the
//! [`fencing token`](LockGuard::token) to the resource being changed, which
//! must refuse tokens smaller than the largest it has seen.
//!
//! ### Note: clocks
//! A guard counts its lease from the moment the request was *sent*, on the
//! local monotonic clock, less 1% of the TTL plus 2 ms for drift and
//! rounding ([`lease_deadline`]), so it expires locally before it does on the
//! server. It does not protect against a server clock that jumps forward.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

#[cfg(feature = "cluster-consul")]
pub mod consul;
#[cfg(feature = "cluster-etcd")]
pub mod etcd;
#[cfg(feature = "cluster-redis")]
pub mod redis;
#[cfg(feature = "cluster-zookeeper")]
pub mod zookeeper;

#[cfg(feature = "cluster-consul")]
pub use self::consul::{ConsulCluster, ConsulClusterConfig};
#[cfg(feature = "cluster-etcd")]
pub use self::etcd::{EtcdCluster, EtcdClusterConfig};
#[cfg(feature = "cluster-redis")]
pub use self::redis::{RedisCluster, RedisClusterConfig};
#[cfg(feature = "cluster-zookeeper")]
pub use self::zookeeper::{ZookeeperCluster, ZookeeperClusterConfig};

/// A node's state as the registry sees it: the seed's `"online"`,
/// `"offline"` and `"leader"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Heartbeating.
    #[default]
    Online,
    /// No heartbeat for longer than the node TTL.
    Offline,
    /// Heartbeating and the current leader.
    Leader,
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
            NodeStatus::Leader => "leader",
        })
    }
}

/// A node of the cluster, with the seed's JSON names.
///
/// On [`Cluster::register`], `status` and `last_seen` are ignored: the
/// backend derives them when [`Cluster::nodes`] reads the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node ID.
    pub id: String,
    /// The address others reach the node at (host name or IP).
    pub address: String,
    /// The port others reach the node at.
    pub port: u16,
    /// Online, offline or leader.
    pub status: NodeStatus,
    /// When the node started.
    pub started_at: Timestamp,
    /// The node's last heartbeat.
    pub last_seen: Timestamp,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl NodeInfo {
    /// A node `id` at `address:port`, started now, online, without metadata.
    pub fn new(id: impl Into<String>, address: impl Into<String>, port: u16) -> Self {
        let now = Timestamp::now();
        NodeInfo {
            id: id.into(),
            address: address.into(),
            port,
            status: NodeStatus::Online,
            started_at: now,
            last_seen: now,
            metadata: BTreeMap::new(),
        }
    }
}

/// A message on the cluster's broadcast bus, with the seed's JSON names.
///
/// `data` is written as base64 in JSON, as Go writes a `[]byte`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMessage {
    /// What the message is about (free-form, the seed's `Type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The sender. [`Cluster::broadcast`] fills in its own node ID if empty.
    pub node_id: String,
    /// When the message was sent.
    pub timestamp: Timestamp,
    /// The payload.
    #[serde(with = "base64_bytes", default)]
    pub data: Vec<u8>,
}

impl ClusterMessage {
    /// A message of type `kind` carrying `data`, stamped now, with the sender
    /// left empty (filled in on broadcast).
    pub fn new(kind: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        ClusterMessage {
            kind: kind.into(),
            node_id: String::new(),
            timestamp: Timestamp::now(),
            data: data.into(),
        }
    }
}

/// What an election callback is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leadership {
    /// This node became leader. `term` is the leadership's fencing token: it
    /// grows with every election won in the cluster.
    Elected {
        /// The fencing token of this leadership.
        term: u64,
    },
    /// This node is no longer leader (the lease could not be renewed in time,
    /// was taken, or the election was stopped). Stop leader work at once.
    Lost {
        /// The term that ended.
        term: u64,
    },
}

/// The callback of [`Cluster::start_election`].
pub type LeadershipCallback = Arc<dyn Fn(Leadership) + Send + Sync>;

/// The callback of [`Cluster::subscribe`].
pub type MessageCallback = Arc<dyn Fn(ClusterMessage) + Send + Sync>;

/// The local end of a lease granted for `ttl` on a request sent at `sent`:
/// `sent + ttl`, less an allowance for clock drift and the server's
/// millisecond rounding of 1% of `ttl` plus 2 ms (as Redlock allows).
/// Backends compute every local lease deadline with it.
pub fn lease_deadline(sent: Instant, ttl: Duration) -> Instant {
    let drift = ttl / 100 + Duration::from_millis(2);
    sent + ttl.saturating_sub(drift)
}

/// What a backend implements so that a [`LockGuard`] can renew and release
/// its lease. Backend implementers only.
#[async_trait]
pub trait LeaseOps: Send + Sync + fmt::Debug {
    /// Extends the lease on `key` granted with `token` to `ttl` from now, if it
    /// is still that grant. `Ok(false)`: it is not (expired or taken).
    async fn renew(&self, key: &str, token: u64, ttl: Duration) -> Result<bool>;
    /// Deletes the lease on `key` if it is still the grant with `token`.
    /// `Ok(false)`: it was not, and nothing was deleted.
    async fn release(&self, key: &str, token: u64) -> Result<bool>;
}

#[derive(Debug)]
struct LeaseShared {
    key: String,
    token: u64,
    deadline: Mutex<Instant>,
    lost: CancellationToken,
    done: CancellationToken,
}

/// The backend's side of a [`LockGuard`]: it marks the guard lost when it
/// finds the lease gone, and learns when the guard is released or dropped.
/// Backend implementers only.
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    shared: Arc<LeaseShared>,
}

impl LeaseWatch {
    /// Marks the guard lost.
    pub fn mark_lost(&self) {
        self.shared.lost.cancel();
    }

    /// Whether the guard was released, dropped or lost: the watch can stop.
    pub fn is_done(&self) -> bool {
        self.shared.done.is_cancelled() || self.shared.lost.is_cancelled()
    }

    /// Completes when the guard is released, dropped or lost.
    pub async fn done(&self) {
        tokio::select! {
            _ = self.shared.done.cancelled() => {}
            _ = self.shared.lost.cancelled() => {}
        }
    }

    /// When the lease runs out locally unless renewed.
    pub fn deadline(&self) -> Instant {
        *self.shared.deadline.lock().unwrap()
    }
}

/// A held lock: its key, its fencing token, and the means to renew, release
/// and learn of its loss.
///
/// # Guarantees
///
/// * [`token`](Self::token) is larger than the token of every earlier grant of
///   the same key (on the same backend data).
/// * [`release`](Self::release) never frees another holder's grant.
/// * [`is_lost`](Self::is_lost) turns true before the lease ends on the
///   server: at the local [`deadline`](Self::deadline) (counted from when the
///   acquire or last successful renew was *sent*, see [`lease_deadline`]), or
///   earlier when the backend finds the key is no longer this grant.
///
/// ### Note: dropping does not release
/// Dropping the guard stops watching the lease but leaves the lock held until
/// its TTL runs out. Call [`release`](Self::release) (or
/// [`Cluster::release_lock`]) to free it at once.
///
/// ### Note: renew yourself
/// The lease is not renewed automatically: a holder that works longer than
/// the TTL calls [`renew`](Self::renew) in time, for example every TTL / 3.
#[derive(Debug)]
pub struct LockGuard {
    shared: Arc<LeaseShared>,
    ops: Arc<dyn LeaseOps>,
}

impl LockGuard {
    /// A guard for the grant `token` of `key`, whose lease runs out at
    /// `deadline` (see [`lease_deadline`]). Backend
    /// implementers only; they keep the returned [`LeaseWatch`].
    pub fn new(
        key: impl Into<String>,
        token: u64,
        deadline: Instant,
        ops: Arc<dyn LeaseOps>,
    ) -> (LockGuard, LeaseWatch) {
        let shared = Arc::new(LeaseShared {
            key: key.into(),
            token,
            deadline: Mutex::new(deadline),
            lost: CancellationToken::new(),
            done: CancellationToken::new(),
        });
        (LockGuard { shared: shared.clone(), ops }, LeaseWatch { shared })
    }

    /// The lock's key, as given to [`Cluster::acquire_lock`].
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// The fencing token of this grant.
    pub fn token(&self) -> u64 {
        self.shared.token
    }

    /// When the lease runs out locally unless renewed (see [`lease_deadline`]).
    pub fn deadline(&self) -> Instant {
        *self.shared.deadline.lock().unwrap()
    }

    /// Whether the lease is over: run out locally, or found taken.
    pub fn is_lost(&self) -> bool {
        if self.shared.lost.is_cancelled() {
            return true;
        }
        if Instant::now() >= *self.shared.deadline.lock().unwrap() {
            self.shared.lost.cancel();
            return true;
        }
        false
    }

    /// Completes when the lease is lost (see [`is_lost`](Self::is_lost)).
    /// Renewals move the local deadline; this future follows them.
    pub async fn lost(&self) {
        loop {
            let deadline = *self.shared.deadline.lock().unwrap();
            tokio::select! {
                _ = self.shared.lost.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    if self.is_lost() {
                        return;
                    }
                }
            }
        }
    }

    /// Extends the lease to `ttl` from now.
    ///
    /// Fails with [`Error::InvalidInput`] for a zero `ttl`, and with a backend
    /// error if the lease is already lost (the guard is then marked lost) or
    /// the backend cannot be reached (the lease then still ends at its old
    /// deadline).
    pub async fn renew(&self, ttl: Duration) -> Result<()> {
        if ttl.is_zero() {
            return Err(Error::InvalidInput {
                what: "ttl".into(),
                message: "a lock TTL must be greater than zero".into(),
            });
        }
        if self.is_lost() {
            return Err(self.lost_error());
        }
        let sent = Instant::now();
        if self.ops.renew(&self.shared.key, self.shared.token, ttl).await? {
            let mut deadline = self.shared.deadline.lock().unwrap();
            if !self.shared.lost.is_cancelled() {
                *deadline = lease_deadline(sent, ttl);
                return Ok(());
            }
        }
        self.shared.lost.cancel();
        Err(self.lost_error())
    }

    /// Releases the lock if it is still this grant. Returns whether it was:
    /// `false` means the lease had already ended, and nothing was deleted (a
    /// newer holder keeps its lock).
    pub async fn release(self) -> Result<bool> {
        let held = self.ops.release(&self.shared.key, self.shared.token).await?;
        self.shared.lost.cancel();
        Ok(held)
    }

    fn lost_error(&self) -> Error {
        Error::backend(
            "cluster",
            format!(
                "lock {:?} (fencing token {}) is no longer held",
                self.shared.key, self.shared.token
            ),
        )
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.shared.done.cancel();
    }
}

/// One fire to claim with [`Cluster::claim_fires`]: the pair (task ID,
/// scheduled instant) that identifies a fire across the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireRequest {
    /// The task.
    pub task_id: String,
    /// The fire's scheduled instant, in milliseconds since the Unix epoch.
    pub scheduled_ms: i64,
    /// With `Some(ttl)`, the claim also takes the task's run lock for `ttl`
    /// (a task that skips overlapping runs); `None` for a task whose runs may
    /// overlap.
    pub run_lock: Option<Duration>,
}

/// The answer to a [`FireRequest`].
#[derive(Debug)]
pub enum FireClaim {
    /// This node won the fire and runs it.
    Won {
        /// The task's latest fire claimed before this one (ms), if any: fires
        /// of the schedule between the two were claimed by no node.
        previous: Option<i64>,
        /// The run lock, if requested: hold it (renewing) while the run goes
        /// on, release it after. Its token is the run's fencing token.
        guard: Option<LockGuard>,
    },
    /// This node won the fire, but the task's run lock is held by a run still
    /// going (on any node): the fire is skipped, by this node only.
    Busy {
        /// As in [`FireClaim::Won`].
        previous: Option<i64>,
    },
    /// The fire, or a later one of the task, was already claimed.
    Taken,
}

/// The key under which a task's fire marks are kept by the default
/// [`Cluster::claim_fire`].
pub fn fire_mark_key(task_id: &str) -> String {
    format!("fire-mark/{task_id}")
}

/// The lock key of a task's runs, for tasks that skip overlapping runs.
pub fn run_lock_key(task_id: &str) -> String {
    format!("run/{task_id}")
}

/// A mark kept as decimal text (the ZooKeeper and Consul backends): its
/// integer, or a `backend` error saying `what` found at `place`.
#[cfg(any(feature = "cluster-zookeeper", feature = "cluster-consul"))]
fn parse_decimal_mark(backend: &str, what: &str, place: &str, bytes: &[u8]) -> Result<i64> {
    std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        Error::backend(
            backend,
            format!("{what}: {place} holds {:?}, not an integer", String::from_utf8_lossy(bytes)),
        )
    })
}

/// A backend's one election: the running election task and the token that
/// stops it. [`Cluster::start_election`] fills it, [`Cluster::stop_election`]
/// empties it.
#[cfg(any(
    feature = "cluster-redis",
    feature = "cluster-etcd",
    feature = "cluster-zookeeper",
    feature = "cluster-consul"
))]
#[derive(Default)]
pub(crate) struct ElectionSlot(Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>);

#[cfg(any(
    feature = "cluster-redis",
    feature = "cluster-etcd",
    feature = "cluster-zookeeper",
    feature = "cluster-consul"
))]
impl ElectionSlot {
    /// Starts an election task with `spawn`, given a child token of `parent`
    /// that stops it; a `backend` error if an election is already running.
    pub(crate) fn start(
        &self,
        backend: &str,
        parent: &CancellationToken,
        spawn: impl FnOnce(CancellationToken) -> tokio::task::JoinHandle<()>,
    ) -> Result<()> {
        let mut election = self.0.lock().unwrap();
        if election.is_some() {
            return Err(Error::backend(backend, "start election: an election is already running"));
        }
        let stop = parent.child_token();
        let task = spawn(stop.clone());
        *election = Some((stop, task));
        Ok(())
    }

    /// Stops the running election, if any, and waits for its task to end.
    pub(crate) async fn stop(&self) {
        let running = self.0.lock().unwrap().take();
        if let Some((stop, task)) = running {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// A backend's broadcast subscribers and the one task that delivers messages
/// to them, started by the first [`Cluster::subscribe`].
#[cfg(any(
    feature = "cluster-redis",
    feature = "cluster-etcd",
    feature = "cluster-zookeeper",
    feature = "cluster-consul"
))]
#[derive(Default)]
pub(crate) struct Subscribers {
    callbacks: Mutex<Vec<MessageCallback>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[cfg(any(
    feature = "cluster-redis",
    feature = "cluster-etcd",
    feature = "cluster-zookeeper",
    feature = "cluster-consul"
))]
impl Subscribers {
    /// Every callback, to deliver one message to.
    pub(crate) fn callbacks(&self) -> Vec<MessageCallback> {
        self.callbacks.lock().unwrap().clone()
    }

    /// Adds `callback`. The first subscriber also starts the delivery task
    /// with `start`; if that fails, the callback is taken back and the error
    /// returned.
    pub(crate) async fn subscribe<F>(
        &self,
        callback: MessageCallback,
        start: impl FnOnce() -> F,
    ) -> Result<()>
    where
        F: std::future::Future<Output = Result<tokio::task::JoinHandle<()>>>,
    {
        let mut task = self.task.lock().await;
        self.callbacks.lock().unwrap().push(callback);
        if task.is_none() {
            match start().await {
                Ok(handle) => *task = Some(handle),
                Err(e) => {
                    self.callbacks.lock().unwrap().pop();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Takes the delivery task out, to wait for it on close.
    pub(crate) async fn take_task(&self) -> Option<tokio::task::JoinHandle<()>> {
        self.task.lock().await.take()
    }
}

/// Spawns a delivery task that reports through its sender whether it is
/// listening, and waits for that report: the task, or why it is not.
#[cfg(any(feature = "cluster-redis", feature = "cluster-etcd", feature = "cluster-zookeeper"))]
pub(crate) async fn start_bus(
    backend: &str,
    spawn: impl FnOnce(tokio::sync::oneshot::Sender<Result<()>>) -> tokio::task::JoinHandle<()>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = spawn(tx);
    rx.await
        .unwrap_or_else(|_| Err(Error::backend(backend, "subscribe: the subscriber task ended")))?;
    Ok(handle)
}

/// The seed's `Cluster`: node registry, locks, leader election and broadcast.
///
/// Object safe: use it as `Arc<dyn Cluster>`.
///
/// # Guarantees
///
/// See the [module documentation](self): mutual exclusion of leases, strictly
/// growing fencing tokens and terms, release by the holder only, loss told to
/// lock holders and leaders, nodes going offline after their TTL.
///
/// ### Note: leases can overlap with a paused holder
/// A node paused past its lease may still act on it when it wakes. Check the
/// fencing token (or [`LockGuard::is_lost`]) right before side effects.
///
/// ### Note: broadcast is at most once
/// Messages sent while a subscriber is disconnected are not delivered to it.
#[async_trait]
pub trait Cluster: Send + Sync + fmt::Debug {
    /// This node's ID.
    fn node_id(&self) -> &str;

    /// Adds `info` to the registry and keeps it there with heartbeats until
    /// [`unregister`](Self::unregister) or [`close`](Self::close).
    async fn register(&self, info: NodeInfo) -> Result<()>;

    /// Takes node `id` out of the registry at once.
    async fn unregister(&self, id: &str) -> Result<()>;

    /// Every known node, with its status derived from its last heartbeat and
    /// the current leader. Offline nodes are listed until forgotten.
    async fn nodes(&self) -> Result<Vec<NodeInfo>>;

    /// Tries once to take the lock `key` for `ttl`. `Ok(None)`: another node
    /// (or another grant of this node) holds it.
    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockGuard>>;

    /// Releases this node's latest grant of `key`, if it still holds it. A
    /// lock that expired and went to another node is not touched.
    async fn release_lock(&self, key: &str) -> Result<()>;

    /// Runs for leadership in the background until
    /// [`stop_election`](Self::stop_election); `callback` is told of every
    /// gain and loss. Fails if an election is already running.
    async fn start_election(&self, callback: LeadershipCallback) -> Result<()>;

    /// Stops running for leadership; a leader steps down (releasing the lease)
    /// and its callback is told [`Leadership::Lost`].
    async fn stop_election(&self) -> Result<()>;

    /// Sends `msg` to every subscriber in the cluster, this node's included.
    async fn broadcast(&self, msg: ClusterMessage) -> Result<()>;

    /// Calls `callback` with every message broadcast from now on, in order per
    /// sender.
    async fn subscribe(&self, callback: MessageCallback) -> Result<()>;

    /// Raises the integer stored at `key` (in the backend's durable key
    /// space, without expiry) to `value` if it is absent or lower, atomically.
    /// Returns `Some(previous)` (`None` inside when absent) if it raised it,
    /// `None` if the stored value is already `value` or higher.
    ///
    /// This is the primitive behind [`claim_fire`](Self::claim_fire): a
    /// fire's instant can be raised past only once, by one node.
    async fn advance_mark(&self, key: &str, value: i64) -> Result<Option<Option<i64>>>;

    /// Claims a fire for this node: at most one node ever wins a given
    /// (task, instant) pair, and no node wins an instant at or before one
    /// already won (fires are claimed in order per task).
    ///
    /// The default raises the task's fire mark ([`advance_mark`]) and then,
    /// if asked, takes the run lock ([`acquire_lock`] on [`run_lock_key`]):
    /// two round trips. Backends may do both in one.
    ///
    /// [`advance_mark`]: Self::advance_mark
    /// [`acquire_lock`]: Self::acquire_lock
    async fn claim_fire(&self, req: &FireRequest) -> Result<FireClaim> {
        let Some(previous) =
            self.advance_mark(&fire_mark_key(&req.task_id), req.scheduled_ms).await?
        else {
            return Ok(FireClaim::Taken);
        };
        let Some(ttl) = req.run_lock else {
            return Ok(FireClaim::Won { previous, guard: None });
        };
        match self.acquire_lock(&run_lock_key(&req.task_id), ttl).await? {
            Some(guard) => Ok(FireClaim::Won { previous, guard: Some(guard) }),
            None => Ok(FireClaim::Busy { previous }),
        }
    }

    /// Claims several fires, one answer per request in order. The default
    /// claims them concurrently with [`claim_fire`](Self::claim_fire);
    /// backends may batch them into fewer round trips.
    async fn claim_fires(&self, reqs: &[FireRequest]) -> Vec<Result<FireClaim>> {
        futures_util::future::join_all(reqs.iter().map(|r| self.claim_fire(r))).await
    }

    /// Requests this handle has sent to the backend so far (each a round
    /// trip, a batch counting once), heartbeats, renewals and watches
    /// included; `None` if the backend does not count them.
    fn requests_sent(&self) -> Option<u64> {
        None
    }

    /// Stops every background task (heartbeats, renewals, the election,
    /// subscriptions) as a crash would, except that a leader's callback is
    /// told [`Leadership::Lost`] and held guards are marked lost. Locks,
    /// leadership and registrations are not deleted: they run out with their
    /// TTLs (call [`stop_election`](Self::stop_election) and
    /// [`unregister`](Self::unregister) first to hand over at once). Later
    /// calls fail.
    async fn close(&self) -> Result<()>;
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
mod base64_bytes {
    use serde::{de, Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Vec::new()),
            Some(s) => decode(&s).ok_or_else(|| de::Error::custom("invalid base64 in data")),
        }
    }

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.as_bytes();
        if s.len() % 4 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(s.len() / 4 * 3);
        for chunk in s.chunks(4) {
            let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 {
                return None;
            }
            let mut n = 0u32;
            for (i, &c) in chunk.iter().enumerate() {
                let v =
                    if i >= 4 - pad { 0 } else { ALPHABET.iter().position(|&a| a == c)? as u32 };
                n = (n << 6) | v;
            }
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips() {
            for input in
                [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar", &[0, 255, 128]]
            {
                let e = super::encode(input);
                assert_eq!(super::decode(&e).as_deref(), Some(input), "{e}");
            }
            assert_eq!(super::encode(b"foobar"), "Zm9vYmFy");
            assert_eq!(super::encode(b"fo"), "Zm8=");
            assert_eq!(super::decode("Zm9=x"), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_the_seed_json_names() {
        let msg = ClusterMessage {
            kind: "task.added".into(),
            node_id: "n1".into(),
            timestamp: "2026-12-04T10:00:00Z".parse().unwrap(),
            data: b"hi".to_vec(),
        };
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "task.added", "node_id": "n1",
                "timestamp": "2026-12-04T10:00:00Z", "data": "aGk="})
        );
        assert_eq!(serde_json::from_value::<ClusterMessage>(json).unwrap(), msg);
        let null: ClusterMessage = serde_json::from_str(
            r#"{"type":"x","node_id":"n","timestamp":"2026-12-04T10:00:00Z","data":null}"#,
        )
        .unwrap();
        assert!(null.data.is_empty());
    }

    #[test]
    fn node_status_is_lowercase() {
        let mut node = NodeInfo::new("n1", "10.0.0.1", 7878);
        node.status = NodeStatus::Leader;
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(json["status"], "leader");
        assert_eq!(json["port"], 7878);
        assert!(json.get("started_at").is_some() && json.get("last_seen").is_some());
    }
}
