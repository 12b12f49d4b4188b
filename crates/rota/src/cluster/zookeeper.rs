//! The ZooKeeper cluster backend (cargo feature `cluster-zookeeper`): the
//! seed's `ZookeeperCluster` on a ZooKeeper ensemble (3.5 or later; tested
//! against 3.8 standalone).
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use rota::cluster::{Cluster, Leadership, ZookeeperCluster, ZookeeperClusterConfig};
//!
//! # async fn demo() -> rota::Result<()> {
//! let cluster = ZookeeperCluster::new(ZookeeperClusterConfig {
//!     servers: vec!["localhost:2181".into()],
//!     node_id: "node-1".into(),
//!     ..ZookeeperClusterConfig::default()
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
//! # The ZooKeeper way
//!
//! Each cluster handle owns **one ZooKeeper session**; the session is the
//! heartbeat. Everything lives under the root (`{r}` below, `"/rota/cluster"`
//! by default):
//!
//! | znode | kind | holds |
//! | --- | --- | --- |
//! | `{r}/locks/{key}` | container | the contenders for lock `key` |
//! | `{r}/locks/{key}/{s}-{n}-lock-{seq}` | ephemeral sequential | a grant or a contender: the node ID |
//! | `{r}/election/{s}-{n}-n-{seq}` | ephemeral sequential | a candidate: the node ID |
//! | `{r}/nodes/{id}` | ephemeral | a live node's [`NodeInfo`] JSON |
//! | `{r}/seen/{id}` | persistent | the same JSON, rewritten at every heartbeat: its `mtime` is the last heartbeat |
//! | `{r}/bus/m-{ms}-{seq}` | persistent sequential | a broadcast message as JSON |
//! | `{r}/marks/{key}` | persistent | a mark of [`Cluster::advance_mark`], in decimal |
//!
//! `{s}-{n}` is the session ID (hex) and a counter: a node whose creation
//! reply was lost (connection loss) is found again by this prefix and deleted,
//! so it cannot hold a lock nobody knows of. Lock and mark keys are escaped
//! into one znode name (`%` → `%25`, `/` → `%2F`, control characters as
//! `%XX`).
//!
//! * **Locks**: the ephemeral-sequential recipe. [`Cluster::acquire_lock`]
//!   tries once: if the key has contenders it answers `None` at once;
//!   otherwise it creates its node and holds the lock if its node has the
//!   lowest sequence number, else deletes it again. (As the trait only tries
//!   once, nobody waits, so there is nothing to watch and no herd.)
//! * **Fencing token**: the holder node's `czxid`, the transaction ID that
//!   created it. zxids grow with every write to the ensemble, and a grant goes
//!   to the lowest sequence, which was created before every later contender,
//!   so each grant's token is larger than every earlier grant's. No counter
//!   node is needed, and the token also grows across leader changes of the
//!   ensemble (the epoch is in the zxid's high bits).
//! * **Lease and TTL**: the holder's node lives while its session does. The
//!   TTL is a lease on top: a guard not renewed within its TTL is marked lost
//!   and its node deleted, so a live holder that stops renewing frees the lock
//!   at its TTL. [`LockGuard::renew`] checks that the session is connected and
//!   the node is still this grant (same path and `czxid`). A holder that
//!   *crashes* frees the lock when its session expires (`session_timeout`),
//!   whatever its TTL.
//! * **Loss**: each guard watches its node: deleted, or the session
//!   disconnected or expired, marks it lost. Losing the connection marks it
//!   lost at once (as Curator's `SUSPENDED` does), although the session may
//!   survive: the node is then deleted as soon as the connection is back, so
//!   no one holds a lock its guard thinks lost for longer than needed.
//! * **Release**: delete our own node, with the version it was created with.
//!   Another grant is another node: it is never touched.
//! * **Election**: the same recipe under `{r}/election`; a candidate watches
//!   only its predecessor (no herd). The term is the leader node's `czxid`.
//!   A leader whose connection drops is told [`Leadership::Lost`] at once,
//!   deletes its node when it can and runs again (with a new node, so a new
//!   and larger term).
//! * **Registry**: ephemeral `{r}/nodes/{id}` while the session lives; a
//!   node whose session ended shows [`NodeStatus::Offline`] from its `seen`
//!   record, which is deleted (by whoever reads the registry) once older than
//!   `forget_after`. The leader is the lowest candidate's node ID.
//! * **Broadcast**: persistent-sequential nodes under `{r}/bus`. Subscribers
//!   watch the children and read new ones in sequence order, so every
//!   subscriber sees all messages in one total order (per sender: the order
//!   sent). A subscriber that reconnects, even on a new session, goes on
//!   from the last message it delivered: nothing is missed as long as the
//!   message is younger than `bus_retention`. Senders delete messages older
//!   than `bus_retention` (judged by the sender clock in the name).
//! * **Marks**: [`Cluster::advance_mark`] reads the mark's data and version,
//!   then writes the new value with `setData` on that version, or `create`s
//!   the mark if it was absent (two round trips); a `BadVersion` or
//!   `NodeExists` (another node raced it) reads again. For fires,
//!   `fire-mark/{task}` holds the task's latest claimed fire (ms).
//! * **Session expiry**: a background task connects a new session when the
//!   old one expires; heartbeats then create the registry nodes again, the
//!   election runs again and subscribers go on with the new session. Locks
//!   of the old session are lost (their guards are told).
//!
//! # Guarantees
//!
//! Those of [`Cluster`], on one ZooKeeper ensemble.
//!
//! ### Note: close is a crash
//! [`Cluster::close`] (and dropping the handle) abandons the session without
//! closing it, as the trait asks: locks, leadership and registrations stay
//! until the server expires the session (`session_timeout`, rounded up to the
//! server's tick). Call [`Cluster::stop_election`] and
//! [`Cluster::unregister`] first to hand over at once.
//!
//! ### Note: clocks
//! `last_seen` and `forget_after` compare the server's `mtime` of the `seen`
//! record with the local clock of the node reading the registry: keep the
//! clocks in sync (NTP) or `forget_after` generous. Lock leases use only
//! the local monotonic clock.
//!
//! ### Note: sizes
//! A message or node record must fit in a znode (1 MB by default,
//! `jute.maxbuffer`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::zookeeper_client as zk;
use async_trait::async_trait;
use jiff::Timestamp;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zk::{Acls, Client, CreateMode, CreateOptions, SessionState};

