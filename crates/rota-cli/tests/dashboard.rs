//! The dashboard end to end, in headless Chromium driven by chromedriver:
//! the page loads and lists the tasks, run-now (with the token typed into the
//! page) starts a run, and the run shows in that task's history with its
//! output. A screenshot is kept in `target/artifacts/dashboard.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`: `scripts/services.sh
//! --with-chromium` installs them. Without them this test fails, on purpose.

#[allow(dead_code)]
#[path = "../src/http/mod.rs"]
mod http;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rota::{
    DefaultScheduler, FuncHandler, MemoryStore, Scheduler, SchedulerConfig, Task, TaskBuilder,
};
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const TOKEN: &str = "dashboard-test-token";
const WAIT: Duration = Duration::from_secs(20);

/// chromedriver, killed (by its own ID) when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(path: &str, what: &str) {
    assert!(
        Path::new(path).exists(),
        "{what} not found at {path}: run `scripts/services.sh --with-chromium` (as root) to install \
         Debian's chromium and chromium-driver, which this end-to-end test needs"
    );
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start_driver() -> Driver {
    require(CHROMIUM, "chromium");
    require(CHROMEDRIVER, "chromedriver");
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(res) = http.get(format!("{}/status", driver.url)).send().await {
            if let Ok(v) = res.json::<serde_json::Value>().await {
                if v["value"]["ready"] == true {
                    return driver;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not get ready on port {port} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("chromedriver session with {CHROMIUM}: {e}"))
}

/// The tasks of the test config, a started scheduler, and the app on a free port.
async fn start_app() -> (SocketAddr, DefaultScheduler, tokio::sync::oneshot::Sender<()>) {
    let scheduler = SchedulerConfig::new()
        .store(Arc::new(MemoryStore::new()))
        .node_id("dash-node")
        .build()
        .unwrap();
    let backup = FuncHandler::new("backup", |ctx| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        ctx.set_output(format!("backup done (attempt {})\n3 files, 12 KiB", ctx.attempt()));
        Ok(())
    });
    let report = FuncHandler::new("report", |ctx| async move {
        ctx.set_output("rendering report...");
        Err("template <missing> not found".into())
    });
    let cleanup = FuncHandler::new("cleanup", |_ctx| async { Ok(()) });
    scheduler
        .add(
            TaskBuilder::new("backup", "Nightly database backup", "0 30 2 * * *", backup)
                .time_zone("Europe/London")
                .tag("team", "ops")
                .build(),
        )
        .await
        .unwrap();
    scheduler
        .add(TaskBuilder::new("report", "Weekly <b>report</b>", "0 0 9 * * MON", report).build())
        .await
        .unwrap();
    scheduler
        .add(
            TaskBuilder::new("cleanup", "Tidy temp files", "@every 1h", cleanup)
                .enabled(false)
                .build(),
        )
        .await
        .unwrap();
    scheduler.start().await.unwrap();
    // Some history before the page opens: the sparklines have bars.
    for _ in 0..3 {
        let _ = scheduler.run_now("report").await;
    }
    let metrics = http::Metrics::new();
    metrics.attach(&scheduler);
    let state = http::AppState {
        scheduler: scheduler.clone(),
        token: Some(TOKEN.into()),
        metrics,
        node_id: "dash-node".into(),
        cluster: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        http::serve(listener, state, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, scheduler, stop)
}

fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/artifacts")
}

async fn text_of(client: &Client, css: &str) -> String {
    client.wait().at_most(WAIT).for_element(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Waits until the element at `css` shows `needle`.
async fn wait_text(client: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} does not show {needle:?} after {WAIT:?}; it shows {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn walk_through(client: Client, base: String, scheduler: DefaultScheduler) {
    client.goto(&base).await.unwrap();
    assert_eq!(client.title().await.unwrap(), "rota");

    // The page lists the tasks, schedules in plain words.
    let row = text_of(&client, r#"tr[data-task-id="backup"]"#).await;
    assert!(row.contains("Nightly database backup"), "{row}");
    assert!(row.contains("at 02:30 (Europe/London time)"), "{row}");
    assert!(row.contains("never run"), "{row}");
    let row = text_of(&client, r#"tr[data-task-id="report"]"#).await;
    assert!(
        row.contains("Weekly <b>report</b>"),
        "markup in a description is shown as text: {row}"
    );
    assert!(row.contains("failed"), "{row}");
    assert!(row.contains("0%"), "{row}");
    let row = text_of(&client, r#"tr[data-task-id="cleanup"]"#).await;
    assert!(row.contains("disabled"), "{row}");
    assert!(row.contains("every 1 hour"), "{row}");
    let bars =
        client.find_all(Locator::Css(r#"tr[data-task-id="report"] svg.spark rect"#)).await.unwrap();
    assert_eq!(bars.len(), 3, "one bar per run");
    // Scheduler status and the node list, leader marked.
    wait_text(&client, "#sched-status", "running").await;
    let node = text_of(&client, "#nodes li.leader").await;
    assert!(node.contains("dash-node") && node.contains("leader"), "{node}");

    // Run now without a token: refused, and the page says so.
    client
        .find(Locator::Css(r#"tr[data-task-id="backup"] button.run"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#toast.error", "Not allowed").await;
    assert_eq!(scheduler.task_stats("backup").unwrap().run_count, 0);

    // Enter the token, then run now: the run shows in the task's history, with its output.
    client.find(Locator::Css("#token")).await.unwrap().send_keys(TOKEN).await.unwrap();
    client.find(Locator::Css("#save-token")).await.unwrap().click().await.unwrap();
    wait_text(&client, "#token-hint", "token saved").await;
    client
        .find(Locator::Css(r#"tr[data-task-id="backup"] button.run"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#history-title", "backup").await;
    let run = wait_text(&client, "#history tbody tr.execution", "backup done (attempt 1)").await;
    assert!(run.contains("completed"), "{run}");
    assert!(run.contains("dash-node"), "{run}");
    assert!(run.contains("3 files, 12 KiB"), "{run}");
    wait_text(&client, r#"tr[data-task-id="backup"]"#, "100%").await;
    let runs = scheduler.executions(&rota::ExecutionQuery::task("backup")).await.unwrap();
    assert_eq!(runs.len(), 1);

    // Clicking another task shows its history; failures show their error.
    client
        .find(Locator::Css(r#"tr[data-task-id="report"] td"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#history tbody", "template <missing> not found").await;

    // Disable and enable from the page.
    client
        .find(Locator::Css(r#"tr[data-task-id="cleanup"] button.toggle"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, r#"tr[data-task-id="cleanup"] button.toggle"#, "Disable").await;
    assert!(scheduler.get("cleanup").unwrap().enabled());

    // Back to the task that ran, for the screenshot.
    client
        .find(Locator::Css(r#"tr[data-task-id="backup"] td"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#history tbody", "backup done").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = client.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_end_to_end() {
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let (addr, scheduler, _stop) = start_app().await;
    let client = connect(&driver, profile.path()).await;
    // Run the walk-through in its own task so the browser is closed even if it fails.
    let outcome =
        tokio::spawn(walk_through(client.clone(), format!("http://{addr}/"), scheduler)).await;
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_is_self_contained() {
    let (addr, _scheduler, _stop) = start_app().await;
    let res = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = res.text().await.unwrap();
    assert_eq!(html, http_page());
    for external in ["src=\"http", "href=\"http", "src=\"//", "href=\"//", "@import", "url("] {
        assert!(!html.contains(external), "the page must load nothing from elsewhere: {external}");
    }
    assert!(!html.contains("innerText ="), "text goes through esc()");
}

fn http_page() -> &'static str {
    include_str!("../src/http/index.html")
}
