//! `rota-bench`: fires delivered, lateness, memory per task and CPU of rota
//! against tokio-cron-scheduler (`tcs`) and job_scheduler_ng (`jsng`).
//!
//! Each measurement runs in its own process (`fire` / `idle`), so resident
//! memory and CPU time belong to one library; `all` runs the whole matrix as
//! child processes of itself and prints markdown tables.
//!
//! ```text
//! cargo run --release -p rota-bench -- all --secs 10
//! cargo run --release -p rota-bench -- fire --lib rota --n 100000 --secs 10
//! cargo run --release -p rota-bench -- idle --lib tcs --n 100000 --secs 10
//! cargo run --release -p rota-bench -- stores
//! cargo run --release -p rota-bench -- cluster
//! ```
//!
//! `stores` measures rota's stores instead (see `stores.rs`), `cluster` its
//! cluster backends (see `cluster.rs`).
//!
//! Lateness is the start of the task's body minus its scheduled instant. rota
//! hands the scheduled instant to the handler (`ctx.scheduled_at()`); the
//! peers do not, so for them it is the start minus the most recent whole
//! second, which can never exceed one second (a fire later than that is
//! counted against the wrong second).

use std::io::Read;
use std::process::{Command as Proc, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

mod cluster;
mod distributed;
mod stores;

/// Benchmarks rota against tokio-cron-scheduler and job_scheduler_ng.
#[derive(Debug, Parser)]
#[command(name = "rota-bench", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N tasks firing every second: add time, bytes per task, fires
    /// delivered, lateness and CPU over S seconds (after a 2 s warm-up).
    /// Prints one JSON line.
    Fire {
        /// The library.
        #[arg(long)]
        lib: Lib,
        /// How many tasks.
        #[arg(long)]
        n: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// N tasks due once a year: CPU over S seconds (after a 2 s warm-up).
    /// Prints one JSON line.
    Idle {
        /// The library.
        #[arg(long)]
        lib: Lib,
        /// How many tasks.
        #[arg(long)]
        n: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// The matrix, each cell in a child process; prints markdown tables.
    All {
        /// Seconds measured per cell.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Libraries.
        #[arg(long, value_delimiter = ',', default_value = "rota,tcs,jsng,jsng-tt")]
        libs: Vec<Lib>,
        /// Task counts of the fire runs.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        ns: Vec<usize>,
        /// Task count of the idle runs.
        #[arg(long, default_value_t = 100_000)]
        idle_n: usize,
    },
    /// Saves, loads and gets per second of each rota store (memory, SQLite,
    /// PostgreSQL, Redis), and the startup time of a scheduler over 100,000
    /// stored tasks. Prints markdown.
    Stores(stores::StoresArgs),
    /// Locks per second (one node, three contending), election failover and
    /// broadcast latency of each rota cluster backend (Redis, etcd,
    /// ZooKeeper, and the in-repo fake of Consul). Prints markdown.
    Cluster(cluster::ClusterArgs),
    /// Coordinated fires per second of a 3-node cluster of
    /// DistributedSchedulers on each backend, with lateness and backend
    /// requests per fire. Prints markdown.
    Distributed(distributed::DistributedArgs),
}

/// The library under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lib {
    /// rota's `DefaultScheduler` with a `MemoryStore` (defaults otherwise).
    Rota,
    /// tokio-cron-scheduler 0.15 (`JobScheduler`, `Job::new_async`).
    Tcs,
    /// job_scheduler_ng 2.5 driven as its README shows: `tick()`, then sleep
    /// `MIN_DURATION` (500 ms), on a dedicated thread.
    Jsng,
    /// job_scheduler_ng 2.5 driven by `tick()`, then sleep
    /// `time_till_next_job()` capped at 10 ms, on a dedicated thread.
    JsngTt,
}

impl Lib {
    fn name(self) -> &'static str {
        match self {
            Lib::Rota => "rota",
            Lib::Tcs => "tcs",
            Lib::Jsng => "jsng",
            Lib::JsngTt => "jsng-tt",
        }
    }
}

const EVERY_SECOND: &str = "* * * * * *";
const YEARLY: &str = "0 0 0 1 1 *";
const WARM_UP_SECS: i64 = 2;

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_micros() as i64
}

/// CPU time of the whole process (all threads, user + system), in seconds.
fn cpu_secs() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Resident set size from `/proc/self/status` (VmRSS), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Sleeps (the calling OS thread) until the wall clock reads `t_us`.
fn sleep_until_us(t_us: i64) {
    let wait = t_us - now_us();
    if wait > 0 {
        std::thread::sleep(Duration::from_micros(wait as u64));
    }
}

