//! The Consul cluster backend against the in-repo fake Consul
//! (`support/consul_fake.rs`), **not against a real Consul** (none can be
//! installed here): the shared cluster conformance suite
//! (`support/cluster_conformance.rs`: mutual exclusion with fencing tokens,
//! lock expiry, leader election and failover, the node registry, broadcast
//! order, bad input), then Consul's own tests: a session that stops being
//! renewed, config validation, every connection dropped by a TCP proxy while
//! nodes contend for a lock; and a test of the fake itself (lock-delay, session expiry, blocking queries).
//!
//! Not covered here: a server restart (the fake keeps no data; a real Consul
//! keeps its Raft log, and its sessions survive a restart).
//!
//! Each test starts its own fake on `127.0.0.1:0`. The fake's test knob
//! `min_session_ttl` allows sub-second session TTLs (Consul's minimum is
//! 10 s), so timings are short: session TTL 500 ms (expiry after 2 × TTL, the
//! documented bound), lock-delay 200 ms; the whole file runs in about 9 s.
//!
//! Run it alone with
//! `cargo test -p rota --features cluster-consul --test cluster_consul`.
#![cfg(feature = "cluster-consul")]

mod support;

use support::cluster_conformance::{eventually, invalid_field, Fixture, Params};
use support::faults::{self, DropParams, WindowEnd};

use std::sync::Arc;
use std::time::{Duration, Instant};

use rota::cluster::{Cluster, ConsulCluster, ConsulClusterConfig};
use rota::ErrorKind;
use support::consul_fake::{FakeConsul, FakeOptions};

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

cluster_conformance!(
    conformance,
    || async {
        let ns = fake().await;
        Fixture::new((), move |node| ConsulCluster::new(config(&ns, &node)))
    },
    Params {
        attempts_per_node: 1000,
        lock_ttl: Duration::from_millis(300),
        expiry_slack: Duration::from_millis(500),
        election_settle: TTL * 3,
        failover_bound: TTL + LOCK_DELAY + Duration::from_secs(1),
        offline_within: 2 * TTL + Duration::from_secs(1),
        forgotten_within: Duration::from_secs(4),
    }
);

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
async fn bad_config_fails_clearly_and_fast() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_stay_exclusive_and_everything_recovers_when_connections_drop() {
    let fake = fake().await;
    let params = DropParams {
        lock_ttl: Duration::from_millis(300),
        retry_pause: Duration::from_millis(5),
        min_grants: 10,
        window_end: WindowEnd::LeaseDeadline,
    };
    let run = faults::connection_drops(fake.addr.to_string(), params, |port, i| {
        let config = ConsulClusterConfig {
            address: format!("127.0.0.1:{port}"),
            ..config(&fake, &format!("node-{i}"))
        };
        async move { Arc::new(ConsulCluster::new(config).await.unwrap()) as Arc<dyn Cluster> }
    })
    .await;
    run.finish().await;
}
