//! What config tasks run: command jobs and HTTP jobs, as [`TaskHandler`]s.
//!
//! A command job runs its program directly (no shell unless the user writes
//! one) in a process group of its own, with `ROTA_TASK_ID`, `ROTA_TASK_NAME`,
//! `ROTA_SCHEDULED_AT`, `ROTA_ATTEMPT` and `ROTA_NODE_ID` in its environment,
//! and in cluster mode `ROTA_FENCING_TOKEN` (the run's fencing token).
//! Exit status 0 is success. Its stdout and stderr, interleaved as they come,
//! are kept as the run's output, capped at [`OUTPUT_LIMIT`]. On timeout or
//! cancellation the whole group gets SIGTERM, then SIGKILL after
//! [`KILL_AFTER`].
//!
//! An HTTP job sends one request; the expected status (or any 2xx) is success,
//! and the response's status line and body (capped) are the output.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rota::{DefaultTask, HandlerError, TaskBuilder, TaskContext, TaskHandler};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

use crate::config::{CommandJob, HttpJob, Job, TaskSpec, SOURCE_CONFIG, SOURCE_TAG};

/// The most output kept per run, in bytes.
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// How long a process group gets between SIGTERM and SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(2);
/// How long to wait for the output pipes to close after the program exited
/// (a background child may hold them open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// The handler name of a config task: `command:<name>` or `http:<name>`, so
/// stored tasks re-bind to their job on restart.
pub fn handler_name(spec: &TaskSpec) -> String {
    match spec.job {
        Job::Command(_) => format!("command:{}", spec.name),
        Job::Http(_) => format!("http:{}", spec.name),
    }
}

/// The handler that runs `spec`'s job.
pub fn handler_for(spec: &TaskSpec) -> Arc<dyn TaskHandler> {
    let name = handler_name(spec);
    match &spec.job {
        Job::Command(c) => Arc::new(CommandHandler { name, job: c.clone() }),
        Job::Http(h) => Arc::new(HttpHandler::new(name, h.clone())),
    }
}

/// The scheduler task for `spec`, bound to `handler`, tagged as from the config.
pub fn task_for(spec: &TaskSpec, handler: Arc<dyn TaskHandler>) -> DefaultTask {
    let mut b = TaskBuilder::new(&spec.name, &spec.description, &spec.schedule, handler)
        .enabled(spec.enabled)
        .timeout(spec.timeout)
        .max_retries(spec.max_retries)
        .retry_delay(spec.retry_delay)
        .overlap(spec.overlap)
        .misfire(spec.misfire)
        .tag(SOURCE_TAG, SOURCE_CONFIG);
    for (k, v) in &spec.tags {
        b = b.tag(k, v);
    }
    if let Some(z) = &spec.time_zone {
        b = b.time_zone(z);
    }
    if let Some(g) = spec.misfire_grace {
        b = b.misfire_grace(g);
    }
    b.build()
}

/// Output capped at a byte limit, with the cut counted.
#[derive(Debug)]
struct Capture {
    buf: Vec<u8>,
    dropped: u64,
    limit: usize,
}

impl Capture {
    fn new(limit: usize) -> Self {
        Capture { buf: Vec::new(), dropped: 0, limit }
    }

    fn push(&mut self, chunk: &[u8]) {
        let room = self.limit.saturating_sub(self.buf.len());
        let take = room.min(chunk.len());
        self.buf.extend_from_slice(&chunk[..take]);
        self.dropped += (chunk.len() - take) as u64;
    }

    fn render(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.dropped > 0 {
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(&format!("… [output truncated: {} bytes dropped]\n", self.dropped));
        }
        s
    }
}

/// Reapers of killed process groups, so shutdown can wait for them.
static REAPERS: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Waits (at most `max`) for process groups being killed to be gone.
pub async fn wait_for_reapers(max: Duration) {
    let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *REAPERS.lock().unwrap());
    let _ = tokio::time::timeout(max, async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
}

/// Process groups of running command jobs.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// SIGKILLs the process group of every running command job (a second
/// SIGTERM while the daemon waits for them). Returns how many.
pub fn kill_all_groups() -> usize {
    let live = LIVE.lock().unwrap().clone();
    for &g in &live {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
    live.len()
}

/// Tracks a job's process group while it runs, and kills it with SIGKILL
/// when dropped unless disarmed: a run aborted without being cancelled
/// leaves nothing behind.
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl GroupGuard {
    fn new(pgid: Pid) -> Self {
        let armed = pgid.as_raw() > 0;
        if armed {
            LIVE.lock().unwrap().push(pgid.as_raw());
        }
        GroupGuard { pgid, armed }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
        LIVE.lock().unwrap().retain(|&g| g != self.pgid.as_raw());
    }
}

/// Runs a program (see the module docs).
#[derive(Debug)]
pub struct CommandHandler {
    name: String,
    job: CommandJob,
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        format!("exit status {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {} ({})", sig, s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        }
    } else {
        format!("{status}")
    }
}

