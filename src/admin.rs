//! The admin HTTP server, on its own port:
//!
//! - `GET /metrics`: every metric in the Prometheus text format.
//! - `GET /health/live`: 200 while the process runs.
//! - `GET /health/ready`: 200 while Herald consumes from the work queue, else 503. The body
//!   also lists each provider's circuit breaker state.

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

/// Returns 200 while consuming, else 503, with one line per provider's breaker state. An
/// open breaker does not make Herald unready: its channel fails over or is deferred, and
/// taking the pod out of service would not bring the provider back.
async fn ready(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    let (status, mut body) = if metrics.is_consuming() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not consuming\n".to_owned(),
        )
    };
    for (provider, state) in metrics.circuit_states() {
        body.push_str(&format!(
            "provider {provider}: circuit {}\n",
            state.as_str()
        ));
    }
    (status, body)
}
