//! An in-repo fake of the few Consul HTTP API endpoints `ConsulCluster`
//! uses. **It is not Consul**: no Consul server can be installed here, so the
//! Consul backend is tested against this fake, which implements exactly these
//! endpoints with their documented semantics (and nothing else):
//!
//! * `PUT /v1/session/create` (JSON `Name`, `TTL`, `Behavior` = `release` |
//!   `delete`, `LockDelay`), answering `{"ID": ...}`. A session not renewed
//!   is invalidated after its TTL times the multiplier (Consul documents that
//!   a session expires between TTL and 2 × TTL; the fake uses 2 × TTL by
//!   default, see [`FakeOptions::ttl_multiplier`]). Consul refuses TTLs
//!   under 10 s: so does the fake, unless the test knob
//!   [`FakeOptions::min_session_ttl`] lowers the minimum for fast tests.
//! * `PUT /v1/session/renew/{id}` (404 once invalidated) and
//!   `PUT /v1/session/destroy/{id}`.
//! * Invalidation (expiry or destroy) releases or deletes (per `Behavior`)
//!   every key the session holds, and starts the session's **lock-delay** on
//!   each: for that long nobody can `acquire` the key. An explicit
//!   `?release=` does not start a lock-delay.
//! * `GET /v1/kv/{key}` (and `?recurse` for a prefix), answering
//!   `[{Key, Value (base64 or null), Flags, Session, CreateIndex,
//!   ModifyIndex, LockIndex}]` or 404, with the `X-Consul-Index` header.
//!   **Blocking queries**: with `?index=N&wait=D` the reply waits until the
//!   index passes `N` or `D` has passed (the fake uses one index for every
//!   write, a value the docs allow: the index is only to be compared; it
//!   adds no jitter to `wait`).
//! * `PUT /v1/kv/{key}` with `?acquire={session}` (fails while another
//!   session holds the key or during its lock-delay; increments `LockIndex`),
//!   `?release={session}` (only by the holding session), `?cas={index}`
//!   (0: only if absent), `?flags=`; answers `true` / `false`.
//! * `DELETE /v1/kv/{key}` (`?recurse`).
//! * `X-Consul-Token`: when [`FakeOptions::token`] is set, every request
//!   without that token gets 403 `Permission denied`.
//!
//! Test knobs beyond the API: [`FakeConsul::block_renewals`] makes renewals of
//! the named sessions fail (a partition between one node and the server), and
//! [`FakeConsul::keys`] lists the stored keys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use tokio::time::Instant;

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// The smallest session TTL accepted. Consul's is 10 s (the default);
    /// tests lower it (a test knob: real Consul does not allow this).
    pub min_session_ttl: Duration,
    /// A session expires `ttl_multiplier` × TTL after its last renewal
    /// (Consul: between 1 and 2 × TTL; default 2, the documented bound).
    pub ttl_multiplier: u32,
    /// The ACL token every request must carry, if any.
    pub token: Option<String>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions { min_session_ttl: Duration::from_secs(10), ttl_multiplier: 2, token: None }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Option<Vec<u8>>,
    flags: u64,
    session: Option<String>,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
}

#[derive(Debug, Clone)]
struct Session {
    name: String,
    ttl: Option<Duration>,
    lock_delay: Duration,
    delete: bool,
    expires: Option<Instant>,
    create_index: u64,
}

#[derive(Debug, Default)]
struct Store {
    index: u64,
    next_id: u64,
    kv: BTreeMap<String, Entry>,
    sessions: HashMap<String, Session>,
    lock_delay: HashMap<String, Instant>,
    blocked: HashSet<String>,
}

struct Shared {
    opts: FakeOptions,
    store: Mutex<Store>,
    changed: tokio::sync::watch::Sender<u64>,
}

