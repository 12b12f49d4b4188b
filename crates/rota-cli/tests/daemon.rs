//! The `rota` daemon end to end: the real binary as a subprocess, on a free
//! port, with a temporary config, store and working directory.
//!
//! Schedules fire every second, or once at a second computed from the clock
//! (`soon()`), so each test takes a few seconds.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const ROTA: &str = env!("CARGO_BIN_EXE_rota");

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A six-field schedule that fires once, `ahead` seconds from now (at most
/// once a minute, so once in a test).
fn soon(ahead: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    // Past the middle of a second, leave one more so the daemon is up in time.
    let extra = u64::from(now.subsec_millis() > 500);
    format!("{} * * * * *", (now.as_secs() + ahead + extra) % 60)
}

/// Runs `rota ARGS` in `dir` to completion.
fn rota(dir: &Path, args: &[&str]) -> Output {
    Command::new(ROTA)
        .args(args)
        .current_dir(dir)
        .env_remove("ROTA_TOKEN")
        .env_remove("ROTA_API")
        .env_remove("ROTA_NODE_ID")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it gives `Some`, or panics after `max` with `what`.
fn wait_for<T>(max: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > max {
            panic!("timed out after {max:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.1 client: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let resp = text(&resp);
    let status: u16 = resp.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A running daemon; killed on drop if the test did not stop it.
struct Daemon {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Daemon {
    /// Writes `config` (with `{port}` replaced) to `dir/rota.toml` and starts
    /// `rota run --config rota.toml` in `dir`; waits until it answers HTTP.
    fn start(dir: &Path, config: &str) -> Daemon {
        let port = free_port();
        std::fs::write(dir.join("rota.toml"), config.replace("{port}", &port.to_string())).unwrap();
        let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
        let child = Command::new(ROTA)
            .args(["run", "--config", "rota.toml"])
            .current_dir(dir)
            .env_remove("ROTA_TOKEN")
            .env_remove("ROTA_NODE_ID")
            .env("ROTA_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon { child, dir: dir.to_path_buf(), port };
        let start = Instant::now();
        loop {
            // Any HTTP answer means the API is being served (after the scheduler started).
            if http(port, "GET", "/healthz", None, "").is_some() {
                break;
            }
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!("the daemon exited early ({status}):\n{}", d.log());
            }
            if start.elapsed() > Duration::from_secs(15) {
                panic!("the daemon did not answer on port {port}:\n{}", d.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Waits for the daemon to exit.
    fn wait(&mut self, max: Duration) -> ExitStatus {
        let status = wait_for(max, "the daemon to exit", || self.child.try_wait().unwrap());
        if !status.success() {
            eprintln!("{}", self.log());
        }
        status
    }

    /// SIGTERM, and the exit status.
    fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait(Duration::from_secs(20))
    }

    fn store(&self) -> String {
        format!("sqlite://{}", self.dir.join("rota.db").display())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `rota history ID --store URL --json`.
fn history(dir: &Path, store: &str, id: &str) -> Vec<Value> {
    let out = rota(dir, &["history", id, "--store", store, "--json", "--limit", "50"]);
    assert!(out.status.success(), "rota history: {}", text(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The task IDs in the store, sorted.
fn task_ids(dir: &Path, store: &str) -> Vec<String> {
    let out = rota(dir, &["tasks", "--store", store, "--json"]);
    assert!(out.status.success(), "rota tasks: {}", text(&out.stderr));
    let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<String> = v.iter().map(|t| t["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// True if `pid` is gone or a zombie.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start()).unwrap_or("");
            state.starts_with('Z') || state.starts_with('X')
        }
    }
}

fn pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

const ISSUE_EXAMPLE: &str = r#"[store]
url = "sqlite://rota.db"
[http]
listen = "127.0.0.1:7878"
token = "change-me"
[[tasks]]
name = "heartbeat"
schedule = "*/5 * * * * *"
command = ["sh", "-c", "echo $ROTA_SCHEDULED_AT >> heartbeat.log"]
timeout = "10s"
max_retries = 2
retry_delay = "1s"
tags = { team = "ops" }
"#;

#[test]
fn validate_accepts_the_issue_example_and_the_shipped_example() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rota.toml"), ISSUE_EXAMPLE).unwrap();
    let out = rota(dir.path(), &["validate", "--config", "rota.toml"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok: 1 task");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/rota.toml");
    let out = rota(dir.path(), &["validate", "--config", example]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: "), "{}", text(&out.stdout));
}

#[test]
fn an_invalid_config_lists_every_error_and_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = r#"[http]
listen = "127.0.0.1:7878"
colour = "blue"

[[tasks]]
name = "backup"
schedule = "61 0 * * *"
command = ["true"]
timeout = "10x"

[[tasks]]
name = "backup"
schedule = "* * * * *"
command = "echo no shell"

[[tasks]]
name = "ping"
schedule = "@every 30s"
command = ["true"]
http = { url = "http://127.0.0.1/" }
overlap = "sometimes"
time_zone = "Mars/Olympus"
"#;
    std::fs::write(dir.path().join("rota.toml"), bad).unwrap();
    let out = rota(dir.path(), &["validate", "--config", "rota.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let want = [
        "rota.toml:3: [http]: unknown key \"colour\"",
        "rota.toml:7: task 'backup': schedule: minute: 61 is out of range 0-59",
        "rota.toml:9: task 'backup': timeout: \"10x\" is not a duration",
        "rota.toml:11: task 'backup': duplicate name (first defined on line 5)",
        "rota.toml:14: task 'backup': command: expected an array",
        "rota.toml:19: task 'ping': has both command and http",
        "rota.toml:21: task 'ping': overlap: \"sometimes\" is not a policy",
        "rota.toml:22: task 'ping': time_zone: unknown time zone \"Mars/Olympus\"",
    ];
    for w in want {
        assert!(stdout.lines().any(|l| l.starts_with(w)), "missing {w:?} in:\n{stdout}");
    }
    assert_eq!(stdout.lines().count(), want.len(), "{stdout}");

    // `rota run` refuses it the same way, before touching the store.
    let out = rota(dir.path(), &["run", "--config", "rota.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for w in want {
        assert!(stderr.contains(w), "missing {w:?} in:\n{stderr}");
    }
    assert!(stderr.contains("invalid config (8 errors)"), "{stderr}");
    assert!(!dir.path().join("rota.db").exists());
}

#[test]
fn a_non_loopback_address_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rota.toml"), "[http]\nlisten = \"0.0.0.0:7878\"\n").unwrap();
    let out = rota(dir.path(), &["run", "--config", "rota.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("rota.toml:2: [http] listen: 0.0.0.0:7878 is not a loopback address"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn command_output_and_exit_status_land_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        r#"[http]
listen = "127.0.0.1:{port}"

[[tasks]]
name = "fails"
schedule = "* * * * * *"
command = ["sh", "-c", "echo out-$ROTA_ATTEMPT; echo err-line >&2; exit 3"]

[[tasks]]
name = "works"
schedule = "* * * * * *"
command = ["printf", "%s\n", "hello", "world"]

[[tasks]]
name = "loud"
schedule = "* * * * * *"
command = ["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x"]
"#,
    );
    // No [store]: the SQLite file in the working directory.
    assert!(dir.path().join("rota.db").exists());
    let store = d.store();
    let fails = wait_for(Duration::from_secs(10), "a run of 'fails'", || {
        let h = history(dir.path(), &store, "fails");
        (!h.is_empty()).then_some(h)
    });
    let e = &fails[0];
    assert_eq!(e["status"], "failed");
    assert!(e["error"].as_str().unwrap().contains("exit status 3"), "{e}");
    let out = e["output"].as_str().unwrap();
    assert!(out.contains("out-1\n") && out.contains("err-line\n"), "{out:?}");

    let works = wait_for(Duration::from_secs(10), "a run of 'works'", || {
        let h = history(dir.path(), &store, "works");
        (!h.is_empty()).then_some(h)
    });
    assert_eq!(works[0]["status"], "completed");
    assert_eq!(works[0]["output"], "hello\nworld\n");

    let loud = wait_for(Duration::from_secs(10), "a run of 'loud'", || {
        let h = history(dir.path(), &store, "loud");
        (!h.is_empty()).then_some(h)
    });
    let out = loud[0]["output"].as_str().unwrap();
    assert!(out.len() < 64 * 1024 + 100, "{}", out.len());
    assert!(
        out.ends_with("… [output truncated: 134464 bytes dropped]\n"),
        "{:?}",
        &out[out.len() - 60..]
    );

    assert!(d.stop().success());
    // After the stop, the text form shows status, error and output.
    let out = rota(dir.path(), &["history", "fails", "--store", &store, "-n", "1"]);
    let s = text(&out.stdout);
    assert!(s.contains("failed") && s.contains("error: ") && s.contains("exit status 3"), "{s}");
    assert!(s.contains("  | out-1") && s.contains("  | err-line"), "{s}");
}

#[test]
fn rota_variables_and_env_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"[http]
listen = "127.0.0.1:{{port}}"
[scheduler]
node_id = "test-node"

[[tasks]]
name = "env task"
schedule = "* * * * * *"
command = ["sh", "-c", "env | grep -E '^(ROTA_|EXTRA=)' | sort > env.tmp && pwd >> env.tmp && mv env.tmp env.txt"]
env = {{ EXTRA = "extra value" }}
working_dir = "{}"
"#,
            work.display()
        ),
    );
    let env = wait_for(Duration::from_secs(10), "env.txt", || {
        std::fs::read_to_string(work.join("env.txt")).ok()
    });
    assert!(d.stop().success());
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing in {env}"))
            .to_string()
    };
    let id = get("ROTA_TASK_ID");
    assert!(id.starts_with("env-task-"), "{id}");
    assert_eq!(get("ROTA_TASK_NAME"), "env task");
    assert_eq!(get("ROTA_ATTEMPT"), "1");
    assert_eq!(get("ROTA_NODE_ID"), "test-node");
    assert_eq!(get("EXTRA"), "extra value");
    let at: jiff::Timestamp = get("ROTA_SCHEDULED_AT").parse().expect("RFC 3339");
    assert_eq!(at.subsec_nanosecond(), 0, "a whole second: the fire's scheduled instant");
    assert!(env.lines().last().unwrap().ends_with("/work"), "{env}");
    // The history names the node too.
    let h = history(dir.path(), &d.store(), &id);
    assert_eq!(h[0]["node_id"], "test-node");
}

#[test]
fn timeout_kills_the_job_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let when = soon(3);
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"[http]
listen = "127.0.0.1:{{port}}"

[[tasks]]
name = "sleeper"
schedule = "{when}"
timeout = "1s"
command = ["sh", "-c", "sleep 60 & echo $! >> sleeper.pids; sleep 60 & echo $! >> sleeper.pids; echo $$ >> sleeper.pids; wait"]

# Ignores SIGTERM (children inherit it): needs the SIGKILL that follows.
[[tasks]]
name = "stubborn"
schedule = "{when}"
timeout = "1s"
command = ["sh", "-c", "trap '' TERM; sleep 60 & echo $! >> stubborn.pids; echo $$ >> stubborn.pids; wait; wait"]
"#
        ),
    );
    let sleeper = wait_for(Duration::from_secs(10), "the sleeper's pids", || {
        let p = pids(&dir.path().join("sleeper.pids"));
        (p.len() == 3).then_some(p)
    });
    let stubborn = wait_for(Duration::from_secs(5), "the stubborn pids", || {
        let p = pids(&dir.path().join("stubborn.pids"));
        (p.len() == 2).then_some(p)
    });
    assert!(sleeper.iter().chain(&stubborn).all(|&p| !dead(p)), "running before the timeout");
    let started = Instant::now();
    // 1 s timeout, then SIGTERM: the plain group goes at once.
    wait_for(Duration::from_secs(4), "the sleeper's group to die", || {
        sleeper.iter().all(|&p| dead(p)).then_some(())
    });
    // The stubborn group outlives SIGTERM and dies by SIGKILL 2 s later.
    wait_for(Duration::from_secs(6), "the stubborn group to die", || {
        stubborn.iter().all(|&p| dead(p)).then_some(())
    });
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "SIGKILL came {:?} after",
        started.elapsed()
    );
    let store = d.store();
    let h = wait_for(Duration::from_secs(5), "the sleeper's history", || {
        let h = history(dir.path(), &store, "sleeper");
        (!h.is_empty()).then_some(h)
    });
    assert_eq!(h[0]["status"], "failed");
    assert!(h[0]["error"].as_str().unwrap().contains("timed out"), "{}", h[0]);
    assert!(h[0]["output"].as_str().unwrap().contains("SIGTERM"), "{}", h[0]);
    assert!(d.stop().success());
}

#[test]
fn sigterm_lets_the_running_job_finish_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"[http]
listen = "127.0.0.1:{{port}}"
[scheduler]
stop_grace = "10s"

[[tasks]]
name = "slow"
schedule = "{}"
command = ["sh", "-c", "echo started > started; sleep 3; echo done > done; echo finished"]
"#,
            soon(3)
        ),
    );
    wait_for(Duration::from_secs(10), "the job to start", || {
        dir.path().join("started").exists().then_some(())
    });
    let t = Instant::now();
    let status = d.stop();
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "the daemon waited for the job: {:?}",
        t.elapsed()
    );
    assert!(dir.path().join("done").exists(), "the job finished");
    let h = history(dir.path(), &d.store(), "slow");
    assert_eq!(h[0]["status"], "completed", "{}", h[0]);
    assert_eq!(h[0]["output"], "finished\n");
    let log = d.log();
    assert!(log.contains("SIGTERM: stopping"), "{log}");
}

#[test]
fn sigterm_kills_a_job_that_outlasts_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"[http]
listen = "127.0.0.1:{{port}}"
[scheduler]
stop_grace = "1s"

[[tasks]]
name = "endless"
schedule = "{}"
command = ["sh", "-c", "echo $$ > endless.pid; sleep 60"]
"#,
            soon(3)
        ),
    );
    let pid = wait_for(Duration::from_secs(10), "the job to start", || {
        pids(&dir.path().join("endless.pid")).first().copied()
    });
    let t = Instant::now();
    assert!(d.stop().success());
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(dead(pid), "the job was killed");
    let h = history(dir.path(), &d.store(), "endless");
    assert_eq!(h[0]["status"], "failed", "{}", h[0]);
}