use super::{
    lease_deadline, parse_decimal_mark, start_bus, Cluster, ClusterMessage, ElectionSlot,
    Leadership, LeadershipCallback, LeaseOps, LeaseWatch, LockGuard, MessageCallback, NodeInfo,
    NodeStatus, Subscribers,
};
use crate::error::{Error, Result};

const BACKEND: &str = "zookeeper cluster";

const PERSISTENT: CreateOptions<'static> = CreateMode::Persistent.with_acls(Acls::anyone_all());
const CONTAINER: CreateOptions<'static> = CreateMode::Container.with_acls(Acls::anyone_all());
const EPHEMERAL: CreateOptions<'static> = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
const EPHEMERAL_SEQUENTIAL: CreateOptions<'static> =
    CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
const PERSISTENT_SEQUENTIAL: CreateOptions<'static> =
    CreateMode::PersistentSequential.with_acls(Acls::anyone_all());

/// The configuration of a [`ZookeeperCluster`]: the seed's
/// `ZookeeperClusterConfig` (`Servers`, `NodeID`) plus root and timings.
#[derive(Debug, Clone)]
pub struct ZookeeperClusterConfig {
    /// The ensemble's servers, each `host:port` (the seed's `Servers`); at
    /// least one.
    pub servers: Vec<String>,
    /// This node's ID; must not be empty.
    pub node_id: String,
    /// The znode under which everything lives (default `"/rota/cluster"`):
    /// absolute, without a trailing `/`. Clusters that share an ensemble need
    /// roots of their own.
    pub root: String,
    /// The session timeout asked of the server (default 10 s; the server
    /// clamps it to between 2 and 20 ticks unless configured otherwise). A
    /// crashed node's locks, leadership and registration end after it.
    pub session_timeout: Duration,
    /// A node whose session ended is forgotten this long after its last
    /// heartbeat (default 30 s); at least `session_timeout`.
    pub forget_after: Duration,
    /// Broadcast messages older than this are deleted (default 60 s). A
    /// subscriber disconnected for longer may miss messages.
    pub bus_retention: Duration,
    /// How long connecting may take (default 5 s).
    pub connect_timeout: Duration,
}