/// 10 µs buckets up to 100 ms, then 1 ms buckets up to 100 s, then one more.
const FINE: usize = 10_000;
const COARSE: usize = 99_900;

fn bucket(late_us: u64) -> usize {
    if late_us < 100_000 {
        (late_us / 10) as usize
    } else if late_us < 100_000_000 {
        FINE + ((late_us - 100_000) / 1000) as usize
    } else {
        FINE + COARSE
    }
}

fn bucket_mid_us(i: usize) -> u64 {
    if i < FINE {
        i as u64 * 10 + 5
    } else if i < FINE + COARSE {
        100_000 + (i - FINE) as u64 * 1000 + 500
    } else {
        100_000_000
    }
}

/// Where fires are recorded: a few relaxed atomic adds per fire, on a shard
/// of the recording thread's own, so bodies running on several threads at
/// once do not contend for the same cache lines (that would measure the
/// recorder, not the scheduler).
struct Recorder {
    /// The first counted scheduled second (Unix seconds); `i64::MAX` until set.
    first_sec: AtomicI64,
    shards: Vec<Shard>,
}

/// Threads get shards round-robin; a few threads may share one.
const SHARDS: usize = 8;

#[repr(align(128))]
struct Shard {
    /// Fires counted per scheduled second of the window.
    per_sec: Vec<AtomicU64>,
    /// Lateness histogram of the counted fires.
    hist: Vec<AtomicU64>,
    max_us: AtomicU64,
    /// Counted fires whose body started before the scheduled instant.
    early: AtomicU64,
    /// Every fire, counted or not.
    all: AtomicU64,
}

fn shard_index() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static MINE: usize = (NEXT.fetch_add(1, Relaxed) as usize) % SHARDS;
    }
    MINE.with(|m| *m)
}

impl Recorder {
    fn new(secs: usize) -> Self {
        // Built element by element, so every page is touched (resident)
        // before the baseline RSS is read.
        let shard = || Shard {
            per_sec: (0..secs).map(|_| AtomicU64::new(0)).collect(),
            hist: (0..=FINE + COARSE).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
            early: AtomicU64::new(0),
            all: AtomicU64::new(0),
        };
        Recorder {
            first_sec: AtomicI64::new(i64::MAX),
            shards: (0..SHARDS).map(|_| shard()).collect(),
        }
    }

    #[inline]
    fn record(&self, sched_us: i64, start_us: i64) {
        let sh = &self.shards[shard_index()];
        sh.all.fetch_add(1, Relaxed);
        let idx = sched_us.div_euclid(1_000_000) - self.first_sec.load(Relaxed);
        if idx < 0 || idx as usize >= sh.per_sec.len() {
            return;
        }
        sh.per_sec[idx as usize].fetch_add(1, Relaxed);
        let late = start_us - sched_us;
        let late = if late < 0 {
            sh.early.fetch_add(1, Relaxed);
            0
        } else {
            late as u64
        };
        sh.hist[bucket(late)].fetch_add(1, Relaxed);
        sh.max_us.fetch_max(late, Relaxed);
    }

    /// For libraries that do not say which instant a fire is for: the most
    /// recent whole second.
    #[inline]
    fn record_floor(&self) {
        let s = now_us();
        self.record(s - s.rem_euclid(1_000_000), s);
    }

    fn sum(&self, f: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(f).sum()
    }

    fn per_sec(&self) -> Vec<u64> {
        let secs = self.shards[0].per_sec.len();
        (0..secs).map(|i| self.sum(|s| s.per_sec[i].load(Relaxed))).collect()
    }

    fn delivered(&self) -> u64 {
        self.per_sec().iter().sum()
    }

    fn all(&self) -> u64 {
        self.sum(|s| s.all.load(Relaxed))
    }

    fn early(&self) -> u64 {
        self.sum(|s| s.early.load(Relaxed))
    }

