//! The etcd cluster backend against a real server: the shared cluster
//! conformance suite (`support/cluster_conformance.rs`: mutual exclusion with
//! fencing tokens, lock expiry, leader election and failover, the node
//! registry, broadcast, bad input), then etcd's own config validation.
//!
//! Needs etcd at `127.0.0.1:2379` (or `ROTA_TEST_ETCD_ENDPOINT`, as
//! `host:port`; `scripts/services.sh` starts one). Each test uses a key
//! prefix of its own (`/rota-test-cluster/<pid>/<n>/`) and deletes its keys
//! at the end (with `etcdctl`, if installed). etcd lease TTLs are whole
//! seconds with a server minimum of about 2 s, so the TTLs here are 2 s and
//! the file takes about 18 s.
//!
//! Two faults: a private `etcd` (free ports, skipped if there is no `etcd`)
//! killed and restarted, and every connection dropped by a TCP proxy while
//! nodes contend for a lock.
//!
//! Run it alone with
//! `cargo test -p rota --features cluster-etcd --test cluster_etcd`.
#![cfg(feature = "cluster-etcd")]

mod support;

use support::cluster_conformance::{eventually, invalid_field, Fixture, Params};
use support::faults::{self, DropParams, WindowEnd};
use support::servers::{Kind, PrivateServer};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rota::cluster::{
    Cluster, ClusterMessage, EtcdCluster, EtcdClusterConfig, Leadership, NodeInfo, NodeStatus,
};
use rota::ErrorKind;

fn endpoint() -> String {
    std::env::var("ROTA_TEST_ETCD_ENDPOINT").unwrap_or_else(|_| "127.0.0.1:2379".into())
}

