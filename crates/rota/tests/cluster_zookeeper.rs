//! The ZooKeeper cluster backend against a real server: the shared cluster
//! conformance suite (`support/cluster_conformance.rs`: mutual exclusion with
//! fencing tokens, lock expiry, leader election and failover, the node
//! registry, broadcast, bad input), then ZooKeeper's own tests: a holder
//! whose session is abandoned, config validation, and two faults: every connection dropped by a TCP proxy while
//! nodes contend for a lock, and the server killed and restarted (a private
//! ZooKeeper on a free port from Debian's `libzookeeper-java`, skipped if
//! there is none).
//!
//! Needs a server at `127.0.0.1:2181` (or `ROTA_TEST_ZOOKEEPER_ADDR`, as
//! `host:port`) whose minimum session timeout is at most 1 s (`tickTime=500`,
//! as `scripts/services.sh` starts it). Each test uses a root of its own
//! (`/rota-test-cluster/<pid>-<n>`) and deletes it at the end. Sessions last
//! 1 s, so the whole file runs in about 14 s.
//!
//! Run it alone with
//! `cargo test -p rota --features cluster-zookeeper --test cluster_zookeeper`.
#![cfg(feature = "cluster-zookeeper")]

mod support;

use support::cluster_conformance::{eventually, invalid_field, Fixture, Params};
use support::faults::{self, DropParams, WindowEnd};
use support::servers::{Kind, PrivateServer};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rota::cluster::{
    Cluster, ClusterMessage, Leadership, NodeInfo, NodeStatus, ZookeeperCluster,
    ZookeeperClusterConfig,
};
use rota::ErrorKind;

const SESSION: Duration = Duration::from_millis(1000);

fn addr() -> String {
    std::env::var("ROTA_TEST_ZOOKEEPER_ADDR").unwrap_or_else(|_| "127.0.0.1:2181".into())
}

fn unique_root() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("/rota-test-cluster/{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn config(root: &str, node: &str) -> ZookeeperClusterConfig {
    ZookeeperClusterConfig {
        servers: vec![addr()],
        node_id: node.into(),
        root: root.into(),
        session_timeout: SESSION,
        forget_after: Duration::from_millis(3000),
        connect_timeout: Duration::from_secs(2),
        ..ZookeeperClusterConfig::default()
    }
}

async fn nodes(root: &str, n: usize) -> Vec<Arc<ZookeeperCluster>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Arc::new(
            ZookeeperCluster::new(config(root, &format!("node-{i}"))).await.unwrap(),
        ));
    }
    out
}

/// Deletes `root` and everything under it (ephemeral nodes of abandoned
/// sessions may linger until their session expires: retried for a while).
struct Cleanup(String);

async fn delete_tree(client: &zookeeper_client::Client, path: &str) -> bool {
    let mut stack = vec![path.to_string()];
    let mut order = Vec::new();
    while let Some(p) = stack.pop() {
        match client.list_children(&p).await {
            Ok(children) => {
                stack.extend(children.into_iter().map(|c| format!("{p}/{c}")));
                order.push(p);
            }
            Err(zookeeper_client::Error::NoNode) => {}
            Err(_) => return false,
        }
    }
    let mut ok = true;
    for p in order.iter().rev() {
        match client.delete(p, None).await {
            Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
            Err(_) => ok = false,
        }
    }
    ok
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let root = self.0.clone();
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let Ok(client) = zookeeper_client::Client::connector()
                    .with_session_timeout(SESSION)
                    .connect(&addr())
                    .await
                else {
                    return;
                };
                for _ in 0..30 {
                    if delete_tree(&client, &root).await {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        });
        let _ = cleaned.join();
    }
}

cluster_conformance!(
    conformance,
    || async {
        let ns = unique_root();
        Fixture::new(Cleanup(ns.clone()), move |node| ZookeeperCluster::new(config(&ns, &node)))
    },
    Params {
        attempts_per_node: 1000,
        lock_ttl: Duration::from_millis(400),
        expiry_slack: Duration::from_millis(500),
        election_settle: SESSION * 2,
        failover_bound: SESSION + Duration::from_secs(1),
        offline_within: SESSION + Duration::from_secs(2),
        forgotten_within: Duration::from_millis(3000) + Duration::from_secs(2),
    }
);

