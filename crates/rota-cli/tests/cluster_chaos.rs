//! Chaos tests of cluster mode, one per backend: three `rota` daemons
//! (separate processes, the same `[cluster]` config) run 20 tasks every
//! second whose command appends `ROTA_TASK_ID ROTA_SCHEDULED_AT ROTA_NODE_ID`
//! to one shared file, while the test SIGKILLs nodes (the leader at least
//! twice) and restarts them, SIGSTOPs one past its lease and SIGCONTs it, and
//! restarts the backend server. Then, from the file:
//!
//! * no (task, instant) pair ran twice;
//! * every fire outside the failover windows ran;
//! * each failover (first second at which all 20 tasks fire again, after a
//!   kill or stop) took at most `election_timeout + 2 s`.
//!
//! Each test runs its own private backend server (so that restarting it does
//! not disturb other tests): Redis with an fsynced append-only file, etcd,
//! ZooKeeper. Consul runs the same test against the in-repo fake of its HTTP
//! API (`crates/rota/tests/support/consul_fake.rs`), not a real Consul.
//!
//! The default run lasts about 25 s per backend. `ROTA_CHAOS_FULL=1` runs
//! the full 60 s scenario of the issue (a kill every 10 s).
//! `ROTA_CHAOS_KEEP=1` keeps the work directory (config, fire file, logs).

#[path = "../../rota/tests/support/consul_fake.rs"]
#[allow(dead_code)]
mod consul_fake;
#[path = "../../rota/tests/support/servers.rs"]
mod servers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use servers::{free_port, Kind, PrivateServer};

const TASKS: usize = 20;
const NODES: usize = 3;
const ELECTION_TIMEOUT: Duration = Duration::from_secs(3);

/// The backend of one test.
enum Backend {
    Server(PrivateServer),
    Consul(consul_fake::FakeConsul),
}

impl Backend {
    async fn start(name: &str) -> Backend {
        let kind = match name {
            "redis" => Kind::Redis,
            "etcd" => Kind::Etcd,
            "zookeeper" => Kind::Zookeeper,
            "consul" => {
                let opts = consul_fake::FakeOptions {
                    min_session_ttl: Duration::from_secs(1),
                    ttl_multiplier: 1,
                    token: None,
                };
                return Backend::Consul(consul_fake::FakeConsul::start(opts).await);
            }
            other => panic!("no backend {other}"),
        };
        let server = tokio::task::spawn_blocking(move || PrivateServer::start(kind))
            .await
            .unwrap()
            .unwrap_or_else(|| {
                panic!("cannot start a private {name} server (run scripts/services.sh)")
            });
        Backend::Server(server)
    }

    fn endpoint(&self) -> String {
        match self {
            Backend::Server(s) if matches!(s.kind, Kind::Redis) => {
                format!("redis://{}/0", s.addr())
            }
            Backend::Server(s) => s.addr(),
            Backend::Consul(c) => c.url(),
        }
    }

    /// Kills the server and starts it again with the same data.
    async fn restart(&mut self) {
        match self {
            Backend::Server(s) => {
                let ok = tokio::task::block_in_place(|| s.restart());
                assert!(ok, "the backend did not come back");
            }
            Backend::Consul(c) => c.restart().await,
        }
    }
}

/// One daemon process.
struct Daemon {
    node: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl Daemon {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rota"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("ROTA_NODE_ID", &self.node)
            .env("ROTA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn rota");
        self.child = Some(child);
        self.stopped = false;
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap();
    }

    fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.stopped {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn config_text(backend: &str, endpoint: &str, port: u16, file: &Path, ns: &str) -> String {
    let mut s = format!(
        r#"[store]
url = "memory"

[http]
listen = "127.0.0.1:{port}"

[scheduler]
stop_grace = "2s"

[cluster]
backend = "{backend}"
endpoints = ["{endpoint}"]
namespace = "{ns}"
election_timeout = "{}s"
heartbeat_interval = "500ms"
lock_timeout = "2s"
distribute_tasks = true
"#,
        ELECTION_TIMEOUT.as_secs()
    );
    for i in 0..TASKS {
        s.push_str(&format!(
            r#"
[[tasks]]
name = "t{i:02}"
schedule = "* * * * * *"
command = ["sh", "-c", "echo \"$ROTA_TASK_ID $ROTA_SCHEDULED_AT $ROTA_NODE_ID\" >> '{}'"]
"#,
            file.display()
        ));
    }
    s
}

/// What the test did, and when.
#[derive(Debug, Clone)]
struct Fault {
    what: String,
    start: Timestamp,
    /// When the node or server was back (restarted, continued).
    end: Timestamp,
    /// Counted for the failover bound.
    failover: bool,
}

async fn leader(daemons: &[Daemon]) -> Option<usize> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    for d in daemons.iter().filter(|d| d.child.is_some() && !d.stopped) {
        let url = format!("http://127.0.0.1:{}/api/nodes", d.port);
        let Ok(resp) = client.get(&url).send().await else { continue };
        let Ok(nodes) = resp.json::<Vec<serde_json::Value>>().await else { continue };
        if let Some(id) =
            nodes.iter().find(|n| n["status"] == "leader").and_then(|n| n["id"].as_str())
        {
            return daemons.iter().position(|d| d.node == id);
        }
    }
    None
}

async fn online(daemons: &[Daemon]) -> usize {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
    let url = format!("http://127.0.0.1:{}/api/nodes", daemons[0].port);
    let Ok(resp) = client.get(&url).send().await else { return 0 };
    let Ok(nodes) = resp.json::<Vec<serde_json::Value>>().await else { return 0 };
    nodes.iter().filter(|n| n["status"] != "offline").count()
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

/// Runs the scenario on `backend` and checks the fire file.
async fn chaos(backend_name: &str) {
    let full = std::env::var("ROTA_CHAOS_FULL").is_ok_and(|v| v == "1");
    let dir =
        std::env::temp_dir().join(format!("rota-chaos-{backend_name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("fires.log");
    let mut backend = Backend::start(backend_name).await;
    let ns = format!("chaos-{}-{backend_name}", std::process::id());
    let mut daemons: Vec<Daemon> = (0..NODES)
        .map(|i| {
            let port = free_port();
            let config = dir.join(format!("node-{i}.toml"));
            std::fs::write(
                &config,
                config_text(backend_name, &backend.endpoint(), port, &file, &ns),
            )
            .unwrap();
            Daemon {
                node: format!("node-{i}"),
                port,
                config,
                log: dir.join(format!("node-{i}.log")),
                child: None,
                stopped: false,
            }
        })
        .collect();
    for d in &mut daemons {
        d.spawn();
    }
    let formed = Instant::now();
    while online(&daemons).await < NODES {
        assert!(formed.elapsed() < Duration::from_secs(20), "the cluster did not form");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let every node see the others, then watch from the next whole second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let begin = Timestamp::now();
    let t0 = Instant::now();

    // The plan: (offset, action). Kills restart the node at once.
    #[derive(Debug, Clone, Copy)]
    enum Act {
        KillLeader,
        KillAny,
        Stop(Duration),
        RestartBackend,
    }
    let plan: Vec<(u64, Act)> = if full {
        vec![
            (10, Act::KillLeader),
            (15, Act::Stop(Duration::from_secs(5))),
            (20, Act::KillAny),
            (30, Act::KillLeader),
            (35, Act::RestartBackend),
            (40, Act::KillAny),
            (50, Act::KillLeader),
        ]
    } else {
        vec![
            (3, Act::KillLeader),
            (7, Act::Stop(Duration::from_secs(5))),
            (14, Act::RestartBackend),
            (18, Act::KillLeader),
        ]
    };
    // Long enough that the last fault's failover (allowed up to
    // `ELECTION_TIMEOUT + 2 s`) is over before the last seconds, which must
    // all be complete: the last checked second is 2 s before the end, and
    // the check covers 3 seconds.
    let last_fault = plan.last().map_or(0, |(at, _)| *at);
    let settled = last_fault + ELECTION_TIMEOUT.as_secs() + 2 + 5;
    let total = Duration::from_secs(if full { 60 } else { 24 }.max(settled));
    let mut faults = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut next_random = |n: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % n as u64) as usize
    };
    for (at, act) in plan {
        sleep_until(t0 + Duration::from_secs(at)).await;
        match act {
            Act::KillLeader | Act::KillAny => {
                let victim = match act {
                    Act::KillLeader => leader(&daemons).await.expect("a leader"),
                    _ => next_random(NODES),
                };
                let start = Timestamp::now();
                daemons[victim].sigkill();
                daemons[victim].spawn();
                let what = format!("SIGKILL {} ({act:?}) and restart", daemons[victim].node);
                faults.push(Fault { what, start, end: Timestamp::now(), failover: true });
            }
            Act::Stop(pause) => {
                let victim = next_random(NODES);
                let start = Timestamp::now();
                daemons[victim].signal(Signal::SIGSTOP);
                daemons[victim].stopped = true;
                tokio::time::sleep(pause).await;
                daemons[victim].signal(Signal::SIGCONT);
                daemons[victim].stopped = false;
                let what = format!("SIGSTOP {} for {pause:?}, SIGCONT", daemons[victim].node);
                faults.push(Fault { what, start, end: Timestamp::now(), failover: true });
            }
            Act::RestartBackend => {
                let start = Timestamp::now();
                backend.restart().await;
                let what = format!("restart the {backend_name} server");
                faults.push(Fault { what, start, end: Timestamp::now(), failover: false });
            }
        }
    }
    sleep_until(t0 + total).await;
    let end = Timestamp::now();
    for d in &mut daemons {
        d.terminate();
    }

    // The fire file.
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mut runs: HashMap<(String, Timestamp), Vec<String>> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "bad line {line:?}");
        let at: Timestamp = parts[1].parse().unwrap();
        runs.entry((parts[0].to_string(), at)).or_default().push(parts[2].to_string());
    }
    let tasks: BTreeSet<String> = runs.keys().map(|(t, _)| t.clone()).collect();
    assert_eq!(tasks.len(), TASKS, "tasks seen: {tasks:?}");
    let twice: Vec<_> = runs.iter().filter(|(_, by)| by.len() > 1).collect();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for by in runs.values() {
        *per_node.entry(by[0].clone()).or_default() += 1;
    }

    // Every second from `begin` to `end` (less the last two: runs may still
    // be on their way) outside the failover windows.
    let first = begin.as_second() + 1;
    let last = end.as_second() - 2;
    let window = |f: &Fault| {
        (f.start.as_second() - 1, f.end.as_second() + ELECTION_TIMEOUT.as_secs() as i64 + 2)
    };
    let mut missing_outside = Vec::new();
    let mut missing_inside = 0;
    for sec in first..=last {
        let at = Timestamp::from_second(sec).unwrap();
        let in_window = faults.iter().any(|f| {
            let (a, b) = window(f);
            (a..=b).contains(&sec)
        });
        for task in &tasks {
            if !runs.contains_key(&(task.clone(), at)) {
                if in_window {
                    missing_inside += 1;
                } else {
                    missing_outside.push(format!("{task} at {at}"));
                }
            }
        }
    }
    // Failover: from each fault's start (to the millisecond) to the first
    // instant after which every task fired again for good, that is the last
    // second with a fire missing (before the next fault), plus one. Zero if
    // nothing was missed.
    let complete = |sec: i64| {
        let at = Timestamp::from_second(sec).unwrap();
        tasks.iter().all(|t| runs.contains_key(&(t.clone(), at)))
    };
    let starts: Vec<i64> = faults.iter().map(|f| f.start.as_second()).collect();
    let took = |i: usize| {
        let from = starts[i];
        let until = starts.get(i + 1).copied().unwrap_or(last + 1).min(last + 1);
        let began = faults[i].start.as_millisecond() as f64 / 1000.0;
        (from..until)
            .rev()
            .find(|&sec| !complete(sec))
            .map_or(0.0, |sec| ((sec + 1) as f64 - began).max(0.0))
    };
    let failovers: Vec<(String, f64)> = (0..faults.len())
        .filter(|&i| faults[i].failover)
        .map(|i| (faults[i].what.clone(), took(i)))
        .collect();
    let recovery_of_backend: Vec<(String, f64)> = (0..faults.len())
        .filter(|&i| !faults[i].failover)
        .map(|i| (faults[i].what.clone(), took(i)))
        .collect();
    let tail_complete = (last - 2..=last).all(complete);

    println!("chaos on {backend_name} ({}s):", (end.as_second() - begin.as_second()));
    for f in &faults {
        println!("  fault: {} at +{}s", f.what, f.start.as_second() - begin.as_second());
    }
    println!(
        "  runs: {} fires ran ({} lines); per node {per_node:?}",
        runs.len(),
        text.lines().count()
    );
    println!("  ran twice: {}", twice.len());
    println!(
        "  missing outside failover windows: {}; inside: {missing_inside}",
        missing_outside.len()
    );
    let show = |v: &[(String, f64)]| -> Vec<String> {
        v.iter().map(|(what, took)| format!("{what}: {took:.1} s")).collect()
    };
    println!("  failover (until every task fires again): {:?}", show(&failovers));
    println!("  backend restart recovery: {:?}", show(&recovery_of_backend));

    if std::env::var("ROTA_CHAOS_KEEP").is_ok_and(|v| v == "1") {
        println!("  kept {}", dir.display());
    }
    assert!(twice.is_empty(), "fires ran twice: {twice:?}");
    assert!(
        missing_outside.is_empty(),
        "fires missing outside failover windows: {missing_outside:?}"
    );
    let bound = ELECTION_TIMEOUT.as_secs_f64() + 2.0;
    for (what, took) in &failovers {
        assert!(*took <= bound, "failover after {what} took {took:.1}s > {bound}s");
    }
    assert!(tail_complete, "not every task fired in the last seconds: no recovery");
    // Every node did work.
    assert_eq!(per_node.len(), NODES, "{per_node:?}");
    if std::env::var("ROTA_CHAOS_KEEP").is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_redis() {
    chaos("redis").await;
}

#[cfg(feature = "cluster-etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_etcd() {
    chaos("etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_zookeeper() {
    chaos("zookeeper").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_consul_fake() {
    chaos("consul").await;
}
