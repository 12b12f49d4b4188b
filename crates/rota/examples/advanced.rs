//! The seed's "advanced configuration" example, ported: the config builder,
//! a task built with timeout, retries and tags, and a status line every minute.
//!
//! The seed writes `scheduler := config.Build()`, shadowing the package name;
//! here it is simply `let scheduler = ...build()?`.
//!
//! Runs until Ctrl-C. With `ROTA_RUN_FOR=<seconds>` it reports every second,
//! runs the backup once, and exits after that many seconds (CI uses this).

use std::sync::Arc;
use std::time::Duration;

use rota::{DefaultMonitor, FuncHandler, MemoryStore, Scheduler, SchedulerConfig, TaskBuilder};

#[tokio::main]
async fn main() -> rota::Result<()> {
    tracing_subscriber_init();
    // Use the config builder.
    let scheduler = SchedulerConfig::new()
        .store(Arc::new(MemoryStore::new()))
        .monitor(Arc::new(DefaultMonitor::new()))
        .check_interval(Duration::from_secs(1))
        .max_concurrency(5)
        .metrics(true)
        .logging(true)
        .build()?;

    // Create the task.
    let handler = FuncHandler::new("backup", |_ctx| async {
        println!("running the backup task");
        Ok(())
    });
    let task = TaskBuilder::new("backup", "Database backup", "0 2 * * *", handler)
        .timeout(Duration::from_secs(30 * 60))
        .max_retries(3)
        .retry_delay(Duration::from_secs(5 * 60))
        .tag("type", "backup")
        .tag("priority", "high")
        .build();

    scheduler.add(task).await?;
    scheduler.start().await?;

    // Monitoring.
    let run_for = std::env::var("ROTA_RUN_FOR").ok().and_then(|s| s.parse::<u64>().ok());
    let every = if run_for.is_some() { Duration::from_secs(1) } else { Duration::from_secs(60) };
    let reporter = scheduler.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        loop {
            ticker.tick().await;
            let status = reporter.status();
            let stats = reporter.stats();
            println!(
                "status: {}, tasks: {}, success rate: {:.2}%",
                status.status, stats.total_tasks, stats.success_rate
            );
        }
    });

    // Keep running.
    match run_for {
        Some(secs) => {
            scheduler.run_now("backup").await?;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let stats = scheduler.stats();
            assert_eq!((stats.total_runs, stats.success_rate), (1, 100.0));
            scheduler.stop().await?;
        }
        None => {
            tokio::signal::ctrl_c().await.expect("install Ctrl-C handler");
            scheduler.stop().await?;
        }
    }
    Ok(())
}

/// `logging(true)` writes through `tracing`; print it to stderr.
fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
