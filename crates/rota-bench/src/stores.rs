//! `rota-bench stores`: throughput of rota's stores (memory, SQLite,
//! PostgreSQL, Redis) and the startup time of a scheduler over a full store.
//!
//! ```text
//! cargo run --release -p rota-bench -- stores
//! cargo run --release -p rota-bench -- stores --stores sqlite,postgres --ns 10000
//! ```
//!
//! For each store and each N, in this order, on one connection, one call at a
//! time (the store is cleared before each write phase; clearing is not timed):
//!
//! * single saves: `save` of each task. When N is more than 10,000 the first
//!   10,000 are timed, and if all N would take more than 60 s at that rate
//!   the rest are not run: the rate is the first 10,000's, marked as such;
//! * batch saves: `save_batch` in chunks of 1,000;
//! * `get_all` and `load_all` of the N tasks: the median of three runs;
//! * `get` of 10,000 random IDs (a fixed seed), one after another.
//!
//! Startup: the tasks are written to a SQLite file (or a PostgreSQL schema),
//! then a fresh process of this binary opens it, builds a scheduler over it
//! with a registry holding the handler, calls `start()` and polls `get_all()`
//! until it holds every task, each with `next_run_at` set. The time is from
//! just before the store is opened to then, inside the child. The store is
//! wrapped in one that times `load_all` and the saves the scheduler makes,
//! to show where `start()` spends its time.
//!
//! The PostgreSQL schema (`rota_bench_<pid>`) is dropped, the Redis keys
//! (`rota-bench:<pid>:*`) cleared (`clear`, then `<prefix>meta`, which
//! `clear` writes) and the SQLite files removed at the end,
//! whatever happened before.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use clap::{Args, ValueEnum};
use rota::{
    DefaultTask, ExecutionQuery, FuncHandler, HandlerError, HandlerRegistry, LoadReport,
    MemoryStore, PostgresOptions, PostgresStore, RedisOptions, RedisStore, Scheduler,
    SchedulerConfig, SqliteStore, Store, StoreStats, Task, TaskBuilder, TaskContext, TaskExecution,
    TaskHandler,
};
use serde_json::{json, Value};

use crate::AnyErr;

const SCHEDULE: &str = "* * * * * *";
/// Tasks per `save_batch` call.
const CHUNK: usize = 1_000;
/// Singles timed before deciding whether to extrapolate.
const SINGLES_SAMPLE: usize = 10_000;
/// Singles are extrapolated when all N would take longer than this.
const SINGLES_BUDGET: Duration = Duration::from_secs(60);
/// Random IDs read with `get`.
const GETS: usize = 10_000;
/// Runs of `get_all` and `load_all`; the median is reported.
const READ_RUNS: usize = 3;
/// How long a startup child may take before it is killed.
const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Options of `rota-bench stores`.
#[derive(Debug, Args)]
pub struct StoresArgs {
    /// Stores measured.
    #[arg(long, value_delimiter = ',', default_value = "memory,sqlite,postgres,redis")]
    stores: Vec<Kind>,
    /// Task counts.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    ns: Vec<usize>,
    /// Tasks in the store for the startup measurement (0: skip it).
    #[arg(long, default_value_t = 100_000)]
    startup_n: usize,
    /// Startup runs (fresh processes) per store; the median is reported.
    #[arg(long, default_value_t = 3)]
    startup_runs: usize,
    /// The PostgreSQL server.
    #[arg(long, default_value = "postgres://root@127.0.0.1:5432/test")]
    pg_url: String,
    /// The Redis server.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis_url: String,
    /// Internal: measure one startup in this process and print a JSON line.
    #[arg(long, hide = true, requires = "target")]
    startup_child: Option<Kind>,
    /// Internal: the SQLite file or PostgreSQL schema of `--startup-child`.
    #[arg(long, hide = true)]
    target: Option<String>,
}

/// A store under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// `MemoryStore::new()`.
    Memory,
    /// `SqliteStore::open(<temp file>)`.
    Sqlite,
    /// `PostgresStore::connect_with(<url>, schema rota_bench_<pid>)`.
    Postgres,
    /// `RedisStore::connect_with(<url>, prefix rota-bench:<pid>:)`.
    Redis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
            Kind::Redis => "redis",
        }
    }
}