impl Default for ZookeeperClusterConfig {
    /// `127.0.0.1:2181`, an empty node ID (to be set), root
    /// `"/rota/cluster"`, session timeout 10 s, forgotten after 30 s, bus
    /// retention 60 s, connect timeout 5 s.
    fn default() -> Self {
        ZookeeperClusterConfig {
            servers: vec!["127.0.0.1:2181".into()],
            node_id: String::new(),
            root: "/rota/cluster".into(),
            session_timeout: Duration::from_secs(10),
            forget_after: Duration::from_secs(30),
            bus_retention: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// The seed's `ZookeeperCluster`: a [`Cluster`] on a ZooKeeper ensemble. See
/// the [module documentation](self) for the znode layout and sharp edges.
///
/// Dropping it stops its background tasks and abandons its session as
/// [`Cluster::close`] does, without telling the election callback.
pub struct ZookeeperCluster {
    inner: Arc<Inner>,
}

/// A lock grant of this handle.
#[derive(Debug, Clone)]
struct Grant {
    key: String,
    path: String,
    version: i32,
}

struct Inner {
    node_id: String,
    root: String,
    servers: String,
    requested_timeout: Duration,
    /// The negotiated session timeout of the first session.
    session_timeout: Duration,
    forget_after: Duration,
    bus_retention: Duration,
    connect_timeout: Duration,
    /// The current session; `None` once closed.
    client: Mutex<Option<Client>>,
    closed: CancellationToken,
    /// Counter for the names of created sequential nodes.
    attempts: AtomicU64,
    /// This handle's grants by fencing token.
    grants: Mutex<HashMap<u64, Grant>>,
    /// This node's latest grant of each lock key, for `release_lock`.
    held: Mutex<HashMap<String, u64>>,
    /// The nodes this handle registers, by ID: their JSON.
    registered: Mutex<HashMap<String, String>>,
    heartbeat_task: Mutex<Option<JoinHandle<()>>>,
    session_task: Mutex<Option<JoinHandle<()>>>,
    election: ElectionSlot,
    subscribers: Subscribers,
    last_cleanup: Mutex<Option<Instant>>,
    /// Requests sent to the server, for [`Cluster::requests_sent`].
    requests: AtomicU64,
}

impl fmt::Debug for ZookeeperCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZookeeperCluster")
            .field("node_id", &self.inner.node_id)
            .field("servers", &self.inner.servers)
            .field("root", &self.inner.root)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZookeeperClusterInner")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str, message: impl Into<String>) -> Error {
    Error::InvalidInput { what: what.into(), message: message.into() }
}

fn check_duration(what: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(invalid(what, "must be greater than zero"));
    }
    Ok(())
}

/// `key` as one znode name: `%`, `/`, control and reserved characters
/// percent-escaped, and `.` / `..` escaped.
fn escape_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        let reserved = c == '%'
            || c == '/'
            || c.is_control()
            || ('\u{e000}'..='\u{f8ff}').contains(&c)
            || ('\u{fff0}'..='\u{ffff}').contains(&c);
        if reserved {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out == "." || out == ".." {
        out = out.replace('.', "%2E");
    }
    out
}

/// The sequence number at the end of a sequential node's name.
fn sequence_of(name: &str) -> Option<i64> {
    let digits = name.rsplit('-').next()?;
    if digits.len() < 10 {
        return None;
    }
    digits.parse().ok()
}

/// `children` with a sequence number, lowest first.
fn by_sequence(children: &[String]) -> Vec<(i64, &str)> {
    let mut out: Vec<(i64, &str)> =
        children.iter().filter_map(|c| sequence_of(c).map(|s| (s, c.as_str()))).collect();
    out.sort();
    out
}

fn token_of(stat: &zk::Stat) -> u64 {
    u64::try_from(stat.czxid).unwrap_or(0)
}

/// `Client::mkdir` with [`PERSISTENT`] (one `create` per missing ancestor,
/// from the deepest up and back down), counting each create on `requests`.
async fn mkdir(
    client: &Client,
    path: &str,
    requests: &AtomicU64,
) -> std::result::Result<(), zk::Error> {
    let mut j = path.len();
    loop {
        requests.fetch_add(1, Ordering::Relaxed);
        match client.create(&path[..j], &[], &PERSISTENT).await {
            Ok(_) | Err(zk::Error::NodeExists) => {
                if j >= path.len() {
                    return Ok(());
                } else if let Some(i) = path[j + 1..].find('/') {
                    j = j + 1 + i;
                } else {
                    j = path.len();
                }
            }
            Err(zk::Error::NoNode) => match path[..j].rfind('/') {
                Some(i) if i > 0 => j = i,
                _ => return Err(zk::Error::NoNode),
            },
            Err(e) => return Err(e),
        }
    }
}

/// Connects a new detached session (closing is left to the server's
/// expiry, see [`Cluster::close`]).
async fn connect(servers: &str, session_timeout: Duration, timeout: Duration) -> Result<Client> {
    let connecting = Client::connector()
        .with_session_timeout(session_timeout)
        .with_detached()
        .with_fail_eagerly()
        .connect(servers);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(Error::backend(BACKEND, format!("cannot connect to {servers}: {e}"))),
        Err(_) => Err(Error::backend(
            BACKEND,
            format!("cannot connect to {servers}: timed out after {timeout:?}"),
        )),
    }
}

impl ZookeeperCluster {
    /// Connects to the ensemble of `config` (the seed's
    /// `NewZookeeperCluster`) and creates the root's directories.
    ///
    /// Fails with [`Error::InvalidInput`] naming the field for an empty
    /// `node_id` or `servers`, a bad `root` or a zero duration, and with a
    /// backend error naming the servers within `connect_timeout` if no server
    /// can be reached.
    pub async fn new(config: ZookeeperClusterConfig) -> Result<ZookeeperCluster> {
        if config.node_id.is_empty() {
            return Err(invalid("node_id", "the node ID must not be empty"));
        }
        let servers: Vec<&str> =
            config.servers.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        if servers.is_empty() {
            return Err(invalid("servers", "no ZooKeeper server given (expected host:port)"));
        }
        if let Some(bad) = servers.iter().find(|s| s.contains('/') || s.contains(',')) {
            return Err(invalid(
                "servers",
                format!("{bad:?} is not host:port (set the root with `root`, not a chroot)"),
            ));
        }
        let root = config.root.as_str();
        if !root.starts_with('/') || root.ends_with('/') || root.contains("//") {
            return Err(invalid(
                "root",
                format!("{root:?} is not an absolute znode path without a trailing '/'"),
            ));
        }
        check_duration("session_timeout", config.session_timeout)?;
        check_duration("connect_timeout", config.connect_timeout)?;
        check_duration("bus_retention", config.bus_retention)?;
        if config.forget_after < config.session_timeout {
            return Err(invalid(
                "forget_after",
                format!(
                    "{:?} is shorter than session_timeout {:?}",
                    config.forget_after, config.session_timeout
                ),
            ));
        }
        let servers = servers.join(",");
        let client = connect(&servers, config.session_timeout, config.connect_timeout).await?;
        let session_timeout = client.session_timeout();
        let requests = AtomicU64::new(0);
        for dir in ["locks", "election", "nodes", "seen", "bus", "marks"] {
            let path = format!("{root}/{dir}");
            let made =
                tokio::time::timeout(config.connect_timeout, mkdir(&client, &path, &requests));
            match made.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(Error::backend(BACKEND, format!("create {path} ({servers}): {e}")))
                }
                Err(_) => {
                    return Err(Error::backend(
                        BACKEND,
                        format!("create {path} ({servers}): timed out"),
                    ))
                }
            }
        }
        let inner = Arc::new(Inner {
            node_id: config.node_id,
            root: config.root,
            servers,
            requested_timeout: config.session_timeout,
            session_timeout,
            forget_after: config.forget_after,
            bus_retention: config.bus_retention,
            connect_timeout: config.connect_timeout,
            client: Mutex::new(Some(client)),
            closed: CancellationToken::new(),
            attempts: AtomicU64::new(0),
            grants: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashMap::new()),
            heartbeat_task: Mutex::new(None),
            session_task: Mutex::new(None),
            election: ElectionSlot::default(),
            subscribers: Subscribers::default(),
            last_cleanup: Mutex::new(None),
            requests,
        });
        *inner.session_task.lock().unwrap() = Some(tokio::spawn(run_session(inner.clone())));
        Ok(ZookeeperCluster { inner })
    }

    /// The znode under which everything of this cluster lives.
    pub fn root(&self) -> &str {
        &self.inner.root
    }

    /// The session timeout the server granted (the first session's).
    pub fn session_timeout(&self) -> Duration {
        self.inner.session_timeout
    }
}