    fn max_us(&self) -> u64 {
        self.shards.iter().map(|s| s.max_us.load(Relaxed)).max().unwrap_or(0)
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> =
            (0..self.shards[0].hist.len()).map(|i| self.sum(|s| s.hist[i].load(Relaxed))).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let want = ((q * total as f64).ceil() as u64).max(1);
        let mut acc = 0;
        for (i, c) in counts.iter().enumerate() {
            acc += c;
            if acc >= want {
                return bucket_mid_us(i) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

/// A scheduler with its tasks added and started, kept alive while measured.
struct Setup {
    add_secs: f64,
    start_secs: f64,
    rss_before: u64,
    rss_after: u64,
    _keep: Box<dyn std::any::Any>,
}

type AnyErr = Box<dyn std::error::Error + Send + Sync>;

fn setup(
    rt: &tokio::runtime::Runtime,
    lib: Lib,
    n: usize,
    schedule: &'static str,
    rec: Arc<Recorder>,
) -> Result<Setup, AnyErr> {
    match lib {
        Lib::Rota => rt.block_on(setup_rota(n, schedule, rec)),
        Lib::Tcs => rt.block_on(setup_tcs(n, schedule, rec)),
        Lib::Jsng | Lib::JsngTt => setup_jsng(lib, n, schedule, rec),
    }
}

async fn setup_rota(n: usize, schedule: &str, rec: Arc<Recorder>) -> Result<Setup, AnyErr> {
    use rota::{DefaultTask, FuncHandler, HandlerError, MemoryStore, Scheduler, SchedulerConfig};
    let rss_before = rss_bytes();
    let sched = SchedulerConfig::new().store(Arc::new(MemoryStore::new())).build()?;
    let t = Instant::now();
    for i in 0..n {
        let r = rec.clone();
        // The closure runs when the handler's future is first polled: the
        // start of the body.
        let h = FuncHandler::new(format!("h{i}"), move |ctx: rota::TaskContext| {
            r.record(ctx.scheduled_at().as_microsecond(), now_us());
            std::future::ready(Ok::<(), HandlerError>(()))
        });
        sched.add(DefaultTask::new(format!("t{i}"), "bench", schedule, h)).await?;
    }
    let add_secs = t.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let t = Instant::now();
    sched.start().await?;
    Ok(Setup {
        add_secs,
        start_secs: t.elapsed().as_secs_f64(),
        rss_before,
        rss_after,
        _keep: Box::new(sched),
    })
}

async fn setup_tcs(n: usize, schedule: &str, rec: Arc<Recorder>) -> Result<Setup, AnyErr> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let e = |e: tokio_cron_scheduler::JobSchedulerError| format!("tokio-cron-scheduler: {e:?}");
    let rss_before = rss_bytes();
    let sched = JobScheduler::new().await.map_err(e)?;
    let t = Instant::now();
    for _ in 0..n {
        let r = rec.clone();
        let job = Job::new_async(schedule, move |_id, _sched| {
            let r = r.clone();
            Box::pin(async move { r.record_floor() })
        })
        .map_err(e)?;
        sched.add(job).await.map_err(e)?;
    }
    let add_secs = t.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let t = Instant::now();
    sched.start().await.map_err(e)?;
    Ok(Setup {
        add_secs,
        start_secs: t.elapsed().as_secs_f64(),
        rss_before,
        rss_after,
        _keep: Box::new(sched),
    })
}

fn setup_jsng(
    lib: Lib,
    n: usize,
    schedule: &'static str,
    rec: Arc<Recorder>,
) -> Result<Setup, AnyErr> {
    use job_scheduler_ng::{Job, JobScheduler, Schedule, MIN_DURATION};
    let rss_before = rss_bytes();
    let (tx, rx) = std::sync::mpsc::channel::<Result<f64, String>>();
    let go = Arc::new(AtomicBool::new(false));
    let go2 = go.clone();
    std::thread::Builder::new().name("jsng-tick".into()).spawn(move || {
        let mut sched = JobScheduler::new();
        let t = Instant::now();
        for _ in 0..n {
            let cron: Schedule = match schedule.parse() {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(format!("job_scheduler_ng: {e}")));
                    return;
                }
            };
            let r = rec.clone();
            sched.add(Job::new(cron, move || r.record_floor()));
        }
        let _ = tx.send(Ok(t.elapsed().as_secs_f64()));
        while !go2.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(1));
        }
        loop {
            sched.tick();
            let wait = if lib == Lib::JsngTt {
                sched.time_till_next_job().min(Duration::from_millis(10))
            } else {
                Duration::from_millis(MIN_DURATION)
            };
            std::thread::sleep(wait);
        }
    })?;
    let add_secs = rx.recv()??;
    let rss_after = rss_bytes();
    go.store(true, Relaxed);
    Ok(Setup { add_secs, start_secs: 0.0, rss_before, rss_after, _keep: Box::new(()) })
}