/// ZooKeeper-specific: a holder whose session is abandoned (close is a crash)
/// loses its lock when the server expires the session, and is told at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holders_lock_is_freed_when_its_session_expires() {
    let root = unique_root();
    let _cleanup = Cleanup(root.clone());
    let clusters = nodes(&root, 2).await;
    let (a, b) = (&clusters[0], &clusters[1]);
    let held = b.acquire_lock("job", Duration::from_secs(5)).await.unwrap().unwrap();
    let crashed_at = Instant::now();
    b.close().await.unwrap();
    tokio::time::timeout(Duration::from_millis(100), held.lost()).await.expect("not told of loss");
    let taken = loop {
        if let Some(g) = a.acquire_lock("job", Duration::from_secs(5)).await.unwrap() {
            break g;
        }
        assert!(
            crashed_at.elapsed() < SESSION + Duration::from_secs(1),
            "lock not freed within the session timeout + 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let freed = crashed_at.elapsed();
    assert!(freed >= SESSION / 2, "freed after {freed:?}, before the session could expire");
    assert!(taken.token() > held.token());
    assert!(taken.release().await.unwrap());
    println!("crashed holder's lock freed after {freed:?} (session {SESSION:?})");
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_clearly_and_fast() {
    let root = unique_root();
    let _cleanup = Cleanup(root.clone());
    let err = ZookeeperCluster::new(config(&root, "")).await.unwrap_err();
    assert_eq!(invalid_field(&err), "node_id", "{err}");
    let err = ZookeeperCluster::new(ZookeeperClusterConfig {
        session_timeout: Duration::ZERO,
        ..config(&root, "n")
    })
    .await
    .unwrap_err();
    assert_eq!(invalid_field(&err), "session_timeout", "{err}");
    let err =
        ZookeeperCluster::new(ZookeeperClusterConfig { servers: vec![], ..config(&root, "n") })
            .await
            .unwrap_err();
    assert_eq!(invalid_field(&err), "servers", "{err}");
    for bad in ["relative", "/trailing/", ""] {
        let err = ZookeeperCluster::new(ZookeeperClusterConfig {
            root: bad.into(),
            ..config(&root, "n")
        })
        .await
        .unwrap_err();
        assert_eq!(invalid_field(&err), "root", "{err}");
    }
    let err = ZookeeperCluster::new(ZookeeperClusterConfig {
        forget_after: Duration::from_millis(10),
        ..config(&root, "n")
    })
    .await
    .unwrap_err();
    assert_eq!(invalid_field(&err), "forget_after", "{err}");

    // Refused at once: nothing listens on port 1.
    let start = Instant::now();
    let err = ZookeeperCluster::new(ZookeeperClusterConfig {
        servers: vec!["127.0.0.1:1".into()],
        ..config(&root, "n")
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

    // Unanswered (a blackholed address): bounded by the connect timeout.
    let start = Instant::now();
    let timeout = Duration::from_millis(500);
    let err = ZookeeperCluster::new(ZookeeperClusterConfig {
        servers: vec!["10.255.255.1:2181".into()],
        connect_timeout: timeout,
        ..config(&root, "n")
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("10.255.255.1:2181"), "{err}");
    assert!(start.elapsed() < timeout + Duration::from_millis(500), "{:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_stay_exclusive_and_everything_recovers_when_connections_drop() {
    let root = unique_root();
    let _cleanup = Cleanup(root.clone());
    // The sessions survive the drops: they reconnect at once. Every drop
    // marks the guards lost (the connection is gone), so grants are fewer
    // than on Redis; exclusivity is what this checks. A holder's window ends
    // at the last moment it still saw its guard as held.
    let params = DropParams {
        lock_ttl: Duration::from_millis(300),
        retry_pause: Duration::from_millis(2),
        min_grants: 5,
        window_end: WindowEnd::LastSeenHeld,
    };
    let run = faults::connection_drops(addr(), params, |port, i| {
        let config = ZookeeperClusterConfig {
            servers: vec![format!("127.0.0.1:{port}")],
            ..config(&root, &format!("node-{i}"))
        };
        async move { Arc::new(ZookeeperCluster::new(config).await.unwrap()) as Arc<dyn Cluster> }
    })
    .await;
    let (proxy, clusters, leading, inboxes) =
        (&run.proxy, &run.clusters, &run.leading, &run.inboxes);

    // A blackout longer than the session timeout: the sessions expire, each
    // handle connects a new one, registers again, runs for leadership again
    // and goes on delivering broadcasts.
    proxy.blackout(true);
    tokio::time::sleep(SESSION * 2 + Duration::from_millis(500)).await;
    proxy.blackout(false);
    let back = Instant::now();
    let mut registered = false;
    while back.elapsed() < Duration::from_secs(6) {
        let online = clusters[0]
            .nodes()
            .await
            .map(|nodes| nodes.iter().filter(|n| n.status != NodeStatus::Offline).count());
        if online.is_ok_and(|n| n == 3) {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(registered, "nodes not all online after the sessions expired");
    assert!(
        eventually(Duration::from_secs(5), || {
            leading.lock().unwrap().iter().filter(|&&t| t != 0).count() == 1
        })
        .await,
        "not exactly one leader after the sessions expired: {:?}",
        leading.lock().unwrap()
    );
    let mut delivered = false;
    while back.elapsed() < Duration::from_secs(10) {
        let _ = clusters[2].broadcast(ClusterMessage::new("after-expiry", Vec::new())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if inboxes
            .iter()
            .all(|inbox| inbox.lock().unwrap().iter().any(|m| m.kind == "after-expiry"))
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "broadcast not delivered after the sessions expired");
    let guard = clusters[1].acquire_lock("job", Duration::from_secs(1)).await.unwrap();
    assert!(guard.is_some(), "the lock is still held by an expired session");
    println!("{}; recovered from expired sessions in {:?}", run.summary, back.elapsed());
    run.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_recovers_after_the_server_restarts() {
    let Some(mut server) = PrivateServer::start(Kind::Zookeeper) else {
        println!("skipped: no ZooKeeper to start");
        return;
    };
    let root = unique_root();
    let mut clusters = Vec::new();
    for i in 0..3 {
        let config = ZookeeperClusterConfig {
            servers: vec![server.addr()],
            ..config(&root, &format!("node-{i}"))
        };
        clusters.push(Arc::new(ZookeeperCluster::new(config).await.unwrap()));
    }
    let terms: Arc<Mutex<Vec<u64>>> = Arc::default();
    let leading: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; 3]));
    let inboxes: Vec<Arc<Mutex<Vec<ClusterMessage>>>> = (0..3).map(|_| Arc::default()).collect();
    for (i, cluster) in clusters.iter().enumerate() {
        cluster.register(NodeInfo::new(format!("node-{i}"), "127.0.0.1", 7000)).await.unwrap();
        let (terms, leading) = (terms.clone(), leading.clone());
        cluster
            .start_election(Arc::new(move |event| match event {
                Leadership::Elected { term } => {
                    terms.lock().unwrap().push(term);
                    leading.lock().unwrap()[i] = term;
                }
                Leadership::Lost { .. } => leading.lock().unwrap()[i] = 0,
            }))
            .await
            .unwrap();
        let inbox = inboxes[i].clone();
        cluster.subscribe(Arc::new(move |msg| inbox.lock().unwrap().push(msg))).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(2), || !terms.lock().unwrap().is_empty()).await);
    let first_term = terms.lock().unwrap()[0];
    let old = clusters[0].acquire_lock("job", Duration::from_secs(30)).await.unwrap().unwrap();

    // Restart the server (it keeps its data).
    let restart = Instant::now();
    server.kill();
    // The holder is told at once: the connection is gone.
    tokio::time::timeout(Duration::from_secs(2), old.lost()).await.expect("old guard not told");
    assert!(server.restart(), "zookeeper did not restart");
    let restarted_in = restart.elapsed();

    // Registered again, one leader with a new term, the lock free again and
    // granted with a larger token, subscribers delivering again.
    let mut registered = false;
    while restart.elapsed() < restarted_in + Duration::from_secs(8) {
        let online = clusters[1]
            .nodes()
            .await
            .map(|nodes| nodes.iter().filter(|n| n.status != NodeStatus::Offline).count());
        if online.is_ok_and(|n| n == 3) {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(registered, "nodes not registered again after the restart");
    assert!(
        eventually(Duration::from_secs(5), || {
            let leading = leading.lock().unwrap();
            leading.iter().filter(|&&t| t != 0).count() == 1
                && leading.iter().any(|&t| t > first_term)
        })
        .await,
        "no single new leader after the restart: {:?}",
        leading.lock().unwrap()
    );
    let mut new = None;
    while restart.elapsed() < restarted_in + Duration::from_secs(8) {
        if let Ok(Some(guard)) = clusters[1].acquire_lock("job", Duration::from_secs(1)).await {
            new = Some(guard);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = new.expect("the lock was never free again");
    assert!(new.token() > old.token(), "token {} after {}", new.token(), old.token());
    let mut delivered = false;
    while restart.elapsed() < restarted_in + Duration::from_secs(10) {
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
    println!(
        "server back after {restarted_in:?}; everything recovered {:?} after the kill",
        restart.elapsed()
    );
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
}
