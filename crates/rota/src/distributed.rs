//! The seed's `DistributedScheduler`: schedulers on several nodes, sharing
//! one [`Cluster`], run every fire of every task exactly once between them.
//!
//! # How a fire is run exactly once
//!
//! A fire is the pair (task ID, scheduled instant). Every node computes the
//! same fires (cron instants are absolute; `@every` intervals count from the
//! Unix epoch in cluster mode). When a fire is due, the node decides whether
//! it is its to run:
//!
//! * with **task distribution** on, fires are spread over the online nodes by
//!   rendezvous hashing of (node, task, instant): every node that sees the
//!   same membership picks the same owner, and a node that leaves stops
//!   getting fires once the registry shows it offline;
//! * with **leader election** only, the leader runs every fire;
//! * with neither, every node tries, and the claim decides.
//!
//! The owner then **claims** the fire in the backend
//! ([`Cluster::claim_fires`]): the task's fire mark is raised to the fire's
//! instant if it is lower, atomically, so at most one node ever wins a fire,
//! also when nodes disagree about membership or leadership, and also when a
//! node wakes from a pause (GC, `SIGSTOP`) and tries a fire another node has
//! already claimed. A task that skips overlapping runs (the default) also
//! takes its run lock in the same claim, holds it for the whole run and
//! renews it every third of `lock_timeout`; if renewal fails, the run is
//! cancelled when the lease runs out locally, which is before another node
//! could take the lock. The run's [`TaskContext`](crate::TaskContext) carries
//! the fencing token (the run lock's token, or the instant in ms for tasks
//! whose runs may overlap).
//!
//! Claims are batched: fires due together are claimed in one request
//! (one round trip on Redis).
//!
//! # What is counted
//!
//! A fire no node claimed (its owner died before the registry showed it
//! offline, or no leader was elected yet) is counted as missed by the node
//! that claims the task's next fire, with a history record. A fire whose
//! claim came back past its misfire grace, or with its lease already lost, is
//! counted as missed too. Fires of other nodes are not counted here.
//!
//! # Shared stores
//!
//! With a store that several processes share (PostgreSQL, Redis), tasks
//! added, changed or removed on one node reach the others within
//! `check_interval`: each node re-reads the store.
//!
//! ```no_run
//! # #[cfg(feature = "cluster-redis")]
//! # async fn demo() -> rota::Result<()> {
//! use std::sync::Arc;
//! use rota::{DistributedConfig, DistributedScheduler, MemoryStore, RedisCluster, RedisClusterConfig};
//! use rota::{DefaultTask, FuncHandler, Scheduler};
//!
//! let cluster = RedisCluster::new(RedisClusterConfig {
//!     node_id: "node-1".into(),
//!     ..Default::default()
//! })
//! .await?;
//! let config = DistributedConfig {
//!     enable_task_distribution: true,
//!     ..DistributedConfig::new("node-1", Arc::new(cluster))
//! };
//! let ds = DistributedScheduler::new(Arc::new(MemoryStore::new()), config)?;
//! let handler = FuncHandler::new("report", |ctx| async move {
//!     println!("fire {} on {} with token {:?}", ctx.scheduled_at(), ctx.node_id(), ctx.fencing_token());
//!     Ok(())
//! });
//! ds.add(DefaultTask::new("report", "Report", "0 * * * * *", handler)).await?;
//! ds.start().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    Cluster, FireClaim, FireRequest, Leadership, LockGuard, NodeInfo, NodeStatus,
};
use crate::config::SchedulerConfig;
use crate::error::{Error, Result};
use crate::scheduler::gate::{Admission, Claim, FireGate, GatedFire, RunLease};
use crate::scheduler::{DefaultScheduler, Scheduler, SchedulerStats, SchedulerStatus, TaskStats};
use crate::store::Store;
use crate::task::DefaultTask;