/// A running fake Consul agent on `127.0.0.1:0`; stopped on drop.
pub struct FakeConsul {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl FakeConsul {
    /// Starts a fake with `opts` on a free loopback port.
    pub async fn start(opts: FakeOptions) -> FakeConsul {
        let shared = Arc::new(Shared {
            opts,
            store: Mutex::new(Store { index: 1, ..Store::default() }),
            changed: tokio::sync::watch::channel(1).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tasks = Self::serve(shared.clone(), listener);
        FakeConsul { addr, shared, tasks }
    }

    /// Test knob: stops serving (every connection is dropped, requests are
    /// refused) for `down`, then serves again on the same address with the
    /// same data, as a Consul server restarts with its Raft state. Session
    /// TTLs are reset on the way back, as a new Consul leader resets them.
    pub async fn restart_after(&mut self, down: Duration) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        tokio::time::sleep(down).await;
        {
            let mut store = self.shared.store.lock().unwrap();
            let now = Instant::now();
            for session in store.sessions.values_mut() {
                if let Some(ttl) = session.ttl {
                    session.expires = Some(now + ttl * self.shared.opts.ttl_multiplier);
                }
            }
        }
        let mut listener = None;
        for _ in 0..100 {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let listener = listener.expect("rebind the fake's address");
        self.tasks = Self::serve(self.shared.clone(), listener);
    }

    /// [`restart_after`](Self::restart_after) with 300 ms down.
    pub async fn restart(&mut self) {
        self.restart_after(Duration::from_millis(300)).await;
    }

    fn serve(
        shared: Arc<Shared>,
        listener: tokio::net::TcpListener,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let app = Router::new()
            .route("/v1/session/create", put(session_create))
            .route("/v1/session/renew/{id}", put(session_renew))
            .route("/v1/session/destroy/{id}", put(session_destroy))
            .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let reaper_shared = shared.clone();
        let reaper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                reaper_shared.reap();
            }
        });
        vec![server, reaper]
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Test knob: while `blocked`, renewals of sessions named `name` fail
    /// with 500 (as if the node could not reach the server).
    pub fn block_renewals(&self, name: &str, blocked: bool) {
        let mut store = self.shared.store.lock().unwrap();
        if blocked {
            store.blocked.insert(name.to_string());
        } else {
            store.blocked.remove(name);
        }
    }

    /// Test knob: every stored key with its holding session, if any.
    pub fn keys(&self) -> Vec<(String, Option<String>)> {
        let store = self.shared.store.lock().unwrap();
        store.kv.iter().map(|(k, e)| (k.clone(), e.session.clone())).collect()
    }

