//! `rota tasks`, `rota history`, `rota run-now`: read a running daemon through
//! its HTTP API, or a store directly.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rota::{DefaultTask, ExecutionQuery, Retention, Store, Task, TaskExecution};
use serde_json::Value;

use crate::config;

/// The API used when none is given: `$ROTA_API`, else the daemon's default address.
pub fn default_api() -> String {
    std::env::var("ROTA_API")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| format!("http://{}", config::DEFAULT_LISTEN))
}

/// Where to read from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A running daemon's API.
    Api {
        /// Base URL, e.g. `http://127.0.0.1:7878`.
        url: String,
        /// Bearer token, if any.
        token: Option<String>,
    },
    /// A store URL, read directly.
    Store(String),
}

impl Source {
    /// From the mutually exclusive `--api`, `--store`, `--config` flags.
    pub fn pick(
        api: Option<String>,
        store: Option<String>,
        config_file: Option<&Path>,
        token: Option<String>,
    ) -> anyhow::Result<Source> {
        if let Some(s) = store {
            return Ok(Source::Store(s));
        }
        if let Some(p) = config_file {
            let c = config::load(p).map_err(|e| anyhow!("{}", e.lines().join("\n")))?;
            return Ok(Source::Store(c.store_url));
        }
        Ok(Source::Api { url: api.unwrap_or_else(default_api), token })
    }
}

/// Opens a store for reading; a SQLite file must exist (no new empty file).
async fn open_store(url: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    let path = url.strip_prefix("sqlite://").or_else(|| {
        (!url.contains("://") && (url.ends_with(".db") || url.ends_with(".sqlite"))).then_some(url)
    });
    if let Some(p) = path {
        if !Path::new(p).exists() {
            bail!("no store at {url}: {p} does not exist");
        }
    }
    rota::store::open(url, Retention::default())
        .await
        .with_context(|| format!("opening the store {url}"))
}

/// Runs `fut`, showing on stderr that it is still going when it takes long.
async fn with_progress<T>(label: &str, fut: impl Future<Output = T>) -> (T, Option<Duration>) {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut shown = false;
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.tick().await;
    let out = loop {
        tokio::select! {
            v = &mut fut => break v,
            _ = tick.tick() => {
                let secs = started.elapsed().as_secs_f64();
                if secs >= 1.0 {
                    let mut e = std::io::stderr();
                    if tty {
                        let _ = write!(e, "\r{label}… {secs:.1}s");
                        shown = true;
                    } else if !shown {
                        let _ = writeln!(e, "{label}…");
                        shown = true;
                    }
                    let _ = e.flush();
                }
            }
        }
    };
    if shown && tty {
        eprint!("\r");
    }
    (out, shown.then(|| started.elapsed()))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("rota-cli/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap_or_default()
}

fn api_url(base: &str, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    let mut u =
        reqwest::Url::parse(base).with_context(|| format!("--api: {base:?} is not a URL"))?;
    u.path_segments_mut()
        .map_err(|_| anyhow!("--api: {base:?} cannot have a path"))?
        .pop_if_empty()
        .extend(segments);
    Ok(u)
}

async fn api_call(
    method: reqwest::Method,
    base: &str,
    segments: &[&str],
    query: &[(&str, String)],
    token: Option<&str>,
) -> anyhow::Result<Value> {
    let mut url = api_url(base, segments)?;
    for (k, v) in query {
        url.query_pairs_mut().append_pair(k, v);
    }
    let mut req = client().request(method.clone(), url.clone());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_connect() {
            anyhow!(
                "cannot reach the daemon at {base} ({e}); is `rota run` running? (or read a store with --store URL)"
            )
        } else {
            anyhow!("{method} {url}: {e}")
        }
    })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if !status.is_success() {
        let msg = body
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| text.trim().to_string());
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
            " (pass --token or set ROTA_TOKEN)"
        } else {
            ""
        };
        bail!("{method} {url}: {status}: {msg}{hint}");
    }
    Ok(body)
}

/// An array, or the first array field of an object (`{"tasks": [...]}`).
fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => Some(a),
        Value::Object(m) => m.into_iter().find_map(|(_, v)| match v {
            Value::Array(a) => Some(a),
            _ => None,
        }),
        _ => None,
    }
    .unwrap_or_default()
}