/// Fires claimed in one request at most.
const CLAIM_BATCH: usize = 256;
/// Claim requests in flight at once per node.
const CLAIMS_IN_FLIGHT: usize = 4;

/// The seed's `DistributedConfig`.
#[derive(Clone)]
pub struct DistributedConfig {
    /// This node's ID: in history records, the registry and fire ownership.
    pub node_id: String,
    /// The cluster backend the nodes share.
    pub cluster: Arc<dyn Cluster>,
    /// How long a failover may take: the backend's leadership and node TTLs
    /// should not exceed it (the daemon derives them from it). Reported in
    /// [`DistributedStats`]; must be greater than zero.
    pub election_timeout: Duration,
    /// The TTL of a task's run lock, renewed every third of it while the run
    /// goes on. A node that stops (crash, pause) frees the task after it.
    pub lock_timeout: Duration,
    /// How often this node reads the registry to learn which nodes are online
    /// (and so who owns which fire).
    pub heartbeat_interval: Duration,
    /// Run for leadership; with task distribution off, only the leader runs fires.
    pub enable_leader_election: bool,
    /// Spread fires over the online nodes.
    pub enable_task_distribution: bool,
    /// The address registered for this node.
    pub address: String,
    /// The port registered for this node.
    pub port: u16,
}

impl fmt::Debug for DistributedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedConfig")
            .field("node_id", &self.node_id)
            .field("cluster", &self.cluster)
            .field("election_timeout", &self.election_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("enable_leader_election", &self.enable_leader_election)
            .field("enable_task_distribution", &self.enable_task_distribution)
            .finish_non_exhaustive()
    }
}

impl DistributedConfig {
    /// A configuration for node `node_id` on `cluster`: election timeout
    /// 10 s, lock timeout 30 s, heartbeat interval 1 s, leader election on,
    /// task distribution off, registered at 127.0.0.1:0.
    pub fn new(node_id: impl Into<String>, cluster: Arc<dyn Cluster>) -> Self {
        DistributedConfig {
            node_id: node_id.into(),
            cluster,
            election_timeout: Duration::from_secs(10),
            lock_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            enable_leader_election: true,
            enable_task_distribution: false,
            address: "127.0.0.1".into(),
            port: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str, message: String| Error::InvalidInput { what: what.into(), message };
        if self.node_id.is_empty() {
            return Err(bad("node_id", "must not be empty".into()));
        }
        if self.node_id != self.cluster.node_id() {
            return Err(bad(
                "node_id",
                format!(
                    "{:?} differs from the cluster handle's node ID {:?}",
                    self.node_id,
                    self.cluster.node_id()
                ),
            ));
        }
        for (what, d) in [
            ("election_timeout", self.election_timeout),
            ("lock_timeout", self.lock_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
        ] {
            if d < Duration::from_millis(10) {
                return Err(bad(what, format!("{d:?}: must be at least 10ms")));
            }
        }
        Ok(())
    }
}

/// The seed's `DistributedStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributedStats {
    /// This node.
    pub node_id: String,
    /// Whether this node leads.
    pub is_leader: bool,
    /// Nodes in the registry, offline ones included.
    pub total_nodes: usize,
    /// Nodes online (leader included).
    pub online_nodes: usize,
    /// The leader's ID, empty if none is known.
    pub leader_id: String,
    /// This node's current term if it leads, else 0.
    #[serde(default)]
    pub term: u64,
    /// When this node last read the registry.
    #[serde(default)]
    pub view_at: Option<Timestamp>,
}

/// What this node last read of the registry.
#[derive(Debug, Default, Clone)]
struct View {
    /// Online node IDs, sorted.
    online: Vec<Arc<str>>,
    total: usize,
    leader: String,
    nodes: Vec<NodeInfo>,
    at: Option<Timestamp>,
}

type ClaimReply = oneshot::Sender<Result<FireClaim>>;

struct Shared {
    node_id: Arc<str>,
    cluster: Arc<dyn Cluster>,
    config: DistributedConfig,
    leader: AtomicBool,
    term: AtomicU64,
    view: RwLock<View>,
    claims: Mutex<Option<mpsc::UnboundedSender<(FireRequest, ClaimReply)>>>,
    background: Mutex<Option<(CancellationToken, Vec<JoinHandle<()>>)>>,
    /// Fires this node decided were another node's (for tests and stats).
    not_ours: AtomicU64,
}

/// The seed's `DistributedScheduler`: a [`DefaultScheduler`] whose fires
/// pass through the cluster. See the [module documentation](self).
///
/// Every method of [`Scheduler`] works as on a single node, on this node's
/// scheduler. [`run_now`](Scheduler::run_now) runs on the node it is called
/// on, without a claim.
#[derive(Clone)]
pub struct DistributedScheduler {
    local: DefaultScheduler,
    shared: Arc<Shared>,
}

impl fmt::Debug for DistributedScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedScheduler")
            .field("node_id", &self.shared.node_id)
            .field("is_leader", &self.is_leader())
            .finish_non_exhaustive()
    }
}

