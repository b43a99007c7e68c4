//! The HTTP API (axum): `GET /health`, `GET /devices`, `GET /metrics`.
//!
//! - `/health`: `{"status":"ok", ...}` with 200, or `{"status":"draining", ...}` with 503 while
//!   the gateway drains, so a balancer stops sending devices to it.
//! - `/devices`: a JSON array of [`DeviceInfo`](crate::DeviceInfo), oldest connection first.
//! - `/metrics`: Prometheus text, exposition format 0.0.4 (see [`crate::metrics`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::gateway::Shared;

/// The body of `GET /health`.
#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
    open_connections: u64,
    devices: usize,
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/devices", get(devices))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: oneshot::Receiver<()>) {
    let result = axum::serve(listener, router(shared))
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await;
    if let Err(e) = result {
        tracing::warn!("HTTP API stopped: {e}");
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let draining = shared.is_draining();
    let body = Health {
        status: if draining { "draining" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: shared.started.elapsed().as_secs(),
        open_connections: shared.metrics.open_connections(),
        devices: shared.registry.len(),
    };
    let code = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body))
}

async fn devices(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(shared.registry.list())
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
}
