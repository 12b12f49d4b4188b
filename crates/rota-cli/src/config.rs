//! The daemon's config file (`rota run --config rota.toml`, `rota validate`).
//!
//! # Format
//!
//! ```toml
//! [store]                          # optional; default sqlite://rota.db
//! url = "sqlite://rota.db"         # memory | sqlite://PATH | postgres://... | redis://...
//!
//! [http]                           # optional
//! listen = "127.0.0.1:7878"        # default; a non-loopback address needs a token
//! token = "change-me"              # bearer token for mutating API calls; if absent, $ROTA_TOKEN
//!
//! [scheduler]                      # optional
//! time_zone = "Europe/Paris"       # default zone of schedules; default: the local zone
//! node_id = "web-1"                # else $ROTA_NODE_ID, else "<hostname>-<pid>"
//! stop_grace = "30s"               # how long SIGTERM waits for running jobs (default 30s)
//! max_concurrency = 4              # most jobs running at once (default: no limit)
//!
//! [cluster]                        # optional: run as one node of a cluster
//! backend = "redis"                # redis | etcd | zookeeper | consul
//! endpoints = ["redis://127.0.0.1:6379/0"]   # etcd/zookeeper: "host:port"; consul: "http://host:8500"
//! node_id = "node-1"               # else [scheduler] node_id, $ROTA_NODE_ID, "<hostname>-<pid>"
//! username = ""                    # etcd only
//! password = ""                    # redis and etcd
//! token = ""                       # consul ACL token
//! namespace = "rota"               # key prefix / root znode shared by the nodes (default "rota")
//! election_timeout = "5s"          # leadership and session TTL: the failover bound (default 5s)
//! heartbeat_interval = "1s"        # registry reads; a node is offline after 3 of them (default 1s)
//! lock_timeout = "30s"             # TTL of a running task's lock, renewed while it runs (default 30s)
//! distribute_tasks = true          # spread fires over the nodes (default true)
//! leader_election = true           # run for leader (default true); alone, the leader runs all fires
//!
//! [[tasks]]
//! name = "heartbeat"               # required, unique; the task ID is derived from it
//! schedule = "*/5 * * * * *"       # required: any form of the cron engine
//! description = "..."              # optional
//! time_zone = "UTC"                # optional, the task's own zone
//! enabled = true                   # default true
//! timeout = "10s"                  # per attempt; default none
//! max_retries = 2                  # default 0
//! retry_delay = "1s"               # default 0s
//! tags = { team = "ops" }          # string values; keys starting with "rota." are reserved
//! overlap = "skip"                 # "skip" (default) | "allow"
//! misfire = "skip"                 # "skip" (default) | "run_once" | "run_all"
//! misfire_max = 10                 # with "run_all": most catch-up runs (default 10)
//! misfire_grace = "1s"             # how late a fire may start (default 1s)
//! # exactly one of:
//! command = ["sh", "-c", "echo $ROTA_SCHEDULED_AT >> heartbeat.log"]
//! env = { LANG = "C" }             # command jobs only
//! working_dir = "/tmp"             # command jobs only; default: the daemon's working directory
//! # http = { method = "GET", url = "http://127.0.0.1:7878/healthz",
//! #          headers = { Accept = "text/plain" }, body = "", expect_status = 200 }
//! ```
//!
//! Durations are written like `"500ms"`, `"10s"`, `"1m30s"`, `"2h"`, `"1d"`.
//! Relative paths (the SQLite file, `working_dir`) are relative to the
//! daemon's working directory.
//!
//! The config is the source of truth for its tasks: on start, each task's
//! definition (enabled included) replaces the stored one, keeping its run
//! counts and history. Enabling or disabling a task through the API lasts
//! until the next restart, or a reload that changes that task.
//!
//! Every task from the config carries the tag `rota.source = "config"`. On
//! start and on reload, such tasks that are no longer in the config are
//! removed from the store; tasks without the tag (added by other programs on
//! the same store) are left alone.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::tz::TimeZone;
use rota::{MisfirePolicy, OverlapPolicy, Schedule};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The store used when the config names none.
pub const DEFAULT_STORE: &str = "sqlite://rota.db";
/// The HTTP address used when the config names none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// The default stop grace period.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);
/// The default `misfire_max` for `misfire = "run_all"`.
pub const DEFAULT_MISFIRE_MAX: u32 = 10;
/// The tag key marking tasks that come from the config file.
pub const SOURCE_TAG: &str = "rota.source";
/// The value of [`SOURCE_TAG`] on tasks from the config file.
pub const SOURCE_CONFIG: &str = "config";

/// A whole, valid config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[store] url`.
    pub store_url: String,
    /// `[http] listen`.
    pub listen: SocketAddr,
    /// `[http] token` (the `ROTA_TOKEN` fallback is applied by the daemon).
    pub token: Option<String>,
    /// `[scheduler]`.
    pub scheduler: SchedulerSection,
    /// `[[tasks]]`, in file order.
    pub tasks: Vec<TaskSpec>,
    /// `[cluster]`, if the daemon runs as a node of a cluster.
    pub cluster: Option<ClusterSection>,
}

