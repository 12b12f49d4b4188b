//! The daemon's HTTP side: JSON API, Prometheus metrics and the dashboard.
//!
//! STUB: the interface the daemon builds on; the implementation is being written.

use std::future::Future;
use std::sync::Arc;

use rota::DefaultScheduler;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The scheduler the daemon runs.
    pub scheduler: DefaultScheduler,
    /// Bearer token for mutating calls; `None` refuses them.
    pub token: Option<String>,
    /// Counters and histograms for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// This node's ID.
    pub node_id: String,
}

/// Prometheus metrics fed by scheduler events.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics {})
    }

    /// Feeds these metrics from `scheduler`'s events.
    pub fn attach(self: &Arc<Self>, scheduler: &DefaultScheduler) {
        let _ = scheduler;
    }
}

/// The whole HTTP app.
pub fn router(state: AppState) -> axum::Router {
    let _ = state;
    axum::Router::new()
}

/// Serves `router(state)` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