impl Drop for ZookeeperCluster {
    fn drop(&mut self) {
        self.inner.closed.cancel();
        self.inner.client.lock().unwrap().take();
    }
}

impl Inner {
    fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.root)
    }

    fn check_open(&self, what: &str) -> Result<()> {
        if self.closed.is_cancelled() {
            return Err(Error::backend(BACKEND, format!("{what}: the cluster is closed")));
        }
        Ok(())
    }

    /// The current session's client.
    fn client(&self, what: &str) -> Result<Client> {
        self.check_open(what)?;
        self.client
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| Error::backend(BACKEND, format!("{what}: the cluster is closed")))
    }

    /// Counts one request to the server: the client sends it when `request`
    /// is made, before it is polled.
    fn sent<F>(&self, request: F) -> F {
        self.requests.fetch_add(1, Ordering::Relaxed);
        request
    }

    fn err(&self, what: impl fmt::Display, e: zk::Error) -> Error {
        Error::backend(BACKEND, format!("{what} ({}): {e}", self.servers))
    }

    /// A name prefix unique to this session and attempt.
    fn unique_prefix(&self, client: &Client) -> String {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{n}-", client.session_id().0)
    }

    /// Deletes, best effort, the children of `dir` this session created
    /// with names starting with `prefix`.
    async fn delete_ours(&self, client: &Client, dir: &str, prefix: &str) {
        if let Ok(children) = self.sent(client.list_children(dir)).await {
            for child in children.iter().filter(|c| c.starts_with(prefix)) {
                let _ = self.sent(client.delete(&format!("{dir}/{child}"), None)).await;
            }
        }
    }

    /// Tries once to take `key`: `(token, path, version)` of the grant.
    async fn try_lock(&self, key: &str) -> Result<Option<(u64, String, i32)>> {
        let what = format!("acquire lock {key:?}");
        let client = self.client("acquire lock")?;
        let dir = self.path(&format!("locks/{}", escape_name(key)));
        // Contenders present: taken (or about to be).
        match self.sent(client.list_children(&dir)).await {
            Ok(children) if !children.is_empty() => return Ok(None),
            Ok(_) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(self.err(&what, e)),
        }
        let unique = self.unique_prefix(&client);
        let prefix = format!("{dir}/{unique}lock-");
        let mut tries = 0;
        let (stat, seq) = loop {
            tries += 1;
            match self
                .sent(client.create(&prefix, self.node_id.as_bytes(), &EPHEMERAL_SEQUENTIAL))
                .await
            {
                Ok(created) => break created,
                Err(zk::Error::NoNode) if tries < 5 => {
                    match self.sent(client.create(&dir, &[], &CONTAINER)).await {
                        Ok(_) | Err(zk::Error::NodeExists) => {}
                        Err(zk::Error::NoNode) => {
                            mkdir(&client, &self.path("locks"), &self.requests).await.ok();
                        }
                        Err(e) => return Err(self.err(&what, e)),
                    }
                }
                Err(e) => {
                    if matches!(e, zk::Error::ConnectionLoss) {
                        self.delete_ours(&client, &dir, &unique).await;
                    }
                    return Err(self.err(&what, e));
                }
            }
        };
        let name = format!("{unique}lock-{seq}");
        let path = format!("{dir}/{name}");
        let children = match self.sent(client.list_children(&dir)).await {
            Ok(children) => children,
            Err(e) => {
                let _ = self.sent(client.delete(&path, None)).await;
                return Err(self.err(&what, e));
            }
        };
        let sorted = by_sequence(&children);
        if sorted.first().map(|&(_, c)| c) == Some(name.as_str()) {
            Ok(Some((token_of(&stat), path, stat.version)))
        } else {
            match self.sent(client.delete(&path, Some(stat.version))).await {
                Ok(()) | Err(zk::Error::NoNode) => Ok(None),
                Err(e) => Err(self.err(&what, e)),
            }
        }
    }

    fn forget_grant(&self, token: u64) -> Option<Grant> {
        let grant = self.grants.lock().unwrap().remove(&token)?;
        let mut held = self.held.lock().unwrap();
        if held.get(&grant.key) == Some(&token) {
            held.remove(&grant.key);
        }
        Some(grant)
    }

    /// Deletes grant `token`'s node if it still exists: `Ok(true)` if it did.
    async fn delete_grant(&self, token: u64) -> Result<bool> {
        let Some(grant) = self.forget_grant(token) else { return Ok(false) };
        let client = self.client("release lock")?;
        match self.sent(client.delete(&grant.path, Some(grant.version))).await {
            Ok(()) => Ok(true),
            Err(zk::Error::NoNode | zk::Error::BadVersion | zk::Error::SessionExpired) => Ok(false),
            Err(e) => {
                // Keep it known so that a later release or the watch can retry.
                self.grants.lock().unwrap().insert(token, grant.clone());
                Err(self.err(format_args!("release lock {:?}", grant.key), e))
            }
        }
    }

    /// Creates or refreshes node `id`'s registry entries.
    async fn beat(&self, id: &str, json: &str) -> Result<()> {
        let what = format!("heartbeat of node {id:?}");
        let client = self.client("heartbeat")?;
        let name = escape_name(id);
        let live = self.path(&format!("nodes/{name}"));
        match self.sent(client.create(&live, json.as_bytes(), &EPHEMERAL)).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(self.err(&what, e)),
        }
        let seen = self.path(&format!("seen/{name}"));
        match self.sent(client.set_data(&seen, json.as_bytes(), None)).await {
            Ok(_) => Ok(()),
            Err(zk::Error::NoNode) => {
                match self.sent(client.create(&seen, json.as_bytes(), &PERSISTENT)).await {
                    Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
                    Err(e) => Err(self.err(&what, e)),
                }
            }
            Err(e) => Err(self.err(&what, e)),
        }
    }

    /// Raises mark `key` to `value`; see [`Cluster::advance_mark`].
    async fn advance(&self, key: &str, value: i64) -> Result<Option<Option<i64>>> {
        let what = format!("advance mark {key:?}");
        let client = self.client("advance mark")?;
        let path = self.path(&format!("marks/{}", escape_name(key)));
        let data = value.to_string();
        loop {
            let found = match self.sent(client.get_data(&path)).await {
                Ok((bytes, stat)) => {
                    Some((parse_decimal_mark(BACKEND, &what, &path, &bytes)?, stat.version))
                }
                Err(zk::Error::NoNode) => None,
                Err(e) => return Err(self.err(&what, e)),
            };
            match found {
                Some((stored, _)) if stored >= value => return Ok(None),
                Some((stored, version)) => {
                    match self.sent(client.set_data(&path, data.as_bytes(), Some(version))).await {
                        Ok(_) => return Ok(Some(Some(stored))),
                        // Raised (or deleted) meanwhile: look again.
                        Err(zk::Error::BadVersion | zk::Error::NoNode) => {}
                        Err(e) => return Err(self.err(&what, e)),
                    }
                }
                None => match self.sent(client.create(&path, data.as_bytes(), &PERSISTENT)).await {
                    Ok(_) => return Ok(Some(None)),
                    // Created meanwhile: look again.
                    Err(zk::Error::NodeExists) => {}
                    // The root's `marks` is gone (deleted under us).
                    Err(zk::Error::NoNode) => {
                        mkdir(&client, &self.path("marks"), &self.requests)
                            .await
                            .map_err(|e| self.err(&what, e))?;
                    }
                    Err(e) => return Err(self.err(&what, e)),
                },
            }
        }
    }

    /// Deletes bus messages older than the retention (at most every quarter of
    /// it).
    async fn clean_bus(&self) {
        {
            let mut last = self.last_cleanup.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < self.bus_retention / 4) {
                return;
            }
            *last = Some(Instant::now());
        }
        let Ok(client) = self.client("clean bus") else { return };
        let dir = self.path("bus");
        let Ok(children) = self.sent(client.list_children(&dir)).await else { return };
        let retention = i64::try_from(self.bus_retention.as_millis()).unwrap_or(i64::MAX);
        let oldest = Timestamp::now().as_millisecond().saturating_sub(retention);
        for child in children {
            let sent = child.split('-').nth(1).and_then(|ms| ms.parse::<i64>().ok());
            if sent.is_some_and(|ms| ms < oldest) {
                let _ = self.sent(client.delete(&format!("{dir}/{child}"), None)).await;
            }
        }
    }
}

