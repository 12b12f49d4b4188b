//! `rota-bench distributed`: coordinated fires per second of a 3-node
//! cluster of `DistributedScheduler`s, per backend.
//!
//! For each rate R (fires per second across the cluster) the bench starts
//! three `DistributedScheduler`s in this process (each with its own cluster
//! handle, so its own connections), with task distribution on, each
//! declaring the same R tasks firing every second (default overlap policy:
//! every claim also takes the task's run lock). Handlers record their start
//! minus their scheduled instant. After one second of warm-up it measures
//! `--secs` seconds: fires delivered against expected, lateness p50 / p99 /
//! max, and the requests the three cluster handles sent to the backend per
//! fire (heartbeats, registry reads, claims and releases included). It goes
//! up the rates until lateness p99 passes 50 ms or fires are lost, and
//! reports the highest rate that stayed within both.
//!
//! All three nodes share this machine's cores (and the backend server), so
//! the rates are those of a whole cluster on one 2-core box.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use jiff::Timestamp;
use rota::{
    DistributedConfig, DistributedScheduler, FuncHandler, MemoryStore, OverlapPolicy, Scheduler,
    SchedulerConfig, TaskBuilder,
};

use crate::cluster::{AnyErr, Backend, Env};

/// Arguments of `rota-bench distributed`.
#[derive(Debug, Args)]
pub struct DistributedArgs {
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "redis,etcd,zookeeper,consul")]
    backends: Vec<Backend>,
    /// Rates (fires per second across the cluster) tried in order.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,5000,10000,20000")]
    rates: Vec<usize>,
    /// Seconds measured per rate.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// p99 lateness bound, ms.
    #[arg(long, default_value_t = 50.0)]
    p99_ms: f64,
    /// Let the tasks' runs overlap: a claim is then only the fire mark, with
    /// no run lock to take and release.
    #[arg(long)]
    allow_overlap: bool,
}

/// One measured rate.
#[derive(Debug, Clone)]
struct Point {
    rate: usize,
    expected: usize,
    delivered: usize,
    twice: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests_per_fire: Option<f64>,
}

type Samples = Arc<Mutex<Vec<(u32, i64, u64)>>>;

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn measure(env: &Env, rate: usize, secs: u64, overlap: bool) -> Result<Point, AnyErr> {
    let ns = env.namespace();
    let clusters = env.nodes(&ns, 3).await?;
    // (task index, scheduled second, lateness µs)
    let samples: Samples = Arc::new(Mutex::new(Vec::with_capacity(rate * (secs as usize + 3))));
    let mut nodes = Vec::new();
    for (i, cluster) in clusters.iter().enumerate() {
        let scheduler = SchedulerConfig::new().store(Arc::new(MemoryStore::new())).metrics(false);
        let config = DistributedConfig {
            heartbeat_interval: Duration::from_millis(500),
            lock_timeout: Duration::from_secs(10),
            enable_task_distribution: true,
            ..DistributedConfig::new(format!("bench-{i}"), cluster.clone())
        };
        let ds = DistributedScheduler::with_config(scheduler, config)?;
        for t in 0..rate {
            let samples = samples.clone();
            let handler = FuncHandler::new(format!("h{t}"), move |ctx| {
                let samples = samples.clone();
                async move {
                    let now = Timestamp::now();
                    let at = ctx.scheduled_at();
                    let late = now.duration_since(at).as_micros().max(0) as u64;
                    samples.lock().unwrap().push((t as u32, at.as_second(), late));
                    Ok(())
                }
            });
            let policy = if overlap { OverlapPolicy::Allow } else { OverlapPolicy::Skip };
            let task = TaskBuilder::new(format!("t{t}"), "", "* * * * * *", handler)
                .overlap(policy)
                .build();
            ds.add(task).await?;
        }
        nodes.push(ds);
    }
    for ds in &nodes {
        ds.start().await?;
    }
    for ds in &nodes {
        ds.refresh_view().await?;
    }
    // Warm up one second, then measure whole seconds.
    let start = Timestamp::now().as_second() + 2;
    let end = start + secs as i64;
    let requests = |nodes: &[DistributedScheduler]| -> Option<u64> {
        nodes.iter().map(|n| n.cluster().requests_sent()).sum()
    };
    let wait_until = |sec: i64| async move {
        let now = Timestamp::now();
        let target = Timestamp::from_second(sec).unwrap();
        if target > now {
            tokio::time::sleep(now.duration_until(target).unsigned_abs()).await;
        }
    };
    wait_until(start).await;
    let before = requests(&nodes);
    wait_until(end).await;
    let after = requests(&nodes);
    // Let the last second's fires finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for ds in &nodes {
        let _ = ds.stop().await;
    }
    for c in &clusters {
        let _ = c.close().await;
    }
    let samples = samples.lock().unwrap();
    let mut seen = std::collections::HashMap::new();
    let mut late = Vec::new();
    for &(t, sec, us) in samples.iter() {
        if sec >= start && sec < end {
            *seen.entry((t, sec)).or_insert(0usize) += 1;
            late.push(us as f64 / 1000.0);
        }
    }
    late.sort_by(f64::total_cmp);
    let expected = rate * secs as usize;
    let fires = seen.len();
    Ok(Point {
        rate,
        expected,
        delivered: fires,
        twice: seen.values().filter(|&&n| n > 1).count(),
        p50_ms: pct(&late, 0.50),
        p99_ms: pct(&late, 0.99),
        max_ms: late.last().copied().unwrap_or(f64::NAN),
        requests_per_fire: before.zip(after).map(|(b, a)| (a - b) as f64 / expected.max(1) as f64),
    })
}