impl DistributedScheduler {
    /// A distributed scheduler on `store` with the scheduler defaults (the
    /// seed's `NewDistributedScheduler`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty node ID, one that differs from the
    /// cluster handle's, or a timeout under 10 ms.
    pub fn new(store: Arc<dyn Store>, config: DistributedConfig) -> Result<Self> {
        Self::with_config(SchedulerConfig::new().store(store), config)
    }

    /// A distributed scheduler built from `scheduler` (store, monitor, clock,
    /// concurrency...). Its node ID is `config.node_id`.
    pub fn with_config(scheduler: SchedulerConfig, config: DistributedConfig) -> Result<Self> {
        config.validate()?;
        let shared = Arc::new(Shared {
            node_id: config.node_id.as_str().into(),
            cluster: config.cluster.clone(),
            leader: AtomicBool::new(false),
            term: AtomicU64::new(0),
            view: RwLock::new(View::default()),
            claims: Mutex::new(None),
            background: Mutex::new(None),
            not_ours: AtomicU64::new(0),
            config,
        });
        let mut settings = scheduler.node_id(shared.node_id.to_string()).settings()?;
        settings.gate = Some(Arc::new(Gate { shared: shared.clone() }));
        Ok(DistributedScheduler { local: DefaultScheduler::from_settings(settings), shared })
    }

    /// This node's scheduler (history, events, handler registry...).
    pub fn scheduler(&self) -> &DefaultScheduler {
        &self.local
    }

    /// The cluster.
    pub fn cluster(&self) -> &Arc<dyn Cluster> {
        &self.shared.cluster
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Whether this node leads (`IsLeader`).
    pub fn is_leader(&self) -> bool {
        self.shared.leader.load(Ordering::Acquire)
    }

    /// Every node in the registry (`GetClusterNodes`).
    pub async fn cluster_nodes(&self) -> Result<Vec<NodeInfo>> {
        self.shared.cluster.nodes().await
    }

    /// The seed's `GetDistributedStats`, from this node's latest view of the
    /// registry (read every `heartbeat_interval`).
    pub fn distributed_stats(&self) -> DistributedStats {
        let view = self.shared.view.read().unwrap();
        let is_leader = self.is_leader();
        DistributedStats {
            node_id: self.shared.node_id.to_string(),
            is_leader,
            total_nodes: view.total,
            online_nodes: view.online.len(),
            leader_id: if is_leader {
                self.shared.node_id.to_string()
            } else {
                view.leader.clone()
            },
            term: if is_leader { self.shared.term.load(Ordering::Acquire) } else { 0 },
            view_at: view.at,
        }
    }

    /// The nodes of this node's latest view of the registry.
    pub fn known_nodes(&self) -> Vec<NodeInfo> {
        self.shared.view.read().unwrap().nodes.clone()
    }

    /// Fires this node left to other nodes (their owner was another node, or
    /// it was not leader).
    pub fn fires_left_to_others(&self) -> u64 {
        self.shared.not_ours.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &DistributedConfig {
        &self.shared.config
    }

    /// Reads the registry now.
    pub async fn refresh_view(&self) -> Result<()> {
        self.shared.refresh().await
    }
}

impl Shared {
    async fn refresh(&self) -> Result<()> {
        let nodes = self.cluster.nodes().await?;
        let mut online: Vec<Arc<str>> = nodes
            .iter()
            .filter(|n| n.status != NodeStatus::Offline)
            .map(|n| Arc::from(n.id.as_str()))
            .collect();
        online.sort();
        let leader = nodes.iter().find(|n| n.status == NodeStatus::Leader).map(|n| n.id.clone());
        let mut view = self.view.write().unwrap();
        view.online = online;
        view.total = nodes.len();
        view.leader = leader.unwrap_or_default();
        view.nodes = nodes;
        view.at = Some(Timestamp::now());
        Ok(())
    }

    /// The node that owns a fire among `online`: rendezvous hashing.
    fn owner<'a>(online: &'a [Arc<str>], task: &str, ms: i64) -> Option<&'a str> {
        online.iter().max_by_key(|n| fire_hash(n, task, ms)).map(|n| &**n)
    }

