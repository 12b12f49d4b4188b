//! `rota-bench cluster`: rota's cluster backends on loopback.
//!
//! Per backend (Redis 127.0.0.1:6379, etcd 127.0.0.1:2379, ZooKeeper
//! 127.0.0.1:2181, and the **in-repo fake** of Consul's HTTP API from
//! `crates/rota/tests/support/consul_fake.rs`, since no Consul server runs
//! here):
//!
//! 1. lock acquire + release per second from one node, sequential;
//! 2. acquire attempts and successful grants per second with 3 nodes
//!    contending for one key (a grant is released at once);
//! 3. election failover: 3 candidates, the leader's `close()` (crash-like: its
//!    lease is not handed over), time until another candidate is told it was
//!    elected; median of several runs;
//! 4. broadcast latency: one sender, two subscribers (each its own cluster
//!    handle), the send time in the payload, p50/p99 over both subscribers.
//!
//! Every run uses a key prefix (ZooKeeper: a root) of its own under
//! `rota-bench/{pid}`, deleted at the end.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use rota::cluster::{
    Cluster, ClusterMessage, ConsulCluster, ConsulClusterConfig, EtcdCluster, EtcdClusterConfig,
    Leadership, RedisCluster, RedisClusterConfig, ZookeeperCluster, ZookeeperClusterConfig,
};

#[allow(dead_code, missing_docs, missing_debug_implementations)]
#[path = "../../rota/tests/support/consul_fake.rs"]
mod consul_fake;

use crate::now_us;

pub(crate) type AnyErr = Box<dyn std::error::Error + Send + Sync>;

const REDIS_ADDR: &str = "127.0.0.1:6379";
const ETCD_ADDR: &str = "127.0.0.1:2379";
const ZK_ADDR: &str = "127.0.0.1:2181";
/// The TTL of every lock taken.
const LOCK_TTL: Duration = Duration::from_secs(5);

/// Arguments of `rota-bench cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "redis,etcd,zookeeper,consul")]
    backends: Vec<Backend>,
    /// Sequential acquire+release iterations from one node (at most).
    #[arg(long, default_value_t = 2000)]
    iters: usize,
    /// Seconds of each lock measurement (at most, for one node; exactly, for
    /// three).
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Election failover runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    failovers: usize,
    /// Broadcast messages sent.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
}

/// A cluster backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    Redis,
    Etcd,
    Zookeeper,
    Consul,
}

impl Backend {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Etcd => "etcd",
            Backend::Zookeeper => "zookeeper",
            Backend::Consul => "consul (in-repo fake)",
        }
    }

    /// The lease that decides failover after a crashed leader.
    fn election_ttl(self) -> Duration {
        match self {
            Backend::Redis => Duration::from_secs(1),
            // etcd's smallest lease is 2 s (the backend rounds up to seconds).
            Backend::Etcd => Duration::from_secs(2),
            // The session timeout (the server's tickTime here is 500 ms).
            Backend::Zookeeper => Duration::from_secs(1),
            // The session TTL; the fake expires a session at 2 × TTL (the
            // bound Consul documents), then the 1 s lock-delay applies.
            Backend::Consul => Duration::from_secs(1),
        }
    }

    fn ttl_note(self) -> &'static str {
        match self {
            Backend::Redis => "election_ttl 1 s",
            Backend::Etcd => "election_ttl 2 s (etcd minimum)",
            Backend::Zookeeper => "session_timeout 1 s",
            Backend::Consul => "session_ttl 1 s (expiry ≤ 2 × TTL) + lock_delay 1 s",
        }
    }
}

/// Where one backend's clusters live: a namespace per run.
pub(crate) struct Env {
    backend: Backend,
    pid: u32,
    runs: Mutex<u32>,
    consul: Option<consul_fake::FakeConsul>,
}

impl Env {
    pub(crate) async fn new(backend: Backend) -> Env {
        let consul = if backend == Backend::Consul {
            Some(
                consul_fake::FakeConsul::start(consul_fake::FakeOptions {
                    min_session_ttl: Duration::from_millis(50),
                    ..consul_fake::FakeOptions::default()
                })
                .await,
            )
        } else {
            None
        };
        Env { backend, pid: std::process::id(), runs: Mutex::new(0), consul }
    }

