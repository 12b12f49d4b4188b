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

use rota::cluster::{
    Cluster, ClusterMessage, FireClaim, FireRequest, Leadership, LockGuard, NodeInfo, NodeStatus,
};
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

/// Runs `call` on every node at once (each on a task of its own), and
/// returns the answers in node order.
async fn on_all<T, Fut>(
    clusters: &[Arc<dyn Cluster>],
    call: impl Fn(Arc<dyn Cluster>) -> Fut,
) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = clusters.iter().map(|c| tokio::spawn(call(c.clone()))).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

pub async fn marks_advance_once(f: Fixture, _p: Params) {
    const ROUNDS: i64 = 200;
    let clusters = f.nodes(3).await;
    // A key with '/' in it, as fire marks have.
    let key = "race/mark";
    let start = Instant::now();
    for round in 0..ROUNDS {
        let answers =
            on_all(&clusters, |c| async move { c.advance_mark(key, round).await.unwrap() }).await;
        let winners: Vec<Option<i64>> = answers.iter().filter_map(|a| *a).collect();
        assert_eq!(winners.len(), 1, "round {round}: {answers:?}");
        let expected = if round == 0 { None } else { Some(round - 1) };
        assert_eq!(winners[0], expected, "round {round}: {answers:?}");
        let other = &clusters[round as usize % 3];
        assert_eq!(other.advance_mark(key, round).await.unwrap(), None, "round {round}, equal");
        if round > 0 {
            assert_eq!(other.advance_mark(key, round - 1).await.unwrap(), None, "round {round}");
        }
    }
    let took = start.elapsed();

    // Any i64, negative ones included, in order; keys are independent.
    let a = &clusters[0];
    assert_eq!(a.advance_mark("neg", -5).await.unwrap(), Some(None));
    assert_eq!(a.advance_mark("neg", -10).await.unwrap(), None);
    assert_eq!(a.advance_mark("neg", -5).await.unwrap(), None);
    assert_eq!(a.advance_mark("neg", -4).await.unwrap(), Some(Some(-5)));
    assert_eq!(a.advance_mark("neg", 3).await.unwrap(), Some(Some(-4)));
    assert_eq!(a.advance_mark("neg", i64::MAX).await.unwrap(), Some(Some(3)));
    assert_eq!(a.advance_mark("neg", i64::MAX).await.unwrap(), None);
    assert_eq!(a.advance_mark("min", i64::MIN).await.unwrap(), Some(None));
    assert_eq!(a.advance_mark("min", i64::MIN).await.unwrap(), None);
    assert_eq!(clusters[1].advance_mark(key, ROUNDS).await.unwrap(), Some(Some(ROUNDS - 1)));
    close_all(&clusters).await;
    println!("{ROUNDS} rounds of 3 racing advances in {took:?}");
}

