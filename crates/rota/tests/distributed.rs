//! The distributed scheduler on a real Redis: three nodes in one process, each
//! with its own cluster handle (its own connections), sharing one manual
//! clock, so that every step of the schedule is exact and fast while the
//! claims, locks, registry and election go through the real server.
//!
//! The chaos tests with separate daemon processes (SIGKILL, SIGSTOP, a
//! backend restart) are in `crates/rota-cli/tests/cluster_chaos.rs`.
//!
//! Needs Redis at `127.0.0.1:6379` (or `ROTA_TEST_REDIS_ADDR`).
#![cfg(feature = "cluster-redis")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rota::clock::ManualClock;
use rota::cluster::{Cluster, RedisCluster, RedisClusterConfig};
use rota::task::Task;
use rota::{
    DefaultTask, DistributedConfig, DistributedScheduler, ErrorKind, ExecutionQuery,
    ExecutionStatus, FuncHandler, MemoryStore, Scheduler, SchedulerConfig,
};

fn addr() -> String {
    std::env::var("ROTA_TEST_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("rota-test-dist:{}:{}:", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Deletes every key under the prefix.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = ::redis::Client::open(format!("redis://{}/0", addr())) else { return };
        let Ok(mut con) = client.get_connection() else { return };
        let keys: Vec<String> =
            ::redis::cmd("KEYS").arg(format!("{}*", self.0)).query(&mut con).unwrap_or_default();
        if !keys.is_empty() {
            let _: ::redis::RedisResult<()> = ::redis::cmd("DEL").arg(keys).query(&mut con);
        }
    }
}

async fn cluster(prefix: &str, node: &str) -> Arc<dyn Cluster> {
    let config = RedisClusterConfig {
        addr: addr(),
        node_id: node.into(),
        key_prefix: prefix.into(),
        node_ttl: Duration::from_millis(1000),
        forget_after: Duration::from_millis(3000),
        election_ttl: Duration::from_millis(1000),
        ..RedisClusterConfig::default()
    };
    Arc::new(RedisCluster::new(config).await.unwrap())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Distribute,
    Leader,
    Race,
}

/// One run seen by a handler: node, fencing token.
type Runs = Arc<Mutex<HashMap<(String, Timestamp), Vec<(String, Option<u64>)>>>>;

struct Nodes {
    nodes: Vec<DistributedScheduler>,
    clock: Arc<ManualClock>,
    runs: Runs,
    _cleanup: Cleanup,
}

fn start_instant() -> Timestamp {
    "2026-06-01T00:00:00Z".parse().unwrap()
}

