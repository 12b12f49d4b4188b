//! `rota run`: the daemon.
//!
//! It opens the store, builds the scheduler, puts the config's tasks in it,
//! serves the HTTP API, and handles signals:
//!
//! * SIGTERM / SIGINT: no new fires; running jobs get `[scheduler] stop_grace`
//!   to finish (then their process groups are killed); history is flushed;
//!   exit 0. A second SIGTERM / SIGINT during the wait kills the running
//!   jobs' process groups at once (SIGKILL), and the daemon exits as above.
//! * SIGHUP: the config file is read again. If it is invalid, every error is
//!   logged and the running config is kept. Otherwise added tasks are added,
//!   removed ones removed, and changed ones updated (keeping their run counts),
//!   without a restart. `[store]`, `[http]` and `[scheduler]` changes need a
//!   restart.
//!
//! The config is the source of truth for its tasks: on start, a task from the
//! config replaces its stored definition (keeping its run state), and stored
//! tasks tagged `rota.source = "config"` that the config no longer has are
//! removed. Tasks without that tag are never removed by the daemon.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use jiff::tz::TimeZone;
use rota::{
    DefaultScheduler, DefaultTask, ErrorKind, Event, Retention, Scheduler, SchedulerConfig, Task,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::config::{self, Config, TaskSpec, SOURCE_CONFIG, SOURCE_TAG};
use crate::http;
use crate::jobs;

/// Exit code for an invalid config.
pub const EXIT_CONFIG: u8 = 2;

/// Sets up logging to stderr. `ROTA_LOG` (or `RUST_LOG`) holds a filter such
/// as `info` or `warn,rota=debug`; the default is `info`.
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("ROTA_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let filter: tracing_subscriber::filter::Targets = spec.parse().unwrap_or_else(|e| {
        eprintln!("rota: ignoring the log filter {spec:?}: {e}");
        "info".parse().expect("valid filter")
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
}

/// The node ID: the config's, else `$ROTA_NODE_ID`, else `<hostname>-<pid>`.
pub fn node_id(config: &Config) -> String {
    if let Some(id) = config.cluster.as_ref().and_then(|c| c.node_id.as_ref()) {
        return id.clone();
    }
    if let Some(id) = &config.scheduler.node_id {
        return id.clone();
    }
    if let Ok(id) = std::env::var("ROTA_NODE_ID") {
        if !id.trim().is_empty() {
            return id;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "rota".into());
    format!("{host}-{}", std::process::id())
}

/// The API token: the config's, else `$ROTA_TOKEN`.
pub fn token(config: &Config) -> Option<String> {
    config
        .token
        .clone()
        .or_else(|| std::env::var("ROTA_TOKEN").ok().filter(|t| !t.trim().is_empty()))
}

/// The problem with listening where the config says, if any: a non-loopback
/// address needs a token.
pub fn listen_problem(config: &Config) -> Option<String> {
    if !config::is_loopback(&config.listen) && token(config).is_none() {
        return Some(format!(
            "[http] listen: {} is not a loopback address: set [http] token (or ROTA_TOKEN) to listen on it",
            config.listen
        ));
    }
    None
}

fn print_config_errors(lines: &[String]) {
    for l in lines {
        eprintln!("{l}");
    }
    let n = lines.len();
    eprintln!("error: invalid config ({n} error{}); not starting", if n == 1 { "" } else { "s" });
}

/// `rota run`: runs until SIGTERM or SIGINT.
pub async fn run(config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match &config_path {
        Some(p) => match config::load(p) {
            Ok(c) => c,
            Err(e) => {
                print_config_errors(&e.lines());
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        },
        None => Config::default(),
    };
    if let Some(problem) = listen_problem(&config) {
        let origin = config_path.as_deref().map(|p| p.display().to_string());
        print_config_errors(&[match origin {
            Some(p) => format!("{p}: {problem}"),
            None => problem,
        }]);
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    init_logging();
    let node = node_id(&config);
    let token = token(&config);
    match &config_path {
        Some(p) => {
            info!(config = %p.display(), tasks = config.tasks.len(), node = %node, "starting")
        }
        None => {
            info!(tasks = 0, node = %node, "starting without a config file (--config FILE to add tasks)")
        }
    }

    let store = rota::store::open(&config.store_url, Retention::default())
        .await
        .with_context(|| format!("opening the store {}", config.store_url))?;
    info!(store = %config.store_url, "store open");

    let mut builder = SchedulerConfig::new()
        .store(store.clone())
        .node_id(node.clone())
        .stop_grace(config.scheduler.stop_grace);
    if let Some(z) = &config.scheduler.time_zone {
        builder = builder.time_zone(TimeZone::get(z).with_context(|| format!("time zone {z:?}"))?);
    }
    if let Some(n) = config.scheduler.max_concurrency {
        builder = builder.max_concurrency(n);
    }
    let distributed = match &config.cluster {
        None => None,
        Some(section) => {
            let cluster = crate::cluster::connect(section, &node).await?;
            let dc = rota::DistributedConfig {
                election_timeout: section.election_timeout,
                heartbeat_interval: section.heartbeat_interval,
                lock_timeout: section.lock_timeout,
                enable_leader_election: section.leader_election,
                enable_task_distribution: section.distribute_tasks,
                address: config.listen.ip().to_string(),
                port: config.listen.port(),
                ..rota::DistributedConfig::new(node.clone(), cluster)
            };
            info!(
                backend = ?section.backend,
                endpoints = ?section.endpoints,
                distribute = section.distribute_tasks,
                leader_election = section.leader_election,
                "cluster mode"
            );
            Some(rota::DistributedScheduler::with_config(builder.clone(), dc)?)
        }
    };
    let scheduler = match &distributed {
        Some(ds) => ds.scheduler().clone(),
        None => builder.build()?,
    };
    scheduler.on_event(log_event);
    let metrics = http::Metrics::new();
    metrics.attach(&scheduler);

    // Before start: a task declared again takes its run state from the store.
    for spec in &config.tasks {
        let handler = jobs::handler_for(spec);
        scheduler.register_handler(handler.clone()).await?;
        scheduler
            .add(jobs::task_for(spec, handler))
            .await
            .with_context(|| format!("adding task '{}'", spec.name))?;
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;

    match &distributed {
        Some(ds) => ds.start().await.context("starting the distributed scheduler")?,
        None => scheduler.start().await.context("starting the scheduler")?,
    }
    for e in scheduler.load_errors() {
        warn!(task = %e.id, reason = %e.reason, "a stored task could not be loaded");
    }
    remove_stale(&scheduler, &config).await;
    for t in scheduler.get_all() {
        if !t.last_error().is_empty() && t.tags().get(SOURCE_TAG).is_none() && !t.enabled() {
            info!(task = %t.id(), "{}", t.last_error());
        }
    }

    let (stop_http, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = http::AppState {
        scheduler: scheduler.clone(),
        token: token.clone(),
        metrics: metrics.clone(),
        node_id: node.clone(),
        cluster: distributed.clone(),
    };
    let mut server = tokio::spawn(http::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    info!(
        listen = %local,
        auth = if token.is_some() { "token" } else { "none: mutating calls refused" },
        "serving the API and dashboard at http://{local}/"
    );

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut current = config;
    let mut server_failed = false;
    let why = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                match &config_path {
                    Some(p) => reload(&scheduler, p, &mut current).await,
                    None => warn!("SIGHUP: no config file to reload (started without --config)"),
                }
            }
            r = &mut server => {
                match r {
                    Ok(Ok(())) => error!("the HTTP server stopped"),
                    Ok(Err(e)) => error!("the HTTP server failed: {e:#}"),
                    Err(e) => error!("the HTTP server panicked: {e}"),
                }
                server_failed = true;
                break "HTTP server failure";
            }
        }
    };

    info!(
        running = metrics.running_total(),
        grace = %config::format_duration(current.scheduler.stop_grace),
        "{why}: stopping; no new fires, running jobs get the grace period"
    );
    let started = Instant::now();
    // A second SIGTERM or SIGINT while waiting kills the running jobs now.
    let stop = async {
        match &distributed {
            Some(ds) => ds.stop().await,
            None => scheduler.stop().await,
        }
    };
    tokio::pin!(stop);
    let stopped = tokio::select! {
        r = &mut stop => r,
        _ = async { tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} } } => {
            let n = jobs::kill_all_groups();
            warn!(killed = n, "second signal: not waiting for running jobs; their process groups are killed");
            stop.await
        }
    };
    if let Err(e) = stopped {
        warn!("stopping the scheduler: {e}");
    }
    jobs::wait_for_reapers(jobs::KILL_AFTER + Duration::from_secs(1)).await;
    scheduler.flush().await;
    let _ = stop_http.send(());
    if !server_failed {
        match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(Ok(Err(e))) => warn!("HTTP server: {e:#}"),
            Err(_) => server.abort(),
            _ => {}
        }
    }
    if let Some(ds) = &distributed {
        if let Err(e) = ds.cluster().close().await {
            warn!("closing the cluster connection: {e}");
        }
    }
    if let Err(e) = store.close().await {
        warn!("closing the store: {e}");
    }
    info!(took_ms = started.elapsed().as_millis() as u64, "stopped");
    Ok(if server_failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn log_event(e: &Event) {
    match e {
        Event::TaskStarting { task_id, attempt, .. } => {
            tracing::debug!(task = %task_id, attempt, "run starting")
        }
        Event::TaskSucceeded { task_id, duration, .. } => {
            info!(task = %task_id, took_ms = duration.as_millis() as u64, "run succeeded")
        }
        Event::TaskFailed { task_id, error, .. } => warn!(task = %task_id, %error, "run failed"),
        Event::TaskRetried { task_id, attempt, error, .. } => {
            warn!(task = %task_id, attempt, %error, "attempt failed; retrying")
        }
        Event::TaskTimedOut { task_id, attempt, .. } => {
            warn!(task = %task_id, attempt, "attempt timed out; its process group is killed")
        }
        Event::TaskSkipped { task_id, .. } => {
            info!(task = %task_id, "fire skipped: the previous run is still going")
        }
        Event::TaskMissed { task_id, count, .. } => {
            warn!(task = %task_id, count, "fires missed")
        }
        _ => {}
    }
}

/// Removes stored tasks tagged as from the config that the config no longer has.
async fn remove_stale(scheduler: &DefaultScheduler, config: &Config) {
    let wanted: Vec<String> = config.tasks.iter().map(|t| rota::task_id_for(&t.name)).collect();
    for t in scheduler.get_all() {
        let from_config = t.tags().get(SOURCE_TAG).map(String::as_str) == Some(SOURCE_CONFIG);
        if from_config && !wanted.iter().any(|id| id == t.id()) {
            match scheduler.remove(t.id()).await {
                Ok(()) => info!(task = %t.id(), "removed: no longer in the config"),
                Err(e) => {
                    warn!(task = %t.id(), "could not remove a task gone from the config: {e}")
                }
            }
        }
    }
}

/// Copies run state (counts, last run, last error, creation time) from `old`
/// into `new`, so a changed definition keeps its history.
fn carry_run_state(new: &mut DefaultTask, old: &DefaultTask) -> rota::Result<()> {
    let bad = |e: serde_json::Error| rota::Error::InvalidInput {
        what: "task".into(),
        message: e.to_string(),
    };
    let mut v = serde_json::to_value(&*new).map_err(bad)?;
    let o = serde_json::to_value(old).map_err(bad)?;
    for k in ["run_count", "failed_count", "last_run_at", "last_error", "retry_count", "created_at"]
    {
        if let Some(x) = o.get(k) {
            v[k] = x.clone();
        }
    }
    let bytes = serde_json::to_vec(&v).map_err(bad)?;
    rota::Task::deserialize(new, &bytes)
}

/// What a reload did.
#[derive(Debug, Default)]
struct Changes {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
    unchanged: usize,
    failed: Vec<String>,
}

async fn reload(scheduler: &DefaultScheduler, path: &Path, current: &mut Config) {
    info!(config = %path.display(), "SIGHUP: reloading the config");
    let new = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            let lines = e.lines();
            for l in &lines {
                error!("{l}");
            }
            error!(
                errors = lines.len(),
                "config reload refused: the file is invalid; the running config is kept"
            );
            return;
        }
    };
    if new.store_url != current.store_url
        || new.listen != current.listen
        || new.token != current.token
        || new.scheduler != current.scheduler
    {
        warn!("[store], [http] and [scheduler] changes take effect on restart; tasks are reloaded now");
    }
    let c = apply(scheduler, current, &new).await;
    info!(
        added = ?c.added,
        removed = ?c.removed,
        changed = ?c.changed,
        unchanged = c.unchanged,
        "config reloaded"
    );
    for f in &c.failed {
        error!("{f}");
    }
    // Keep the sections that need a restart as they are running.
    let tasks = new.tasks;
    current.tasks = tasks;
}

async fn apply(scheduler: &DefaultScheduler, old: &Config, new: &Config) -> Changes {
    let old_by_id: BTreeMap<String, &TaskSpec> =
        old.tasks.iter().map(|t| (rota::task_id_for(&t.name), t)).collect();
    let new_by_id: BTreeMap<String, &TaskSpec> =
        new.tasks.iter().map(|t| (rota::task_id_for(&t.name), t)).collect();
    let mut c = Changes::default();
    for id in old_by_id.keys() {
        if !new_by_id.contains_key(id) {
            match scheduler.remove(id).await {
                Ok(()) => c.removed.push(id.clone()),
                Err(e) if e.kind() == ErrorKind::TaskNotFound => c.removed.push(id.clone()),
                Err(e) => c.failed.push(format!("removing task {id:?}: {e}")),
            }
        }
    }
    for (id, spec) in &new_by_id {
        let before = old_by_id.get(id);
        if before == Some(spec) {
            c.unchanged += 1;
            continue;
        }
        let handler = jobs::handler_for(spec);
        if let Err(e) = scheduler.register_handler(handler.clone()).await {
            c.failed.push(format!("task '{}': registering its handler: {e}", spec.name));
            continue;
        }
        let mut task = jobs::task_for(spec, handler);
        let result = match scheduler.get(id) {
            Ok(existing)
                if existing.tags().get(SOURCE_TAG).map(String::as_str) == Some(SOURCE_CONFIG) =>
            {
                let r = match carry_run_state(&mut task, &existing) {
                    Ok(()) => scheduler.update(task).await,
                    Err(e) => Err(e),
                };
                if r.is_ok() {
                    if before.is_some() {
                        c.changed.push(id.clone());
                    } else {
                        c.added.push(id.clone());
                    }
                }
                r
            }
            Ok(_) => {
                // A task of that ID that the config did not make: the config wins.
                warn!(task = %id, "replacing a stored task of the same ID that was not from the config");
                let _ = scheduler.remove(id).await;
                let r = scheduler.add(task).await;
                if r.is_ok() {
                    c.added.push(id.clone());
                }
                r
            }
            Err(_) => {
                let r = scheduler.add(task).await;
                if r.is_ok() {
                    c.added.push(id.clone());
                }
                r
            }
        };
        if let Err(e) = result {
            c.failed.push(format!("task '{}': {e}", spec.name));
        }
    }
    c
}

/// `rota validate`: prints every error, or `ok: N tasks`.
pub fn validate(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            if let Some(problem) = listen_problem(&c) {
                println!("{}: {problem}", path.display());
                eprintln!("error: 1 error in {}", path.display());
                return ExitCode::from(EXIT_CONFIG);
            }
            let n = c.tasks.len();
            println!("ok: {n} task{}", if n == 1 { "" } else { "s" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            let lines = e.lines();
            for l in &lines {
                println!("{l}");
            }
            let n = lines.len();
            eprintln!("error: {n} error{} in {}", if n == 1 { "" } else { "s" }, path.display());
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reload_adds_removes_and_changes_keeping_run_state() {
        let scheduler = SchedulerConfig::new().build().unwrap();
        let a = config::parse(
            "[[tasks]]\nname = \"a\"\nschedule = \"0 0 * * *\"\ncommand = [\"true\"]\n\
             [[tasks]]\nname = \"b\"\nschedule = \"0 0 * * *\"\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let empty = Config::default();
        let c = apply(&scheduler, &empty, &a).await;
        assert_eq!(c.added, ["a", "b"]);
        scheduler.run_now("a").await.unwrap();
        assert_eq!(scheduler.get("a").unwrap().run_count(), 1);
        let b = config::parse(
            "[[tasks]]\nname = \"a\"\nschedule = \"0 1 * * *\"\ncommand = [\"false\"]\n\
             [[tasks]]\nname = \"c\"\nschedule = \"0 0 * * *\"\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let c = apply(&scheduler, &a, &b).await;
        assert_eq!(
            (c.added, c.removed, c.changed),
            (vec!["c".to_string()], vec!["b".to_string()], vec!["a".to_string()])
        );
        let t = scheduler.get("a").unwrap();
        assert_eq!(t.schedule(), "0 1 * * *");
        assert_eq!(t.run_count(), 1, "run state kept");
        assert!(scheduler.run_now("a").await.is_err(), "the new command (false) runs");
        assert!(scheduler.get("b").is_err());
        assert_eq!(t.tags()[SOURCE_TAG], SOURCE_CONFIG);
    }
}
