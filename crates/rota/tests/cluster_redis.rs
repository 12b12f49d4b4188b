//! The Redis cluster backend against a real server: the shared cluster
//! conformance suite (`support/cluster_conformance.rs`: mutual exclusion with
//! fencing tokens, lock expiry, leader election and failover, the node
//! registry, broadcast, bad input), then Redis's own tests: config validation
//! and three faults: the server restarted empty, a persistent server (AOF,
//! fsync always) restarted with claims, run locks and marks kept (each on a
//! private `redis-server` on a free port, skipped if there is none) and
//! every connection dropped by a TCP proxy while nodes contend for a lock.
//!
//! Needs a server at `127.0.0.1:6379` (or `ROTA_TEST_REDIS_ADDR`, as
//! `host:port`). Each test uses a key prefix of its own
//! (`rota-test-cluster:<pid>:<n>:`) and deletes its keys at the end. Timings
//! are short (TTLs of 300-1000 ms), so the whole file runs in about 7 s.
//!
//! Run it alone with
//! `cargo test -p rota --features cluster-redis --test cluster_redis`.
#![cfg(feature = "cluster-redis")]

mod support;

use support::cluster_conformance::{eventually, invalid_field, Fixture, Params};
use support::faults::{self, DropParams, WindowEnd};
use support::servers::{Kind, PrivateServer};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rota::cluster::{
    Cluster, ClusterMessage, FireClaim, FireRequest, Leadership, NodeInfo, RedisCluster,
    RedisClusterConfig,
};
use rota::ErrorKind;