fn unique_prefix() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("/rota-test-cluster/{}/{}/", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn config(prefix: &str, node: &str) -> EtcdClusterConfig {
    EtcdClusterConfig {
        endpoints: vec![endpoint()],
        node_id: node.into(),
        key_prefix: prefix.into(),
        // etcd's minimum lease TTL with default settings is 2 s.
        node_ttl: Duration::from_secs(2),
        forget_after: Duration::from_secs(4),
        election_ttl: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..EtcdClusterConfig::default()
    }
}

/// Deletes every key under `prefix`.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoint()))
            .args(["del", "--prefix", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

cluster_conformance!(
    conformance,
    || async {
        let ns = unique_prefix();
        Fixture::new(Cleanup(ns.clone()), move |node| EtcdCluster::new(config(&ns, &node)))
    },
    Params {
        attempts_per_node: 1000,
        // etcd's minimum lease TTL is 2 s; it checks expiry every 500 ms.
        lock_ttl: Duration::from_secs(2),
        expiry_slack: Duration::from_millis(1500),
        election_settle: Duration::from_secs(4),
        failover_bound: Duration::from_secs(3),
        offline_within: Duration::from_millis(3500),
        forgotten_within: Duration::from_secs(6),
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_clearly_and_fast() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let err = EtcdCluster::new(config(&prefix, "")).await.unwrap_err();
    assert_eq!(invalid_field(&err), "node_id", "{err}");
    let err =
        EtcdCluster::new(EtcdClusterConfig { node_ttl: Duration::ZERO, ..config(&prefix, "n") })
            .await
            .unwrap_err();
    assert_eq!(invalid_field(&err), "node_ttl", "{err}");
    let err = EtcdCluster::new(EtcdClusterConfig { endpoints: vec![], ..config(&prefix, "n") })
        .await
        .unwrap_err();
    assert_eq!(invalid_field(&err), "endpoints", "{err}");
    let err =
        EtcdCluster::new(EtcdClusterConfig { endpoints: vec![" ".into()], ..config(&prefix, "n") })
            .await
            .unwrap_err();
    assert_eq!(invalid_field(&err), "endpoints", "{err}");
    let err = EtcdCluster::new(EtcdClusterConfig {
        forget_after: Duration::from_secs(1),
        ..config(&prefix, "n")
    })
    .await
    .unwrap_err();
    assert_eq!(invalid_field(&err), "forget_after", "{err}");

    // Refused at once: nothing listens on port 1.
    let start = Instant::now();
    let err = EtcdCluster::new(EtcdClusterConfig {
        endpoints: vec!["127.0.0.1:1".into()],
        connect_timeout: Duration::from_secs(1),
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
    let err = EtcdCluster::new(EtcdClusterConfig {
        endpoints: vec!["10.255.255.1:2379".into()],
        connect_timeout: timeout,
        ..config(&prefix, "n")
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("10.255.255.1:2379"), "{err}");
    assert!(start.elapsed() < timeout + Duration::from_millis(500), "{:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_recovers_after_the_server_restarts() {
    let Some(mut server) = PrivateServer::start(Kind::Etcd) else {
        println!("skipped: no etcd to start");
        return;
    };
    let prefix = unique_prefix();
    let mut clusters = Vec::new();
    for i in 0..3 {
        let config = EtcdClusterConfig {
            endpoints: vec![server.addr()],
            ..config(&prefix, &format!("node-{i}"))
        };
        clusters.push(Arc::new(EtcdCluster::new(config).await.unwrap()));
    }
    let leading: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; 3]));
    let inboxes: Vec<Arc<Mutex<Vec<ClusterMessage>>>> = (0..3).map(|_| Arc::default()).collect();
    for (i, cluster) in clusters.iter().enumerate() {
        cluster.register(NodeInfo::new(format!("node-{i}"), "127.0.0.1", 7000)).await.unwrap();
        let leading = leading.clone();
        cluster
            .start_election(Arc::new(move |event| match event {
                Leadership::Elected { term } => leading.lock().unwrap()[i] = term,
                Leadership::Lost { .. } => leading.lock().unwrap()[i] = 0,
            }))
            .await
            .unwrap();
        let inbox = inboxes[i].clone();
        cluster.subscribe(Arc::new(move |msg| inbox.lock().unwrap().push(msg))).await.unwrap();
    }
    let one_leader = || leading.lock().unwrap().iter().filter(|&&t| t != 0).count() == 1;
    assert!(eventually(Duration::from_secs(2), one_leader).await);
    let ttl = Duration::from_secs(2);
    let old = clusters[0].acquire_lock("job", ttl).await.unwrap().unwrap();

    // Restart the server; etcd keeps its data and leases.
    let restart = Instant::now();
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.restart(), "etcd did not restart");
    let restarted = restart.elapsed();

    // Heartbeats keep (or put back) the nodes online.
    let mut registered = false;
    while restart.elapsed() < Duration::from_secs(8) {
        let online = clusters[1]
            .nodes()
            .await
            .map(|nodes| nodes.iter().filter(|n| n.status != NodeStatus::Offline).count());
        if online.is_ok_and(|n| n == 3) {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(registered, "nodes not all online after the restart");
    assert!(
        eventually(Duration::from_secs(5), one_leader).await,
        "not exactly one leader after the restart: {:?}",
        leading.lock().unwrap()
    );
    // The old grant is never held twice: while its guard holds, nobody else
    // gets the lock; the next grant's token is larger.
    let new = loop {
        let held = !old.is_lost();
        if let Ok(Some(g)) = clusters[1].acquire_lock("job", ttl).await {
            assert!(!held || old.is_lost(), "granted while the old guard held it");
            break g;
        }
        assert!(restart.elapsed() < Duration::from_secs(12), "lock never granted again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(new.token() > old.token(), "token {} after {}", new.token(), old.token());
    assert!(old.is_lost());
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
    println!("recovered from a server restart (down {restarted:?}) in {:?}", restart.elapsed());
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_stay_exclusive_and_everything_recovers_when_connections_drop() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let params = DropParams {
        lock_ttl: Duration::from_secs(2),
        retry_pause: Duration::from_millis(2),
        min_grants: 5,
        window_end: WindowEnd::LeaseDeadline,
    };
    let run = faults::connection_drops(endpoint(), params, |port, i| {
        let config = EtcdClusterConfig {
            endpoints: vec![format!("127.0.0.1:{port}")],
            ..config(&prefix, &format!("node-{i}"))
        };
        async move { Arc::new(EtcdCluster::new(config).await.unwrap()) as Arc<dyn Cluster> }
    })
    .await;
    run.finish().await;
}