    fn is_ours(&self, task: &str, ms: i64) -> bool {
        let c = &self.config;
        if c.enable_task_distribution {
            let view = self.view.read().unwrap();
            // Not in the view yet (just started): claim, the claim decides.
            if !view.online.iter().any(|n| **n == *self.node_id) {
                return true;
            }
            return Self::owner(&view.online, task, ms) == Some(&*self.node_id);
        }
        if c.enable_leader_election {
            return self.leader.load(Ordering::Acquire);
        }
        true
    }
}

/// A stable 64-bit hash of (node, task, instant): FNV-1a, the same on every
/// node and every build.
fn fire_hash(node: &str, task: &str, ms: i64) -> u64 {
    let mut h = crate::fasthash::Fnv::default();
    h.write(node.as_bytes());
    h.write_u8(0);
    h.write(task.as_bytes());
    h.write_u8(0);
    h.write_i64(ms);
    // FNV's low bits mix poorly: finish with a multiply-xorshift.
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

struct Gate {
    shared: Arc<Shared>,
}

#[async_trait]
impl FireGate for Gate {
    fn is_ours(&self, task_id: &str, scheduled: Timestamp) -> bool {
        let ours = self.shared.is_ours(task_id, scheduled.as_millisecond());
        if !ours {
            self.shared.not_ours.fetch_add(1, Ordering::Relaxed);
        }
        ours
    }

    async fn admit(&self, fire: GatedFire) -> Result<Admission> {
        let shared = &self.shared;
        let ms = fire.scheduled.as_millisecond();
        if !self.is_ours(&fire.task_id, fire.scheduled) {
            return Ok(Admission::NotOurs);
        }
        let req = FireRequest {
            task_id: fire.task_id.to_string(),
            scheduled_ms: ms,
            run_lock: fire.skip_overlap.then_some(shared.config.lock_timeout),
        };
        let (tx, rx) = oneshot::channel();
        let sender = shared.claims.lock().unwrap().clone();
        let claim = match sender {
            Some(s) if s.send((req, tx)).is_ok() => rx.await.map_err(|_| {
                Error::backend("cluster", "the claim was dropped: the scheduler is stopping")
            })??,
            _ => return Err(Error::backend("cluster", "the distributed scheduler is not started")),
        };
        let at = |p: Option<i64>| p.and_then(|ms| Timestamp::from_millisecond(ms).ok());
        Ok(match claim {
            FireClaim::Taken => Admission::Taken,
            FireClaim::Busy { previous } => Admission::Skipped { previous: at(previous) },
            FireClaim::Won { previous, guard } => Admission::Run(Claim {
                previous: at(previous),
                fencing_token: Some(guard.as_ref().map_or(ms as u64, LockGuard::token)),
                lease: guard.map(|guard| {
                    let ttl = shared.config.lock_timeout;
                    Box::new(ClusterLease { guard, ttl }) as Box<dyn RunLease>
                }),
            }),
        })
    }
}

/// A run lock held for a run: renewed every third of its TTL while the run
/// polls [`RunLease::keep`]; lost when a renewal finds it gone or the lease
/// runs out locally.
struct ClusterLease {
    guard: LockGuard,
    ttl: Duration,
}

#[async_trait]
impl RunLease for ClusterLease {
    fn is_lost(&self) -> bool {
        self.guard.is_lost()
    }

    async fn keep(&self) {
        let (guard, ttl) = (&self.guard, self.ttl);
        loop {
            tokio::select! {
                _ = guard.lost() => return,
                _ = tokio::time::sleep(ttl / 3) => {}
            }
            if guard.renew(ttl).await.is_ok() {
                continue;
            }
            // Not renewed (the backend did not answer, or the lock is gone):
            // the lease ends at its old deadline unless a retry gets through.
            tokio::select! {
                _ = guard.lost() => return,
                _ = tokio::time::sleep(ttl / 10) => {}
            }
            if guard.renew(ttl).await.is_err() {
                guard.lost().await;
                return;
            }
        }
    }

    async fn release(self: Box<Self>) {
        if let Err(e) = self.guard.release().await {
            tracing::warn!(target: "rota", error = %e, "run lock not released; it expires with its TTL");
        }
    }
}

/// Claims fires in batches: takes what is queued (up to [`CLAIM_BATCH`]),
/// sends it as one request, with up to [`CLAIMS_IN_FLIGHT`] requests at once.
async fn run_claims(
    cluster: Arc<dyn Cluster>,
    mut rx: mpsc::UnboundedReceiver<(FireRequest, ClaimReply)>,
) {
    let slots = Arc::new(Semaphore::new(CLAIMS_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let mut batch = vec![first];
        while batch.len() < CLAIM_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let (reqs, replies): (Vec<FireRequest>, Vec<ClaimReply>) = batch.into_iter().unzip();
            let answers = cluster.claim_fires(&reqs).await;
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
            drop(permit);
        });
    }
}