#[test]
fn sighup_reloads_and_an_invalid_config_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let task = |name: &str, file: &str| {
        format!(
            "[[tasks]]\nname = \"{name}\"\nschedule = \"* * * * * *\"\ncommand = [\"sh\", \"-c\", \"echo x >> {file}\"]\n\n"
        )
    };
    let head = "[http]\nlisten = \"127.0.0.1:{port}\"\n\n";
    let mut d =
        Daemon::start(dir.path(), &format!("{head}{}{}", task("a", "a.log"), task("b", "b.log")));
    let port = d.port.to_string();
    let head = head.replace("{port}", &port);
    let size = |f: &str| std::fs::metadata(dir.path().join(f)).map(|m| m.len()).unwrap_or(0);
    wait_for(Duration::from_secs(10), "a and b to run", || {
        (size("a.log") > 0 && size("b.log") > 0).then_some(())
    });

    // Remove b, add c, change a (new file).
    std::fs::write(
        dir.path().join("rota.toml"),
        format!("{head}{}{}", task("a", "a2.log"), task("c", "c.log")),
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "c and the new a to run", || {
        (size("c.log") > 0 && size("a2.log") > 0).then_some(())
    });
    let store = d.store();
    assert_eq!(task_ids(dir.path(), &store), ["a", "c"]);
    std::thread::sleep(Duration::from_millis(1200)); // a run of b in flight may still land
    let b = size("b.log");
    let a = size("a.log");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(size("b.log"), b, "b no longer runs");
    assert_eq!(size("a.log"), a, "a runs its new command");
    let log = d.log();
    assert!(log.contains("config reloaded") && log.contains("added=[\"c\"]"), "{log}");
    assert!(log.contains("removed=[\"b\"]") && log.contains("changed=[\"a\"]"), "{log}");

    // An invalid config is refused with its errors; the old one keeps running.
    std::fs::write(
        dir.path().join("rota.toml"),
        format!("{head}{}[[tasks]]\nname = \"d\"\nschedule = \"61 * * * *\"\ncommand = [\"true\"]\nretries = 3\n", task("a", "a2.log")),
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload to be refused", || {
        d.log().contains("config reload refused").then_some(())
    });
    let log = d.log();
    assert!(
        log.contains("rota.toml:11: task 'd': schedule: minute: 61 is out of range 0-59"),
        "{log}"
    );
    assert!(log.contains("rota.toml:13: task 'd': unknown key \"retries\""), "{log}");
    let c = size("c.log");
    wait_for(Duration::from_secs(5), "c to keep running", || (size("c.log") > c).then_some(()));
    assert_eq!(task_ids(dir.path(), &store), ["a", "c"]);
    assert!(d.stop().success());
}

