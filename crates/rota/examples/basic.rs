//! The seed's "basic usage" example, ported: the global scheduler on a memory
//! store, one task saying hello at second 0 of every minute.
//!
//! Runs until Ctrl-C. With `ROTA_RUN_FOR=<seconds>` it also runs the task once
//! at start and exits after that many seconds (CI uses this).

use std::sync::Arc;
use std::time::Duration;

use rota::{global, DefaultTask, FuncHandler, MemoryStore, Task};

#[tokio::main]
async fn main() -> rota::Result<()> {
    // Initialise.
    global::init(Arc::new(MemoryStore::new()));

    // Create the task.
    let handler = FuncHandler::new("hello", |_ctx| async {
        println!("Hello at {}", jiff::ZonedDateTime::now().strftime("%H:%M:%S"));
        Ok(())
    });
    let task = DefaultTask::new("hello", "Say hello", "0 * * * * *", handler);
    global::add_task(task).await?;

    // Start the scheduler.
    global::start_scheduler().await?;
    println!(
        "scheduler {}; next run {:?}",
        global::get_scheduler_status()?.status,
        global::get_task("hello")?.next_run_at()
    );

    // Keep running.
    match std::env::var("ROTA_RUN_FOR").ok().and_then(|s| s.parse::<u64>().ok()) {
        Some(secs) => {
            global::run_now("hello").await?;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let stats = global::get_task_stats("hello")?;
            println!("runs: {}, failed: {}", stats.run_count, stats.failed_count);
            global::stop_scheduler().await?;
            assert!(stats.run_count >= 1, "the hello task ran");
        }
        None => {
            tokio::signal::ctrl_c().await.expect("install Ctrl-C handler");
            global::stop_scheduler().await?;
        }
    }
    Ok(())
}
