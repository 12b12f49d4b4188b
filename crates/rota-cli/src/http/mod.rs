//! The daemon's HTTP side: JSON API, Prometheus metrics and the dashboard.
//!
//! * [`api`]: the JSON API under `/api`, `/healthz`, and JSON errors for
//!   unknown paths and methods.
//! * [`auth`]: the bearer token that every mutating call needs.
//! * [`metrics`]: `/metrics` in the Prometheus text format, fed by scheduler events.
//! * [`dashboard`]: the one-page dashboard at `/`, embedded in the binary.
//!
//! Every request body is limited to [`BODY_LIMIT`] bytes (413 beyond).

mod api;
mod auth;
mod dashboard;
mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use rota::DefaultScheduler;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

pub use metrics::Metrics;

/// The largest request body accepted, in bytes; larger ones get 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The scheduler the daemon runs.
    pub scheduler: DefaultScheduler,
    /// Bearer token for mutating calls; `None` (or an empty token) refuses them.
    pub token: Option<String>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// This node's ID.
    pub node_id: String,
    /// In cluster mode, the distributed scheduler (for `/api/nodes`).
    pub cluster: Option<rota::DistributedScheduler>,
}

/// The address the server listens on, set by [`serve`] for `/api/nodes`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalAddr(pub SocketAddr);

/// A JSON error: `{"error": "..."}` with a status code.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<rota::Error> for ApiError {
    fn from(e: rota::Error) -> Self {
        use rota::ErrorKind as K;
        let status = match e.kind() {
            K::TaskNotFound => StatusCode::NOT_FOUND,
            K::TaskDisabled | K::TaskHandlerRequired | K::TaskAlreadyExists => StatusCode::CONFLICT,
            K::SchedulerAlreadyRunning
            | K::SchedulerAlreadyStopped
            | K::SchedulerNotRunning
            | K::SchedulerNotPaused => StatusCode::CONFLICT,
            K::InvalidInput
            | K::InvalidSchedule
            | K::InvalidCronExpression
            | K::InvalidTimeFormat
            | K::TaskNameRequired
            | K::TaskIdRequired => StatusCode::BAD_REQUEST,
            K::Backend | K::StoreNotInitialized => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res =
            (self.status, Json(serde_json::json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> Router {
    let mutating = Router::new()
        .route("/api/tasks/{id}/run", post(api::run_task))
        .route("/api/tasks/{id}/enable", post(api::enable_task))
        .route("/api/tasks/{id}/disable", post(api::disable_task))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    Router::new()
        .route("/", get(dashboard::index))
        .route("/favicon.ico", get(dashboard::favicon))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(metrics::scrape))
        .route("/api/tasks", get(api::list_tasks))
        .route("/api/tasks/{id}", get(api::get_task))
        .route("/api/tasks/{id}/executions", get(api::executions))
        .route("/api/status", get(api::status))
        .route("/api/stats", get(api::stats))
        .route("/api/nodes", get(api::nodes))
        .merge(mutating)
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(middleware::from_fn(guard))
        .layer(TraceLayer::new_for_http())
}

/// Refuses bodies declared larger than [`BODY_LIMIT`] with a JSON 413 (bodies
/// without a length are cut by the limit layer as they are read), and adds
/// `nosniff` and `no-store` to every response.
async fn guard(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut res = match declared {
        Some(n) if n > BODY_LIMIT as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is {n} bytes; the limit is {BODY_LIMIT} bytes"),
        )
        .into_response(),
        _ => next.run(req).await,
    };
    let h = res.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    res
}

/// Serves `router(state)` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = match listener.local_addr() {
        Ok(addr) => router(state).layer(Extension(LocalAddr(addr))),
        Err(_) => router(state),
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