/// Reads the registry every `heartbeat_interval`.
async fn run_view(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(shared.config.heartbeat_interval) => {}
        }
        if let Err(e) = shared.refresh().await {
            tracing::warn!(target: "rota", error = %e, "cluster registry not read; keeping the last view");
        }
    }
}

/// Re-reads a shared store every `check_interval`.
async fn run_sync(local: DefaultScheduler, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = local.sync_store().await {
            tracing::warn!(target: "rota", error = %e, "shared store not re-read");
        }
    }
}

#[async_trait]
impl Scheduler for DistributedScheduler {
    async fn add(&self, task: DefaultTask) -> Result<()> {
        self.local.add(task).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        self.local.remove(id).await
    }

    async fn update(&self, task: DefaultTask) -> Result<()> {
        self.local.update(task).await
    }

    fn get(&self, id: &str) -> Result<DefaultTask> {
        self.local.get(id)
    }

    fn get_all(&self) -> Vec<DefaultTask> {
        self.local.get_all()
    }

    fn get_enabled(&self) -> Vec<DefaultTask> {
        self.local.get_enabled()
    }

    /// Registers this node, runs for leadership (if enabled), reads the
    /// registry, then starts firing.
    async fn start(&self) -> Result<()> {
        if self.local.status().status != crate::scheduler::Status::Stopped {
            return Err(Error::SchedulerAlreadyRunning);
        }
        let shared = &self.shared;
        let c = &shared.config;
        let mut info = NodeInfo::new(c.node_id.clone(), c.address.clone(), c.port);
        info.metadata.insert(
            "mode".into(),
            match (c.enable_task_distribution, c.enable_leader_election) {
                (true, _) => "distribute",
                (false, true) => "leader",
                (false, false) => "race",
            }
            .into(),
        );
        shared.cluster.register(info).await?;
        if c.enable_leader_election {
            let s = Arc::downgrade(shared);
            let callback = Arc::new(move |event: Leadership| {
                let Some(s) = s.upgrade() else { return };
                match event {
                    Leadership::Elected { term } => {
                        s.term.store(term, Ordering::Release);
                        s.leader.store(true, Ordering::Release);
                        tracing::info!(target: "rota", node = %s.node_id, term, "elected leader");
                    }
                    Leadership::Lost { term } => {
                        s.leader.store(false, Ordering::Release);
                        tracing::info!(target: "rota", node = %s.node_id, term, "leadership lost");
                    }
                }
            });
            shared.cluster.start_election(callback).await?;
        }
        if let Err(e) = shared.refresh().await {
            tracing::warn!(target: "rota", error = %e, "cluster registry not read at start");
        }
        let stop = CancellationToken::new();
        let (tx, rx) = mpsc::unbounded_channel();
        *shared.claims.lock().unwrap() = Some(tx);
        let mut tasks = vec![
            tokio::spawn(run_claims(shared.cluster.clone(), rx)),
            tokio::spawn(run_view(shared.clone(), stop.clone())),
        ];
        if self.local.store().is_shared() {
            let every = self.local.check_interval();
            tasks.push(tokio::spawn(run_sync(self.local.clone(), every, stop.clone())));
        }
        *shared.background.lock().unwrap() = Some((stop, tasks));
        self.local.start().await
    }