    /// Test knob: the number of live sessions.
    pub fn session_count(&self) -> usize {
        self.shared.reap();
        self.shared.store.lock().unwrap().sessions.len()
    }
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Shared {
    /// Invalidates every session past its expiry.
    fn reap(&self) {
        let mut store = self.store.lock().unwrap();
        let now = Instant::now();
        let expired: Vec<String> = store
            .sessions
            .iter()
            .filter(|(_, s)| s.expires.is_some_and(|e| e <= now))
            .map(|(id, _)| id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in expired {
            invalidate(&mut store, &id, now);
        }
        self.changed.send_replace(store.index);
    }

    fn bump(&self, store: &mut Store) -> u64 {
        store.index += 1;
        self.changed.send_replace(store.index);
        store.index
    }
}

/// Invalidates session `id`: its keys are released or deleted, each gets the
/// session's lock-delay.
fn invalidate(store: &mut Store, id: &str, now: Instant) {
    let Some(session) = store.sessions.remove(id) else { return };
    store.index += 1;
    let held: Vec<String> = store
        .kv
        .iter()
        .filter(|(_, e)| e.session.as_deref() == Some(id))
        .map(|(k, _)| k.clone())
        .collect();
    let index = store.index;
    for key in held {
        if session.delete {
            store.kv.remove(&key);
        } else if let Some(e) = store.kv.get_mut(&key) {
            e.session = None;
            e.modify_index = index;
        }
        if !session.lock_delay.is_zero() {
            store.lock_delay.insert(key, now + session.lock_delay);
        }
    }
}

/// Parses a Go duration (`"10s"`, `"250ms"`, `"1m30s"`, `"0"`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::from_secs_f64(number * unit);
    }
    Some(total)
}

type St = State<Arc<Shared>>;

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

fn check_token(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let Some(want) = &shared.opts.token else { return None };
    let got = headers.get("X-Consul-Token").and_then(|v| v.to_str().ok());
    (got != Some(want.as_str())).then(|| text(StatusCode::FORBIDDEN, "Permission denied"))
}

fn with_index(index: u64, status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert("X-Consul-Index", HeaderValue::from(index.max(1)));
    response.headers_mut().insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    if status == StatusCode::OK {
        response.headers_mut().insert("Content-Type", HeaderValue::from_static("application/json"));
    }
    response
}

fn session_json(id: &str, s: &Session) -> serde_json::Value {
    serde_json::json!({
        "ID": id,
        "Name": s.name,
        "TTL": s.ttl.map(|t| format!("{}ms", t.as_millis())).unwrap_or_default(),
        "Behavior": if s.delete { "delete" } else { "release" },
        "LockDelay": u64::try_from(s.lock_delay.as_nanos()).unwrap_or(u64::MAX),
        "CreateIndex": s.create_index,
        "ModifyIndex": s.create_index,
    })
}

async fn session_create(State(shared): St, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = check_token(&shared, &headers) {
        return r;
    }
    let req: serde_json::Value = if body.is_empty() {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("Request decode failed: {e}")),
        }
    };
    let ttl = match req.get("TTL").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => match parse_go_duration(s) {
            Some(t) if t >= shared.opts.min_session_ttl && t <= Duration::from_secs(86_400) => {
                Some(t)
            }
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "Invalid Session TTL '{s}', must be between [{:?}=24h0m0s]",
                        shared.opts.min_session_ttl
                    ),
                )
            }
        },
    };
    // LockDelay: a duration string, or a number (seconds if under 1000,
    // else nanoseconds), as Consul's FixupLockDelay reads it.
    let lock_delay = match req.get("LockDelay") {
        None | Some(serde_json::Value::Null) => Duration::from_secs(15),
        Some(serde_json::Value::String(s)) => match parse_go_duration(s) {
            Some(d) => d,
            None => return text(StatusCode::BAD_REQUEST, format!("invalid LockDelay {s:?}")),
        },
        Some(serde_json::Value::Number(n)) => {
            let n = n.as_u64().unwrap_or(0);
            if n < 1000 {
                Duration::from_secs(n)
            } else {
                Duration::from_nanos(n)
            }
        }
        Some(other) => return text(StatusCode::BAD_REQUEST, format!("invalid LockDelay {other}")),
    };
    if lock_delay > Duration::from_secs(60) {
        return text(StatusCode::BAD_REQUEST, "Lock delay must be between 0 and 60s");
    }
    let delete = match req.get("Behavior").and_then(|v| v.as_str()).unwrap_or("release") {
        "release" | "" => false,
        "delete" => true,
        other => {
            return text(StatusCode::BAD_REQUEST, format!("Invalid Behavior setting '{other}'"))
        }
    };
    let name = req.get("Name").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let mut store = shared.store.lock().unwrap();
    store.next_id += 1;
    let id = format!("00000000-0000-4000-8000-{:012x}", store.next_id);
    let index = shared.bump(&mut store);
    let expires = ttl.map(|t| Instant::now() + t * shared.opts.ttl_multiplier);
    store.sessions.insert(
        id.clone(),
        Session { name, ttl, lock_delay, delete, expires, create_index: index },
    );
    with_index(index, StatusCode::OK, serde_json::json!({ "ID": id }).to_string())
}

async fn session_renew(State(shared): St, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = check_token(&shared, &headers) {
        return r;
    }
    shared.reap();
    let mut store = shared.store.lock().unwrap();
    let index = store.index;
    let blocked = store.sessions.get(&id).is_some_and(|s| store.blocked.contains(&s.name));
    if blocked {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "rpc error: unreachable (fake knob)");
    }
    let multiplier = shared.opts.ttl_multiplier;
    match store.sessions.get_mut(&id) {
        None => text(StatusCode::NOT_FOUND, format!("Session id '{id}' not found")),
        Some(s) => {
            s.expires = s.ttl.map(|t| Instant::now() + t * multiplier);
            let body = serde_json::json!([session_json(&id, s)]).to_string();
            with_index(index, StatusCode::OK, body)
        }
    }
}

async fn session_destroy(
    State(shared): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = check_token(&shared, &headers) {
        return r;
    }
    let mut store = shared.store.lock().unwrap();
    invalidate(&mut store, &id, Instant::now());
    let index = shared.bump(&mut store);
    with_index(index, StatusCode::OK, "true".into())
}