fn when(t: Option<Timestamp>) -> String {
    match t {
        Some(t) => {
            t.to_zoned_datetime(TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string()
        }
        None => "-".into(),
    }
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `rota tasks`.
pub async fn tasks(source: Source, json: bool) -> anyhow::Result<()> {
    let tasks: Vec<DefaultTask> = match &source {
        Source::Api { url, token } => {
            let v = api_call(reqwest::Method::GET, url, &["api", "tasks"], &[], token.as_deref())
                .await?;
            let list = as_list(v);
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            list.into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .context("the API answered with tasks rota cannot read")?
        }
        Source::Store(url) => {
            let store = open_store(url).await?;
            let (report, took) =
                with_progress(&format!("loading tasks from {url}"), store.load_all()).await;
            let report = report?;
            if let Some(took) = took {
                eprintln!(
                    "loaded {} tasks ({} unreadable) in {:.1}s",
                    report.tasks.len(),
                    report.errors.len(),
                    took.as_secs_f64()
                );
            }
            for e in &report.errors {
                eprintln!("warning: {e}");
            }
            let _ = store.close().await;
            report.tasks
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    if tasks.is_empty() {
        eprintln!("no tasks");
        return Ok(());
    }
    let mut rows = vec![["ID", "SCHEDULE", "ENABLED", "NEXT RUN", "RUNS", "FAILED", "LAST ERROR"]
        .map(String::from)
        .to_vec()];
    for t in &tasks {
        let mut err = t.last_error().replace('\n', " ");
        if err.chars().count() > 60 {
            err = err.chars().take(59).collect::<String>() + "…";
        }
        rows.push(vec![
            t.id().to_string(),
            t.schedule().to_string(),
            if t.enabled() { "yes" } else { "no" }.into(),
            when(t.next_run_at()),
            t.run_count().to_string(),
            t.failed_count().to_string(),
            err,
        ]);
    }
    print_table(&rows);
    Ok(())
}

/// `rota history`.
pub async fn history(source: Source, id: &str, limit: usize, json: bool) -> anyhow::Result<()> {
    let execs: Vec<TaskExecution> = match &source {
        Source::Api { url, token } => {
            let v = api_call(
                reqwest::Method::GET,
                url,
                &["api", "tasks", id, "executions"],
                &[("limit", limit.to_string())],
                token.as_deref(),
            )
            .await?;
            let list = as_list(v);
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            list.into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .context("the API answered with executions rota cannot read")?
        }
        Source::Store(url) => {
            let store = open_store(url).await?;
            let q = ExecutionQuery::task(id).limit(limit);
            let (r, _) =
                with_progress(&format!("reading history from {url}"), store.executions(&q)).await;
            let _ = store.close().await;
            r?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&execs)?);
        return Ok(());
    }
    if execs.is_empty() {
        eprintln!("no runs of {id:?} recorded");
        return Ok(());
    }
    for e in &execs {
        println!(
            "{}  {:<9}  attempts={}  {}  node={}",
            when(Some(e.scheduled_at)),
            e.status.as_str(),
            e.attempts,
            config::format_duration(e.duration),
            e.node_id
        );
        if !e.error.is_empty() {
            println!("  error: {}", e.error);
        }
        for line in e.output.lines() {
            println!("  | {line}");
        }
    }
    Ok(())
}

/// `rota run-now`.
pub async fn run_now(api: &str, token: Option<&str>, id: &str) -> anyhow::Result<()> {
    if token.is_none() {
        eprintln!(
            "note: no --token and no ROTA_TOKEN; the daemon refuses mutating calls without one"
        );
    }
    let v = api_call(reqwest::Method::POST, api, &["api", "tasks", id, "run"], &[], token).await?;
    match v {
        Value::Null => println!("ran {id}"),
        Value::String(s) if s.trim().is_empty() => println!("ran {id}"),
        Value::String(s) => println!("{}", s.trim()),
        other => println!("{}", serde_json::to_string_pretty(&other)?),
    }
    Ok(())
}