    /// A fresh namespace for one measurement.
    pub(crate) fn namespace(&self) -> String {
        let mut runs = self.runs.lock().unwrap();
        *runs += 1;
        format!("{}/{}", self.pid, *runs)
    }

    async fn node(&self, ns: &str, node: &str) -> Result<Arc<dyn Cluster>, AnyErr> {
        let ttl = self.backend.election_ttl();
        let connect_timeout = Duration::from_secs(5);
        let c: Arc<dyn Cluster> = match self.backend {
            Backend::Redis => Arc::new(
                RedisCluster::new(RedisClusterConfig {
                    addr: REDIS_ADDR.into(),
                    node_id: node.into(),
                    key_prefix: format!("rota-bench:{}:", ns.replace('/', ":")),
                    election_ttl: ttl,
                    connect_timeout,
                    ..RedisClusterConfig::default()
                })
                .await?,
            ),
            Backend::Etcd => Arc::new(
                EtcdCluster::new(EtcdClusterConfig {
                    endpoints: vec![ETCD_ADDR.into()],
                    node_id: node.into(),
                    key_prefix: format!("/rota-bench/{ns}/"),
                    election_ttl: ttl,
                    connect_timeout,
                    ..EtcdClusterConfig::default()
                })
                .await?,
            ),
            Backend::Zookeeper => Arc::new(
                ZookeeperCluster::new(ZookeeperClusterConfig {
                    servers: vec![ZK_ADDR.into()],
                    node_id: node.into(),
                    root: format!("/rota-bench/{ns}"),
                    session_timeout: ttl,
                    forget_after: Duration::from_secs(3),
                    connect_timeout,
                    ..ZookeeperClusterConfig::default()
                })
                .await?,
            ),
            Backend::Consul => Arc::new(
                ConsulCluster::new(ConsulClusterConfig {
                    address: self.consul.as_ref().map(|f| f.addr.to_string()).unwrap_or_default(),
                    node_id: node.into(),
                    key_prefix: format!("rota-bench/{ns}/"),
                    session_ttl: ttl,
                    lock_delay: Duration::from_secs(1),
                    forget_after: Duration::from_secs(3),
                    connect_timeout,
                    ..ConsulClusterConfig::default()
                })
                .await?,
            ),
        };
        Ok(c)
    }

    pub(crate) async fn nodes(&self, ns: &str, n: usize) -> Result<Vec<Arc<dyn Cluster>>, AnyErr> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(self.node(ns, &format!("bench-{i}")).await?);
        }
        Ok(out)
    }

    /// Deletes everything under `rota-bench/{pid}` on the server.
    pub(crate) async fn cleanup(&self) -> Result<(), AnyErr> {
        match self.backend {
            Backend::Redis => {
                let client = redis::Client::open(format!("redis://{REDIS_ADDR}/"))?;
                let mut con = client.get_multiplexed_async_connection().await?;
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("rota-bench:{}:*", self.pid))
                    .query_async(&mut con)
                    .await?;
                for chunk in keys.chunks(500) {
                    redis::cmd("DEL").arg(chunk).exec_async(&mut con).await?;
                }
            }
            Backend::Etcd => {
                let mut client = etcd_client::Client::connect([ETCD_ADDR], None).await?;
                client
                    .delete(
                        format!("/rota-bench/{}/", self.pid),
                        Some(etcd_client::DeleteOptions::new().with_prefix()),
                    )
                    .await?;
            }
            Backend::Zookeeper => {
                let client = zookeeper_client::Client::connector()
                    .with_session_timeout(Duration::from_secs(2))
                    .connect(ZK_ADDR)
                    .await?;
                // Ephemeral nodes of closed sessions linger until the session
                // expires: retry for a while.
                let root = format!("/rota-bench/{}", self.pid);
                let mut clean = false;
                for _ in 0..50 {
                    if delete_tree(&client, &root).await {
                        clean = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if !clean {
                    return Err(format!("could not delete {root}").into());
                }
                // The shared parent, if no other run uses it.
                let _ = client.delete("/rota-bench", None).await;
            }
            // In memory, dropped with the fake.
            Backend::Consul => {}
        }
        Ok(())
    }
}

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

async fn close_all(nodes: &[Arc<dyn Cluster>]) {
    for n in nodes {
        let _ = n.close().await;
    }
}