async fn pump(mut r: impl tokio::io::AsyncRead + Unpin, cap: Arc<Mutex<Capture>>) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => cap.lock().unwrap().push(&buf[..n]),
        }
    }
}

#[async_trait]
impl TaskHandler for CommandHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, ctx: TaskContext) -> Result<(), HandlerError> {
        let argv = &self.job.argv;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(&self.job.env)
            .env("ROTA_TASK_ID", ctx.task_id())
            .env("ROTA_TASK_NAME", ctx.task_name())
            .env("ROTA_SCHEDULED_AT", ctx.scheduled_at().to_string())
            .env("ROTA_ATTEMPT", ctx.attempt().to_string())
            .env("ROTA_NODE_ID", ctx.node_id())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if let Some(token) = ctx.fencing_token() {
            cmd.env("ROTA_FENCING_TOKEN", token.to_string());
        }
        if let Some(dir) = &self.job.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            let dir = match &self.job.working_dir {
                Some(d) => format!(" in {}", d.display()),
                None => String::new(),
            };
            format!("cannot start {:?}{dir}: {e}", argv[0])
        })?;
        let pgid = Pid::from_raw(child.id().map(|p| p as i32).unwrap_or(0));
        let mut guard = GroupGuard::new(pgid);
        let cap = Arc::new(Mutex::new(Capture::new(OUTPUT_LIMIT)));
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(out, cap.clone())));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(err, cap.clone())));
        }
        tokio::select! {
            status = child.wait() => {
                guard.armed = false;
                let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
                    for p in pumps {
                        let _ = p.await;
                    }
                })
                .await;
                ctx.set_output(cap.lock().unwrap().render());
                let status = status.map_err(|e| format!("waiting for {:?}: {e}", argv[0]))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(describe_status(status).into())
                }
            }
            _ = ctx.cancelled() => {
                // Timeout or shutdown: SIGTERM the group now, SIGKILL it later.
                let _ = killpg(pgid, Signal::SIGTERM);
                guard.armed = false;
                let mut out = cap.lock().unwrap().render();
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format!(
                    "[rota: run cancelled; sent SIGTERM to process group {pgid}, SIGKILL follows after {}s]\n",
                    KILL_AFTER.as_secs()
                ));
                ctx.set_output(out);
                let reaper = tokio::spawn(async move {
                    // Listed as live until the group is gone.
                    let _guard = guard;
                    let deadline = tokio::time::Instant::now() + KILL_AFTER;
                    loop {
                        let _ = child.try_wait();
                        // Signal 0: is anything left in the group?
                        if killpg(pgid, None) == Err(Errno::ESRCH) {
                            break;
                        }
                        if tokio::time::Instant::now() >= deadline {
                            let _ = killpg(pgid, Signal::SIGKILL);
                            let _ = child.wait().await;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
                let mut reapers = REAPERS.lock().unwrap();
                reapers.retain(|h| !h.is_finished());
                reapers.push(reaper);
                Err(format!("cancelled: sent SIGTERM to process group {pgid}").into())
            }
        }
    }
}

/// Sends an HTTP request (see the module docs).
#[derive(Debug)]
pub struct HttpHandler {
    name: String,
    job: HttpJob,
    client: reqwest::Client,
}

impl HttpHandler {
    fn new(name: String, job: HttpJob) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("rota/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        HttpHandler { name, job, client }
    }

    fn headers(&self, ctx: &TaskContext) -> reqwest::header::HeaderMap {
        use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
        let mut h = HeaderMap::new();
        let rota: BTreeMap<&str, String> = [
            ("x-rota-task-id", ctx.task_id().to_string()),
            ("x-rota-scheduled-at", ctx.scheduled_at().to_string()),
            ("x-rota-attempt", ctx.attempt().to_string()),
        ]
        .into_iter()
        .collect();
        for (k, v) in rota {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        }
        // Checked by the config; anything invalid is skipped.
        for (k, v) in &self.job.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v))
            {
                h.insert(k, v);
            }
        }
        h
    }
}