/// The backend of `[cluster]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterBackend {
    /// Redis.
    Redis,
    /// etcd v3.
    Etcd,
    /// ZooKeeper.
    Zookeeper,
    /// Consul (HTTP API).
    Consul,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSection {
    /// The backend.
    pub backend: ClusterBackend,
    /// Its servers.
    pub endpoints: Vec<String>,
    /// This node's ID, if set here.
    pub node_id: Option<String>,
    /// etcd user name.
    pub username: String,
    /// Redis or etcd password.
    pub password: String,
    /// Consul ACL token.
    pub token: String,
    /// Key prefix / root znode shared by the cluster's nodes.
    pub namespace: String,
    /// Leadership and session TTL.
    pub election_timeout: Duration,
    /// Registry reads; a node is offline after three missed heartbeats.
    pub heartbeat_interval: Duration,
    /// TTL of a running task's lock.
    pub lock_timeout: Duration,
    /// Spread fires over the nodes.
    pub distribute_tasks: bool,
    /// Run for leader.
    pub leader_election: bool,
}

impl ClusterSection {
    fn new(backend: ClusterBackend) -> Self {
        ClusterSection {
            backend,
            endpoints: Vec::new(),
            node_id: None,
            username: String::new(),
            password: String::new(),
            token: String::new(),
            namespace: "rota".into(),
            election_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(30),
            distribute_tasks: true,
            leader_election: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store_url: DEFAULT_STORE.into(),
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            token: None,
            scheduler: SchedulerSection::default(),
            tasks: Vec::new(),
            cluster: None,
        }
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerSection {
    /// Default zone of schedules (IANA name).
    pub time_zone: Option<String>,
    /// This node's ID.
    pub node_id: Option<String>,
    /// How long a stop waits for running jobs.
    pub stop_grace: Duration,
    /// Most jobs at once.
    pub max_concurrency: Option<usize>,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            time_zone: None,
            node_id: None,
            stop_grace: DEFAULT_STOP_GRACE,
            max_concurrency: None,
        }
    }
}

/// One `[[tasks]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    /// Unique name.
    pub name: String,
    /// The schedule as written.
    pub schedule: String,
    /// Description.
    pub description: String,
    /// The task's own zone.
    pub time_zone: Option<String>,
    /// Whether it fires.
    pub enabled: bool,
    /// Timeout per attempt (zero: none).
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay between attempts.
    pub retry_delay: Duration,
    /// User tags (without the source tag).
    pub tags: BTreeMap<String, String>,
    /// Overlap policy.
    pub overlap: OverlapPolicy,
    /// Misfire policy.
    pub misfire: MisfirePolicy,
    /// Misfire grace, if set.
    pub misfire_grace: Option<Duration>,
    /// What it runs.
    pub job: Job,
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// A program.
    Command(CommandJob),
    /// An HTTP request.
    Http(HttpJob),
}

/// `command = [...]`, `env`, `working_dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandJob {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<PathBuf>,
}

/// `http = { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpJob {
    /// Method, upper case.
    pub method: String,
    /// URL.
    pub url: String,
    /// Request headers.
    pub headers: BTreeMap<String, String>,
    /// Request body.
    pub body: Option<String>,
    /// The status that counts as success; `None`: any 2xx.
    pub expect_status: Option<u16>,
}

/// One problem in a config file, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, starting with the task or section concerned.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.message)
    }
}

/// Why a config file could not be used.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read.
    Io(PathBuf, std::io::Error),
    /// The file has these problems (sorted by line).
    Invalid(PathBuf, Vec<ConfigError>),
}

impl LoadError {
    /// One line per problem, `path:line: message`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            LoadError::Io(p, e) => vec![format!("{}: cannot read: {e}", p.display())],
            LoadError::Invalid(p, errs) => {
                errs.iter().map(|e| format!("{}:{}: {}", p.display(), e.line, e.message)).collect()
            }
        }
    }
}

/// Reads and checks the config at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io(path.into(), e))?;
    parse(&text).map_err(|errs| LoadError::Invalid(path.into(), errs))
}

/// Parses and checks a config, returning every problem at once.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut c = Checker { src: text, errors: Vec::new() };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            let msg = e.message().trim().replace('\n', "; ");
            c.err_at(at, format!("TOML syntax: {msg}"));
        }
        return Err(c.finish());
    }
    let config = c.document(doc.get_ref());
    if c.errors.is_empty() {
        Ok(config)
    } else {
        Err(c.finish())
    }
}

/// True for 127.0.0.0/8 and ::1 (and v4-mapped loopback).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}

/// Parses `"500ms"`, `"10s"`, `"1m30s"`, `"2h"`, `"1d"` (units `ms s m h d`,
/// whole numbers, any combination from the largest unit down). `"0"` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{s:?} is not a duration: write a number and a unit (ms, s, m, h, d), e.g. \"10s\", \"1m30s\", \"500ms\""
        )
    };
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    let mut last_rank = usize::MAX;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let (rank, one) = match unit {
            "d" => (4, Duration::from_secs(86_400)),
            "h" => (3, Duration::from_secs(3600)),
            "m" => (2, Duration::from_secs(60)),
            "s" => (1, Duration::from_secs(1)),
            "ms" => (0, Duration::from_millis(1)),
            _ => return Err(bad()),
        };
        if rank >= last_rank {
            return Err(format!("{s:?}: units must go from the largest down, each at most once"));
        }
        last_rank = rank;
        let part = one.checked_mul(u32::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?;
        total = total.checked_add(part).ok_or_else(bad)?;
    }
    Ok(total)
}

