//! The daemon's HTTP API, served on a real socket (127.0.0.1:0) by
//! `http::serve`, over an in-process scheduler on a memory store.

#[allow(dead_code)]
#[path = "../src/http/mod.rs"]
mod http;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::StatusCode;
use rota::{
    DefaultScheduler, Event, FuncHandler, MemoryStore, Schedule, Scheduler, SchedulerConfig,
    TaskBuilder,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// A schedule that does not fire while the tests run (midnight, 1 January).
const YEARLY: &str = "0 0 0 1 1 *";
const TOKEN: &str = "s3cret-token";

struct Server {
    base: String,
    addr: std::net::SocketAddr,
    client: reqwest::Client,
    scheduler: DefaultScheduler,
    metrics: Arc<http::Metrics>,
    /// Permits let `slow` runs finish.
    gate: Arc<Semaphore>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let res = self.client.get(self.url(path)).send().await.expect("GET");
        let status = res.status();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.client.post(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("POST");
        let status = res.status();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Waits until the task's history holds `n` finished runs; returns it.
    async fn history(&self, id: &str, n: usize) -> Vec<Value> {
        for _ in 0..500 {
            let (status, v) = self.get(&format!("/api/tasks/{id}/executions")).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            let runs = v.as_array().expect("array").clone();
            let done = runs.iter().filter(|r| r["status"] != "running").count();
            if done >= n {
                return runs;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("task {id}: fewer than {n} runs in history after 5 s");
    }

    async fn metrics_text(&self) -> String {
        let res = self.client.get(self.url("/metrics")).send().await.expect("GET /metrics");
        assert_eq!(res.status(), StatusCode::OK);
        let ct = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        res.text().await.unwrap()
    }
}

/// A started scheduler with four tasks (`alpha` succeeds with output, `beta`
/// fails, `gamma` is disabled, `slow` waits for a permit), served on a free port.
async fn start(token: Option<&str>) -> Server {
    let scheduler = SchedulerConfig::new()
        .store(Arc::new(MemoryStore::new()))
        .node_id("node-1")
        .build()
        .expect("scheduler");
    let alpha = FuncHandler::new("alpha", |ctx| async move {
        ctx.set_output(format!("hello from alpha, attempt {}\nsecond line", ctx.attempt()));
        Ok(())
    });
    let beta = FuncHandler::new("beta", |ctx| async move {
        ctx.set_output("partial output");
        Err("boom".into())
    });
    let gamma = FuncHandler::new("gamma", |_ctx| async { Ok(()) });
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let slow = FuncHandler::new("slow", move |_ctx| {
        let g = g.clone();
        async move {
            g.acquire().await.expect("gate").forget();
            Ok(())
        }
    });
    scheduler
        .add(TaskBuilder::new("alpha", "Says hello", YEARLY, alpha).tag("team", "ops").build())
        .await
        .unwrap();
    scheduler
        .add(TaskBuilder::new("beta", "Always fails", "0 30 2 * * MON-FRI", beta).build())
        .await
        .unwrap();
    scheduler
        .add(TaskBuilder::new("gamma", "Disabled", "@every 1h", gamma).enabled(false).build())
        .await
        .unwrap();
    scheduler.add(TaskBuilder::new("slow", "Waits", YEARLY, slow).build()).await.unwrap();
    scheduler.start().await.unwrap();

    let metrics = http::Metrics::new();
    metrics.attach(&scheduler);
    let state = http::AppState {
        scheduler: scheduler.clone(),
        token: token.map(str::to_string),
        metrics: metrics.clone(),
        node_id: "node-1".into(),
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
        .expect("serve");
    });
    Server {
        base: format!("http://{addr}"),
        addr,
        client: reqwest::Client::new(),
        scheduler,
        metrics,
        gate,
        _stop: stop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_unknown_paths() {
    let s = start(Some(TOKEN)).await;
    let res = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "ok");

    let (status, v) = s.get("/no/such/thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "no such endpoint: GET /no/such/thing");

    let (status, v) = s.get("/api/tasks/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, serde_json::json!({ "error": "task not found: \"nope\"" }));
    let (status, v) = s.get("/api/tasks/nope/executions").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "task not found: \"nope\"");

    // A known path with the wrong method: a JSON 405.
    let (status, v) = s.post("/api/tasks", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(v["error"].as_str().unwrap().contains("POST"), "{v}");
    let (status, _) = s.get("/api/tasks/alpha/run").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_gets_tasks() {
    let s = start(Some(TOKEN)).await;
    let (status, v) = s.get("/api/tasks").await;
    assert_eq!(status, StatusCode::OK);
    let tasks = v.as_array().unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alpha", "beta", "gamma", "slow"]);
    for t in tasks {
        let words = Schedule::parse(t["schedule"].as_str().unwrap()).unwrap().explain();
        assert_eq!(t["explain"], words.as_str(), "{t}");
        assert_eq!(t["stats"]["task_id"], t["id"]);
        assert_eq!(t["stats"]["run_count"], 0);
        assert_eq!(t["running"], 0);
        assert!(t.get("recent").is_none(), "recent only with ?history");
    }
    assert_eq!(tasks[1]["explain"], "at 02:30, Monday through Friday");
    assert_eq!(tasks[2]["enabled"], false);
    assert!(tasks[0]["next_run_at"].is_string());

    let (status, t) = s.get("/api/tasks/alpha").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["name"], "alpha");
    assert_eq!(t["description"], "Says hello");
    assert_eq!(t["tags"]["team"], "ops");
    assert_eq!(t["handler"], "alpha");
    assert!(t["stats"]["success_rate"].is_number());

    // With history: each task has its recent runs, without output.
    s.post("/api/tasks/alpha/run", Some(TOKEN)).await;
    s.history("alpha", 1).await;
    let (status, v) = s.get("/api/tasks?history=5").await;
    assert_eq!(status, StatusCode::OK);
    let alpha = &v[0];
    assert_eq!(alpha["recent"].as_array().unwrap().len(), 1);
    assert_eq!(alpha["recent"][0]["status"], "completed");
    assert!(alpha["recent"][0]["duration"].is_number());
    assert!(alpha["recent"][0].get("output").is_none());
    assert_eq!(v[1]["recent"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_calls_are_refused_without_a_configured_token() {
    for configured in [None, Some("")] {
        let s = start(configured).await;
        for path in ["/api/tasks/alpha/run", "/api/tasks/alpha/enable", "/api/tasks/alpha/disable"]
        {
            for sent in [None, Some("anything")] {
                let (status, v) = s.post(path, sent).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
                let msg = v["error"].as_str().unwrap();
                assert!(msg.contains("mutating calls are disabled"), "{msg}");
                assert!(msg.contains("token"), "{msg}");
            }
        }
        // Reading still works, and nothing ran.
        let (status, v) = s.get("/api/tasks/alpha").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["run_count"], 0);
        assert_eq!(v["enabled"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_checked() {
    let s = start(Some(TOKEN)).await;
    // Missing: 401 with a challenge.
    let res = s.client.post(s.url("/api/tasks/alpha/run")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let v: Value = res.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("missing bearer token"), "{v}");
    // Wrong, a prefix of the right one, longer, wrong scheme.
    for bad in ["nope", "s3cret", "s3cret-token-and-more", ""] {
        let (status, v) = s.post("/api/tasks/alpha/run", Some(bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad:?}: {v}");
    }
    let res = s
        .client
        .post(s.url("/api/tasks/alpha/disable"))
        .basic_auth("user", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The token is checked before the task is looked up.
    let (status, _) = s.post("/api/tasks/nope/run", Some("bad")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, v) = s.post("/api/tasks/nope/run", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "task not found: \"nope\"");
    // Nothing ran so far; the right token runs.
    assert_eq!(s.scheduler.task_stats("alpha").unwrap().run_count, 0);
    let (status, v) = s.post("/api/tasks/alpha/run", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["task_id"], "alpha");
    assert_eq!(v["status"], "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_a_400_naming_the_problem() {
    let s = start(Some(TOKEN)).await;
    for (q, name) in [
        ("limit=abc", "\"limit\""),
        ("limit=0", "\"limit\""),
        ("limit=1001", "\"limit\""),
        ("limit=-1", "\"limit\""),
        ("limt=5", "\"limt\""),
        ("status=bogus", "\"status\""),
    ] {
        let (status, v) = s.get(&format!("/api/tasks/alpha/executions?{q}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(name), "{q}: {msg}");
    }
    let (_, v) = s.get("/api/tasks/alpha/executions?limit=abc").await;
    assert_eq!(
        v["error"],
        "invalid query parameter \"limit\": \"abc\" is not a whole number from 1 to 1000"
    );
    let (status, v) = s.get("/api/tasks?history=lots").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("\"history\""), "{v}");
    // Limits at the edges are fine.
    for q in ["limit=1", "limit=1000", "status=completed"] {
        let (status, v) = s.get(&format!("/api/tasks/alpha/executions?{q}")).await;
        assert_eq!(status, StatusCode::OK, "{q}: {v}");
    }
    // A mutating call's body is nothing or a JSON object.
    for body in ["not json", "[1,2]", "{\"a\":"] {
        let res = s
            .client
            .post(s.url("/api/tasks/alpha/run"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = res.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().starts_with("request body:"), "{v}");
    }
    let res = s
        .client
        .post(s.url("/api/tasks/alpha/run"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let s = start(Some(TOKEN)).await;
    // The server answers 413 before reading the body, then closes the
    // connection: no connection reuse, so no request lands on a closing one.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let big = vec![b' '; http::BODY_LIMIT + 1];
    for token in [Some(TOKEN), None] {
        let mut req = client.post(s.url("/api/tasks/alpha/run")).body(big.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let v: Value = res.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains("limit"), "{v}");
    }
    // Exactly the limit is accepted (whitespace is an empty body).
    let res = client
        .post(s.url("/api/tasks/alpha/run"))
        .bearer_auth(TOKEN)
        .body(vec![b' '; http::BODY_LIMIT])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    // A chunked body, with no length up front, is cut while it is read.
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/tasks/alpha/run HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.addr
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
        c.extend_from_slice(&chunk);
        c.extend_from_slice(b"\r\n");
        if conn.write_all(&c).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_shows_in_history() {
    let s = start(Some(TOKEN)).await;
    let before = Timestamp::now();
    let (status, v) = s.post("/api/tasks/alpha/run", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let runs = s.history("alpha", 1).await;
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r["task_id"], "alpha");
    assert_eq!(r["node_id"], "node-1");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["attempts"], 1);
    assert_eq!(r["output"], "hello from alpha, attempt 1\nsecond line");
    assert!(r["duration"].is_number());
    let started: Timestamp = r["started_at"].as_str().unwrap().parse().unwrap();
    assert!(started >= before);

    // A failing task: its error and output are kept.
    let (status, _) = s.post("/api/tasks/beta/run", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let runs = s.history("beta", 1).await;
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["error"], "boom");
    assert_eq!(runs[0]["output"], "partial output");

    // Newest first, and `limit` is honoured.
    s.post("/api/tasks/alpha/run", Some(TOKEN)).await;
    let runs = s.history("alpha", 2).await;
    assert_eq!(runs.len(), 2);
    assert!(runs[0]["started_at"].as_str() >= runs[1]["started_at"].as_str());
    let (_, one) = s.get("/api/tasks/alpha/executions?limit=1").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (_, failed) = s.get("/api/tasks/beta/executions?status=failed").await;
    assert_eq!(failed.as_array().unwrap().len(), 1);
    let (_, none) = s.get("/api/tasks/beta/executions?status=completed").await;
    assert_eq!(none, serde_json::json!([]));

    let (_, t) = s.get("/api/tasks/alpha").await;
    assert_eq!(t["run_count"], 2);
    assert_eq!(t["stats"]["run_count"], 2);
    assert_eq!(t["stats"]["success_rate"], 100.0);
    let (_, t) = s.get("/api/tasks/beta").await;
    assert_eq!(t["stats"]["success_rate"], 0.0);
    assert_eq!(t["last_error"], "boom");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_and_disable() {
    let s = start(Some(TOKEN)).await;
    let (status, t) = s.post("/api/tasks/alpha/disable", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["id"], "alpha");
    assert_eq!(t["enabled"], false);
    assert!(t["next_run_at"].is_null());
    assert!(t["explain"].is_string());
    let (_, t) = s.get("/api/tasks/alpha").await;
    assert_eq!(t["enabled"], false);
    let (_, st) = s.get("/api/stats").await;
    assert_eq!(st["disabled_tasks"], 2);
    assert_eq!(st["enabled_tasks"], 2);

    // A disabled task does not run: 409.
    let (status, v) = s.post("/api/tasks/alpha/run", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(v["error"], "task is disabled: \"alpha\"");

    let (status, t) = s.post("/api/tasks/alpha/enable", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["enabled"], true);
    assert!(t["next_run_at"].is_string());
    let (status, t) = s.post("/api/tasks/gamma/enable", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["enabled"], true);
    let (_, st) = s.get("/api/stats").await;
    assert_eq!(st["enabled_tasks"], 4);
    assert_eq!(st["disabled_tasks"], 0);
    // Twice is fine.
    let (status, _) = s.post("/api/tasks/gamma/enable", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, v) = s.post("/api/tasks/nope/disable", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"], "task not found: \"nope\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_stats_and_nodes() {
    let s = start(Some(TOKEN)).await;
    let (status, v) = s.get("/api/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "running");
    assert_eq!(v["node_id"], "node-1");
    assert_eq!(v["task_count"], 4);
    assert_eq!(v["running_tasks"], 0);
    assert!(v["started_at"].is_string());
    assert!(v["now"].is_string());
    assert_eq!(v["stats"]["total_tasks"], 4);
    assert_eq!(v["stats"]["enabled_tasks"], 3);
    for k in ["throughput", "average_latency", "error_rate", "memory_usage", "cpu_usage"] {
        assert!(v["performance"][k].is_number(), "{k}: {v}");
    }

    let (status, v) = s.get("/api/stats").await;
    assert_eq!(status, StatusCode::OK);
    for k in [
        "total_tasks",
        "enabled_tasks",
        "disabled_tasks",
        "total_runs",
        "total_failed",
        "success_rate",
    ] {
        assert!(v[k].is_number(), "{k}: {v}");
    }

    let (status, v) = s.get("/api/nodes").await;
    assert_eq!(status, StatusCode::OK);
    let nodes = v.as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["id"], "node-1");
    assert_eq!(nodes[0]["status"], "leader");
    assert_eq!(nodes[0]["address"], s.addr.to_string());
    assert!(nodes[0]["started_at"].is_string());
    assert!(nodes[0]["last_seen"].is_string());

    s.scheduler.pause().await.unwrap();
    let (_, v) = s.get("/api/status").await;
    assert_eq!(v["status"], "paused");
}

fn sample<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> &'a prometheus_parse::Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match &sample(scrape, name, labels).value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => *v,
        other => panic!("{name}: not a number: {other:?}"),
    }
}

fn histogram(scrape: &prometheus_parse::Scrape, name: &str, task: &str) -> Vec<(f64, f64)> {
    match &sample(scrape, name, &[("task", task)]).value {
        prometheus_parse::Value::Histogram(h) => h.iter().map(|b| (b.less_than, b.count)).collect(),
        other => panic!("{name}: not a histogram: {other:?}"),
    }
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape() {
    let s = start(Some(TOKEN)).await;
    // Before any run: every task has zero series.
    let m = parse(&s.metrics_text().await);
    assert_eq!(
        value(&m, "rota_task_runs_total", &[("task", "alpha"), ("status", "completed")]),
        0.0
    );
    assert_eq!(value(&m, "rota_scheduler_up", &[]), 1.0);

    for n in 1..=3 {
        s.post("/api/tasks/alpha/run", Some(TOKEN)).await;
        // One at a time: a second run while one is going is skipped (overlap).
        s.history("alpha", n).await;
    }
    for n in 1..=2 {
        s.post("/api/tasks/beta/run", Some(TOKEN)).await;
        s.history("beta", n).await;
    }
    // A run in progress shows in the running gauges.
    let (status, _) = s.post("/api/tasks/slow/run", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut m = parse(&s.metrics_text().await);
    for _ in 0..500 {
        if value(&m, "rota_running_tasks", &[]) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        m = parse(&s.metrics_text().await);
    }
    assert_eq!(value(&m, "rota_running_tasks", &[]), 1.0);
    assert_eq!(value(&m, "rota_task_running", &[("task", "slow")]), 1.0);
    let (_, t) = s.get("/api/tasks/slow").await;
    assert_eq!(t["running"], 1);
    assert_eq!(s.metrics.running("slow"), 1);
    let (_, st) = s.get("/api/status").await;
    assert_eq!(st["running_tasks"], 1);

    assert_eq!(
        value(&m, "rota_task_runs_total", &[("task", "alpha"), ("status", "completed")]),
        3.0
    );
    assert_eq!(value(&m, "rota_task_runs_total", &[("task", "alpha"), ("status", "failed")]), 0.0);
    assert_eq!(value(&m, "rota_task_runs_total", &[("task", "beta"), ("status", "failed")]), 2.0);
    assert_eq!(
        value(&m, "rota_task_runs_total", &[("task", "beta"), ("status", "completed")]),
        0.0
    );
    assert_eq!(value(&m, "rota_task_failures_total", &[("task", "beta")]), 2.0);
    assert_eq!(value(&m, "rota_task_failures_total", &[("task", "alpha")]), 0.0);
    assert_eq!(value(&m, "rota_task_skipped_total", &[("task", "alpha")]), 0.0);
    assert_eq!(value(&m, "rota_task_missed_total", &[("task", "gamma")]), 0.0);
    assert_eq!(value(&m, "rota_tasks", &[("state", "enabled")]), 3.0);
    assert_eq!(value(&m, "rota_tasks", &[("state", "disabled")]), 1.0);
    assert_eq!(value(&m, "rota_scheduler_up", &[]), 1.0);
    assert_eq!(value(&m, "rota_scheduler_status", &[("status", "running")]), 1.0);
    assert_eq!(value(&m, "rota_scheduler_status", &[("status", "stopped")]), 0.0);

    for (task, n) in [("alpha", 3.0), ("beta", 2.0)] {
        for name in ["rota_task_duration_seconds", "rota_task_lateness_seconds"] {
            let h = histogram(&m, name, task);
            assert!(h.len() > 5, "{name}");
            assert!(h.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{name}: {h:?}");
            let (le, count) = *h.last().unwrap();
            assert!(le.is_infinite());
            assert_eq!(count, n, "{name} {task}");
            assert_eq!(value(&m, &format!("{name}_count"), &[("task", task)]), n);
            // Quick handlers, run at once: everything within a second.
            let within_1s = h.iter().find(|(le, _)| *le == 1.0).unwrap().1;
            assert_eq!(within_1s, n, "{name} {task}: {h:?}");
        }
    }
    let h = histogram(&m, "rota_task_duration_seconds", "slow");
    assert_eq!(h.last().unwrap().1, 0.0, "slow has not finished");

    s.gate.add_permits(1);
    s.history("slow", 1).await;
    let m = parse(&s.metrics_text().await);
    assert_eq!(value(&m, "rota_running_tasks", &[]), 0.0);
    assert_eq!(
        value(&m, "rota_task_runs_total", &[("task", "slow"), ("status", "completed")]),
        1.0
    );
    assert_eq!(histogram(&m, "rota_task_duration_seconds", "slow").last().unwrap().1, 1.0);

    s.scheduler.stop().await.unwrap();
    let m = parse(&s.metrics_text().await);
    assert_eq!(value(&m, "rota_scheduler_up", &[]), 0.0);
    assert_eq!(value(&m, "rota_scheduler_status", &[("status", "stopped")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_from_events() {
    // Events straight into the metrics: skipped, missed, retries, timeouts,
    // lateness from the scheduled instant, duration from the first start.
    let s = start(Some(TOKEN)).await;
    let m = http::Metrics::new();
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let at = |ms: i64| t0 + jiff::SignedDuration::from_millis(ms);
    let id = "weird \"task\"\\id".to_string();
    m.observe(
        &Event::TaskStarting { task_id: id.clone(), scheduled_at: t0, attempt: 1 },
        at(2_000),
    );
    assert_eq!(m.running(&id), 1);
    assert_eq!(m.running_total(), 1);
    m.observe(
        &Event::TaskRetried {
            task_id: id.clone(),
            scheduled_at: t0,
            attempt: 1,
            error: "x".into(),
        },
        at(2_500),
    );
    m.observe(
        &Event::TaskStarting { task_id: id.clone(), scheduled_at: t0, attempt: 2 },
        at(3_000),
    );
    m.observe(
        &Event::TaskTimedOut { task_id: id.clone(), scheduled_at: t0, attempt: 2 },
        at(3_100),
    );
    m.observe(
        &Event::TaskFailed { task_id: id.clone(), scheduled_at: t0, error: "late".into() },
        at(7_000),
    );
    assert_eq!(m.running_total(), 0);
    m.observe(&Event::TaskSkipped { task_id: id.clone(), scheduled_at: at(60_000) }, at(60_000));
    m.observe(
        &Event::TaskMissed { task_id: id.clone(), count: 4, first: t0, last: t0 },
        at(61_000),
    );
    let text = m.render(&s.scheduler);
    let l = "task=\"weird \\\"task\\\"\\\\id\"";
    for line in [
        format!("rota_task_runs_total{{{l},status=\"failed\"}} 1"),
        format!("rota_task_failures_total{{{l}}} 1"),
        format!("rota_task_retries_total{{{l}}} 1"),
        format!("rota_task_timeouts_total{{{l}}} 1"),
        format!("rota_task_skipped_total{{{l}}} 1"),
        format!("rota_task_missed_total{{{l}}} 4"),
        format!("rota_task_lateness_seconds_sum{{{l}}} 2"),
        format!("rota_task_lateness_seconds_bucket{{{l},le=\"1\"}} 0"),
        format!("rota_task_lateness_seconds_bucket{{{l},le=\"2.5\"}} 1"),
        format!("rota_task_duration_seconds_sum{{{l}}} 5"),
        format!("rota_task_duration_seconds_count{{{l}}} 1"),
    ] {
        assert!(text.lines().any(|x| x == line), "missing {line:?} in\n{text}");
    }
    // Every HELP and TYPE once, and every sample line well formed.
    for name in
        ["rota_task_runs_total", "rota_task_duration_seconds", "rota_running_tasks", "rota_tasks"]
    {
        assert_eq!(text.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "{line}");
    }
}