fn entry_json(key: &str, e: &Entry) -> serde_json::Value {
    let mut v = serde_json::json!({
        "Key": key,
        "Value": e.value.as_ref().map(|v| b64(v)),
        "Flags": e.flags,
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
        "LockIndex": e.lock_index,
    });
    if let Some(s) = &e.session {
        v["Session"] = serde_json::Value::String(s.clone());
    }
    v
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn kv_get(
    State(shared): St,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = check_token(&shared, &headers) {
        return r;
    }
    let min_index: u64 = q.get("index").and_then(|v| v.parse().ok()).unwrap_or(0);
    let wait = q
        .get("wait")
        .and_then(|w| parse_go_duration(w))
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(600));
    let deadline = Instant::now() + wait;
    let mut changed = shared.changed.subscribe();
    loop {
        shared.reap();
        {
            let store = shared.store.lock().unwrap();
            if min_index == 0 || store.index > min_index || Instant::now() >= deadline {
                let entries: Vec<serde_json::Value> = if q.contains_key("recurse") {
                    store
                        .kv
                        .range(key.clone()..)
                        .take_while(|(k, _)| k.starts_with(&key))
                        .map(|(k, e)| entry_json(k, e))
                        .collect()
                } else {
                    store.kv.get(&key).map(|e| entry_json(&key, e)).into_iter().collect()
                };
                if entries.is_empty() {
                    return with_index(store.index, StatusCode::NOT_FOUND, String::new());
                }
                let body = serde_json::Value::Array(entries).to_string();
                return with_index(store.index, StatusCode::OK, body);
            }
        }
        // Wake on a write, on the wait running out, or to reap expiries.
        let _ = tokio::time::timeout_at(
            deadline.min(Instant::now() + Duration::from_millis(20)),
            changed.changed(),
        )
        .await;
    }
}

async fn kv_put(
    State(shared): St,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = check_token(&shared, &headers) {
        return r;
    }
    shared.reap();
    let mut store = shared.store.lock().unwrap();
    let flags: u64 = q.get("flags").and_then(|v| v.parse().ok()).unwrap_or(0);
    let now = Instant::now();
    let value = Some(body.to_vec());
    let ok = if let Some(session) = q.get("acquire") {
        if !store.sessions.contains_key(session) {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("invalid session {session:?}"));
        }
        let delayed = store.lock_delay.get(&key).is_some_and(|&until| until > now);
        let holder = store.kv.get(&key).and_then(|e| e.session.clone());
        if holder.as_deref().is_some_and(|h| h != session) || (holder.is_none() && delayed) {
            false
        } else {
            let index = shared.bump(&mut store);
            let entry = store.kv.entry(key.clone()).or_insert(Entry {
                value: None,
                flags: 0,
                session: None,
                create_index: index,
                modify_index: index,
                lock_index: 0,
            });
            if entry.session.is_none() {
                entry.lock_index += 1;
                entry.session = Some(session.clone());
            }
            entry.value = value;
            entry.flags = flags;
            entry.modify_index = index;
            true
        }
    } else if let Some(session) = q.get("release") {
        let holds = store.kv.get(&key).is_some_and(|e| e.session.as_deref() == Some(session));
        if holds {
            let index = shared.bump(&mut store);
            let entry = store.kv.get_mut(&key).unwrap();
            entry.session = None;
            entry.value = value;
            entry.flags = flags;
            entry.modify_index = index;
        }
        holds
    } else {
        let cas_ok = match q.get("cas").map(|c| c.parse::<u64>()) {
            None => true,
            Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid cas index"),
            Some(Ok(0)) => !store.kv.contains_key(&key),
            Some(Ok(n)) => store.kv.get(&key).is_some_and(|e| e.modify_index == n),
        };
        if cas_ok {
            let index = shared.bump(&mut store);
            let entry = store.kv.entry(key.clone()).or_insert(Entry {
                value: None,
                flags: 0,
                session: None,
                create_index: index,
                modify_index: index,
                lock_index: 0,
            });
            entry.value = value;
            entry.flags = flags;
            entry.modify_index = index;
        }
        cas_ok
    };
    let index = store.index;
    with_index(index, StatusCode::OK, ok.to_string())
}

async fn kv_delete(
    State(shared): St,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(r) = check_token(&shared, &headers) {
        return r;
    }
    let mut store = shared.store.lock().unwrap();
    let ok = if q.contains_key("recurse") {
        let keys: Vec<String> = store
            .kv
            .range(key.clone()..)
            .take_while(|(k, _)| k.starts_with(&key))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            store.kv.remove(&k);
        }
        true
    } else {
        match q.get("cas").map(|c| c.parse::<u64>()) {
            Some(Ok(n)) if store.kv.get(&key).is_none_or(|e| e.modify_index != n) => false,
            _ => {
                store.kv.remove(&key);
                true
            }
        }
    };
    if ok {
        shared.bump(&mut store);
    }
    let index = store.index;
    with_index(index, StatusCode::OK, ok.to_string())
}