#[async_trait]
impl TaskHandler for HttpHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, ctx: TaskContext) -> Result<(), HandlerError> {
        let method = reqwest::Method::from_bytes(self.job.method.as_bytes())
            .map_err(|_| format!("bad method {:?}", self.job.method))?;
        let mut req = self.client.request(method, &self.job.url).headers(self.headers(&ctx));
        if let Some(b) = &self.job.body {
            req = req.body(b.clone());
        }
        let cap = Arc::new(Mutex::new(Capture::new(OUTPUT_LIMIT)));
        let work = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| format!("{} {}: {e}", self.job.method, self.job.url))?;
            let status = resp.status();
            cap.lock().unwrap().push(format!("HTTP {status}\n").as_bytes());
            while let Some(chunk) =
                resp.chunk().await.map_err(|e| format!("reading the body: {e}"))?
            {
                let full = {
                    let mut c = cap.lock().unwrap();
                    c.push(&chunk);
                    c.buf.len() >= c.limit
                };
                if full {
                    // Count what is left without keeping it, up to a point.
                    let mut extra = 0u64;
                    while let Ok(Some(more)) = resp.chunk().await {
                        extra += more.len() as u64;
                        if extra > 16 * 1024 * 1024 {
                            break;
                        }
                    }
                    cap.lock().unwrap().dropped += extra;
                    break;
                }
            }
            Ok::<_, String>(status)
        };
        let result = tokio::select! {
            r = work => r,
            _ = ctx.cancelled() => Err("cancelled".to_string()),
        };
        ctx.set_output(cap.lock().unwrap().render());
        let status = result?;
        let ok = match self.job.expect_status {
            Some(want) => status.as_u16() == want,
            None => status.is_success(),
        };
        if ok {
            Ok(())
        } else {
            let want = match self.job.expect_status {
                Some(w) => w.to_string(),
                None => "2xx".into(),
            };
            Err(format!("unexpected status {status} (expected {want})").into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_caps_and_marks_the_cut() {
        let mut c = Capture::new(10);
        c.push(b"hello ");
        c.push(b"world, again");
        assert_eq!(c.render(), "hello worl\n… [output truncated: 8 bytes dropped]\n");
        let mut c = Capture::new(10);
        c.push(b"ok\n");
        assert_eq!(c.render(), "ok\n");
    }

    fn spec(argv: &[&str]) -> TaskSpec {
        TaskSpec {
            name: "t".into(),
            schedule: "* * * * *".into(),
            description: String::new(),
            time_zone: None,
            enabled: true,
            timeout: Duration::ZERO,
            max_retries: 0,
            retry_delay: Duration::ZERO,
            tags: BTreeMap::new(),
            overlap: rota::OverlapPolicy::Skip,
            misfire: rota::MisfirePolicy::Skip,
            misfire_grace: None,
            job: Job::Command(CommandJob {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                env: [("EXTRA".to_string(), "x".to_string())].into(),
                working_dir: None,
            }),
        }
    }

    #[tokio::test]
    async fn command_output_status_and_env() {
        let h = handler_for(&spec(&[
            "sh",
            "-c",
            "echo $ROTA_TASK_ID $ROTA_ATTEMPT $EXTRA; echo oops >&2; exit 3",
        ]));
        let ctx = TaskContext::new("t", jiff::Timestamp::UNIX_EPOCH);
        let err = h.handle(ctx.clone()).await.unwrap_err();
        assert_eq!(err.to_string(), "exit status 3");
        let out = ctx.output();
        assert!(out.contains("t 1 x\n"), "{out:?}");
        assert!(out.contains("oops\n"), "{out:?}");
    }

    #[tokio::test]
    async fn command_output_is_capped() {
        let h = handler_for(&spec(&["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a"]));
        let ctx = TaskContext::new("t", jiff::Timestamp::UNIX_EPOCH);
        h.handle(ctx.clone()).await.unwrap();
        let out = ctx.output();
        assert!(
            out.ends_with("… [output truncated: 34464 bytes dropped]\n"),
            "{}",
            &out[out.len() - 80..]
        );
    }

    #[tokio::test]
    async fn missing_program() {
        let h = handler_for(&spec(&["/no/such/program"]));
        let ctx = TaskContext::new("t", jiff::Timestamp::UNIX_EPOCH);
        let err = h.handle(ctx).await.unwrap_err().to_string();
        assert!(err.starts_with("cannot start \"/no/such/program\""), "{err}");
    }

    #[tokio::test]
    async fn signal_is_reported() {
        let h = handler_for(&spec(&["sh", "-c", "kill -9 $$"]));
        let ctx = TaskContext::new("t", jiff::Timestamp::UNIX_EPOCH);
        let err = h.handle(ctx).await.unwrap_err().to_string();
        assert_eq!(err, "killed by signal 9 (SIGKILL)");
    }
}
