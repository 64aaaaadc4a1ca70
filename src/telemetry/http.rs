//! `/metrics` (Prometheus text), `/health` (liveness: the process and its processing thread are
//! up) and `/ready` (partitions assigned and the consumer caught up), served by axum.

use super::Metrics;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(metrics)
}

async fn metrics_handler(
    State(m): State<Arc<Metrics>>,
) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "text/plain; version=0.0.4")], m.render())
}

async fn health(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.alive.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "processing stopped\n")
    }
}

async fn ready(State(m): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router(metrics))
            .with_graceful_shutdown(shutdown)
            .await;
    });
    Ok(addr)
}