/// Formats a duration the way the config writes it (`1m30s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut ms = d.as_millis();
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    if ms > 0 || out.is_empty() {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// The listen address: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(p) = port.parse::<u16>() {
            return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
        }
    }
    Err(format!("{s:?} is not an address: write IP:PORT, e.g. \"127.0.0.1:7878\""))
}

fn check_store_url(url: &str) -> Result<(), String> {
    let u = url.trim();
    if u == "memory" || u == "memory://" {
        return Ok(());
    }
    match u.split_once("://") {
        Some(("sqlite", path)) if !path.is_empty() => Ok(()),
        Some(("postgres" | "postgresql" | "redis" | "rediss", rest)) if !rest.is_empty() => Ok(()),
        None if u.ends_with(".db") || u.ends_with(".sqlite") => Ok(()),
        _ => Err(format!(
            "{url:?}: expected memory, sqlite://PATH, postgres://USER@HOST/DB or redis://HOST:PORT"
        )),
    }
}

const TOP_KEYS: &[&str] = &["store", "http", "scheduler", "tasks", "cluster"];
const CLUSTER_KEYS: &[&str] = &[
    "backend",
    "endpoints",
    "node_id",
    "username",
    "password",
    "token",
    "namespace",
    "election_timeout",
    "heartbeat_interval",
    "lock_timeout",
    "distribute_tasks",
    "leader_election",
];
const STORE_KEYS: &[&str] = &["url"];
const HTTP_KEYS: &[&str] = &["listen", "token"];
const SCHED_KEYS: &[&str] = &["time_zone", "node_id", "stop_grace", "max_concurrency"];
const TASK_KEYS: &[&str] = &[
    "name",
    "schedule",
    "description",
    "time_zone",
    "enabled",
    "timeout",
    "max_retries",
    "retry_delay",
    "tags",
    "overlap",
    "misfire",
    "misfire_max",
    "misfire_grace",
    "command",
    "env",
    "working_dir",
    "http",
];
const HTTP_JOB_KEYS: &[&str] = &["method", "url", "headers", "body", "expect_status"];
const ROTA_ENV: &[&str] =
    &["ROTA_TASK_ID", "ROTA_TASK_NAME", "ROTA_SCHEDULED_AT", "ROTA_ATTEMPT", "ROTA_NODE_ID"];

type Val<'i> = Spanned<DeValue<'i>>;