#[test]
fn restart_removes_config_tasks_gone_from_the_config_and_keeps_others() {
    let dir = tempfile::tempdir().unwrap();
    let head = "[http]\nlisten = \"127.0.0.1:{port}\"\n";
    let task = |name: &str| {
        format!("[[tasks]]\nname = \"{name}\"\nschedule = \"0 0 1 1 *\"\ncommand = [\"true\"]\n")
    };
    let mut d = Daemon::start(dir.path(), &format!("{head}{}{}", task("keep"), task("drop")));
    let store = d.store();
    assert!(d.stop().success());

    // A task another program put in the store: not from the config.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s = rota::store::open(&store, rota::Retention::default()).await.unwrap();
        let h = rota::FuncHandler::new("elsewhere", |_ctx| async { Ok(()) });
        s.save(&rota::DefaultTask::new("foreign", "", "0 0 1 1 *", h)).await.unwrap();
        s.close().await.unwrap();
    });
    assert_eq!(task_ids(dir.path(), &store), ["drop", "foreign", "keep"]);

    let mut d = Daemon::start(dir.path(), &format!("{head}{}", task("keep")));
    assert_eq!(task_ids(dir.path(), &store), ["foreign", "keep"]);
    assert!(d.stop().success());
    let log = d.log();
    assert!(log.contains("removed: no longer in the config"), "{log}");
}