/// Where this run's stores live.
struct Places {
    dir: PathBuf,
    /// A copy of this binary, run for the startup children: `target/release`
    /// may be rebuilt while the benchmark runs.
    exe: PathBuf,
    schema: String,
    prefix: String,
    pg_url: String,
    redis_url: String,
}

impl Places {
    async fn open(&self, kind: Kind, file: &str) -> Result<Arc<dyn Store>, AnyErr> {
        Ok(match kind {
            Kind::Memory => Arc::new(MemoryStore::new()),
            Kind::Sqlite => Arc::new(SqliteStore::open(self.dir.join(file)).await?),
            Kind::Postgres => Arc::new(connect_pg(&self.pg_url, &self.schema).await?),
            Kind::Redis => {
                let opts = RedisOptions { prefix: self.prefix.clone(), ..Default::default() };
                Arc::new(RedisStore::connect_with(&self.redis_url, opts).await?)
            }
        })
    }
}

async fn connect_pg(url: &str, schema: &str) -> rota::Result<PostgresStore> {
    let opts = PostgresOptions { schema: schema.into(), ..Default::default() };
    PostgresStore::connect_with(url, opts).await
}

/// The one handler every task names.
fn handler() -> Arc<dyn TaskHandler> {
    FuncHandler::new("bench", |_ctx: TaskContext| async { Ok::<(), HandlerError>(()) })
}

fn tasks(n: usize, h: &Arc<dyn TaskHandler>) -> Vec<DefaultTask> {
    (0..n)
        .map(|i| {
            TaskBuilder::new(format!("t{i:06}"), "", SCHEDULE, h.clone()).tag("team", "ops").build()
        })
        .collect()
}

/// `count` IDs drawn uniformly from the N tasks (splitmix64, fixed seed).
fn random_ids(n: usize, count: usize) -> Vec<String> {
    let mut s: u64 = 0x5eed_f00d_b07a;
    (0..count)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            format!("t{:06}", z % n as u64)
        })
        .collect()
}

/// Single saves: the rate, and how it was obtained.
struct Singles {
    rate: f64,
    timed: usize,
    secs: f64,
    /// Set when the rest was not run: the projected time of all N.
    projected_secs: Option<f64>,
}