impl Nodes {
    async fn new(n: usize, mode: Mode) -> Nodes {
        let prefix = unique_prefix();
        let cleanup = Cleanup(prefix.clone());
        let clock = Arc::new(ManualClock::new(start_instant()));
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = format!("node-{i}");
            let config = DistributedConfig {
                heartbeat_interval: Duration::from_millis(100),
                lock_timeout: Duration::from_millis(900),
                election_timeout: Duration::from_secs(1),
                enable_leader_election: mode == Mode::Leader,
                enable_task_distribution: mode == Mode::Distribute,
                ..DistributedConfig::new(id.clone(), cluster(&prefix, &id).await)
            };
            let scheduler = SchedulerConfig::new()
                .store(Arc::new(MemoryStore::new()))
                .clock(clock.clone())
                .time_zone(jiff::tz::TimeZone::UTC);
            nodes.push(DistributedScheduler::with_config(scheduler, config).unwrap());
        }
        Nodes { nodes, clock, runs: Arc::default(), _cleanup: cleanup }
    }

    /// Adds `count` tasks firing every second, on every node, recording runs.
    async fn add_tasks(&self, count: usize) {
        for node in &self.nodes {
            for t in 0..count {
                let runs = self.runs.clone();
                let handler = FuncHandler::new(format!("h{t}"), move |ctx| {
                    let runs = runs.clone();
                    async move {
                        runs.lock()
                            .unwrap()
                            .entry((ctx.task_id().to_string(), ctx.scheduled_at()))
                            .or_default()
                            .push((ctx.node_id().to_string(), ctx.fencing_token()));
                        Ok(())
                    }
                });
                let task = DefaultTask::new(format!("task-{t}"), "", "* * * * * *", handler);
                node.add(task).await.unwrap();
            }
        }
    }

    async fn start(&self) {
        for node in &self.nodes {
            node.start().await.unwrap();
        }
        for node in &self.nodes {
            node.refresh_view().await.unwrap();
        }
    }

    fn total_runs(&self) -> usize {
        self.runs.lock().unwrap().values().map(Vec::len).sum()
    }

    fn handled(&self, id_filter: impl Fn(&str) -> bool) -> i64 {
        self.nodes
            .iter()
            .filter(|n| id_filter(n.node_id()))
            .map(|n| {
                let s = n.stats();
                s.total_runs + s.missed_fires + s.skipped_fires
            })
            .sum()
    }

    /// Advances the clock one second and waits until `expect` more fires
    /// were handled (run, missed or skipped) across the nodes.
    async fn step(&self, expect: i64) {
        let before = self.handled(|_| true);
        self.clock.advance(Duration::from_secs(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.handled(|_| true) < before + expect {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of {expect} fires handled",
                self.handled(|_| true) - before
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for n in &self.nodes {
            n.scheduler().wait_idle().await;
        }
    }

    async fn stop(&self) {
        for node in &self.nodes {
            let _ = node.stop().await;
            node.cluster().close().await.unwrap();
        }
    }
}

fn assert_each_fire_ran_once(runs: &Runs) {
    for ((task, at), by) in runs.lock().unwrap().iter() {
        assert_eq!(by.len(), 1, "fire ({task}, {at}) ran {} times: {by:?}", by.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_fires_run_once_spread_evenly_with_fencing_tokens() {
    let c = Nodes::new(3, Mode::Distribute).await;
    c.add_tasks(50).await;
    c.start().await;
    for _ in 0..20 {
        c.step(50).await;
    }
    assert_eq!(c.total_runs(), 1000);
    assert_each_fire_ran_once(&c.runs);
    let mut per_node: HashMap<String, usize> = HashMap::new();
    let mut by_task: HashMap<String, Vec<(Timestamp, u64)>> = HashMap::new();
    for ((task, at), by) in c.runs.lock().unwrap().iter() {
        *per_node.entry(by[0].0.clone()).or_default() += 1;
        by_task.entry(task.clone()).or_default().push((*at, by[0].1.expect("a fencing token")));
    }
    println!("fires per node: {per_node:?}");
    assert_eq!(per_node.len(), 3);
    for (node, n) in &per_node {
        assert!(n.abs_diff(333) <= 66, "node {node} ran {n} of 1000 fires: {per_node:?}");
    }
    for (task, mut fires) in by_task {
        fires.sort();
        for w in fires.windows(2) {
            assert!(w[1].1 > w[0].1, "{task}: fencing tokens not increasing: {w:?}");
        }
    }
    // History records name the node that ran each fire.
    for node in &c.nodes {
        let history = node
            .scheduler()
            .executions(&ExecutionQuery { limit: Some(10_000), ..Default::default() })
            .await
            .unwrap();
        assert!(!history.is_empty());
        assert!(history.iter().all(|e| e.node_id == node.node_id()));
        assert!(history.iter().all(|e| e.status == ExecutionStatus::Completed));
    }
    let stats = c.nodes[0].distributed_stats();
    assert_eq!((stats.node_id.as_str(), stats.total_nodes, stats.online_nodes), ("node-0", 3, 3));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_only_the_leader_runs_fires() {
    let c = Nodes::new(3, Mode::Leader).await;
    c.add_tasks(10).await;
    c.start().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.nodes.iter().filter(|n| n.is_leader()).count() != 1 {
        assert!(std::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = c.nodes.iter().find(|n| n.is_leader()).unwrap().node_id().to_string();
    for _ in 0..5 {
        // Only the leader handles fires; the others leave them.
        c.step(10).await;
    }
    assert_eq!(c.total_runs(), 50);
    assert_each_fire_ran_once(&c.runs);
    assert!(c.runs.lock().unwrap().values().all(|by| by[0].0 == leader));
    for n in &c.nodes {
        let stats = n.distributed_stats();
        assert_eq!(stats.is_leader, n.node_id() == leader);
        if n.node_id() != leader {
            assert_eq!(n.fires_left_to_others(), 50);
        }
    }
    // The leader steps down: another node takes over, and fires go on.
    let old = c.nodes.iter().find(|n| n.is_leader()).unwrap();
    old.stop().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !c.nodes.iter().any(|n| n.is_leader() && n.node_id() != leader) {
        assert!(std::time::Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.step(10).await;
    assert_eq!(c.total_runs(), 60);
    assert_each_fire_ran_once(&c.runs);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_nodes_run_each_fire_once_and_count_unclaimed_fires_as_missed() {
    // Every node tries every fire: the claim alone decides, as it does for a
    // node that wakes from a pause and tries fires already claimed.
    let c = Nodes::new(3, Mode::Race).await;
    c.add_tasks(20).await;
    c.start().await;
    for _ in 0..10 {
        // Each fire: one node runs it, the others find it taken.
        c.step(20).await;
    }
    assert_eq!(c.total_runs(), 200);
    assert_each_fire_ran_once(&c.runs);
    let missed: i64 = c.nodes.iter().map(|n| n.stats().missed_fires).sum();
    assert_eq!(missed, 0);

    // Every node is paused for 3 s of the schedule (no node claims those
    // fires), then resumed at the instant of the third. The first is past
    // its misfire grace (1 s); the last two are within it and run. The
    // claim of the second finds the first unclaimed and counts it, once
    // for the whole cluster.
    for n in &c.nodes {
        n.pause().await.unwrap();
    }
    for _ in 0..3 {
        c.clock.advance(Duration::from_secs(1));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = c.handled(|_| true);
    for n in &c.nodes {
        n.resume().await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.handled(|_| true) < before + 20 * 2 + 20 {
        assert!(std::time::Instant::now() < deadline, "resumed fires not handled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for n in &c.nodes {
        n.scheduler().wait_idle().await;
    }
    c.step(20).await;
    assert_each_fire_ran_once(&c.runs);
    // The two fires due at the resume run back to back on different nodes:
    // one may find the other's run lock still held and skip (overlap).
    let skipped: i64 = c.nodes.iter().map(|n| n.stats().skipped_fires).sum();
    assert_eq!(c.total_runs() as i64 + skipped, 260);
    assert!(skipped <= 20, "{skipped} skipped");
    let missed: i64 = c.nodes.iter().map(|n| n.stats().missed_fires).sum();
    assert_eq!(missed, 20);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_stops_getting_fires_and_lost_ones_are_counted() {
    let c = Nodes::new(3, Mode::Distribute).await;
    c.add_tasks(30).await;
    c.start().await;
    c.step(30).await;
    assert_eq!(c.total_runs(), 30);
    // node-2 crashes: its cluster handle closes without leaving the registry.
    let gone = &c.nodes[2];
    gone.scheduler().pause().await.unwrap();
    gone.cluster().close().await.unwrap();
    // Until the registry shows it offline (node TTL 1 s), its fires are lost;
    // the next claim of each task counts them as missed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.nodes[..2].iter().any(|n| n.distributed_stats().online_nodes != 2) {
        c.clock.advance(Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(std::time::Instant::now() < deadline, "node-2 never went offline");
    }
    // From now on every fire goes to node-0 or node-1.
    for _ in 0..5 {
        let runs_before = c.total_runs();
        c.clock.advance(Duration::from_secs(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while c.total_runs() < runs_before + 30 {
            if std::time::Instant::now() > deadline {
                for n in &c.nodes {
                    eprintln!("{}: {:?} {:?}", n.node_id(), n.stats(), n.distributed_stats());
                    eprintln!(
                        "  known: {:?}",
                        n.known_nodes().iter().map(|k| (&k.id, k.status)).collect::<Vec<_>>()
                    );
                }
                panic!("fires not run by the others: {} of 30", c.total_runs() - runs_before);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Runs release their run locks before the next fire is claimed.
        for n in &c.nodes[..2] {
            n.scheduler().wait_idle().await;
        }
    }
    for n in &c.nodes[..2] {
        n.scheduler().wait_idle().await;
    }
    assert_each_fire_ran_once(&c.runs);
    assert!(c.runs.lock().unwrap().iter().all(|((_, at), by)| by[0].0 != "node-2"
        || *at <= start_instant() + jiff::SignedDuration::from_secs(1)));
    // Every second of the schedule: each fire either ran or was counted
    // missed by a surviving node (the lost ones of node-2).
    let seconds = c.nodes[0].scheduler().clock().now().duration_since(start_instant()).as_secs();
    let expected = 30 * seconds;
    let missed: i64 = c.nodes[..2].iter().map(|n| n.stats().missed_fires).sum();
    let ran = c.total_runs() as i64;
    assert_eq!(ran + missed, expected, "ran {ran} + missed {missed} != {expected}");
    assert!(missed > 0, "node-2's lost fires were not counted");
    // ... and visible in the history of the nodes that counted them.
    let mut recorded = 0;
    for n in &c.nodes[..2] {
        let query = ExecutionQuery { limit: Some(100_000), ..Default::default() };
        let history = n.scheduler().executions(&query).await.unwrap();
        for e in history.iter().filter(|e| e.status == ExecutionStatus::Missed) {
            assert_eq!(e.node_id, n.node_id());
            assert!(e.error.contains("claimed by no node"), "{}", e.error);
            recorded += 1;
        }
    }
    assert!(recorded > 0, "no history record of the missed fires");
    for n in &c.nodes[..2] {
        let _ = n.stop().await;
        n.cluster().close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_is_skipped_cluster_wide_and_a_lost_run_lock_cancels_the_run() {
    let c = Nodes::new(3, Mode::Race).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let outcomes: Arc<Mutex<Vec<String>>> = Arc::default();
    for node in &c.nodes {
        let (release, outcomes) = (release.clone(), outcomes.clone());
        let handler = FuncHandler::new("long", move |ctx| {
            let (release, outcomes) = (release.clone(), outcomes.clone());
            async move {
                tokio::select! {
                    _ = release.notified() => outcomes.lock().unwrap().push("released".into()),
                    _ = ctx.cancellation_token().cancelled() => {
                        outcomes.lock().unwrap().push("cancelled".into());
                        return Err("cancelled".into());
                    }
                }
                Ok(())
            }
        });
        node.add(DefaultTask::new("long", "", "* * * * * *", handler)).await.unwrap();
    }
    c.start().await;
    // Fire 1 starts on some node and holds the run lock.
    c.clock.advance(Duration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let skipped = || c.nodes.iter().map(|n| n.stats().skipped_fires).sum::<i64>();
    // Fires 2 and 3: the claimer finds the run lock held and skips, wherever
    // it is (the other nodes find the fire taken).
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.clock.advance(Duration::from_secs(1));
    while skipped() < 1 {
        assert!(std::time::Instant::now() < deadline, "fire 2 not skipped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.clock.advance(Duration::from_secs(1));
    while skipped() < 2 {
        assert!(std::time::Instant::now() < deadline, "fire 3 not skipped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The run goes on past its lock TTL (900 ms): renewals keep it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(outcomes.lock().unwrap().is_empty(), "{:?}", outcomes.lock().unwrap());
    // Someone deletes the run lock (as an expiry would): the run is told.
    let client = ::redis::Client::open(format!("redis://{}/0", addr())).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}lock:run/long", c._cleanup.0);
    let n: i64 = ::redis::cmd("DEL").arg(&key).query_async(&mut con).await.unwrap();
    assert_eq!(n, 1, "run lock {key} not found");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while outcomes.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "run not cancelled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*outcomes.lock().unwrap(), vec!["cancelled".to_string()]);
    let mut errors = Vec::new();
    for n in &c.nodes {
        n.scheduler().wait_idle().await;
        let t = n.get("long").unwrap();
        if t.failed_count() > 0 {
            errors.push(t.last_error().to_string());
        }
    }
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("run lock was lost"), "{errors:?}");
    // The lock is free again: the next fire runs.
    c.clock.advance(Duration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while outcomes.lock().unwrap().len() < 2 {
        release.notify_waiters();
        assert!(std::time::Instant::now() < deadline, "next fire did not run");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(outcomes.lock().unwrap()[1], "released");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_refused_with_the_field() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let cl = cluster(&prefix, "node-a").await;
    let store = Arc::new(MemoryStore::new());
    let err =
        DistributedScheduler::new(store.clone(), DistributedConfig::new("node-b", cl.clone()))
            .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("node_id"), "{err}");
    let err = DistributedScheduler::new(
        store,
        DistributedConfig { lock_timeout: Duration::ZERO, ..DistributedConfig::new("node-a", cl) },
    )
    .unwrap_err();
    assert!(err.to_string().contains("lock_timeout"), "{err}");
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shared_store_a_task_added_on_one_node_is_run_by_the_cluster() {
    use rota::{RedisOptions, RedisStore};
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let clock = Arc::new(ManualClock::new(start_instant()));
    let runs: Runs = Arc::default();
    let mut nodes = Vec::new();
    let mut handlers = Vec::new();
    for i in 0..3 {
        let id = format!("node-{i}");
        let store = RedisStore::connect_with(
            &format!("redis://{}/0", addr()),
            RedisOptions { prefix: format!("{prefix}store:"), ..Default::default() },
        )
        .await
        .unwrap();
        let r = runs.clone();
        let handler = FuncHandler::new("shared", move |ctx| {
            let r = r.clone();
            async move {
                r.lock()
                    .unwrap()
                    .entry((ctx.task_id().to_string(), ctx.scheduled_at()))
                    .or_default()
                    .push((ctx.node_id().to_string(), ctx.fencing_token()));
                Ok(())
            }
        });
        let scheduler = SchedulerConfig::new()
            .store(Arc::new(store))
            .clock(clock.clone())
            .check_interval(Duration::from_millis(50))
            .time_zone(jiff::tz::TimeZone::UTC)
            .handler(handler.clone());
        handlers.push(handler);
        let config = DistributedConfig {
            heartbeat_interval: Duration::from_millis(100),
            enable_task_distribution: true,
            ..DistributedConfig::new(id.clone(), cluster(&prefix, &id).await)
        };
        let ds = DistributedScheduler::with_config(scheduler, config).unwrap();
        ds.start().await.unwrap();
        nodes.push(ds);
    }
    // Added on node-0 while everything runs: the others pick it up.
    assert!(nodes.iter().all(|n| n.get_all().is_empty()));
    let task = DefaultTask::new("added-late", "", "* * * * * *", handlers[0].clone());
    nodes[0].add(task).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while nodes.iter().any(|n| n.get("added-late").is_err()) {
        assert!(std::time::Instant::now() < deadline, "the new task did not reach every node");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in &nodes {
        n.refresh_view().await.unwrap();
    }
    for step in 1..=6 {
        clock.advance(Duration::from_secs(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while runs.lock().unwrap().len() < step {
            if std::time::Instant::now() > deadline {
                for n in &nodes {
                    eprintln!("{}: {:?} {:?}", n.node_id(), n.stats(), n.task_stats("added-late"));
                }
                panic!("fire {step} did not run: {:?}", runs.lock().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(runs.lock().unwrap().len(), 6);
    assert_each_fire_ran_once(&runs);
    // Removed on node-0: gone from the others too, and it fires no more.
    nodes[0].remove("added-late").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while nodes.iter().any(|n| n.get("added-late").is_ok()) {
        assert!(std::time::Instant::now() < deadline, "the removal did not reach every node");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    clock.advance(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(runs.lock().unwrap().len(), 6);
    for n in &nodes {
        n.stop().await.unwrap();
        n.cluster().close().await.unwrap();
    }
}
