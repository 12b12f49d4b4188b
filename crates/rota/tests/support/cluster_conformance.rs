//! One conformance suite for every [`Cluster`] backend: written once, run
//! against Redis, etcd, ZooKeeper and Consul (each backend's test file invokes
//! [`cluster_conformance!`] with a factory and its timing parameters).
//!
//! Each check takes a fresh [`Fixture`]: a namespace of its own (key prefix,
//! root znode or fake server) in which it connects as many nodes as it needs.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rota::cluster::{Cluster, ClusterMessage, Leadership, NodeInfo, NodeStatus};
use rota::{Error, ErrorKind};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Connects one node, by ID, to a test's own namespace.
pub type Connect = Box<dyn Fn(String) -> BoxFuture<Arc<dyn Cluster>> + Send + Sync>;

/// One check's namespace: connects nodes, and cleans up when dropped.
pub struct Fixture {
    /// Connects a node with the given ID.
    pub connect: Connect,
    /// Dropped at the end of the check (deletes keys, stops a fake server).
    pub guard: Box<dyn Send + Sync>,
}

impl Fixture {
    /// A fixture whose nodes are made by `new` (a backend's constructor) and
    /// that drops `guard` at the end of the check.
    pub fn new<C, Fut, New>(guard: impl Send + Sync + 'static, new: New) -> Fixture
    where
        C: Cluster + 'static,
        Fut: Future<Output = rota::Result<C>> + Send + 'static,
        New: Fn(String) -> Fut + Send + Sync + 'static,
    {
        Fixture {
            connect: Box::new(move |node| {
                let made = new(node);
                Box::pin(async move { Arc::new(made.await.unwrap()) as Arc<dyn Cluster> })
            }),
            guard: Box::new(guard),
        }
    }

    /// Connects `node-0` .. `node-{n-1}`.
    pub async fn nodes(&self, n: usize) -> Vec<Arc<dyn Cluster>> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push((self.connect)(format!("node-{i}")).await);
        }
        out
    }
}

/// A backend's timings, from its configuration used by the factory.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Acquire attempts per node (3 nodes) in the mutual exclusion check.
    pub attempts_per_node: usize,
    /// TTL of the locks in the expiry check (at least the backend's minimum).
    pub lock_ttl: Duration,
    /// How long past `lock_ttl` an unrenewed lock may still be held.
    pub expiry_slack: Duration,
    /// How long leadership is watched to stay put.
    pub election_settle: Duration,
    /// Bound on a new leader after the leader's connection is closed.
    pub failover_bound: Duration,
    /// Bound on a closed node showing as offline, from its close.
    pub offline_within: Duration,
    /// Bound on a closed node being forgotten, from its close.
    pub forgotten_within: Duration,
}