struct Cell {
    singles: Singles,
    batch: f64,
    get_all: f64,
    load_all: f64,
    get: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn measure(store: &dyn Store, ts: &[DefaultTask], ids: &[String]) -> Result<Cell, AnyErr> {
    let n = ts.len();

    store.clear().await?;
    let t = Instant::now();
    let mut singles = None;
    for (i, task) in ts.iter().enumerate() {
        store.save(task).await?;
        if i + 1 == SINGLES_SAMPLE && n > SINGLES_SAMPLE {
            let secs = t.elapsed().as_secs_f64();
            let projected = secs * n as f64 / SINGLES_SAMPLE as f64;
            if projected > SINGLES_BUDGET.as_secs_f64() {
                singles = Some(Singles {
                    rate: SINGLES_SAMPLE as f64 / secs,
                    timed: SINGLES_SAMPLE,
                    secs,
                    projected_secs: Some(projected),
                });
                break;
            }
        }
    }
    let singles = singles.unwrap_or_else(|| {
        let secs = t.elapsed().as_secs_f64();
        Singles { rate: n as f64 / secs, timed: n, secs, projected_secs: None }
    });

    store.clear().await?;
    let t = Instant::now();
    for chunk in ts.chunks(CHUNK) {
        store.save_batch(chunk).await?;
    }
    let batch = n as f64 / t.elapsed().as_secs_f64();

    let mut runs = Vec::new();
    for _ in 0..READ_RUNS {
        let t = Instant::now();
        let all = store.get_all().await?;
        let secs = t.elapsed().as_secs_f64();
        if all.len() != n {
            return Err(format!("get_all: {} tasks, expected {n}", all.len()).into());
        }
        runs.push(n as f64 / secs);
    }
    let get_all = median(runs);

    let mut runs = Vec::new();
    for _ in 0..READ_RUNS {
        let t = Instant::now();
        let report = store.load_all().await?;
        let secs = t.elapsed().as_secs_f64();
        if report.tasks.len() != n || !report.errors.is_empty() {
            return Err(format!(
                "load_all: {} tasks and {} errors, expected {n} and 0",
                report.tasks.len(),
                report.errors.len()
            )
            .into());
        }
        runs.push(n as f64 / secs);
    }
    let load_all = median(runs);

    let t = Instant::now();
    for id in ids {
        let task = store.get(id).await?;
        if task.id() != id {
            return Err(format!("get({id:?}) returned task {:?}", task.id()).into());
        }
    }
    let get = ids.len() as f64 / t.elapsed().as_secs_f64();

    Ok(Cell { singles, batch, get_all, load_all, get })
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let s = format!("{:.0}", x.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// Runs the table and the startup measurements; prints markdown.
pub fn stores(args: StoresArgs) -> ExitCode {
    if let Some(kind) = args.startup_child {
        let target = args.target.unwrap_or_default();
        return match startup_child(kind, &target, args.startup_n, &args.pg_url) {
            Ok(v) => {
                println!("{v}");
                let _ = std::io::stdout().flush();
                // Do not wait for the scheduler (its tasks start firing): the numbers are out.
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("rota-bench stores --startup-child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match crate::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rota-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("rota-bench-{pid}"));
    let places = Places {
        exe: dir.join("rota-bench"),
        dir,
        schema: format!("rota_bench_{pid}"),
        prefix: format!("rota-bench:{pid}:"),
        pg_url: args.pg_url.clone(),
        redis_url: args.redis_url.clone(),
    };
    if let Err(e) = std::fs::create_dir_all(&places.dir) {
        eprintln!("rota-bench: creating {}: {e}", places.dir.display());
        return ExitCode::FAILURE;
    }
    // `/proc/self/exe` is this process's binary even once the file was replaced.
    let copied = std::fs::copy("/proc/self/exe", &places.exe)
        .or_else(|_| std::fs::copy(std::env::current_exe()?, &places.exe));
    if let Err(e) = copied {
        eprintln!("rota-bench: copying the binary to {}: {e}", places.exe.display());
        let _ = std::fs::remove_dir_all(&places.dir);
        return ExitCode::FAILURE;
    }
    let (rows, notes, startup) = rt.block_on(run(&args, &places));
    rt.block_on(cleanup(&args, &places));

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Stores: N tasks `{SCHEDULE}` with one tag, one call at a time, tokio multi-thread \
         runtime, {cores} cores. Rates are tasks per second (get: calls per second)."
    );
    println!(
        "Batch: `save_batch` of {CHUNK} tasks per call. get_all, load_all: median of \
         {READ_RUNS} runs. get: {GETS} random IDs."
    );
    println!();
    println!("| store | N | single saves/s | batch saves/s | get_all/s | load_all/s | get/s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!("{r}");
    }
    if !notes.is_empty() {
        println!();
        for n in &notes {
            println!("{n}");
        }
    }
    if !startup.is_empty() {
        println!();
        println!(
            "Startup over a store holding {} tasks: a fresh process opens the store, builds \
             the scheduler with a registry holding the handler, calls `start()`, and polls \
             `get_all()` until it holds every task with `next_run_at` set (target: under 2 s). \
             Median of {} runs.",
            thousands(args.startup_n as f64),
            args.startup_runs
        );
        println!();
        for s in &startup {
            println!("{s}");
        }
    }
    ExitCode::SUCCESS
}

async fn run(args: &StoresArgs, places: &Places) -> (Vec<String>, Vec<String>, Vec<String>) {
    let h = handler();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for &n in &args.ns {
        let ts = tasks(n, &h);
        let ids = random_ids(n, GETS);
        for &kind in &args.stores {
            eprintln!("stores: {} N={n} ...", kind.name());
            let head = format!("| {} | {} |", kind.name(), thousands(n as f64));
            let result = async {
                let store = places.open(kind, &format!("table-{n}.db")).await?;
                let cell = measure(store.as_ref(), &ts, &ids).await;
                // Leave nothing behind; the schema goes in `cleanup`.
                if kind != Kind::Memory {
                    store.clear().await?;
                }
                store.close().await?;
                cell
            }
            .await;
            match result {
                Ok(c) => {
                    let s = &c.singles;
                    let mark = if s.projected_secs.is_some() { " †" } else { "" };
                    eprintln!(
                        "  singles {} in {:.2} s, batch {:.0}/s, get_all {:.0}/s, \
                         load_all {:.0}/s, get {:.0}/s",
                        s.timed, s.secs, c.batch, c.get_all, c.load_all, c.get
                    );
                    if let Some(p) = s.projected_secs {
                        notes.push(format!(
                            "† {} N={}: single saves timed over the first {} only ({:.1} s); \
                             all {} would take about {:.0} s (over {} s), so the rate is \
                             extrapolated from those.",
                            kind.name(),
                            thousands(n as f64),
                            thousands(s.timed as f64),
                            s.secs,
                            thousands(n as f64),
                            p,
                            SINGLES_BUDGET.as_secs()
                        ));
                    }
                    rows.push(format!(
                        "{head} {}{mark} | {} | {} | {} | {} |",
                        thousands(s.rate),
                        thousands(c.batch),
                        thousands(c.get_all),
                        thousands(c.load_all),
                        thousands(c.get)
                    ));
                }
                Err(e) => {
                    eprintln!("  failed: {e}");
                    rows.push(format!(
                        "{head} failed: {} | | | | |",
                        e.to_string().replace('|', "/")
                    ));
                }
            }
        }
    }

    let mut startup = Vec::new();
    if args.startup_n > 0 {
        for kind in [Kind::Sqlite, Kind::Postgres] {
            if args.stores.contains(&kind) {
                eprintln!("stores: startup over {} with N={} ...", kind.name(), args.startup_n);
                startup.push(match startup_runs(args, places, kind, &h).await {
                    Ok(line) => line,
                    Err(e) => format!("- {}: failed: {e}", kind.name()),
                });
            }
        }
    }
    (rows, notes, startup)
}

/// Fills the store, then times `startup_runs` fresh processes over it.
async fn startup_runs(
    args: &StoresArgs,
    places: &Places,
    kind: Kind,
    h: &Arc<dyn TaskHandler>,
) -> Result<String, AnyErr> {
    let n = args.startup_n;
    let file = "startup.db";
    let target = match kind {
        Kind::Sqlite => places.dir.join(file).to_string_lossy().into_owned(),
        Kind::Postgres => places.schema.clone(),
        _ => return Err("startup is measured over sqlite and postgres only".into()),
    };
    {
        let store = places.open(kind, file).await?;
        store.clear().await?;
        for chunk in tasks(n, h).chunks(CHUNK) {
            store.save_batch(chunk).await?;
        }
        let total = store.stats().await?.total_tasks;
        store.close().await?;
        if total != n as i64 {
            return Err(format!("the store holds {total} tasks, expected {n}").into());
        }
    }
    let mut runs = Vec::new();
    for i in 0..args.startup_runs.max(1) {
        let mut cmd = Proc::new(&places.exe);
        cmd.args(["stores", "--startup-child", kind.name(), "--target", &target]).args([
            "--startup-n",
            &n.to_string(),
            "--pg-url",
            &args.pg_url,
        ]);
        let t = Instant::now();
        let v = run_child(cmd)?;
        let wall = t.elapsed().as_secs_f64();
        eprintln!("  run {}: {v} (process wall {wall:.3} s)", i + 1);
        runs.push((v, wall));
    }
    if kind == Kind::Postgres {
        let store = places.open(kind, file).await?;
        store.clear().await?;
        store.close().await?;
    } else {
        remove_sqlite(&places.dir.join(file));
    }
    let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    runs.sort_by(|a, b| num(&a.0, "ready_secs").total_cmp(&num(&b.0, "ready_secs")));
    let all: Vec<String> = runs.iter().map(|(v, _)| fmt_secs(num(v, "ready_secs"))).collect();
    let (v, wall) = &runs[runs.len() / 2];
    let ready = num(v, "ready_secs");
    let open = num(v, "open_secs");
    let build = num(v, "build_secs") - open;
    let start = num(v, "start_secs") - num(v, "build_secs");
    let check = ready - num(v, "start_secs");
    let load = num(v, "load_all_secs");
    let save = num(v, "save_secs");
    let saved = num(v, "saved_tasks");
    let verdict = if ready < 2.0 { "met" } else { "NOT met" };
    Ok(format!(
        "- {}: **{}** (runs: {}). Median run: open {}, build {}, `start()` {} (in the store: \
         `load_all` {}, saves of {} tasks {}; the rest {}), first `get_all()` check {}; \
         process wall time (spawn to exit) {}. Target < 2 s: {verdict}.",
        kind.name(),
        fmt_secs(ready),
        all.join(", "),
        fmt_secs(open),
        fmt_secs(build),
        fmt_secs(start),
        fmt_secs(load),
        thousands(saved),
        fmt_secs(save),
        fmt_secs(start - load - save),
        fmt_secs(check),
        fmt_secs(*wall),
    ))
}

/// Spawns `cmd`, waits (at most `CHILD_TIMEOUT`), and parses its last JSON line.
fn run_child(mut cmd: Proc) -> Result<Value, AnyErr> {
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
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
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {CHILD_TIMEOUT:?}").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(format!("{status}: {}", tail.join(" / ")).into());
    }
    out.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| "no JSON line from the child".into())
}

/// One startup, in this (fresh) process.
fn startup_child(kind: Kind, target: &str, n: usize, pg_url: &str) -> Result<Value, AnyErr> {
    let rt = crate::runtime()?;
    rt.block_on(async {
        let t0 = Instant::now();
        let inner: Arc<dyn Store> = match kind {
            Kind::Sqlite => Arc::new(SqliteStore::open(target).await?),
            Kind::Postgres => Arc::new(connect_pg(pg_url, target).await?),
            _ => return Err("startup is measured over sqlite and postgres only".into()),
        };
        let open = t0.elapsed().as_secs_f64();
        let timed = Arc::new(Timed::new(inner));
        let store: Arc<dyn Store> = timed.clone();
        let registry = HandlerRegistry::new();
        registry.register(handler());
        let sched = SchedulerConfig::new().store(store).registry(registry).build()?;
        let build = t0.elapsed().as_secs_f64();
        sched.start().await?;
        let start = t0.elapsed().as_secs_f64();
        let mut polls = 0;
        loop {
            polls += 1;
            let all = sched.get_all();
            if all.len() == n && all.iter().all(|t| t.next_run_at().is_some()) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                let set = all.iter().filter(|t| t.next_run_at().is_some()).count();
                return Err(format!(
                    "after 120 s: {} tasks, {set} with next_run_at, expected {n}",
                    all.len()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ready = t0.elapsed().as_secs_f64();
        let ns = |a: &AtomicU64| a.load(Relaxed) as f64 * 1e-9;
        Ok(json!({
            "load_all_secs": ns(&timed.load_all_ns),
            "saved_tasks": timed.saved_tasks.load(Relaxed),
            "save_secs": ns(&timed.save_ns),
            "other_store_calls": timed.other_calls.load(Relaxed),
            "store": kind.name(),
            "n": n,
            "open_secs": open,
            "build_secs": build,
            "start_secs": start,
            "ready_secs": ready,
            "polls": polls,
            "load_errors": sched.load_errors().len(),
        }))
    })
}

fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Drops the schema, clears the Redis keys and removes the temp directory.
async fn cleanup(args: &StoresArgs, places: &Places) {
    if args.stores.contains(&Kind::Postgres) {
        match drop_schema(&places.pg_url, &places.schema).await {
            Ok(()) => eprintln!("stores: dropped schema {}", places.schema),
            Err(e) => eprintln!("stores: could not drop schema {}: {e}", places.schema),
        }
    }
    if args.stores.contains(&Kind::Redis) {
        let cleared = async {
            let store = places.open(Kind::Redis, "").await?;
            store.clear().await?;
            store.close().await?;
            // `clear` deletes the store's keys, then writes `<prefix>meta`
            // (its `last_sync`): delete that one too.
            let client = redis::Client::open(places.redis_url.as_str())?;
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("DEL").arg(format!("{}meta", places.prefix)).exec_async(&mut con).await?;
            Ok::<(), AnyErr>(())
        };
        match cleared.await {
            Ok(()) => eprintln!("stores: cleared redis keys {}*", places.prefix),
            Err(e) => eprintln!("stores: could not clear redis keys {}*: {e}", places.prefix),
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&places.dir) {
        eprintln!("stores: could not remove {}: {e}", places.dir.display());
    }
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), AnyErr> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(conn);
    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE")).await?;
    drop(client);
    let _ = conn.await;
    Ok(())
}

/// A store that times what the scheduler asks of the one it wraps (the
/// startup child's breakdown).
#[derive(Debug)]
struct Timed {
    inner: Arc<dyn Store>,
    load_all_ns: AtomicU64,
    save_ns: AtomicU64,
    saved_tasks: AtomicU64,
    other_calls: AtomicU64,
}

impl Timed {
    fn new(inner: Arc<dyn Store>) -> Self {
        Timed {
            inner,
            load_all_ns: AtomicU64::new(0),
            save_ns: AtomicU64::new(0),
            saved_tasks: AtomicU64::new(0),
            other_calls: AtomicU64::new(0),
        }
    }

    fn other(&self) {
        self.other_calls.fetch_add(1, Relaxed);
    }

    fn saved(&self, t: Instant, tasks: usize) {
        self.save_ns.fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
        self.saved_tasks.fetch_add(tasks as u64, Relaxed);
    }
}

#[async_trait]
impl Store for Timed {
    async fn save(&self, task: &DefaultTask) -> rota::Result<()> {
        let t = Instant::now();
        let r = self.inner.save(task).await;
        self.saved(t, 1);
        r
    }
    async fn get(&self, id: &str) -> rota::Result<DefaultTask> {
        self.other();
        self.inner.get(id).await
    }
    async fn get_all(&self) -> rota::Result<Vec<DefaultTask>> {
        self.other();
        self.inner.get_all().await
    }
    async fn delete(&self, id: &str) -> rota::Result<()> {
        self.other();
        self.inner.delete(id).await
    }
    async fn clear(&self) -> rota::Result<()> {
        self.other();
        self.inner.clear().await
    }
    async fn save_batch(&self, tasks: &[DefaultTask]) -> rota::Result<()> {
        let t = Instant::now();
        let r = self.inner.save_batch(tasks).await;
        self.saved(t, tasks.len());
        r
    }
    async fn save_run_state(&self, tasks: &[DefaultTask]) -> rota::Result<()> {
        let t = Instant::now();
        let r = self.inner.save_run_state(tasks).await;
        self.saved(t, tasks.len());
        r
    }
    async fn get_by_tags(&self, tags: &BTreeMap<String, String>) -> rota::Result<Vec<DefaultTask>> {
        self.other();
        self.inner.get_by_tags(tags).await
    }
    async fn stats(&self) -> rota::Result<StoreStats> {
        self.other();
        self.inner.stats().await
    }
    async fn close(&self) -> rota::Result<()> {
        self.other();
        self.inner.close().await
    }
    async fn record_execution(&self, execution: &TaskExecution) -> rota::Result<()> {
        self.other();
        self.inner.record_execution(execution).await
    }
    async fn executions(&self, query: &ExecutionQuery) -> rota::Result<Vec<TaskExecution>> {
        self.other();
        self.inner.executions(query).await
    }
    async fn load_all(&self) -> rota::Result<LoadReport> {
        let t = Instant::now();
        let r = self.inner.load_all().await;
        self.load_all_ns.fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
        r
    }
    async fn record_executions(&self, batch: &[TaskExecution]) -> rota::Result<()> {
        self.other();
        self.inner.record_executions(batch).await
    }
}
