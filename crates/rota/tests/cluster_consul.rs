//! The Consul cluster backend against the in-repo fake Consul
//! (`support/consul_fake.rs`), **not against a real Consul** (none can be
//! installed here): mutual exclusion with fencing tokens, lock expiry (a guard
//! not renewed, and a session that stops being renewed), leader election and
//! failover, the node registry, broadcast order, bad input, every connection
//! dropped by a TCP proxy while nodes contend for a lock; and a test of the
//! fake itself (lock-delay, session expiry, blocking queries).
//!
//! Not covered here: a server restart (the fake keeps no data; a real Consul
//! keeps its Raft log, and its sessions survive a restart).
//!
//! Each test starts its own fake on `127.0.0.1:0`. The fake's test knob
//! `min_session_ttl` allows sub-second session TTLs (Consul's minimum is
//! 10 s), so timings are short: session TTL 500 ms (expiry after 2 × TTL, the
//! documented bound), lock-delay 200 ms; the whole file runs in about 8 s.
//!
//! Run it alone with
//! `cargo test -p rota --features cluster-consul --test cluster_consul`.
#![cfg(feature = "cluster-consul")]

/// The fake (also reachable as `support::consul_fake`; included on its own
/// here so this file does not pull in the store conformance suite).
#[allow(dead_code)]
#[path = "support/consul_fake.rs"]
mod consul_fake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use consul_fake::{FakeConsul, FakeOptions};
use rota::cluster::{
    Cluster, ClusterMessage, ConsulCluster, ConsulClusterConfig, Leadership, NodeInfo, NodeStatus,
};
use rota::{Error, ErrorKind};

const TTL: Duration = Duration::from_millis(500);
const LOCK_DELAY: Duration = Duration::from_millis(200);

async fn fake() -> FakeConsul {
    FakeConsul::start(FakeOptions {
        min_session_ttl: Duration::from_millis(50),
        ..FakeOptions::default()
    })
    .await
}

fn config(fake: &FakeConsul, node: &str) -> ConsulClusterConfig {
    ConsulClusterConfig {
        address: fake.addr.to_string(),
        node_id: node.into(),
        session_ttl: TTL,
        lock_delay: LOCK_DELAY,
        forget_after: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..ConsulClusterConfig::default()
    }
}

async fn nodes(fake: &FakeConsul, n: usize) -> Vec<Arc<ConsulCluster>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Arc::new(ConsulCluster::new(config(fake, &format!("node-{i}"))).await.unwrap()));
    }
    out
}