struct Checker<'a> {
    src: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn err_at(&mut self, offset: usize, message: String) {
        let line = self.line(offset);
        self.errors.push(ConfigError { line, message });
    }

    fn err(&mut self, span: &Range<usize>, message: String) {
        self.err_at(span.start, message);
    }

    fn finish(mut self) -> Vec<ConfigError> {
        // Stable: errors on one line keep the order they were found in.
        self.errors.sort_by_key(|e| e.line);
        self.errors
    }

    /// Reports keys of `table` not in `known`.
    fn unknown_keys(&mut self, table: &DeTable<'_>, known: &[&str], where_: &str) {
        for (k, _) in table.iter() {
            let key: &str = k.get_ref();
            if !known.contains(&key) {
                let hint = match suggest(key, known) {
                    Some(s) => format!("did you mean {s:?}?"),
                    None => format!("expected one of: {}", known.join(", ")),
                };
                self.err(&k.span(), format!("{where_}unknown key {key:?} ({hint})"));
            }
        }
    }

    fn table<'t, 'i>(&mut self, v: &'t Val<'i>, what: &str) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.err(
                    &v.span(),
                    format!("{what}: expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string(&mut self, v: &Val<'_>, what: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.err(
                    &v.span(),
                    format!("{what}: expected a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, v: &Val<'_>, what: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.err(
                    &v.span(),
                    format!("{what}: expected true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn integer(&mut self, v: &Val<'_>, what: &str, min: i64, max: i64) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
                match n {
                    Some(n) if (min..=max).contains(&n) => Some(n),
                    _ => {
                        self.err(
                            &v.span(),
                            format!("{what}: {} is out of range {min}-{max}", i.as_str()),
                        );
                        None
                    }
                }
            }
            other => {
                self.err(
                    &v.span(),
                    format!("{what}: expected an integer, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn duration(&mut self, v: &Val<'_>, what: &str) -> Option<Duration> {
        match v.get_ref() {
            DeValue::String(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.err(&v.span(), format!("{what}: {e}"));
                    None
                }
            },
            other => {
                self.err(
                    &v.span(),
                    format!(
                        "{what}: expected a duration string such as \"10s\", found {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn zone(&mut self, v: &Val<'_>, what: &str) -> Option<String> {
        let z = self.string(v, what)?;
        if TimeZone::get(&z).is_err() {
            self.err(
                &v.span(),
                format!(
                    "{what}: unknown time zone {z:?} (expected an IANA name such as Europe/Paris)"
                ),
            );
            return None;
        }
        Some(z)
    }

    fn string_table(&mut self, v: &Val<'_>, what: &str) -> Option<BTreeMap<String, String>> {
        let t = self.table(v, what)?;
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, val) in t.iter() {
            let key: &str = k.get_ref();
            match self.string(val, &format!("{what}.{key}")) {
                Some(s) => {
                    out.insert(key.to_string(), s);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn cluster(&mut self, t: &DeTable<'_>, span: &Range<usize>) -> Option<ClusterSection> {
        self.unknown_keys(t, CLUSTER_KEYS, "[cluster]: ");
        let Some(b) = t.get("backend") else {
            self.err(
                span,
                "[cluster] backend: missing (expected redis, etcd, zookeeper or consul)".into(),
            );
            return None;
        };
        let backend = match self.string(b, "[cluster] backend")?.as_str() {
            "redis" => ClusterBackend::Redis,
            "etcd" => ClusterBackend::Etcd,
            "zookeeper" => ClusterBackend::Zookeeper,
            "consul" => ClusterBackend::Consul,
            other => {
                self.err(
                    &b.span(),
                    format!(
                        "[cluster] backend: {other:?} is not a backend (expected redis, etcd, zookeeper or consul)"
                    ),
                );
                return None;
            }
        };
        let mut c = ClusterSection::new(backend);
        let mut ok = true;
        match t.get("endpoints") {
            None => {
                self.err(span, "[cluster] endpoints: missing (a list of server addresses)".into());
                ok = false;
            }
            Some(e) => match e.get_ref() {
                DeValue::Array(items) if !items.is_empty() => {
                    for (i, item) in items.iter().enumerate() {
                        match self.string(item, &format!("[cluster] endpoints[{i}]")) {
                            Some(s) if !s.trim().is_empty() => c.endpoints.push(s.trim().into()),
                            Some(_) => {
                                self.err(
                                    &item.span(),
                                    format!("[cluster] endpoints[{i}]: must not be empty"),
                                );
                                ok = false;
                            }
                            None => ok = false,
                        }
                    }
                }
                _ => {
                    self.err(
                        &e.span(),
                        "[cluster] endpoints: expected a non-empty list of strings".into(),
                    );
                    ok = false;
                }
            },
        }
        for (key, slot) in [("node_id", &mut c.node_id)] {
            if let Some(v) = t.get(key) {
                match self.string(v, &format!("[cluster] {key}")) {
                    Some(s) if !s.trim().is_empty() => *slot = Some(s),
                    Some(_) => {
                        self.err(&v.span(), format!("[cluster] {key}: must not be empty"));
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        }
        for (key, slot) in [
            ("username", &mut c.username),
            ("password", &mut c.password),
            ("token", &mut c.token),
            ("namespace", &mut c.namespace),
        ] {
            if let Some(v) = t.get(key) {
                match self.string(v, &format!("[cluster] {key}")) {
                    Some(s) => *slot = s,
                    None => ok = false,
                }
            }
        }
        if c.namespace.trim().is_empty() {
            let at = t.get("namespace").map_or(span.clone(), |v| v.span());
            self.err(&at, "[cluster] namespace: must not be empty".into());
            ok = false;
        }
        for (key, slot, min) in [
            ("election_timeout", &mut c.election_timeout, Duration::from_secs(1)),
            ("heartbeat_interval", &mut c.heartbeat_interval, Duration::from_millis(100)),
            ("lock_timeout", &mut c.lock_timeout, Duration::from_secs(1)),
        ] {
            if let Some(v) = t.get(key) {
                match self.duration(v, &format!("[cluster] {key}")) {
                    Some(d) if d >= min => *slot = d,
                    Some(d) => {
                        self.err(
                            &v.span(),
                            format!(
                                "[cluster] {key}: {} is too short (at least {})",
                                format_duration(d),
                                format_duration(min)
                            ),
                        );
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        }
        for (key, slot) in [
            ("distribute_tasks", &mut c.distribute_tasks),
            ("leader_election", &mut c.leader_election),
        ] {
            if let Some(v) = t.get(key) {
                match self.boolean(v, &format!("[cluster] {key}")) {
                    Some(b) => *slot = b,
                    None => ok = false,
                }
            }
        }
        ok.then_some(c)
    }

    fn document(&mut self, doc: &DeTable<'_>) -> Config {
        let mut config = Config::default();
        self.unknown_keys(doc, TOP_KEYS, "");
        if let Some(v) = doc.get("store") {
            if let Some(t) = self.table(v, "[store]") {
                self.unknown_keys(t, STORE_KEYS, "[store]: ");
                if let Some(u) = t.get("url") {
                    if let Some(url) = self.string(u, "[store] url") {
                        match check_store_url(&url) {
                            Ok(()) => config.store_url = url,
                            Err(e) => self.err(&u.span(), format!("[store] url: {e}")),
                        }
                    }
                }
            }
        }
        if let Some(v) = doc.get("http") {
            if let Some(t) = self.table(v, "[http]") {
                self.unknown_keys(t, HTTP_KEYS, "[http]: ");
                if let Some(l) = t.get("listen") {
                    if let Some(s) = self.string(l, "[http] listen") {
                        match parse_listen(&s) {
                            Ok(a) => config.listen = a,
                            Err(e) => self.err(&l.span(), format!("[http] listen: {e}")),
                        }
                    }
                }
                if let Some(l) = t.get("listen") {
                    let has_token = t.get("token").is_some()
                        || std::env::var("ROTA_TOKEN").is_ok_and(|v| !v.trim().is_empty());
                    if !is_loopback(&config.listen) && !has_token {
                        self.err(
                            &l.span(),
                            format!(
                                "[http] listen: {} is not a loopback address: set [http] token (or ROTA_TOKEN) to listen on it",
                                config.listen
                            ),
                        );
                    }
                }
                if let Some(tok) = t.get("token") {
                    if let Some(s) = self.string(tok, "[http] token") {
                        if s.trim().is_empty() {
                            self.err(
                                &tok.span(),
                                "[http] token: must not be empty (leave it out to refuse mutating calls)"
                                    .into(),
                            );
                        } else {
                            config.token = Some(s);
                        }
                    }
                }
            }
        }
        if let Some(v) = doc.get("scheduler") {
            if let Some(t) = self.table(v, "[scheduler]") {
                self.unknown_keys(t, SCHED_KEYS, "[scheduler]: ");
                let s = &mut config.scheduler;
                if let Some(z) = t.get("time_zone") {
                    s.time_zone = self.zone(z, "[scheduler] time_zone");
                }
                if let Some(n) = t.get("node_id") {
                    if let Some(id) = self.string(n, "[scheduler] node_id") {
                        if id.trim().is_empty() {
                            self.err(&n.span(), "[scheduler] node_id: must not be empty".into());
                        } else {
                            s.node_id = Some(id);
                        }
                    }
                }
                if let Some(g) = t.get("stop_grace") {
                    if let Some(d) = self.duration(g, "[scheduler] stop_grace") {
                        s.stop_grace = d;
                    }
                }
                if let Some(m) = t.get("max_concurrency") {
                    s.max_concurrency = self
                        .integer(m, "[scheduler] max_concurrency", 1, 1_000_000)
                        .map(|n| n as usize);
                }
            }
        }
        if let Some(v) = doc.get("cluster") {
            if let Some(t) = self.table(v, "[cluster]") {
                config.cluster = self.cluster(t, &v.span());
            }
        }
        if let Some(v) = doc.get("tasks") {
            match v.get_ref() {
                DeValue::Array(items) => {
                    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
                    for (i, item) in items.iter().enumerate() {
                        let line = self.line(item.span().start);
                        // Duplicates are found by name, even in tasks with other errors.
                        let name = match item.get_ref() {
                            DeValue::Table(t) => t.get("name").and_then(|n| match n.get_ref() {
                                DeValue::String(s) if !s.trim().is_empty() => Some(s.to_string()),
                                _ => None,
                            }),
                            _ => None,
                        };
                        let mut duplicate = false;
                        if let Some(name) = name {
                            let id = rota::task_id_for(&name);
                            if let Some((first, first_line)) = seen.get(&id) {
                                let msg = if *first == name {
                                    format!(
                                        "task '{name}': duplicate name (first defined on line {first_line})"
                                    )
                                } else {
                                    format!(
                                        "task '{name}': its ID {id:?} is the same as task '{first}''s (line {first_line}): rename one"
                                    )
                                };
                                self.errors.push(ConfigError { line, message: msg });
                                duplicate = true;
                            } else {
                                seen.insert(id, (name, line));
                            }
                        }
                        if let Some(spec) = self.task(i, item) {
                            if !duplicate {
                                config.tasks.push(spec);
                            }
                        }
                    }
                }
                other => self.err(
                    &v.span(),
                    format!("tasks: expected [[tasks]] tables, found {}", other.type_str()),
                ),
            }
        }
        config
    }

    /// One task; `None` if it has errors (already reported).
    fn task(&mut self, index: usize, v: &Val<'_>) -> Option<TaskSpec> {
        let before = self.errors.len();
        let t = self.table(v, &format!("task #{}", index + 1))?;
        // The name first: every other message names the task.
        let mut name = None;
        match t.get("name") {
            Some(n) => {
                if let Some(s) = self.string(n, &format!("task #{}: name", index + 1)) {
                    if s.trim().is_empty() {
                        self.err(
                            &n.span(),
                            format!("task #{}: name: must not be empty", index + 1),
                        );
                    } else {
                        name = Some(s);
                    }
                }
            }
            None => self.err(
                &v.span(),
                format!("task #{}: missing name (every task needs a unique name)", index + 1),
            ),
        }
        let who = match &name {
            Some(n) => format!("task '{n}'"),
            None => format!("task #{}", index + 1),
        };
        self.unknown_keys(t, TASK_KEYS, &format!("{who}: "));
        let f = |field: &str| format!("{who}: {field}");

        let zone = t.get("time_zone").and_then(|z| self.zone(z, &f("time_zone")));
        let schedule = match t.get("schedule") {
            Some(s) => {
                self.string(s, &f("schedule")).and_then(|expr| match Schedule::parse(&expr) {
                    Ok(_) => Some(expr),
                    Err(e) => {
                        let msg = match e.field() {
                            Some(field) => format!("{field}: {}", e.reason()),
                            None => e.reason().to_string(),
                        };
                        self.err(&s.span(), format!("{}: {msg}", f("schedule")));
                        None
                    }
                })
            }
            None => {
                self.err(
                    &v.span(),
                    format!("{who}: missing schedule (e.g. schedule = \"0 * * * *\")"),
                );
                None
            }
        };
        let description = t
            .get("description")
            .and_then(|d| self.string(d, &f("description")))
            .unwrap_or_default();
        let enabled = t.get("enabled").and_then(|e| self.boolean(e, &f("enabled"))).unwrap_or(true);
        let timeout =
            t.get("timeout").and_then(|d| self.duration(d, &f("timeout"))).unwrap_or_default();
        let max_retries = t
            .get("max_retries")
            .and_then(|n| self.integer(n, &f("max_retries"), 0, 1000))
            .unwrap_or(0) as u32;
        let retry_delay = t
            .get("retry_delay")
            .and_then(|d| self.duration(d, &f("retry_delay")))
            .unwrap_or_default();
        let mut tags = BTreeMap::new();
        if let Some(tv) = t.get("tags") {
            if let Some(map) = self.string_table(tv, &f("tags")) {
                for k in map.keys() {
                    if k.starts_with("rota.") {
                        self.err(
                            &tv.span(),
                            format!(
                                "{}: {k:?}: keys starting with \"rota.\" are reserved",
                                f("tags")
                            ),
                        );
                    }
                }
                tags = map;
            }
        }
        let overlap = match t.get("overlap") {
            None => OverlapPolicy::Skip,
            Some(o) => match self.string(o, &f("overlap")).as_deref() {
                Some("skip") => OverlapPolicy::Skip,
                Some("allow") => OverlapPolicy::Allow,
                Some(other) => {
                    self.err(
                        &o.span(),
                        format!(
                            "{}: {other:?} is not a policy (expected \"skip\" or \"allow\")",
                            f("overlap")
                        ),
                    );
                    OverlapPolicy::Skip
                }
                None => OverlapPolicy::Skip,
            },
        };
        let misfire_max =
            t.get("misfire_max").map(|m| (m, self.integer(m, &f("misfire_max"), 1, 100_000)));
        let misfire = match t.get("misfire") {
            None => MisfirePolicy::Skip,
            Some(m) => match self.string(m, &f("misfire")).as_deref() {
                Some("skip") => MisfirePolicy::Skip,
                Some("run_once") => MisfirePolicy::RunOnce,
                Some("run_all") => MisfirePolicy::RunAll {
                    max: misfire_max.and_then(|(_, n)| n).unwrap_or(i64::from(DEFAULT_MISFIRE_MAX))
                        as u32,
                },
                Some(other) => {
                    self.err(
                        &m.span(),
                        format!(
                            "{}: {other:?} is not a policy (expected \"skip\", \"run_once\" or \"run_all\")",
                            f("misfire")
                        ),
                    );
                    MisfirePolicy::Skip
                }
                None => MisfirePolicy::Skip,
            },
        };
        if let Some((m, _)) = misfire_max {
            let run_all = t.get("misfire").and_then(|v| match v.get_ref() {
                DeValue::String(s) => Some(s.as_ref() == "run_all"),
                _ => None,
            });
            if run_all == Some(false) || (run_all.is_none() && t.get("misfire").is_none()) {
                self.err(
                    &m.span(),
                    format!("{}: only applies with misfire = \"run_all\"", f("misfire_max")),
                );
            }
        }
        let misfire_grace =
            t.get("misfire_grace").and_then(|d| self.duration(d, &f("misfire_grace")));

        let job = self.job(t, v, &who);

        if self.errors.len() > before {
            return None;
        }
        Some(TaskSpec {
            name: name?,
            schedule: schedule?,
            description,
            time_zone: zone,
            enabled,
            timeout,
            max_retries,
            retry_delay,
            tags,
            overlap,
            misfire,
            misfire_grace,
            job: job?,
        })
    }

    fn job(&mut self, t: &DeTable<'_>, v: &Val<'_>, who: &str) -> Option<Job> {
        let f = |field: &str| format!("{who}: {field}");
        match (t.get("command"), t.get("http")) {
            (Some(c), Some(h)) => {
                let first = if c.span().start < h.span().start { c } else { h };
                self.err(
                    &first.span(),
                    format!("{who}: has both command and http: give exactly one"),
                );
                None
            }
            (None, None) => {
                self.err(
                    &v.span(),
                    format!(
                        "{who}: nothing to run: give command = [\"prog\", \"arg\", ...] or http = {{ url = \"...\" }}"
                    ),
                );
                None
            }
            (Some(c), None) => {
                let argv = match c.get_ref() {
                    DeValue::Array(items) => {
                        let mut argv = Vec::new();
                        let mut ok = true;
                        for (i, a) in items.iter().enumerate() {
                            match self.string(a, &f(&format!("command[{i}]"))) {
                                Some(s) => argv.push(s),
                                None => ok = false,
                            }
                        }
                        if ok && argv.is_empty() {
                            self.err(&c.span(), format!("{}: must name a program", f("command")));
                            ok = false;
                        }
                        if ok && argv[0].is_empty() {
                            self.err(
                                &c.span(),
                                format!("{}: the program name is empty", f("command")),
                            );
                            ok = false;
                        }
                        ok.then_some(argv)
                    }
                    DeValue::String(s) => {
                        self.err(
                            &c.span(),
                            format!(
                                "{}: expected an array such as [\"sh\", \"-c\", {s:?}] (rota runs no shell unless you write one), found a string",
                                f("command")
                            ),
                        );
                        None
                    }
                    other => {
                        self.err(
                            &c.span(),
                            format!(
                                "{}: expected an array of strings, found {}",
                                f("command"),
                                other.type_str()
                            ),
                        );
                        None
                    }
                };
                let mut env = BTreeMap::new();
                if let Some(e) = t.get("env") {
                    if let Some(map) = self.string_table(e, &f("env")) {
                        for k in map.keys() {
                            if k.is_empty() || k.contains('=') || k.contains('\0') {
                                self.err(
                                    &e.span(),
                                    format!("{}: {k:?} is not a variable name", f("env")),
                                );
                            } else if ROTA_ENV.contains(&k.as_str()) {
                                self.err(&e.span(), format!("{}: {k} is set by rota", f("env")));
                            }
                        }
                        env = map;
                    }
                }
                let working_dir = t
                    .get("working_dir")
                    .and_then(|w| self.string(w, &f("working_dir")))
                    .map(PathBuf::from);
                Some(Job::Command(CommandJob { argv: argv?, env, working_dir }))
            }
            (None, Some(h)) => {
                for key in ["env", "working_dir"] {
                    if let Some(x) = t.get(key) {
                        self.err(&x.span(), format!("{who}: {key}: only applies to command jobs"));
                    }
                }
                let ht = self.table(h, &f("http"))?;
                self.unknown_keys(ht, HTTP_JOB_KEYS, &format!("{who}: http: "));
                let method = match ht.get("method") {
                    None => Some("GET".to_string()),
                    Some(m) => self.string(m, &f("http.method")).and_then(|s| {
                        let up = s.to_ascii_uppercase();
                        if reqwest::Method::from_bytes(up.as_bytes()).is_ok() && !up.is_empty() {
                            Some(up)
                        } else {
                            self.err(
                                &m.span(),
                                format!("{}: {s:?} is not an HTTP method", f("http.method")),
                            );
                            None
                        }
                    }),
                };
                let url = match ht.get("url") {
                    None => {
                        self.err(&h.span(), format!("{}: missing url", f("http")));
                        None
                    }
                    Some(u) => {
                        self.string(u, &f("http.url")).and_then(|s| match reqwest::Url::parse(&s) {
                            Ok(p) if matches!(p.scheme(), "http" | "https") => Some(s),
                            Ok(p) => {
                                self.err(
                                    &u.span(),
                                    format!(
                                        "{}: scheme {:?} is not http or https",
                                        f("http.url"),
                                        p.scheme()
                                    ),
                                );
                                None
                            }
                            Err(e) => {
                                self.err(&u.span(), format!("{}: {s:?}: {e}", f("http.url")));
                                None
                            }
                        })
                    }
                };
                let mut headers = BTreeMap::new();
                if let Some(hv) = ht.get("headers") {
                    if let Some(map) = self.string_table(hv, &f("http.headers")) {
                        for (k, val) in &map {
                            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                                self.err(
                                    &hv.span(),
                                    format!("{}: {k:?} is not a header name", f("http.headers")),
                                );
                            } else if reqwest::header::HeaderValue::from_str(val).is_err() {
                                self.err(
                                    &hv.span(),
                                    format!(
                                        "{}: the value of {k:?} is not a valid header value",
                                        f("http.headers")
                                    ),
                                );
                            }
                        }
                        headers = map;
                    }
                }
                let body = ht.get("body").and_then(|b| self.string(b, &f("http.body")));
                let expect_status = ht
                    .get("expect_status")
                    .and_then(|s| self.integer(s, &f("http.expect_status"), 100, 599))
                    .map(|n| n as u16);
                Some(Job::Http(HttpJob {
                    method: method?,
                    url: url?,
                    headers,
                    body,
                    expect_status,
                }))
            }
        }
    }
}

/// A known key within edit distance 2 of `key`, if any.
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (levenshtein(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
[store]
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
    fn issue_example_is_valid() {
        let c = parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(c.store_url, "sqlite://rota.db");
        assert_eq!(c.token.as_deref(), Some("change-me"));
        assert_eq!(c.tasks.len(), 1);
        let t = &c.tasks[0];
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert_eq!(t.max_retries, 2);
        assert_eq!(t.retry_delay, Duration::from_secs(1));
        assert_eq!(t.tags["team"], "ops");
        assert!(matches!(&t.job, Job::Command(c) if c.argv[0] == "sh"));
    }

    #[test]
    fn cluster_section_of_the_issue() {
        let c = parse(
            r#"
[cluster]
backend = "redis"                  # etcd | zookeeper | consul
endpoints = ["redis://127.0.0.1:6379/0"]
node_id = "node-1"                 # or ROTA_NODE_ID
election_timeout = "5s"
heartbeat_interval = "1s"
distribute_tasks = true
"#,
        )
        .unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!(cl.backend, ClusterBackend::Redis);
        assert_eq!(cl.endpoints, ["redis://127.0.0.1:6379/0"]);
        assert_eq!(cl.node_id.as_deref(), Some("node-1"));
        assert_eq!(cl.election_timeout, Duration::from_secs(5));
        assert_eq!(cl.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(cl.lock_timeout, Duration::from_secs(30));
        assert!(cl.distribute_tasks && cl.leader_election);
        assert_eq!(cl.namespace, "rota");
    }

    #[test]
    fn cluster_errors_name_the_key_and_line() {
        let errs = parse("[cluster]\nbackend = \"mongo\"\nendpoints = []\n").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 2);
        assert!(
            errs[0].message.contains("[cluster] backend: \"mongo\" is not a backend"),
            "{errs:?}"
        );
        let errs = parse(
            "[cluster]\nbackend = \"etcd\"\nendpoints = []\nelection_timeout = \"10ms\"\nleader_election = 1\nport = 3\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| format!("{}: {}", e.line, e.message)).collect();
        assert!(
            text.iter().any(|e| e.starts_with("3: [cluster] endpoints: expected a non-empty list")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e
                    .starts_with("4: [cluster] election_timeout: 10ms is too short (at least 1s)")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("5: [cluster] leader_election: expected true or false")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("6: [cluster]: unknown key \"port\"")),
            "{text:?}"
        );
        let errs = parse("[cluster]\nendpoints = [\"x\"]\n").unwrap_err();
        assert!(errs[0].message.contains("[cluster] backend: missing"), "{errs:?}");
    }

    #[test]
    fn empty_config_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1d2h").unwrap(), Duration::from_secs(93_600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "10x", "s", "1s1m", "1.5s", "-1s", "1s 2ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_millis(90_500)), "1m30s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn every_error_with_its_line() {
        let text = r#"[http]
listen = "0.0.0.0:x"
colour = "red"

[[tasks]]
name = "backup"
schedule = "61 0 * * *"
command = ["true"]
timeout = "10x"

[[tasks]]
name = "backup"
schedule = "* * * * *"
command = ["true"]

[[tasks]]
name = "both"
schedule = "* * * * *"
command = ["true"]
http = { url = "http://127.0.0.1/" }
overlap = "sometimes"
misfire = "later"
time_zone = "Mars/Olympus"
shedule = "x"
"#;
        let errs = parse(text).unwrap_err();
        let got: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let want = [
            "2: [http] listen:",
            "3: [http]: unknown key \"colour\"",
            "7: task 'backup': schedule: minute: 61 is out of range 0-59",
            "9: task 'backup': timeout: \"10x\" is not a duration",
            "11: task 'backup': duplicate name (first defined on line 5)",
            "19: task 'both': has both command and http",
            "21: task 'both': overlap: \"sometimes\" is not a policy",
            "22: task 'both': misfire: \"later\" is not a policy",
            "23: task 'both': time_zone: unknown time zone \"Mars/Olympus\"",
            "24: task 'both': unknown key \"shedule\" (did you mean \"schedule\"?)",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "missing {w:?} in {got:#?}");
        }
        // The duplicate is reported against the second definition only once.
        assert_eq!(got.iter().filter(|g| g.contains("duplicate")).count(), 1, "{got:#?}");
    }

    #[test]
    fn syntax_errors_have_lines() {
        let errs = parse("[store]\nurl = \n").unwrap_err();
        assert_eq!(errs[0].line, 2, "{errs:?}");
        assert!(errs[0].message.starts_with("TOML syntax"), "{errs:?}");
    }

    #[test]
    fn http_jobs() {
        let c = parse(
            r#"[[tasks]]
name = "ping"
schedule = "@every 30s"
http = { method = "post", url = "http://127.0.0.1:7878/healthz", headers = { X-A = "b" }, body = "{}", expect_status = 204 }
"#,
        )
        .unwrap();
        let Job::Http(h) = &c.tasks[0].job else { panic!() };
        assert_eq!(h.method, "POST");
        assert_eq!(h.expect_status, Some(204));
        assert_eq!(h.headers["X-A"], "b");
        let errs = parse(
            r#"[[tasks]]
name = "ping"
schedule = "@every 30s"
env = { A = "b" }
http = { url = "ftp://x/", expect_status = 700, verb = "GET" }
"#,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:#?}");
    }

    #[test]
    fn command_must_be_an_array() {
        let errs =
            parse("[[tasks]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = \"echo hi\"\n")
                .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("no shell"), "{errs:?}");
        assert_eq!(errs[0].line, 4);
    }

    #[test]
    fn reserved_tags_and_env() {
        let errs = parse(
            "[[tasks]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"true\"]\ntags = { \"rota.source\" = \"x\" }\nenv = { ROTA_TASK_ID = \"x\" }\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn misfire_options() {
        let c = parse(
            "[[tasks]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"true\"]\nmisfire = \"run_all\"\nmisfire_max = 3\nmisfire_grace = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(c.tasks[0].misfire, MisfirePolicy::RunAll { max: 3 });
        assert_eq!(c.tasks[0].misfire_grace, Some(Duration::from_secs(60)));
        let errs = parse(
            "[[tasks]]\nname = \"a\"\nschedule = \"* * * * *\"\ncommand = [\"true\"]\nmisfire_max = 3\n",
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
    }

    #[test]
    fn loopback() {
        assert!(is_loopback(&"127.0.0.2:1".parse().unwrap()));
        assert!(is_loopback(&"[::1]:1".parse().unwrap()));
        assert!(!is_loopback(&"0.0.0.0:1".parse().unwrap()));
        assert_eq!(parse_listen("localhost:80").unwrap(), "127.0.0.1:80".parse().unwrap());
    }
}