fn runtime() -> Result<tokio::runtime::Runtime, AnyErr> {
    // Multi-thread, default worker count (one per core).
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

fn common(lib: Lib, n: usize, secs: u64, s: &Setup) -> serde_json::Map<String, Value> {
    let per_task = (s.rss_after as f64 - s.rss_before as f64) / n.max(1) as f64;
    let mut m = serde_json::Map::new();
    m.insert("lib".into(), json!(lib.name()));
    m.insert("n".into(), json!(n));
    m.insert("secs".into(), json!(secs));
    m.insert("add_secs".into(), json!(round(s.add_secs, 4)));
    m.insert("start_secs".into(), json!(round(s.start_secs, 4)));
    m.insert("rss_before".into(), json!(s.rss_before));
    m.insert("rss_after_add".into(), json!(s.rss_after));
    m.insert("bytes_per_task".into(), json!(round(per_task, 1)));
    m
}

fn fire(lib: Lib, n: usize, secs: u64) -> Result<Value, AnyErr> {
    let rt = runtime()?;
    let rec = Arc::new(Recorder::new(secs as usize));
    let s = setup(&rt, lib, n, EVERY_SECOND, rec.clone())?;
    // The first counted second: a whole second at least WARM_UP_SECS away.
    let first = now_us().div_euclid(1_000_000) + 1 + WARM_UP_SECS;
    rec.first_sec.store(first, Relaxed);
    let end = first + secs as i64;
    // CPU is read half a second before the first and the last-plus-one
    // counted instants: exactly `secs` fire instants in the interval.
    sleep_until_us(first * 1_000_000 - 500_000);
    let cpu0 = cpu_secs();
    let rss_start = rss_bytes();
    sleep_until_us(end * 1_000_000 - 500_000);
    let cpu1 = cpu_secs();
    // Late fires of the window: wait until the count stops moving (10 s at most).
    sleep_until_us(end * 1_000_000 + 1_000_000);
    let mut last = rec.delivered();
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let d = rec.delivered();
        if d == last || Instant::now() > give_up {
            last = d;
            break;
        }
        last = d;
    }
    let expected = n as u64 * secs;
    let per_sec: Vec<u64> = rec.per_sec();
    let mut m = common(lib, n, secs, &s);
    m.insert("expected".into(), json!(expected));
    m.insert("delivered".into(), json!(last));
    m.insert("delivered_pct".into(), json!(round(last as f64 * 100.0 / expected.max(1) as f64, 3)));
    m.insert("per_second".into(), json!(per_sec));
    m.insert("p50_ms".into(), json!(round(rec.percentile_ms(0.50), 3)));
    m.insert("p99_ms".into(), json!(round(rec.percentile_ms(0.99), 3)));
    m.insert("max_ms".into(), json!(round(rec.max_us() as f64 / 1000.0, 3)));
    m.insert("early".into(), json!(rec.early()));
    m.insert("fires_total".into(), json!(rec.all()));
    m.insert("cpu_secs".into(), json!(round(cpu1 - cpu0, 4)));
    m.insert("cpu_secs_per_10s".into(), json!(round((cpu1 - cpu0) * 10.0 / secs as f64, 4)));
    m.insert("rss_window_start".into(), json!(rss_start));
    m.insert("rss_end".into(), json!(rss_bytes()));
    Ok(Value::Object(m))
}

fn idle(lib: Lib, n: usize, secs: u64) -> Result<Value, AnyErr> {
    let rt = runtime()?;
    let rec = Arc::new(Recorder::new(1));
    let s = setup(&rt, lib, n, YEARLY, rec.clone())?;
    std::thread::sleep(Duration::from_secs(WARM_UP_SECS as u64));
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let cpu1 = cpu_secs();
    let wall = t0.elapsed().as_secs_f64();
    let mut m = common(lib, n, secs, &s);
    m.insert("cpu_secs".into(), json!(round(cpu1 - cpu0, 6)));
    m.insert("cpu_pct_core".into(), json!(round((cpu1 - cpu0) * 100.0 / wall, 5)));
    m.insert("fires_total".into(), json!(rec.all()));
    m.insert("rss_end".into(), json!(rss_bytes()));
    Ok(Value::Object(m))
}

/// The outcome of one child process.
enum Outcome {
    Done(Value),
    TimedOut,
    Failed(String),
}