#[async_trait]
impl LeaseOps for Inner {
    async fn renew(&self, key: &str, token: u64, _ttl: Duration) -> Result<bool> {
        let client = self.client("renew lock")?;
        let Some(grant) = self.grants.lock().unwrap().get(&token).cloned() else {
            return Ok(false);
        };
        if client.state() != SessionState::SyncConnected {
            return Err(Error::backend(
                BACKEND,
                format!("renew lock {key:?} ({}): session {}", self.servers, client.state()),
            ));
        }
        match self.sent(client.check_stat(&grant.path)).await {
            Ok(Some(stat)) => Ok(token_of(&stat) == token),
            Ok(None) => Ok(false),
            Err(e) => Err(self.err(format_args!("renew lock {key:?}"), e)),
        }
    }

    async fn release(&self, _key: &str, token: u64) -> Result<bool> {
        self.check_open("release lock")?;
        self.delete_grant(token).await
    }
}

/// Watches grant `token` at `path`: marks it lost when its node goes, the
/// session disconnects or its local deadline passes, and then deletes its
/// node (ours alone: the path is this grant's). Runs on after the guard is
/// dropped, until the deadline, as the lease is not released by a drop.
async fn watch_lock(inner: Arc<Inner>, watch: LeaseWatch, token: u64, path: String) {
    'watch: loop {
        let Ok(client) = inner.client("watch lock") else {
            watch.mark_lost();
            return;
        };
        let mut state = client.state_watcher();
        if state.state() != SessionState::SyncConnected {
            break 'watch;
        }
        let armed = tokio::select! {
            _ = inner.closed.cancelled() => {
                watch.mark_lost();
                return;
            }
            r = inner.sent(client.check_and_watch_stat(&path)) => r,
        };
        let watcher = match armed {
            Ok((Some(stat), watcher)) if token_of(&stat) == token => watcher,
            Ok(_) => {
                watch.mark_lost();
                inner.forget_grant(token);
                return;
            }
            Err(_) => break 'watch,
        };
        let changed = watcher.changed();
        tokio::pin!(changed);
        loop {
            tokio::select! {
                biased;
                _ = inner.closed.cancelled() => {
                    watch.mark_lost();
                    return;
                }
                _ = &mut changed => continue 'watch,
                s = state.changed() => if s != SessionState::SyncConnected { break 'watch },
                _ = tokio::time::sleep_until(watch.deadline()) => {
                    if Instant::now() >= watch.deadline() {
                        break 'watch;
                    }
                }
            }
        }
    }
    watch.mark_lost();
    // Free the node: at once, or once the connection is back.
    let give_up = Instant::now() + inner.session_timeout * 2;
    while Instant::now() < give_up && !inner.closed.is_cancelled() {
        match inner.delete_grant(token).await {
            Ok(_) => return,
            Err(_) => {
                tokio::select! {
                    _ = inner.closed.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Campaign {
    /// The election was stopped.
    Stopped,
    /// Run again (leadership lost, node gone, session changed).
    Again,
}

/// Runs for leadership until `stop` is cancelled.
async fn run_election(inner: Arc<Inner>, callback: LeadershipCallback, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if stop.is_cancelled() {
            return;
        }
        match campaign(&inner, &callback, &stop).await {
            Ok(Campaign::Stopped) => return,
            Ok(Campaign::Again) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::warn!(node = %inner.node_id, "election: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One candidacy: one candidate node, from creation to leadership lost or
/// the node gone.
async fn campaign(
    inner: &Inner,
    callback: &LeadershipCallback,
    stop: &CancellationToken,
) -> Result<Campaign> {
    let client = inner.client("election")?;
    let mut state = client.state_watcher();
    state.state();
    let dir = inner.path("election");
    let session_prefix = format!("{:x}-", client.session_id().0);
    // Leftovers of this session's earlier candidacies would be phantoms.
    inner.delete_ours(&client, &dir, &session_prefix).await;
    let unique = inner.unique_prefix(&client);
    let prefix = format!("{dir}/{unique}n-");
    let create =
        inner.sent(client.create(&prefix, inner.node_id.as_bytes(), &EPHEMERAL_SEQUENTIAL));
    let created = tokio::select! {
        _ = stop.cancelled() => return Ok(Campaign::Stopped),
        r = create => r,
    };
    let (stat, seq) = match created {
        Ok(created) => created,
        Err(e) => {
            if matches!(e, zk::Error::ConnectionLoss) {
                inner.delete_ours(&client, &dir, &unique).await;
            }
            return Err(inner.err("election: create candidate", e));
        }
    };
    let me = format!("{unique}n-{seq}");
    let path = format!("{dir}/{me}");
    let term = token_of(&stat);
    let outcome: Result<Campaign> = async {
        loop {
            let list = inner.sent(client.list_children(&dir));
            let children = tokio::select! {
                _ = stop.cancelled() => return Ok(Campaign::Stopped),
                r = list => r.map_err(|e| inner.err("election: list", e))?,
            };
            let sorted = by_sequence(&children);
            let Some(i) = sorted.iter().position(|&(_, c)| c == me) else {
                return Ok(Campaign::Again);
            };
            if i == 0 {
                callback(Leadership::Elected { term });
                let end = loop {
                    let armed = tokio::select! {
                        _ = stop.cancelled() => break Campaign::Stopped,
                        r = inner.sent(client.check_and_watch_stat(&path)) => r,
                    };
                    let watcher = match armed {
                        Ok((Some(_), watcher)) => watcher,
                        Ok((None, _)) | Err(_) => break Campaign::Again,
                    };
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break Campaign::Stopped,
                        s = state.changed() => if s != SessionState::SyncConnected {
                            break Campaign::Again;
                        },
                        _ = watcher.changed() => {}
                    }
                };
                callback(Leadership::Lost { term });
                return Ok(end);
            }
            // Watch the predecessor only.
            let predecessor = format!("{dir}/{}", sorted[i - 1].1);
            let armed = tokio::select! {
                _ = stop.cancelled() => return Ok(Campaign::Stopped),
                r = inner.sent(client.check_and_watch_stat(&predecessor)) => r,
            };
            let watcher = match armed {
                Ok((Some(_), watcher)) => watcher,
                Ok((None, _)) => continue,
                Err(e) => return Err(inner.err("election: watch", e)),
            };
            tokio::select! {
                _ = stop.cancelled() => return Ok(Campaign::Stopped),
                s = state.changed() => if s.is_terminated() { return Ok(Campaign::Again) },
                _ = watcher.changed() => {}
            }
        }
    }
    .await;
    // Step down or withdraw, unless closed (a crash leaves the node to expire).
    if !inner.closed.is_cancelled() {
        match tokio::time::timeout(inner.session_timeout, inner.sent(client.delete(&path, None)))
            .await
        {
            Ok(Ok(()) | Err(zk::Error::NoNode | zk::Error::SessionExpired)) => {}
            Ok(Err(e)) => tracing::warn!(node = %inner.node_id, "election: delete {path}: {e}"),
            Err(_) => tracing::warn!(node = %inner.node_id, "election: delete {path}: timed out"),
        }
    }
    outcome
}

/// Heartbeats every registered node until closed: creates its ephemeral node
/// again if missing (a new session) and stamps its `seen` record.
async fn run_heartbeats(inner: Arc<Inner>) {
    let every =
        (inner.session_timeout / 3).clamp(Duration::from_millis(100), Duration::from_secs(5));
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

/// Connects a new session whenever the current one expires, until closed.
async fn run_session(inner: Arc<Inner>) {
    loop {
        let Ok(client) = inner.client("session") else { return };
        let mut state = client.state_watcher();
        drop(client);
        loop {
            let s = tokio::select! {
                biased;
                _ = inner.closed.cancelled() => return,
                s = state.changed() => s,
            };
            if s.is_terminated() {
                break;
            }
        }
        tracing::warn!(node = %inner.node_id, "zookeeper session ended; connecting a new one");
        let mut backoff = Duration::from_millis(50);
        loop {
            let connected = tokio::select! {
                _ = inner.closed.cancelled() => return,
                r = connect(&inner.servers, inner.requested_timeout, inner.connect_timeout) => r,
            };
            match connected {
                Ok(client) => {
                    let mut current = inner.client.lock().unwrap();
                    if inner.closed.is_cancelled() {
                        return;
                    }
                    *current = Some(client);
                    break;
                }
                Err(e) => tracing::warn!(node = %inner.node_id, "{e}"),
            }
            tokio::select! {
                _ = inner.closed.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Delivers broadcasts in sequence order until closed. Reports the first
/// listing's outcome on `ready`; messages from then on are delivered.
async fn run_bus(inner: Arc<Inner>, mut ready: Option<oneshot::Sender<Result<()>>>) {
    let dir = inner.path("bus");
    let mut last: Option<i64> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let client = match inner.client("subscribe") {
            Ok(client) => client,
            Err(e) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(e));
                }
                return;
            }
        };
        let list = inner.sent(client.list_and_watch_children(&dir));
        let listed = tokio::select! {
            _ = inner.closed.cancelled() => return,
            r = tokio::time::timeout(inner.connect_timeout, list) => r,
        };
        let failure = match listed {
            Ok(Ok((children, watcher))) => {
                backoff = Duration::from_millis(50);
                let sorted = by_sequence(&children);
                let mut unread = None;
                match last {
                    None => {
                        last = Some(sorted.last().map_or(-1, |&(s, _)| s));
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Some(mut done) => {
                        let fresh: Vec<(i64, &str)> =
                            sorted.iter().copied().filter(|&(s, _)| s > done).collect();
                        for (seq, name) in fresh {
                            let read = tokio::select! {
                                _ = inner.closed.cancelled() => return,
                                r = inner.sent(client.get_data(&format!("{dir}/{name}"))) => r,
                            };
                            match read {
                                Ok((data, _)) => {
                                    match serde_json::from_slice::<ClusterMessage>(&data) {
                                        Ok(message) => {
                                            let callbacks = inner.subscribers.callbacks();
                                            for callback in callbacks {
                                                callback(message.clone());
                                            }
                                        }
                                        Err(e) => tracing::warn!(
                                            "ignoring a malformed cluster message {name}: {e}"
                                        ),
                                    }
                                }
                                // Deleted as too old.
                                Err(zk::Error::NoNode) => {}
                                Err(e) => {
                                    unread = Some(e);
                                    break;
                                }
                            }
                            done = seq;
                        }
                        last = Some(done);
                    }
                }
                match unread {
                    // Read the rest again at once, not when the next message comes.
                    Some(e) => inner.err("read broadcast", e),
                    None => {
                        tokio::select! {
                            _ = inner.closed.cancelled() => return,
                            _ = watcher.changed() => {}
                        }
                        continue;
                    }
                }
            }
            Ok(Err(e)) => inner.err("subscribe", e),
            Err(_) => Error::backend(
                BACKEND,
                format!(
                    "subscribe ({}): timed out after {:?}",
                    inner.servers, inner.connect_timeout
                ),
            ),
        };
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(failure));
            return;
        }
        tracing::warn!(node = %inner.node_id, "cluster bus: {failure}");
        tokio::select! {
            _ = inner.closed.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

#[async_trait]
impl Cluster for ZookeeperCluster {
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
        // A node already live (registered before): bring its data up to date.
        let client = inner.client("register")?;
        let live = inner.path(&format!("nodes/{}", escape_name(&info.id)));
        match inner.sent(client.set_data(&live, json.as_bytes(), None)).await {
            Ok(_) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(inner.err(format_args!("register node {:?}", info.id), e)),
        }
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
        let client = inner.client("unregister")?;
        let name = escape_name(id);
        for path in [inner.path(&format!("nodes/{name}")), inner.path(&format!("seen/{name}"))] {
            match inner.sent(client.delete(&path, None)).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(inner.err(format_args!("unregister node {id:?}"), e)),
            }
        }
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let inner = &self.inner;
        let client = inner.client("nodes")?;
        let what = "read nodes";
        let list = |dir: &'static str| {
            let client = &client;
            async move {
                match inner.sent(client.list_children(&inner.path(dir))).await {
                    Ok(children) => Ok(children),
                    Err(zk::Error::NoNode) => Ok(Vec::new()),
                    Err(e) => Err(inner.err(what, e)),
                }
            }
        };
        let live: HashSet<String> = list("nodes").await?.into_iter().collect();
        let seen = list("seen").await?;
        let candidates = list("election").await?;
        let mut leader = None;
        if let Some(&(_, first)) = by_sequence(&candidates).first() {
            match inner.sent(client.get_data(&inner.path(&format!("election/{first}")))).await {
                Ok((data, _)) => leader = String::from_utf8(data).ok(),
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(inner.err(what, e)),
            }
        }
        let now = Timestamp::now();
        let forget_ms = i64::try_from(inner.forget_after.as_millis()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        let mut listed = HashSet::new();
        for name in &seen {
            let path = inner.path(&format!("seen/{name}"));
            let (data, stat) = match inner.sent(client.get_data(&path)).await {
                Ok(read) => read,
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(inner.err(what, e)),
            };
            let mut node: NodeInfo = match serde_json::from_slice(&data) {
                Ok(node) => node,
                Err(e) => {
                    tracing::warn!(node = %name, "skipping a malformed node entry: {e}");
                    continue;
                }
            };
            node.last_seen = Timestamp::from_millisecond(stat.mtime).unwrap_or(node.last_seen);
            if live.contains(name) {
                node.status = if leader.as_deref() == Some(node.id.as_str()) {
                    NodeStatus::Leader
                } else {
                    NodeStatus::Online
                };
            } else if now.as_millisecond() - stat.mtime > forget_ms {
                // Forgotten: whoever reads first deletes it (if unchanged).
                let _ = inner.sent(client.delete(&path, Some(stat.version))).await;
                continue;
            } else {
                node.status = NodeStatus::Offline;
            }
            listed.insert(name.clone());
            out.push(node);
        }
        // Live without a `seen` record yet (a race with register).
        for name in live.iter().filter(|n| !listed.contains(*n)) {
            let path = inner.path(&format!("nodes/{name}"));
            let Ok((data, stat)) = inner.sent(client.get_data(&path)).await else { continue };
            let Ok(mut node) = serde_json::from_slice::<NodeInfo>(&data) else { continue };
            node.last_seen = Timestamp::from_millisecond(stat.mtime).unwrap_or(node.last_seen);
            node.status = if leader.as_deref() == Some(node.id.as_str()) {
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
        if ttl.is_zero() {
            return Err(invalid("ttl", "must be greater than zero"));
        }
        let sent = Instant::now();
        let Some((token, path, version)) = inner.try_lock(key).await? else {
            return Ok(None);
        };
        inner
            .grants
            .lock()
            .unwrap()
            .insert(token, Grant { key: key.to_string(), path: path.clone(), version });
        inner.held.lock().unwrap().insert(key.to_string(), token);
        let ops: Arc<dyn LeaseOps> = inner.clone();
        let (guard, watch) = LockGuard::new(key, token, lease_deadline(sent, ttl), ops);
        tokio::spawn(watch_lock(inner.clone(), watch, token, path));
        Ok(Some(guard))
    }

    async fn release_lock(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open("release lock")?;
        if key.is_empty() {
            return Err(invalid("key", "the lock key must not be empty"));
        }
        let token = inner.held.lock().unwrap().get(key).copied();
        if let Some(token) = token {
            inner.delete_grant(token).await?;
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
        let client = inner.client("broadcast")?;
        if msg.node_id.is_empty() {
            msg.node_id = inner.node_id.clone();
        }
        let json = serde_json::to_string(&msg)
            .map_err(|e| Error::backend(BACKEND, format!("encode message: {e}")))?;
        let prefix = inner.path(&format!("bus/m-{}-", Timestamp::now().as_millisecond()));
        client
            .create(&prefix, json.as_bytes(), &PERSISTENT_SEQUENTIAL)
            .await
            .map_err(|e| inner.err("broadcast", e))?;
        inner.clean_bus().await;
        Ok(())
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
        let heartbeat = inner.heartbeat_task.lock().unwrap().take();
        let session = inner.session_task.lock().unwrap().take();
        let bus = inner.subscribers.take_task().await;
        let tasks = [heartbeat, session, bus];
        for task in tasks.into_iter().flatten() {
            let _ = task.await;
        }
        // Abandon the session (detached: the server expires it). Lock watches
        // drop their clones of the client as they see `closed`.
        inner.client.lock().unwrap().take();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_become_one_znode_name() {
        assert_eq!(escape_name("job"), "job");
        assert_eq!(escape_name("a/b%c"), "a%2Fb%25c");
        assert_eq!(escape_name("."), "%2E");
        assert_eq!(escape_name(".."), "%2E%2E");
        assert_eq!(escape_name("x\u{1}"), "x%01");
    }

    #[test]
    fn sequences_sort_across_prefixes() {
        let children: Vec<String> =
            ["1f-3-lock-0000000012", "a-0-lock-0000000003", "junk", "b-1-lock-0000000007"]
                .into_iter()
                .map(String::from)
                .collect();
        let sorted = by_sequence(&children);
        assert_eq!(
            sorted,
            [(3, "a-0-lock-0000000003"), (7, "b-1-lock-0000000007"), (12, "1f-3-lock-0000000012")]
        );
    }
}