/// Polls `cond` every 10 ms until it holds or `within` has passed.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The field an `InvalidInput` error names.
pub fn invalid_field(err: &Error) -> &str {
    match err {
        Error::InvalidInput { what, .. } => what,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

fn statuses(nodes: &[NodeInfo]) -> HashMap<String, NodeStatus> {
    nodes.iter().map(|n| (n.id.clone(), n.status)).collect()
}

async fn close_all(clusters: &[Arc<dyn Cluster>]) {
    for cluster in clusters {
        cluster.close().await.unwrap();
    }
}

pub async fn locks_are_mutually_exclusive_with_growing_fencing_tokens(f: Fixture, p: Params) {
    const TASKS_PER_NODE: usize = 2;
    let clusters = f.nodes(3).await;
    let holder = Arc::new(AtomicBool::new(false));
    let last_token = Arc::new(AtomicU64::new(0));
    let grants = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for cluster in &clusters {
        for _ in 0..TASKS_PER_NODE {
            let (cluster, holder, last_token, grants) =
                (cluster.clone(), holder.clone(), last_token.clone(), grants.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..p.attempts_per_node / TASKS_PER_NODE {
                    let guard = cluster.acquire_lock("job", Duration::from_secs(5)).await.unwrap();
                    let Some(guard) = guard else {
                        tokio::task::yield_now().await;
                        continue;
                    };
                    assert!(!holder.swap(true, Ordering::SeqCst), "two holders at once");
                    let previous = last_token.swap(guard.token(), Ordering::SeqCst);
                    assert!(guard.token() > previous, "token {} after {previous}", guard.token());
                    grants.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    assert!(!guard.is_lost());
                    holder.store(false, Ordering::SeqCst);
                    assert!(guard.release().await.unwrap(), "the holder's release freed nothing");
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let attempts = 3 * (p.attempts_per_node / TASKS_PER_NODE) * TASKS_PER_NODE;
    let grants = grants.load(Ordering::SeqCst);
    assert!(grants >= 20, "only {grants} of {attempts} attempts got the lock");
    println!("{grants} of {attempts} attempts got the lock in {:?}", start.elapsed());
    close_all(&clusters).await;
}

pub async fn an_expired_lock_goes_to_another_node_and_the_old_release_leaves_it(
    f: Fixture,
    p: Params,
) {
    let clusters = f.nodes(2).await;
    let (a, b) = (&clusters[0], &clusters[1]);
    let ttl = p.lock_ttl;

    // Renewed, a lock outlives its TTL, with the same token.
    let guard = a.acquire_lock("renewed", ttl).await.unwrap().unwrap();
    let token = guard.token();
    for _ in 0..4 {
        tokio::time::sleep(ttl * 7 / 20).await;
        guard.renew(ttl).await.unwrap();
    }
    assert!(!guard.is_lost());
    assert_eq!(guard.token(), token);
    assert!(b.acquire_lock("renewed", ttl).await.unwrap().is_none());
    a.release_lock("renewed").await.unwrap();
    let again = b.acquire_lock("renewed", ttl).await.unwrap().expect("released lock not free");
    assert!(again.token() > token);

    // Not renewed, it runs out; B gets it, A is told.
    let start = Instant::now();
    let old = a.acquire_lock("job", ttl).await.unwrap().unwrap();
    assert!(b.acquire_lock("job", ttl).await.unwrap().is_none());
    let new = loop {
        if let Some(g) = b.acquire_lock("job", Duration::from_secs(5)).await.unwrap() {
            break g;
        }
        assert!(start.elapsed() < ttl + p.expiry_slack, "lock never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = start.elapsed();
    assert!(took >= ttl - Duration::from_millis(50), "taken after {took:?}, TTL {ttl:?}");
    assert!(new.token() > old.token());
    tokio::time::timeout(Duration::from_millis(500), old.lost()).await.expect("not told of loss");
    assert!(old.is_lost());
    let err = old.renew(ttl).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");

    // The old holder's releases leave the new holder's lock alone.
    a.release_lock("job").await.unwrap();
    assert!(!old.release().await.unwrap());
    new.renew(Duration::from_secs(5)).await.unwrap();
    assert!(!new.is_lost());
    assert!(a.acquire_lock("job", ttl).await.unwrap().is_none());
    assert!(new.release().await.unwrap());
    assert!(a.acquire_lock("job", ttl).await.unwrap().is_some());
    println!("expired lock taken over after {took:?} (TTL {ttl:?})");
    close_all(&clusters).await;
}

pub async fn one_leader_and_a_fast_failover_with_a_higher_term(f: Fixture, p: Params) {
    let clusters = f.nodes(3).await;
    // For each node: the term it leads, or 0.
    let leading: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; 3]));
    let events: Arc<Mutex<Vec<(usize, Leadership)>>> = Arc::default();
    // Callbacks run on background tasks: they record violations, the test
    // asserts on them.
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    for (i, cluster) in clusters.iter().enumerate() {
        let (leading, events, violations) = (leading.clone(), events.clone(), violations.clone());
        cluster
            .start_election(Arc::new(move |event| {
                let mut leading = leading.lock().unwrap();
                match event {
                    Leadership::Elected { term } => {
                        if leading.iter().any(|&t| t != 0) {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("two leaders: {leading:?}, {i} elected"));
                        }
                        leading[i] = term;
                    }
                    Leadership::Lost { term } => {
                        if leading[i] != term {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("{i} lost {term}, led {}", leading[i]));
                        }
                        leading[i] = 0;
                    }
                }
                events.lock().unwrap().push((i, event));
            }))
            .await
            .unwrap();
    }
    let leader_of = |leading: &Vec<u64>| leading.iter().position(|&t| t != 0);
    assert!(
        eventually(Duration::from_secs(2), || leader_of(&leading.lock().unwrap()).is_some()).await
    );
    // Leadership stays put while the leader renews.
    tokio::time::sleep(p.election_settle).await;
    let (first, term) = {
        let leading = leading.lock().unwrap();
        let i = leader_of(&leading).unwrap();
        assert_eq!(leading.iter().filter(|&&t| t != 0).count(), 1);
        (i, leading[i])
    };
    assert_eq!(events.lock().unwrap().len(), 1, "{:?}", events.lock().unwrap());

    // Close the leader without stepping down: its lease or session has to
    // run out.
    let closed_at = Instant::now();
    clusters[first].close().await.unwrap();
    assert_eq!(leading.lock().unwrap()[first], 0, "the closed leader was not told");
    assert!(
        eventually(p.failover_bound, || leader_of(&leading.lock().unwrap()).is_some()).await,
        "no new leader within {:?}",
        p.failover_bound
    );
    let failover = closed_at.elapsed();
    let (second, new_term) = {
        let leading = leading.lock().unwrap();
        let i = leader_of(&leading).unwrap();
        (i, leading[i])
    };
    assert_ne!(second, first);
    assert!(new_term > term, "term {new_term} after {term}");

    // A clean stop hands over at once.
    let stopped_at = Instant::now();
    clusters[second].stop_election().await.unwrap();
    assert!(
        eventually(Duration::from_secs(1), || {
            let leading = leading.lock().unwrap();
            leader_of(&leading).is_some_and(|i| i != second && leading[i] > new_term)
        })
        .await,
        "no handover after a clean stop"
    );
    let handover = stopped_at.elapsed();
    assert!(violations.lock().unwrap().is_empty(), "{:?}", violations.lock().unwrap());
    close_all(&clusters).await;
    println!(
        "failover after close: {failover:?} (bound {:?}); handover after stop: {handover:?}",
        p.failover_bound
    );
}

pub async fn nodes_appear_go_offline_when_closed_and_are_forgotten(f: Fixture, p: Params) {
    let clusters = f.nodes(3).await;
    for (i, cluster) in clusters.iter().enumerate() {
        let mut info = NodeInfo::new(format!("node-{i}"), "127.0.0.1", 7000 + i as u16);
        info.metadata.insert("zone".into(), "a".into());
        cluster.register(info).await.unwrap();
    }
    let seen = clusters[1].nodes().await.unwrap();
    assert_eq!(
        seen.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["node-0", "node-1", "node-2"]
    );
    assert!(seen.iter().all(|n| n.status == NodeStatus::Online), "{seen:?}");
    assert_eq!(seen[2].port, 7002);
    assert_eq!(seen[2].metadata["zone"], "a");

    // The leader shows as leader.
    clusters[0].start_election(Arc::new(|_| {})).await.unwrap();
    let mut leader = false;
    for _ in 0..100 {
        if statuses(&clusters[1].nodes().await.unwrap())["node-0"] == NodeStatus::Leader {
            leader = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(leader, "node-0 never shown as leader");

    // The others stay online; the closed one goes offline, then disappears.
    let closed_at = Instant::now();
    clusters[2].close().await.unwrap();
    let mut offline_after = None;
    while closed_at.elapsed() < p.offline_within {
        let s = statuses(&clusters[1].nodes().await.unwrap());
        assert_eq!(s["node-1"], NodeStatus::Online, "{s:?}");
        if s["node-2"] == NodeStatus::Offline {
            offline_after = Some(closed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let offline_after = offline_after.expect("the closed node never went offline");
    let mut forgotten = false;
    while closed_at.elapsed() < p.forgotten_within {
        let ids: Vec<String> =
            clusters[1].nodes().await.unwrap().into_iter().map(|n| n.id).collect();
        if ids == ["node-0", "node-1"] {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(forgotten, "the closed node was never forgotten");
    let forgotten_after = closed_at.elapsed();

    // Restarted, it comes back.
    let restarted = (f.connect)("node-2".into()).await;
    restarted.register(NodeInfo::new("node-2", "127.0.0.1", 7002)).await.unwrap();
    let mut back = false;
    for _ in 0..100 {
        if statuses(&clusters[1].nodes().await.unwrap()).get("node-2") == Some(&NodeStatus::Online)
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "restarted node-2 not online");
    restarted.close().await.unwrap();

    // Unregister takes a node out at once.
    clusters[1].unregister("node-1").await.unwrap();
    clusters[1].unregister("node-2").await.unwrap();
    let seen = clusters[0].nodes().await.unwrap();
    assert_eq!(seen.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["node-0"]);
    close_all(&clusters).await;
    println!("closed node offline after {offline_after:?}, forgotten after {forgotten_after:?}");
}

pub async fn every_subscriber_gets_every_message_in_order_per_sender(f: Fixture, _p: Params) {
    let clusters = f.nodes(3).await;
    let inboxes: Vec<Arc<Mutex<Vec<ClusterMessage>>>> = (0..3).map(|_| Arc::default()).collect();
    for (cluster, inbox) in clusters.iter().zip(&inboxes) {
        let inbox = inbox.clone();
        cluster.subscribe(Arc::new(move |msg| inbox.lock().unwrap().push(msg))).await.unwrap();
    }
    const PER_SENDER: usize = 100;
    let start = Instant::now();
    let mut senders = Vec::new();
    for cluster in &clusters {
        let cluster = cluster.clone();
        senders.push(tokio::spawn(async move {
            for seq in 0..PER_SENDER {
                cluster
                    .broadcast(ClusterMessage::new("seq", seq.to_string().into_bytes()))
                    .await
                    .unwrap();
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let all = 3 * PER_SENDER;
    assert!(
        eventually(Duration::from_secs(5), || {
            inboxes.iter().all(|inbox| inbox.lock().unwrap().len() >= all)
        })
        .await,
        "lost messages: {:?}",
        inboxes.iter().map(|i| i.lock().unwrap().len()).collect::<Vec<_>>()
    );
    let took = start.elapsed();
    for inbox in &inboxes {
        let inbox = inbox.lock().unwrap();
        assert_eq!(inbox.len(), all);
        let mut per_sender: HashMap<&str, Vec<usize>> = HashMap::new();
        for msg in inbox.iter() {
            assert_eq!(msg.kind, "seq");
            let seq = std::str::from_utf8(&msg.data).unwrap().parse().unwrap();
            per_sender.entry(msg.node_id.as_str()).or_default().push(seq);
        }
        assert_eq!(per_sender.len(), 3, "{:?}", per_sender.keys());
        for seqs in per_sender.values() {
            assert_eq!(*seqs, (0..PER_SENDER).collect::<Vec<_>>());
        }
    }
    close_all(&clusters).await;
    println!("{all} messages to 3 subscribers in {took:?}");
}

pub async fn bad_input_fails_clearly(f: Fixture, _p: Params) {
    let cluster = (f.connect)("n".into()).await;
    let err = cluster.acquire_lock("", Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(invalid_field(&err), "key", "{err}");
    let err = cluster.acquire_lock("k", Duration::ZERO).await.unwrap_err();
    assert_eq!(invalid_field(&err), "ttl", "{err}");
    let err = cluster.release_lock("").await.unwrap_err();
    assert_eq!(invalid_field(&err), "key", "{err}");
    let guard = cluster.acquire_lock("k", Duration::from_secs(1)).await.unwrap().unwrap();
    let err = guard.renew(Duration::ZERO).await.unwrap_err();
    assert_eq!(invalid_field(&err), "ttl", "{err}");
    let err = cluster.register(NodeInfo::new("", "h", 1)).await.unwrap_err();
    assert_eq!(invalid_field(&err), "node_id", "{err}");
    cluster.close().await.unwrap();
    let err = cluster.acquire_lock("k", Duration::from_secs(1)).await.unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
}

/// Generates one `#[tokio::test]` per check, in a module `$name`, each with a
/// fresh fixture from `$factory` (an async closure returning a [`Fixture`])
/// and the backend's [`Params`].
#[macro_export]
macro_rules! cluster_conformance {
    ($name:ident, $factory:expr, $params:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $crate::cluster_conformance!(@tests $factory, $params;
                locks_are_mutually_exclusive_with_growing_fencing_tokens,
                an_expired_lock_goes_to_another_node_and_the_old_release_leaves_it,
                one_leader_and_a_fast_failover_with_a_higher_term,
                nodes_appear_go_offline_when_closed_and_are_forgotten,
                every_subscriber_gets_every_message_in_order_per_sender,
                bad_input_fails_clearly,
            );
        }
    };
    (@tests $factory:expr, $params:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture = ($factory)().await;
                $crate::support::cluster_conformance::$check(fixture, $params).await;
            }
        )*
    };
}