fn run_child(kind: &str, lib: Lib, n: usize, secs: u64) -> Outcome {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(format!("current_exe: {e}")),
    };
    let mut child = match Proc::new(exe)
        .args([kind, "--lib", lib.name(), "--n", &n.to_string()])
        .args(["--secs", &secs.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("spawn: {e}")),
    };
    // Drain both pipes in the background so a chatty child never blocks.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Outcome::Failed(format!("wait: {e}")),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        None => Outcome::TimedOut,
        Some(st) if !st.success() => {
            let tail: String = err.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            Outcome::Failed(format!("{st}: {tail}"))
        }
        Some(_) => match out.lines().rev().find_map(|l| serde_json::from_str(l).ok()) {
            Some(v) => Outcome::Done(v),
            None => Outcome::Failed("no JSON line".into()),
        },
    }
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms.is_nan() {
        "-".into()
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.0}")
    }
}

fn fire_row(lib: Lib, n: usize, o: &Outcome) -> String {
    let head = format!("| {} | {n} |", lib.name());
    match o {
        Outcome::Done(v) => format!(
            "{head} {} | {:.0} | {:.2} | {} | {} | {} | {:.2} |",
            fmt_secs(num(v, "add_secs")),
            num(v, "bytes_per_task"),
            num(v, "delivered_pct"),
            fmt_ms(num(v, "p50_ms")),
            fmt_ms(num(v, "p99_ms")),
            fmt_ms(num(v, "max_ms")),
            num(v, "cpu_secs_per_10s"),
        ),
        Outcome::TimedOut => format!("{head} timed out | | | | | | |"),
        Outcome::Failed(e) => format!("{head} failed: {} | | | | | | |", e.replace('|', "/")),
    }
}

fn idle_row(lib: Lib, n: usize, o: &Outcome) -> String {
    let head = format!("| {} | {n} |", lib.name());
    match o {
        Outcome::Done(v) => format!(
            "{head} {} | {:.0} | {:.4} % |",
            fmt_secs(num(v, "add_secs")),
            num(v, "bytes_per_task"),
            num(v, "cpu_pct_core"),
        ),
        Outcome::TimedOut => format!("{head} timed out | | |"),
        Outcome::Failed(e) => format!("{head} failed: {} | | |", e.replace('|', "/")),
    }
}

fn all(secs: u64, libs: &[Lib], ns: &[usize], idle_n: usize) {
    let mut fire_rows = Vec::new();
    for &lib in libs {
        for &n in ns {
            eprintln!("fire --lib {} --n {n} --secs {secs} ...", lib.name());
            let o = run_child("fire", lib, n, secs);
            log_outcome(&o);
            fire_rows.push(fire_row(lib, n, &o));
        }
    }
    let mut idle_rows = Vec::new();
    for &lib in libs {
        eprintln!("idle --lib {} --n {idle_n} --secs {secs} ...", lib.name());
        let o = run_child("idle", lib, idle_n, secs);
        log_outcome(&o);
        idle_rows.push(idle_row(lib, idle_n, &o));
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("Fire: every task every second, {secs} s measured after a 2 s warm-up ({cores} cores, one process per row).");
    println!();
    println!(
        "| lib | N | add time | B/task | delivered % | p50 ms | p99 ms | max ms | CPU s per 10 s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &fire_rows {
        println!("{r}");
    }
    println!();
    println!("Idle: N tasks due once a year (`{YEARLY}`), CPU over {secs} s after a 2 s warm-up.");
    println!();
    println!("| lib | N | add time | B/task | CPU % of one core |");
    println!("|---|---:|---:|---:|---:|");
    for r in &idle_rows {
        println!("{r}");
    }
}

fn log_outcome(o: &Outcome) {
    match o {
        Outcome::Done(v) => eprintln!("  {v}"),
        Outcome::TimedOut => eprintln!("  timed out"),
        Outcome::Failed(e) => eprintln!("  failed: {e}"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fire { lib, n, secs } => fire(lib, n, secs),
        Command::Idle { lib, n, secs } => idle(lib, n, secs),
        Command::All { secs, libs, ns, idle_n } => {
            all(secs, &libs, &ns, idle_n);
            return ExitCode::SUCCESS;
        }
        Command::Stores(args) => return stores::stores(args),
        Command::Cluster(args) => return cluster::cluster(args),
        Command::Distributed(args) => return distributed::distributed(args),
    };
    match result {
        Ok(v) => {
            println!("{v}");
            // Do not wait for the schedulers to shut down: the numbers are out.
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("rota-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