fn addr() -> String {
    std::env::var("ROTA_TEST_REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into())
}

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("rota-test-cluster:{}:{}:", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn config(prefix: &str, node: &str) -> RedisClusterConfig {
    RedisClusterConfig {
        addr: addr(),
        node_id: node.into(),
        key_prefix: prefix.into(),
        // Long enough that a loaded machine (CI runs tests in parallel on 2
        // cores) does not miss heartbeats or renewals, short enough to be fast.
        node_ttl: Duration::from_millis(1000),
        forget_after: Duration::from_millis(2000),
        election_ttl: Duration::from_millis(1000),
        connect_timeout: Duration::from_secs(2),
        ..RedisClusterConfig::default()
    }
}

/// Deletes every key under `prefix`.
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

cluster_conformance!(
    conformance,
    || async {
        let ns = unique_prefix();
        Fixture::new(Cleanup(ns.clone()), move |node| RedisCluster::new(config(&ns, &node)))
    },
    Params {
        attempts_per_node: 1000,
        lock_ttl: Duration::from_millis(400),
        expiry_slack: Duration::from_millis(500),
        election_settle: Duration::from_secs(2),
        failover_bound: Duration::from_secs(2),
        offline_within: Duration::from_millis(2500),
        forgotten_within: Duration::from_millis(3500),
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_clearly_and_fast() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let err = RedisCluster::new(config(&prefix, "")).await.unwrap_err();
    assert_eq!(invalid_field(&err), "node_id", "{err}");
    let err =
        RedisCluster::new(RedisClusterConfig { node_ttl: Duration::ZERO, ..config(&prefix, "n") })
            .await
            .unwrap_err();
    assert_eq!(invalid_field(&err), "node_ttl", "{err}");
    let err = RedisCluster::new(RedisClusterConfig { addr: String::new(), ..config(&prefix, "n") })
        .await
        .unwrap_err();
    assert_eq!(invalid_field(&err), "addr", "{err}");

    // Refused at once: nothing listens on port 1.
    let start = Instant::now();
    let err = RedisCluster::new(RedisClusterConfig {
        addr: "127.0.0.1:1".into(),
        ..config(&prefix, "n")
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

    // Unanswered (a blackholed address): bounded by the connect timeout.
    let start = Instant::now();
    let timeout = Duration::from_millis(500);
    let err = RedisCluster::new(RedisClusterConfig {
        addr: "10.255.255.1:6379".into(),
        connect_timeout: timeout,
        ..config(&prefix, "n")
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("10.255.255.1:6379"), "{err}");
    assert!(start.elapsed() < timeout + Duration::from_millis(500), "{:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_recovers_after_the_server_restarts_empty() {
    let Some(mut server) = PrivateServer::start(Kind::RedisEphemeral) else {
        println!("skipped: no redis-server to start");
        return;
    };
    let prefix = unique_prefix();
    let mut clusters = Vec::new();
    for i in 0..3 {
        let config =
            RedisClusterConfig { addr: server.addr(), ..config(&prefix, &format!("node-{i}")) };
        clusters.push(Arc::new(RedisCluster::new(config).await.unwrap()));
    }
    let terms: Arc<Mutex<Vec<u64>>> = Arc::default();
    let inboxes: Vec<Arc<Mutex<Vec<ClusterMessage>>>> = (0..3).map(|_| Arc::default()).collect();
    for (i, cluster) in clusters.iter().enumerate() {
        cluster.register(NodeInfo::new(format!("node-{i}"), "127.0.0.1", 7000)).await.unwrap();
        let terms = terms.clone();
        cluster
            .start_election(Arc::new(move |event| {
                if let Leadership::Elected { term } = event {
                    terms.lock().unwrap().push(term);
                }
            }))
            .await
            .unwrap();
        let inbox = inboxes[i].clone();
        cluster.subscribe(Arc::new(move |msg| inbox.lock().unwrap().push(msg))).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(2), || !terms.lock().unwrap().is_empty()).await);
    let first_term = terms.lock().unwrap()[0];
    let old = clusters[0].acquire_lock("job", Duration::from_secs(30)).await.unwrap().unwrap();

    // Restart the server; it comes back empty.
    let restart = Instant::now();
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.restart(), "redis-server did not restart");

    // Heartbeats register the nodes again.
    let mut registered = false;
    while restart.elapsed() < Duration::from_secs(5) {
        if clusters[1].nodes().await.is_ok_and(|nodes| nodes.len() == 3) {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(registered, "nodes not registered again after the restart");
    // A new term, larger than the old one although the counter was lost.
    assert!(
        eventually(Duration::from_secs(3), || terms
            .lock()
            .unwrap()
            .iter()
            .any(|&t| t > first_term))
        .await,
        "no new leader after the restart: {:?}",
        terms.lock().unwrap()
    );
    // The old grant is gone: its holder is told, the next grant's token is larger.
    tokio::time::timeout(Duration::from_secs(2), old.lost()).await.expect("old guard not told");
    let new = clusters[1].acquire_lock("job", Duration::from_secs(1)).await.unwrap().unwrap();
    assert!(new.token() > old.token(), "token {} after {}", new.token(), old.token());
    // Subscribers subscribed again.
    let mut delivered = false;
    while restart.elapsed() < Duration::from_secs(8) {
        let _ = clusters[2].broadcast(ClusterMessage::new("after-restart", Vec::new())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if inboxes
            .iter()
            .all(|inbox| inbox.lock().unwrap().iter().any(|m| m.kind == "after-restart"))
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "broadcast not delivered after the restart");
    println!("recovered from a server restart in {:?}", restart.elapsed());
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
}

/// With a persistent server (AOF, fsync always) a restart loses no
/// acknowledged write: a claimed fire stays claimed (exactly once), the run
/// lock stays held until its TTL, marks are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marks_and_fencing_survive_a_restart_of_a_persistent_server() {
    let Some(mut server) = PrivateServer::start(Kind::Redis) else {
        println!("skipped: no redis-server to start");
        return;
    };
    let prefix = unique_prefix();
    let mut nodes = Vec::new();
    for node in ["a", "b"] {
        let config = RedisClusterConfig { addr: server.addr(), ..config(&prefix, node) };
        nodes.push(RedisCluster::new(config).await.unwrap());
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    // Long enough that the lease outlives the restart.
    let fire = |scheduled_ms| FireRequest {
        task_id: "t".into(),
        scheduled_ms,
        run_lock: Some(Duration::from_secs(10)),
    };
    async fn claim(node: &RedisCluster, req: FireRequest) -> FireClaim {
        node.claim_fires(&[req]).await.pop().expect("one answer per request").unwrap()
    }
    let guard = match claim(a, fire(1000)).await {
        FireClaim::Won { previous: None, guard: Some(guard) } => guard,
        other => panic!("first claim: {other:?}"),
    };
    assert_eq!(a.advance_mark("m", 5).await.unwrap(), Some(None));

    let restart = Instant::now();
    assert!(tokio::task::block_in_place(|| server.restart()), "redis-server did not restart");
    let mut back = false;
    while restart.elapsed() < Duration::from_secs(5) {
        if b.nodes().await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "no call succeeded after the restart");

    // The fire stays claimed.
    assert!(matches!(claim(b, fire(1000)).await, FireClaim::Taken));
    // The next one is B's, but A's run still holds the run lock.
    let lease_valid = tokio::time::Instant::now() < guard.deadline();
    match claim(b, fire(2000)).await {
        FireClaim::Busy { previous: Some(1000) } if lease_valid => {}
        FireClaim::Won { previous: Some(1000), guard: Some(new) } if !lease_valid => {
            assert!(new.token() > guard.token(), "token {} after {}", new.token(), guard.token());
        }
        other => panic!("second claim (A's lease valid: {lease_valid}): {other:?}"),
    }
    // The mark is kept.
    assert_eq!(b.advance_mark("m", 5).await.unwrap(), None);
    assert_eq!(b.advance_mark("m", 6).await.unwrap(), Some(Some(5)));
    println!("claims, run lock and marks kept across a restart ({:?})", restart.elapsed());
    for node in &nodes {
        node.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_stay_exclusive_and_everything_recovers_when_connections_drop() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let params = DropParams {
        lock_ttl: Duration::from_millis(300),
        retry_pause: Duration::from_millis(2),
        min_grants: 10,
        window_end: WindowEnd::LeaseDeadline,
    };
    let run = faults::connection_drops(addr(), params, |port, i| {
        let config = RedisClusterConfig {
            addr: format!("127.0.0.1:{port}"),
            ..config(&prefix, &format!("node-{i}"))
        };
        async move { Arc::new(RedisCluster::new(config).await.unwrap()) as Arc<dyn Cluster> }
    })
    .await;
    run.finish().await;
}