async fn bench_backend(backend: Backend, args: &DistributedArgs) -> Vec<String> {
    let env = Env::new(backend).await;
    let mut rows = Vec::new();
    let mut best = None;
    for &rate in &args.rates {
        eprintln!("{}: {rate} fires/s ...", backend.label());
        match measure(&env, rate, args.secs, args.allow_overlap).await {
            Ok(p) => {
                eprintln!("  {p:?}");
                let ok = p.delivered == p.expected && p.twice == 0 && p.p99_ms <= args.p99_ms;
                rows.push(format!(
                    "| {} | {} | {}/{} | {} | {:.1} / {:.1} / {:.1} | {} | {} |",
                    backend.label(),
                    p.rate,
                    p.delivered,
                    p.expected,
                    p.twice,
                    p.p50_ms,
                    p.p99_ms,
                    p.max_ms,
                    p.requests_per_fire.map_or("n/a".into(), |r| format!("{r:.3}")),
                    if ok { "yes" } else { "no" },
                ));
                if ok {
                    best = Some(p.rate);
                } else {
                    break;
                }
            }
            Err(e) => {
                eprintln!("  failed: {e}");
                rows.push(format!(
                    "| {} | {rate} | failed: {} | | | | |",
                    backend.label(),
                    e.to_string().replace('|', "/")
                ));
                break;
            }
        }
    }
    if let Err(e) = env.cleanup().await {
        eprintln!("{}: cleanup failed: {e}", backend.label());
    }
    rows.push(format!(
        "| **{}: sustained** | **{}** | | | | | |",
        backend.label(),
        best.map_or("none".into(), |b| b.to_string())
    ));
    rows
}

/// Runs the distributed benchmark and prints a markdown table.
pub fn distributed(args: DistributedArgs) -> ExitCode {
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
            rows.extend(bench_backend(b, &args).await);
        }
        rows
    });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Coordinated fires: 3 DistributedSchedulers in one process ({cores} cores, release \
         build), task distribution on, R tasks every second on each node, {}; {} s measured per \
         rate after 1 s of warm-up; a rate passes with every fire run exactly once and lateness \
         p99 <= {} ms.",
        if args.allow_overlap {
            "overlap allowed (a claim is the fire mark only)"
        } else {
            "default overlap policy (each claim takes the task's run lock)"
        },
        args.secs,
        args.p99_ms
    );
    println!();
    println!(
        "| backend | fires/s | run / expected | ran twice | lateness p50 / p99 / max ms | \
         backend requests per fire | passes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!("{r}");
    }
    ExitCode::SUCCESS
}