/// (1) Sequential acquire + release from one node: operations per second.
async fn lock_single(env: &Env, args: &ClusterArgs) -> Result<f64, AnyErr> {
    let ns = env.namespace();
    let node = env.node(&ns, "bench-0").await?;
    // Warm-up: connections, sessions, scripts.
    for _ in 0..20 {
        if let Some(g) = node.acquire_lock("single", LOCK_TTL).await? {
            g.release().await?;
        }
    }
    let limit = Duration::from_secs(args.secs);
    let start = Instant::now();
    let mut done = 0usize;
    while done < args.iters && start.elapsed() < limit {
        let g = node
            .acquire_lock("single", LOCK_TTL)
            .await?
            .ok_or("an uncontended acquire was refused")?;
        if !g.release().await? {
            return Err("a release found the lock no longer held".into());
        }
        done += 1;
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    close_all(&[node]).await;
    Ok(rate)
}

/// (2) Three nodes contending for one key for `secs`: attempts and grants
/// per second (all nodes together).
async fn lock_contended(env: &Env, args: &ClusterArgs) -> Result<(f64, f64), AnyErr> {
    let ns = env.namespace();
    let nodes = env.nodes(&ns, 3).await?;
    let go = Instant::now() + Duration::from_millis(200);
    let end = go + Duration::from_secs(args.secs);
    let mut tasks = Vec::new();
    for node in &nodes {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(go.into()).await;
            let (mut attempts, mut grants) = (0u64, 0u64);
            let mut last_token = 0u64;
            while Instant::now() < end {
                attempts += 1;
                if let Some(g) = node.acquire_lock("contended", LOCK_TTL).await? {
                    grants += 1;
                    if g.token() <= last_token {
                        return Err::<_, AnyErr>("fencing token did not grow".into());
                    }
                    last_token = g.token();
                    g.release().await?;
                }
            }
            Ok((attempts, grants))
        }));
    }
    let (mut attempts, mut grants) = (0u64, 0u64);
    for t in tasks {
        let (a, g) = t.await??;
        attempts += a;
        grants += g;
    }
    let secs = (Instant::now() - go).as_secs_f64();
    close_all(&nodes).await;
    Ok((attempts as f64 / secs, grants as f64 / secs))
}