/// Polls `cond` every 10 ms until it holds or `within` has passed.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_are_mutually_exclusive_with_growing_fencing_tokens() {
    let fake = fake().await;
    let clusters = nodes(&fake, 3).await;
    let holder = Arc::new(AtomicBool::new(false));
    let last_token = Arc::new(AtomicU64::new(0));
    let grants = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for cluster in &clusters {
        for _ in 0..4 {
            let (cluster, holder, last_token, grants) =
                (cluster.clone(), holder.clone(), last_token.clone(), grants.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
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
    let grants = grants.load(Ordering::SeqCst);
    assert!(grants >= 20, "only {grants} of 300 attempts got the lock");
    println!("{grants} of 300 attempts got the lock");
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_not_renewed_is_released_at_its_ttl() {
    let fake = fake().await;
    let clusters = nodes(&fake, 2).await;
    let (a, b) = (&clusters[0], &clusters[1]);
    let ttl = Duration::from_millis(300);

    // Renewed, a lock outlives its TTL.
    let guard = a.acquire_lock("renewed", ttl).await.unwrap().unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        guard.renew(ttl).await.unwrap();
    }
    assert!(!guard.is_lost());
    assert!(b.acquire_lock("renewed", ttl).await.unwrap().is_none());
    a.release_lock("renewed").await.unwrap();
    assert!(b.acquire_lock("renewed", ttl).await.unwrap().is_some());

    // Not renewed, the handle releases it at its TTL; B gets it, A is told.
    let start = Instant::now();
    let old = a.acquire_lock("job", ttl).await.unwrap().unwrap();
    assert!(b.acquire_lock("job", ttl).await.unwrap().is_none());
    let new = loop {
        if let Some(g) = b.acquire_lock("job", Duration::from_secs(5)).await.unwrap() {
            break g;
        }
        assert!(start.elapsed() < ttl + Duration::from_millis(500), "lock never expired");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = start.elapsed();
    assert!(took >= ttl - Duration::from_millis(50), "taken after {took:?}, TTL {ttl:?}");
    assert!(new.token() > old.token());
    assert!(old.is_lost());
    assert_eq!(old.renew(ttl).await.unwrap_err().kind(), ErrorKind::Backend);
    a.release_lock("job").await.unwrap();
    assert!(!old.release().await.unwrap());
    new.renew(Duration::from_secs(5)).await.unwrap();
    assert!(a.acquire_lock("job", ttl).await.unwrap().is_none());
    assert!(new.release().await.unwrap());
    println!("unrenewed lock taken over after {took:?} (TTL {ttl:?})");
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_frees_the_lock_after_the_lock_delay() {
    let fake = fake().await;
    let clusters = nodes(&fake, 2).await;
    let (a, b) = (&clusters[0], &clusters[1]);
    let old_session = a.session_id().unwrap();
    let old = a.acquire_lock("job", Duration::from_secs(30)).await.unwrap().unwrap();

    // A can no longer renew its session (a partition). Either A gives the
    // session up at its local deadline (TTL after the last renewal; it then
    // destroys it, if the server can be reached) or the server expires it
    // (2 × TTL after the last renewal): the key is deleted, the lock-delay
    // starts, then B gets it.
    let start = Instant::now();
    fake.block_renewals(&a.session_name(), true);
    let mut freed_at = None;
    let new = loop {
        if freed_at.is_none() && !fake.keys().iter().any(|(k, _)| k.ends_with("locks/job")) {
            freed_at = Some(start.elapsed());
        }
        if let Some(g) = b.acquire_lock("job", Duration::from_secs(30)).await.unwrap() {
            break g;
        }
        assert!(start.elapsed() < 2 * TTL + LOCK_DELAY + Duration::from_secs(1), "never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = start.elapsed();
    let freed_at = freed_at.unwrap_or(took);
    assert!(took >= freed_at + LOCK_DELAY - Duration::from_millis(30), "{took:?} {freed_at:?}");
    assert!(new.token() > old.token());
    // A's guard was lost when A's session could not be renewed in time
    // (before the server expired it).
    assert!(old.is_lost());
    fake.block_renewals(&a.session_name(), false);

    // A's old release does not free B's lock; A gets a new session.
    assert!(!old.release().await.unwrap());
    a.release_lock("job").await.unwrap();
    assert!(
        eventually(Duration::from_secs(2), || a.session_id().is_some_and(|s| s != old_session))
            .await
    );
    assert!(a.acquire_lock("job", Duration::from_secs(1)).await.unwrap().is_none());
    assert!(!new.is_lost());
    assert!(new.release().await.unwrap());
    assert!(a.acquire_lock("job", Duration::from_secs(1)).await.unwrap().is_some());
    println!("session expired, lock freed after {freed_at:?}, taken after {took:?}");
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_failover_with_a_higher_term() {
    let fake = fake().await;
    let clusters = nodes(&fake, 3).await;
    let leading: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; 3]));
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let events = Arc::new(AtomicUsize::new(0));
    for (i, cluster) in clusters.iter().enumerate() {
        let (leading, violations, events) = (leading.clone(), violations.clone(), events.clone());
        cluster
            .start_election(Arc::new(move |event| {
                let mut leading = leading.lock().unwrap();
                events.fetch_add(1, Ordering::SeqCst);
                match event {
                    Leadership::Elected { term } => {
                        if leading.iter().any(|&t| t != 0) {
                            violations.lock().unwrap().push(format!("two leaders: {leading:?}"));
                        }
                        leading[i] = term;
                    }
                    Leadership::Lost { term } => {
                        if leading[i] != term {
                            violations.lock().unwrap().push(format!("{i} lost {term}"));
                        }
                        leading[i] = 0;
                    }
                }
            }))
            .await
            .unwrap();
    }
    let leader_of = |leading: &Vec<u64>| leading.iter().position(|&t| t != 0);
    assert!(
        eventually(Duration::from_secs(2), || leader_of(&leading.lock().unwrap()).is_some()).await
    );
    // Leadership stays put while the session is renewed.
    tokio::time::sleep(TTL * 3).await;
    let (first, term) = {
        let leading = leading.lock().unwrap();
        let i = leader_of(&leading).unwrap();
        assert_eq!(leading.iter().filter(|&&t| t != 0).count(), 1);
        (i, leading[i])
    };
    assert_eq!(events.load(Ordering::SeqCst), 1);

    // Close the leader (no clean stop): its session expires, then the
    // lock-delay runs out.
    let closed_at = Instant::now();
    clusters[first].close().await.unwrap();
    assert_eq!(leading.lock().unwrap()[first], 0, "the closed leader was not told");
    let bound = TTL + LOCK_DELAY + Duration::from_secs(1);
    assert!(
        eventually(bound, || leader_of(&leading.lock().unwrap()).is_some()).await,
        "no new leader within TTL + lock-delay + 1 s"
    );
    let failover = closed_at.elapsed();
    let (second, new_term) = {
        let leading = leading.lock().unwrap();
        let i = leader_of(&leading).unwrap();
        (i, leading[i])
    };
    assert_ne!(second, first);
    assert!(new_term > term, "term {new_term} after {term}");

    // A clean stop hands over at once (release: no lock-delay).
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
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
    println!("failover after close: {failover:?} (TTL {TTL:?}, lock-delay {LOCK_DELAY:?}); handover after stop: {handover:?}");
}

fn statuses(nodes: &[NodeInfo]) -> HashMap<String, NodeStatus> {
    nodes.iter().map(|n| (n.id.clone(), n.status)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_appear_go_offline_when_closed_and_are_forgotten() {
    let fake = fake().await;
    let clusters = nodes(&fake, 3).await;
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

    // Closed, node-2 goes offline once its session expires (2 × TTL).
    let closed_at = Instant::now();
    clusters[2].close().await.unwrap();
    let mut offline_after = None;
    while closed_at.elapsed() < 2 * TTL + Duration::from_secs(1) {
        let s = statuses(&clusters[1].nodes().await.unwrap());
        if s["node-2"] == NodeStatus::Offline {
            assert_eq!(s["node-1"], NodeStatus::Online, "{s:?}");
            offline_after = Some(closed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let offline_after = offline_after.expect("node-2 never offline");
    // Forgotten after forget_after (2 s) since its last heartbeat.
    let mut forgotten = false;
    while closed_at.elapsed() < Duration::from_secs(4) {
        let ids: Vec<String> =
            clusters[1].nodes().await.unwrap().into_iter().map(|n| n.id).collect();
        if ids == ["node-0", "node-1"] {
            forgotten = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(forgotten, "node-2 never forgotten");

    // Restarted, it comes back (online once the old session's lock-delay
    // on its registry key is over).
    let restarted = ConsulCluster::new(config(&fake, "node-2")).await.unwrap();
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

    clusters[1].unregister("node-1").await.unwrap();
    clusters[1].unregister("node-2").await.unwrap();
    let seen = clusters[0].nodes().await.unwrap();
    assert_eq!(seen.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["node-0"]);
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
    println!("closed node offline after {offline_after:?} (session TTL {TTL:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_message_in_order_per_sender() {
    let fake = fake().await;
    let clusters = nodes(&fake, 3).await;
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
            let seq = std::str::from_utf8(&msg.data).unwrap().parse().unwrap();
            per_sender.entry(msg.node_id.as_str()).or_default().push(seq);
        }
        assert_eq!(per_sender.len(), 3, "{:?}", per_sender.keys());
        for seqs in per_sender.values() {
            assert_eq!(*seqs, (0..PER_SENDER).collect::<Vec<_>>());
        }
    }
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
    println!("{all} messages to 3 subscribers in {took:?}");
}

fn invalid_field(err: &Error) -> &str {
    match err {
        Error::InvalidInput { what, .. } => what,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_clearly_and_fast() {
    let fake = fake().await;
    let err = ConsulCluster::new(config(&fake, "")).await.unwrap_err();
    assert_eq!(invalid_field(&err), "node_id", "{err}");
    let err = ConsulCluster::new(ConsulClusterConfig {
        session_ttl: Duration::ZERO,
        ..config(&fake, "n")
    })
    .await
    .unwrap_err();
    assert_eq!(invalid_field(&err), "session_ttl", "{err}");
    for address in ["", "ftp://x:1", "http://"] {
        let err = ConsulCluster::new(ConsulClusterConfig {
            address: address.into(),
            ..config(&fake, "n")
        })
        .await
        .unwrap_err();
        assert_eq!(invalid_field(&err), "address", "{address:?}: {err}");
    }
    // The server refuses a TTL under its minimum (Consul: 10 s).
    let err = ConsulCluster::new(ConsulClusterConfig {
        session_ttl: Duration::from_millis(10),
        ..config(&fake, "n")
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("Invalid Session TTL"), "{err}");

    let cluster = ConsulCluster::new(config(&fake, "n")).await.unwrap();
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

    // A token the server does not accept.
    let secured = FakeConsul::start(FakeOptions {
        min_session_ttl: Duration::from_millis(50),
        token: Some("s3cret".into()),
        ..FakeOptions::default()
    })
    .await;
    let err = ConsulCluster::new(config(&secured, "n")).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    let ok =
        ConsulCluster::new(ConsulClusterConfig { token: "s3cret".into(), ..config(&secured, "n") })
            .await
            .unwrap();
    assert!(ok.acquire_lock("k", Duration::from_secs(1)).await.unwrap().is_some());
    ok.close().await.unwrap();

    // Refused at once: nothing listens on port 1.
    let start = Instant::now();
    let err = ConsulCluster::new(ConsulClusterConfig {
        address: "127.0.0.1:1".into(),
        ..config(&fake, "n")
    })
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

    // Unanswered (a blackholed address): bounded by the connect timeout.
    let start = Instant::now();
    let timeout = Duration::from_millis(500);
    let err = ConsulCluster::new(ConsulClusterConfig {
        address: "10.255.255.1:8500".into(),
        connect_timeout: timeout,
        ..config(&fake, "n")
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("10.255.255.1:8500"), "{err}");
    assert!(start.elapsed() < timeout + Duration::from_millis(500), "{:?}", start.elapsed());
}

/// Raw HTTP against the fake, to check the fake keeps Consul's documented
/// semantics.
struct Raw {
    http: reqwest::Client,
    base: String,
}

impl Raw {
    async fn send(&self, method: reqwest::Method, path: &str, body: &str) -> (u16, u64, String) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let index = r
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (status, index, r.text().await.unwrap())
    }

    async fn put(&self, path: &str, body: &str) -> String {
        self.send(reqwest::Method::PUT, path, body).await.2
    }

    async fn get(&self, path: &str) -> (u16, u64, String) {
        self.send(reqwest::Method::GET, path, "").await
    }

    async fn session(&self, ttl: &str, lock_delay: &str) -> String {
        let body = format!(r#"{{"TTL":"{ttl}","LockDelay":"{lock_delay}","Behavior":"delete"}}"#);
        let reply: serde_json::Value =
            serde_json::from_str(&self.put("/v1/session/create", &body).await).unwrap();
        reply["ID"].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_keeps_lock_delay_expiry_and_blocking_query_semantics() {
    let fake = fake().await;
    let raw = Raw { http: reqwest::Client::new(), base: fake.url() };
    let a = raw.session("10s", "300ms").await;
    let b = raw.session("10s", "0s").await;

    // acquire / release only by the holder.
    assert_eq!(raw.put(&format!("/v1/kv/k?acquire={a}"), "va").await, "true");
    assert_eq!(raw.put(&format!("/v1/kv/k?acquire={b}"), "vb").await, "false");
    assert_eq!(raw.put(&format!("/v1/kv/k?release={b}"), "").await, "false");
    let (status, _, body) = raw.get("/v1/kv/k").await;
    assert_eq!(status, 200);
    let entry: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(entry[0]["Session"], a.as_str());
    assert_eq!(entry[0]["LockIndex"], 1);
    assert_eq!(entry[0]["Value"], "dmE=");

    // Invalidating the session (destroy) deletes the key (Behavior=delete)
    // and starts the lock-delay: nobody acquires it for 300 ms.
    raw.put(&format!("/v1/session/destroy/{a}"), "").await;
    assert_eq!(raw.get("/v1/kv/k").await.0, 404);
    let destroyed = Instant::now();
    assert_eq!(raw.put(&format!("/v1/kv/k?acquire={b}"), "vb").await, "false");
    loop {
        if raw.put(&format!("/v1/kv/k?acquire={b}"), "vb").await == "true" {
            break;
        }
        assert!(destroyed.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let delay = destroyed.elapsed();
    assert!(delay >= Duration::from_millis(280), "acquired after {delay:?}");
    // A release does not start a lock-delay.
    assert_eq!(raw.put(&format!("/v1/kv/k?release={b}"), "").await, "true");
    assert_eq!(raw.put(&format!("/v1/kv/k?acquire={b}"), "").await, "true");

    // Sessions expire after 2 × TTL without renewal; renewal extends them.
    let c = raw.session("100ms", "0s").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(raw.send(reqwest::Method::PUT, &format!("/v1/session/renew/{c}"), "").await.0, 200);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(raw.send(reqwest::Method::PUT, &format!("/v1/session/renew/{c}"), "").await.0, 200);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(raw.send(reqwest::Method::PUT, &format!("/v1/session/renew/{c}"), "").await.0, 404);
    // Below the minimum TTL (lowered to 50 ms by the test knob): refused.
    let (status, _, body) =
        raw.send(reqwest::Method::PUT, "/v1/session/create", r#"{"TTL":"10ms"}"#).await;
    assert_eq!(status, 400, "{body}");

    // Blocking queries: no change → the reply comes after `wait` with the
    // same index; a write → the reply comes at once with a larger index.
    let (_, index, _) = raw.get("/v1/kv/k").await;
    let start = Instant::now();
    let (_, same, _) = raw.get(&format!("/v1/kv/k?index={index}&wait=200ms")).await;
    let waited = start.elapsed();
    assert_eq!(same, index);
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_millis(600),
        "{waited:?}"
    );
    let base = raw.base.clone();
    let watcher = tokio::spawn(async move {
        let raw = Raw { http: reqwest::Client::new(), base };
        let start = Instant::now();
        let (status, new_index, body) =
            raw.get(&format!("/v1/kv/dir/?recurse&index={index}&wait=5s")).await;
        (status, new_index, body, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    raw.put("/v1/kv/dir/x", "1").await;
    let (status, new_index, body, took) = watcher.await.unwrap();
    assert_eq!(status, 200);
    assert!(new_index > index);
    assert!(body.contains("dir/x"), "{body}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // cas=0 writes only if absent.
    assert_eq!(raw.put("/v1/kv/dir/x?cas=0", "2").await, "false");
    assert_eq!(raw.put("/v1/kv/dir/y?cas=0", "2").await, "true");
    println!("lock-delay held for {delay:?}; blocking query woke after {took:?}");
}

/// A TCP proxy to the fake that can drop every connection it carries.
struct Proxy {
    port: u16,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

/// Copies from `from` to `to` until `from` closes or either fails.
async fn pump(from: &tokio::net::TcpStream, to: &tokio::net::TcpStream) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        if from.readable().await.is_err() {
            return;
        }
        let n = match from.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut sent = 0;
        while sent < n {
            if to.writable().await.is_err() {
                return;
            }
            match to.try_write(&buf[sent..n]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let sender = generation.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut dropped = sender.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = pump(&client, &server) => {}
                        _ = pump(&server, &client) => {}
                        _ = dropped.changed() => {}
                    }
                });
            }
        });
        Proxy { port, generation, task }
    }

    /// Closes every connection open through the proxy.
    fn drop_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.drop_all();
    }
}

/// A lock holder's window: from the grant's reply to the moment it stopped
/// using the lock or its lease ran out, whichever came first.
#[derive(Debug, Clone, Copy)]
struct Window {
    token: u64,
    start: Instant,
    end: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_stay_exclusive_and_everything_recovers_when_connections_drop() {
    let fake = fake().await;
    let proxy = Proxy::start(fake.addr).await;
    let mut clusters = Vec::new();
    for i in 0..3 {
        let config = ConsulClusterConfig {
            address: format!("127.0.0.1:{}", proxy.port),
            ..config(&fake, &format!("node-{i}"))
        };
        clusters.push(Arc::new(ConsulCluster::new(config).await.unwrap()));
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
    let chaos = Duration::from_secs(3);
    let start = Instant::now();
    let windows: Arc<Mutex<Vec<Window>>> = Arc::default();
    let mut workers = Vec::new();
    for cluster in &clusters {
        for _ in 0..2 {
            let (cluster, windows) = (cluster.clone(), windows.clone());
            workers.push(tokio::spawn(async move {
                let ttl = Duration::from_millis(300);
                while start.elapsed() < chaos {
                    let guard = match cluster.acquire_lock("job", ttl).await {
                        Ok(Some(guard)) => guard,
                        Ok(None) | Err(_) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    };
                    let granted = Instant::now();
                    let steps = if guard.token() % 3 == 0 { 4 } else { 1 };
                    for _ in 0..steps {
                        tokio::time::sleep(Duration::from_millis(guard.token() % 20 + 30)).await;
                        if guard.renew(ttl).await.is_err() {
                            break;
                        }
                    }
                    let end = Instant::now().min(guard.deadline().into_std());
                    if end > granted {
                        let token = guard.token();
                        windows.lock().unwrap().push(Window { token, start: granted, end });
                    }
                    let _ = guard.release().await;
                }
            }));
        }
    }
    let mut drops = 0;
    while start.elapsed() < chaos {
        tokio::time::sleep(Duration::from_millis(250)).await;
        proxy.drop_all();
        drops += 1;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let mut windows = windows.lock().unwrap().clone();
    windows.sort_by_key(|w| w.token);
    assert!(windows.len() >= 10, "only {} grants", windows.len());
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
    println!(
        "{} exclusive grants across {drops} connection drops; recovered in {:?}",
        windows.len(),
        recovery.elapsed()
    );
    for cluster in &clusters {
        cluster.close().await.unwrap();
    }
}