/// Needs the HTTP API (`src/http`): tasks, run-now with a token, executions.
#[test]
fn api_run_now_with_the_token_and_the_cli_clients() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        r#"[http]
listen = "127.0.0.1:{port}"
token = "s3cret"

[[tasks]]
name = "manual"
schedule = "0 0 1 1 *"
command = ["echo", "ran by hand"]
"#,
    );
    let port = d.port;
    let api = format!("http://127.0.0.1:{port}");
    let (status, body) = http(port, "GET", "/healthz", None, "").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = http(port, "GET", "/api/tasks", None, "").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"manual\""), "{body}");

    let (status, _) = http(port, "POST", "/api/tasks/manual/run", None, "").unwrap();
    assert_eq!(status, 401, "no token");
    let (status, _) = http(port, "POST", "/api/tasks/manual/run", Some("wrong"), "").unwrap();
    assert_eq!(status, 401, "bad token");

    let out = rota(dir.path(), &["run-now", "manual", "--api", &api, "--token", "s3cret"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = rota(dir.path(), &["history", "manual", "--api", &api, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let h: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h[0]["status"], "completed");
    assert_eq!(h[0]["output"], "ran by hand\n");

    let out = rota(dir.path(), &["tasks", "--api", &api]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.starts_with("ID ") && s.contains("manual"), "{s}");
    assert!(d.stop().success());
}

#[test]
fn every_subcommand_help_shows_examples() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["run", "validate", "tasks", "history", "run-now", "next", "explain"] {
        let out = rota(dir.path(), &[sub, "--help"]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Examples:"), "{sub} --help:\n{}", text(&out.stdout));
    }
}

#[test]
fn http_jobs_check_the_status_and_keep_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        r#"[http]
listen = "127.0.0.1:{port}"

[[tasks]]
name = "health"
schedule = "* * * * * *"
http = { url = "http://127.0.0.1:{port}/healthz", headers = { Accept = "text/plain" } }

[[tasks]]
name = "wants-201"
schedule = "* * * * * *"
http = { method = "GET", url = "http://127.0.0.1:{port}/healthz", expect_status = 201 }

[[tasks]]
name = "missing"
schedule = "* * * * * *"
http = { url = "http://127.0.0.1:{port}/no/such/page" }
"#,
    );
    let store = d.store();
    let first = |id: &str| {
        wait_for(Duration::from_secs(10), id, || history(dir.path(), &store, id).into_iter().next())
    };
    let ok = first("health");
    assert_eq!(ok["status"], "completed", "{ok}");
    assert!(ok["output"].as_str().unwrap().starts_with("HTTP 200 OK\n"), "{ok}");
    let bad = first("wants-201");
    assert_eq!(bad["status"], "failed");
    assert!(
        bad["error"].as_str().unwrap().contains("unexpected status 200 OK (expected 201)"),
        "{bad}"
    );
    let missing = first("missing");
    assert_eq!(missing["status"], "failed");
    assert!(missing["error"].as_str().unwrap().contains("404"), "{missing}");
    assert!(d.stop().success());

    // `rota tasks --config` reads the store that config names.
    let out = rota(dir.path(), &["tasks", "--config", "rota.toml"]);
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for id in ["health", "wants-201", "missing"] {
        assert!(s.lines().any(|l| l.starts_with(id)), "{s}");
    }
}

#[test]
fn a_second_signal_kills_running_jobs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"[http]
listen = "127.0.0.1:{{port}}"
[scheduler]
stop_grace = "60s"

[[tasks]]
name = "long"
schedule = "{}"
command = ["sh", "-c", "echo $$ > long.pid; sleep 60"]
"#,
            soon(3)
        ),
    );
    let pid = wait_for(Duration::from_secs(10), "the job to start", || {
        pids(&dir.path().join("long.pid")).first().copied()
    });
    let t = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.child.try_wait().unwrap().is_none(), "waiting for the job (grace 60s)");
    d.signal(nix::sys::signal::Signal::SIGINT);
    let status = d.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(dead(pid));
    let h = history(dir.path(), &d.store(), "long");
    assert_eq!(h[0]["status"], "failed", "{}", h[0]);
    assert!(h[0]["error"].as_str().unwrap().contains("killed by signal 9"), "{}", h[0]);
    assert!(d.log().contains("second signal"), "{}", d.log());
}
