//! The admin HTTP server, on its own port:
//!
//! - `GET /metrics`: every metric in the Prometheus text format.
//! - `GET /health/live`: 200 while the process runs.
//! - `GET /health/ready`: 200 while Herald consumes from the work queue, else 503.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// A bound admin server, not yet serving.
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    /// Binds the admin port. Failing to bind is fatal at start, so it happens before serving.
    pub async fn bind(address: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(address).await?;
        let router = Router::new()
            .route("/metrics", get(render_metrics))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .with_state(metrics);
        Ok(AdminServer { listener, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn render_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready(State(metrics): State<Arc<Metrics>>) -> (StatusCode, &'static str) {
    if metrics.is_consuming() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not consuming\n")
    }
}
