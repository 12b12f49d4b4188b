//! The connection-drop fault test every cluster backend runs: three nodes
//! behind a [`Proxy`] contend for one lock while every connection is dropped
//! every 250 ms, then the registry, the election and the bus must recover.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rota::cluster::{Cluster, ClusterMessage, Leadership, NodeInfo, NodeStatus};

use super::cluster_conformance::eventually;
use super::tcp_proxy::Proxy;

/// A lock holder's valid window: from the grant's reply to the moment it
/// stopped using the lock or its lease ran out, whichever came first (or, with
/// [`WindowEnd::LastSeenHeld`], the last moment it still saw its guard as
/// held).
#[derive(Debug, Clone, Copy)]
struct Window {
    token: u64,
    #[allow(dead_code)] // shown in failure messages
    node: usize,
    start: Instant,
    end: Instant,
}

/// Where a holder's window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEnd {
    /// When it stopped using the lock or its local lease deadline, whichever
    /// came first; some holders work past the TTL and renew on the way.
    LeaseDeadline,
    /// The last moment it still saw its guard as held (checked before each
    /// renewal).
    LastSeenHeld,
}

/// What differs between backends in [`connection_drops`].
#[derive(Debug, Clone, Copy)]
pub struct DropParams {
    /// The TTL of each lock grant.
    pub lock_ttl: Duration,
    /// Pause after a refused or failed acquire.
    pub retry_pause: Duration,
    /// Grants that must be seen (the chaos goes on until then, up to five
    /// times as long).
    pub min_grants: usize,
    /// Where a holder's window ends.
    pub window_end: WindowEnd,
}

/// The nodes after [`connection_drops`], still running, for backends that go
/// on with more faults.
pub struct DropRun {
    pub proxy: Proxy,
    pub clusters: Vec<Arc<dyn Cluster>>,
    /// Each node's current term, 0 while it does not lead.
    pub leading: Arc<Mutex<Vec<u64>>>,
    /// The messages each node received.
    pub inboxes: Vec<Arc<Mutex<Vec<ClusterMessage>>>>,
    /// Grants, drops and recovery time, to print.
    pub summary: String,
}

impl DropRun {
    /// Closes every node.
    pub async fn close(self) {
        for cluster in &self.clusters {
            cluster.close().await.unwrap();
        }
    }

    /// Prints the summary and closes every node.
    pub async fn finish(self) {
        println!("{}", self.summary);
        self.close().await;
    }
}

/// Three nodes made by `make(port, i)` on a proxy to `target` register, run
/// for leadership and subscribe; their workers contend for one lock while
/// every connection is dropped every 250 ms. Checks that no token was granted
/// twice and no two holders' windows overlap, then that all nodes are online
/// again, exactly one leads and broadcasts reach everyone.
pub async fn connection_drops<F, Fut>(target: String, params: DropParams, make: F) -> DropRun
where
    F: Fn(u16, usize) -> Fut,
    Fut: Future<Output = Arc<dyn Cluster>>,
{
    let DropParams { lock_ttl, retry_pause, min_grants, window_end } = params;
    let proxy = Proxy::start(target).await;
    let mut clusters = Vec::new();
    for i in 0..3 {
        clusters.push(make(proxy.port, i).await);
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

    // Three seconds of contention on one lock while every connection is
    // dropped every 250 ms.
    // Under load (CI on 2 cores) grants come slower: keep the chaos going
    // until enough grants were seen, up to five times as long.
    let chaos = Duration::from_secs(3);
    let start = Instant::now();
    let windows: Arc<Mutex<Vec<Window>>> = Arc::default();
    let mut workers = Vec::new();
    for (node, cluster) in clusters.iter().enumerate() {
        for _ in 0..2 {
            let (cluster, windows) = (cluster.clone(), windows.clone());
            workers.push(tokio::spawn(async move {
                let ttl = lock_ttl;
                while start.elapsed() < chaos
                    || (start.elapsed() < chaos * 5 && windows.lock().unwrap().len() < min_grants)
                {
                    let guard = match cluster.acquire_lock("job", ttl).await {
                        Ok(Some(guard)) => guard,
                        Ok(None) | Err(_) => {
                            tokio::time::sleep(retry_pause).await;
                            continue;
                        }
                    };
                    let granted = Instant::now();
                    let mut end = granted;
                    let steps = if guard.token() % 3 == 0 { 4 } else { 1 };
                    for _ in 0..steps {
                        tokio::time::sleep(Duration::from_millis(guard.token() % 20 + 30)).await;
                        if window_end == WindowEnd::LastSeenHeld {
                            let now = Instant::now();
                            if guard.is_lost() {
                                break;
                            }
                            end = now;
                        }
                        if guard.renew(ttl).await.is_err() {
                            break;
                        }
                    }
                    if window_end == WindowEnd::LeaseDeadline {
                        end = Instant::now().min(guard.deadline().into_std());
                    }
                    if end > granted {
                        let token = guard.token();
                        windows.lock().unwrap().push(Window { token, node, start: granted, end });
                    }
                    let _ = guard.release().await;
                }
            }));
        }
    }
    let mut drops = 0;
    while start.elapsed() < chaos
        || (start.elapsed() < chaos * 5 && windows.lock().unwrap().len() < min_grants)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        proxy.drop_all();
        drops += 1;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let mut windows = windows.lock().unwrap().clone();
    windows.sort_by_key(|w| w.token);
    assert!(windows.len() >= min_grants, "only {} grants", windows.len());
    for pair in windows.windows(2) {
        assert!(pair[1].token > pair[0].token, "token granted twice: {pair:?}");
        assert!(pair[1].start >= pair[0].end, "two holders at once: {pair:?}");
    }

    // Afterwards: registered, one leader, broadcasts delivered.
    let recovery = Instant::now();
    let mut registered = false;
    while recovery.elapsed() < Duration::from_secs(3) {
        let online = clusters[0]
            .nodes()
            .await
            .map(|nodes| nodes.iter().filter(|n| n.status != NodeStatus::Offline).count());
        if online.is_ok_and(|n| n == 3) {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(registered, "nodes not all online after the drops");
    assert!(
        eventually(Duration::from_secs(3), || {
            leading.lock().unwrap().iter().filter(|&&t| t != 0).count() == 1
        })
        .await,
        "not exactly one leader: {:?}",
        leading.lock().unwrap()
    );
    let mut delivered = false;
    while recovery.elapsed() < Duration::from_secs(6) {
        let _ = clusters[1].broadcast(ClusterMessage::new("after-drops", Vec::new())).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if inboxes.iter().all(|inbox| inbox.lock().unwrap().iter().any(|m| m.kind == "after-drops"))
        {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "broadcast not delivered after the drops");
    let summary = format!(
        "{} exclusive grants across {drops} connection drops; recovered in {:?}",
        windows.len(),
        recovery.elapsed()
    );
    DropRun { proxy, clusters, leading, inboxes, summary }
}