/// (3) One failover: 3 candidates, the leader closed, seconds until another
/// is elected.
async fn failover_once(env: &Env) -> Result<f64, AnyErr> {
    let ns = env.namespace();
    let nodes = env.nodes(&ns, 3).await?;
    let elected: Arc<Mutex<Vec<(usize, Instant)>>> = Arc::default();
    for (i, node) in nodes.iter().enumerate() {
        let elected = elected.clone();
        node.start_election(Arc::new(move |l| {
            if let Leadership::Elected { .. } = l {
                elected.lock().unwrap().push((i, Instant::now()));
            }
        }))
        .await?;
    }
    let wait = |n: usize, within: Duration| {
        let elected = elected.clone();
        async move {
            let start = Instant::now();
            while start.elapsed() < within {
                if elected.lock().unwrap().len() >= n {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            false
        }
    };
    if !wait(1, Duration::from_secs(15)).await {
        close_all(&nodes).await;
        return Err("no leader elected within 15 s".into());
    }
    // Let the other candidates settle into watching.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader = elected.lock().unwrap()[0].0;
    let t0 = Instant::now();
    nodes[leader].close().await?;
    let ok = wait(2, Duration::from_secs(30)).await;
    let result = if ok {
        let (next, at) = elected.lock().unwrap()[1];
        if next == leader {
            Err("the closed leader was elected again".into())
        } else {
            Ok((at - t0).as_secs_f64())
        }
    } else {
        Err("no new leader within 30 s".into())
    };
    for (i, n) in nodes.iter().enumerate() {
        if i != leader {
            let _ = n.stop_election().await;
        }
    }
    close_all(&nodes).await;
    result
}

/// (4) Broadcast latency: one sender, two subscribers. Returns (p50 ms,
/// p99 ms, received, expected).
async fn broadcast(env: &Env, args: &ClusterArgs) -> Result<(f64, f64, usize, usize), AnyErr> {
    let ns = env.namespace();
    let nodes = env.nodes(&ns, 3).await?;
    let lat: Arc<Mutex<Vec<i64>>> = Arc::default();
    for node in &nodes[1..] {
        let lat = lat.clone();
        node.subscribe(Arc::new(move |m: ClusterMessage| {
            let now = now_us();
            if m.kind != "bench" {
                return;
            }
            if let Some(sent) =
                std::str::from_utf8(&m.data).ok().and_then(|s| s.parse::<i64>().ok())
            {
                lat.lock().unwrap().push(now - sent);
            }
        }))
        .await?;
    }
    // Let the subscriptions (watches) settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..args.messages {
        let msg = ClusterMessage::new("bench", now_us().to_string());
        nodes[0].broadcast(msg).await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let expected = args.messages * 2;
    let start = Instant::now();
    while lat.lock().unwrap().len() < expected && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    close_all(&nodes).await;
    let mut l = lat.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |q: f64| {
        if l.is_empty() {
            f64::NAN
        } else {
            let i = ((q * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1;
            l[i] as f64 / 1000.0
        }
    };
    Ok((pct(0.50), pct(0.99), l.len(), expected))
}

fn cell<T>(r: &Result<T, AnyErr>, f: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => format!("failed: {}", e.to_string().replace('|', "/")),
    }
}

async fn bench_backend(backend: Backend, args: &ClusterArgs) -> String {
    let env = Env::new(backend).await;
    eprintln!("{}: lock, one node ...", backend.label());
    let single = lock_single(&env, args).await;
    eprintln!("  {:?}", single.as_ref().map_err(|e| e.to_string()));
    eprintln!("{}: lock, 3 contending nodes ...", backend.label());
    let contended = lock_contended(&env, args).await;
    eprintln!("  {:?}", contended.as_ref().map_err(|e| e.to_string()));
    let mut runs = Vec::new();
    let mut fail = None;
    for i in 0..args.failovers {
        eprintln!("{}: failover {} ...", backend.label(), i + 1);
        match failover_once(&env).await {
            Ok(s) => {
                eprintln!("  {s:.3} s");
                runs.push(s);
            }
            Err(e) => {
                eprintln!("  failed: {e}");
                fail = Some(e.to_string());
            }
        }
    }
    eprintln!("{}: broadcast ...", backend.label());
    let bcast = broadcast(&env, args).await;
    eprintln!("  {:?}", bcast.as_ref().map_err(|e| e.to_string()));
    if let Err(e) = env.cleanup().await {
        eprintln!("{}: cleanup failed: {e}", backend.label());
    }

    let failover = if runs.is_empty() {
        format!("failed: {}", fail.unwrap_or_default().replace('|', "/"))
    } else {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let all: Vec<String> = runs.iter().map(|s| format!("{s:.2}")).collect();
        let failed = if runs.len() < args.failovers {
            format!(", {} failed", args.failovers - runs.len())
        } else {
            String::new()
        };
        format!("{median:.2} s ({}{failed})", all.join(" / "))
    };
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        backend.label(),
        cell(&single, |r| format!("{r:.0}")),
        cell(&contended, |(a, _)| format!("{a:.0}")),
        cell(&contended, |(_, g)| format!("{g:.0}")),
        backend.ttl_note(),
        failover,
        cell(&bcast, |(p50, p99, _, _)| format!("{p50:.2} / {p99:.2}")),
        cell(&bcast, |(_, _, got, want)| format!("{got}/{want}")),
    )
}

/// Runs the cluster benchmark and prints a markdown table.
pub fn cluster(args: ClusterArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rota-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rows: Vec<String> = rt.block_on(async {
        let mut rows = Vec::new();
        for &b in &args.backends {
            rows.push(bench_backend(b, &args).await);
        }
        rows
    });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Cluster backends on loopback ({cores} cores, release build, one process). Lock TTL {} s; \
         one node: up to {} sequential acquire+release or {} s; 3 nodes: {} s on one key, a grant \
         released at once; failover: 3 candidates, the leader's close(), median of {}; \
         broadcast: {} messages, 1 ms apart, one sender, two subscribers.",
        LOCK_TTL.as_secs(),
        args.iters,
        args.secs,
        args.secs,
        args.failovers,
        args.messages,
    );
    println!();
    println!(
        "| backend | 1 node: acquire+release /s | 3 nodes: attempts /s | 3 nodes: grants /s | \
         election lease | failover (median, runs) | broadcast p50 / p99 ms | received |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|");
    for r in &rows {
        println!("{r}");
    }
    ExitCode::SUCCESS
}