pub async fn each_fire_is_claimed_by_one_node(f: Fixture, _p: Params) {
    const TASKS: usize = 4;
    const FIRES: usize = 300;
    const BASE: i64 = 1_733_356_800_000;
    let ttl = Duration::from_secs(30);
    let clusters = f.nodes(3).await;
    // Tasks 0 and 1 skip overlapping runs (a run lock); task 1's runs are
    // held through the next fire, which is then busy.
    let task_id = |t: usize| format!("job/{t}");
    let locked = |t: usize| t < 2;
    let at = |t: usize, i: usize| BASE + i as i64 * 60_000 + t as i64;
    let mut previous: [Option<i64>; TASKS] = [None; TASKS];
    let mut tokens = [0u64; TASKS];
    let mut held: Vec<Option<LockGuard>> = (0..TASKS).map(|_| None).collect();
    let (mut won, mut busy) = (0, 0);
    let start = Instant::now();
    // One batch per fire index, with one fire of each task (fires of one
    // task are claimed in order).
    for i in 0..FIRES / TASKS {
        let batch: Vec<FireRequest> = (0..TASKS)
            .map(|t| FireRequest {
                task_id: task_id(t),
                scheduled_ms: at(t, i),
                run_lock: locked(t).then_some(ttl),
            })
            .collect();
        let answers = on_all(&clusters, |c| {
            let batch = batch.clone();
            async move {
                let claims = c.claim_fires(&batch).await;
                claims.into_iter().map(Result::unwrap).collect::<Vec<_>>()
            }
        })
        .await;
        let mut per_task: Vec<Vec<FireClaim>> = (0..TASKS).map(|_| Vec::new()).collect();
        for node_claims in answers {
            assert_eq!(node_claims.len(), TASKS);
            for (t, claim) in node_claims.into_iter().enumerate() {
                per_task[t].push(claim);
            }
        }
        for (t, claims) in per_task.into_iter().enumerate() {
            let what = format!("fire {i} of task {t}: {claims:?}");
            let winners: Vec<&FireClaim> =
                claims.iter().filter(|c| !matches!(c, FireClaim::Taken)).collect();
            assert_eq!(winners.len(), 1, "{what}");
            let prev = match winners[0] {
                FireClaim::Won { previous, guard } => {
                    won += 1;
                    assert!(held[t].is_none(), "won while a run holds the lock: {what}");
                    assert_eq!(guard.is_some(), locked(t), "{what}");
                    if let Some(guard) = guard {
                        assert!(guard.token() > tokens[t], "token after {}: {what}", tokens[t]);
                        tokens[t] = guard.token();
                    }
                    *previous
                }
                FireClaim::Busy { previous } => {
                    busy += 1;
                    assert!(held[t].is_some(), "busy without a run holding the lock: {what}");
                    *previous
                }
                FireClaim::Taken => unreachable!(),
            };
            assert_eq!(prev, previous[t], "{what}");
            previous[t] = Some(at(t, i));
            // The run ends, except that task 1's holds its lock through
            // the next fire.
            for claim in claims {
                let FireClaim::Won { guard: Some(guard), .. } = claim else { continue };
                if t == 1 {
                    held[t] = Some(guard);
                } else {
                    assert!(guard.release().await.unwrap(), "task {t}'s run lock was not held");
                }
            }
        }
        if i % 2 == 1 {
            let guard = held[1].take().expect("task 1's run");
            assert!(guard.release().await.unwrap(), "task 1's run lock was not held");
        }
    }
    let took = start.elapsed();
    assert_eq!(won + busy, FIRES);
    assert_eq!(busy, FIRES / TASKS / 2, "busy fires");
    if let Some(guard) = held[1].take() {
        guard.release().await.unwrap();
    }

    // An old fire, or one claimed already, is taken everywhere.
    for c in &clusters {
        let req = FireRequest { task_id: task_id(0), scheduled_ms: at(0, 3), run_lock: Some(ttl) };
        assert!(matches!(c.claim_fire(&req).await.unwrap(), FireClaim::Taken));
        let last = FIRES / TASKS - 1;
        let req = FireRequest { task_id: task_id(2), scheduled_ms: at(2, last), run_lock: None };
        assert!(matches!(c.claim_fire(&req).await.unwrap(), FireClaim::Taken));
    }

    // Explicitly: a run still holding the lock makes the next fire busy on
    // another node; released, the fire after is won with a newer token.
    let (a, b, c) = (&clusters[0], &clusters[1], &clusters[2]);
    let fire =
        |ms: i64| FireRequest { task_id: "solo".into(), scheduled_ms: ms, run_lock: Some(ttl) };
    let FireClaim::Won { previous: None, guard: Some(run) } =
        a.claim_fire(&fire(BASE)).await.unwrap()
    else {
        panic!("the first fire was not won with a guard");
    };
    match b.claim_fire(&fire(BASE + 1_000)).await.unwrap() {
        FireClaim::Busy { previous } => assert_eq!(previous, Some(BASE)),
        other => panic!("expected busy, got {other:?}"),
    }
    assert!(matches!(c.claim_fire(&fire(BASE + 1_000)).await.unwrap(), FireClaim::Taken));
    let token = run.token();
    assert!(run.release().await.unwrap());
    match c.claim_fire(&fire(BASE + 2_000)).await.unwrap() {
        FireClaim::Won { previous, guard: Some(guard) } => {
            assert_eq!(previous, Some(BASE + 1_000));
            assert!(guard.token() > token, "token {} after {token}", guard.token());
            assert!(guard.release().await.unwrap());
        }
        other => panic!("expected won with a guard, got {other:?}"),
    }
    close_all(&clusters).await;
    println!("{FIRES} fires claimed by 3 nodes in {took:?}: {won} won, {busy} busy");
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
    let err = cluster.advance_mark("", 1).await.unwrap_err();
    assert_eq!(invalid_field(&err), "key", "{err}");
    cluster.close().await.unwrap();
    let err = cluster.acquire_lock("k", Duration::from_secs(1)).await.unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");
    let err = cluster.advance_mark("k", 1).await.unwrap_err();
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
                marks_advance_once,
                each_fire_is_claimed_by_one_node,
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