    /// Stops firing (gracefully), steps down, and leaves the registry. The
    /// cluster handle stays open (close it yourself).
    async fn stop(&self) -> Result<()> {
        let r = self.local.stop().await;
        let shared = &self.shared;
        *shared.claims.lock().unwrap() = None;
        let background = shared.background.lock().unwrap().take();
        if let Some((stop, tasks)) = background {
            stop.cancel();
            for t in tasks {
                t.abort();
            }
        }
        if shared.config.enable_leader_election {
            let _ = shared.cluster.stop_election().await;
        }
        shared.leader.store(false, Ordering::Release);
        let _ = shared.cluster.unregister(&shared.node_id).await;
        r
    }

    async fn pause(&self) -> Result<()> {
        self.local.pause().await
    }

    async fn resume(&self) -> Result<()> {
        self.local.resume().await
    }

    async fn run_now(&self, id: &str) -> Result<()> {
        self.local.run_now(id).await
    }

    async fn run_all(&self) -> Result<()> {
        self.local.run_all().await
    }

    fn status(&self) -> SchedulerStatus {
        self.local.status()
    }

    fn stats(&self) -> SchedulerStats {
        self.local.stats()
    }

    fn task_stats(&self, id: &str) -> Result<TaskStats> {
        self.local.task_stats(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_fires_evenly_and_moves_only_a_leavers_fires() {
        let three: Vec<Arc<str>> = ["node-a", "node-b", "node-c"].map(Arc::from).to_vec();
        let mut counts = [0usize; 3];
        for task in 0..20 {
            for sec in 0..300i64 {
                let owner = Shared::owner(&three, &format!("task-{task}"), sec * 1000).unwrap();
                counts[three.iter().position(|n| &**n == owner).unwrap()] += 1;
            }
        }
        let even = 6000 / 3;
        for c in counts {
            assert!(c.abs_diff(even) < even / 10, "uneven: {counts:?}");
        }
        // Node c leaves: fires of a and b keep their owner.
        let two = &three[..2];
        for sec in 0..1000i64 {
            let before = Shared::owner(&three, "t", sec * 1000).unwrap();
            let after = Shared::owner(two, "t", sec * 1000).unwrap();
            if before != "node-c" {
                assert_eq!(before, after);
            }
        }
    }
}
