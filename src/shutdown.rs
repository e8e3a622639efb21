//! The shutdown signal every long-lived task watches.
//!
//! Shutdown has two stages. `stop` asks every task to finish: the consumer stops taking
//! deliveries and jobs under way continue. `abort` fires when the grace period runs out:
//! unfinished jobs stop without acknowledging their deliveries, so RabbitMQ redelivers them.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// The two shutdown stages, cloned into every task that must react to them.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks every task to finish its work and stop.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Tells unfinished work to give up at once. Implies `stop`.
    pub fn abort(&self) {
        self.stop.cancel();
        self.abort.cancel();
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Completes when shutdown has begun.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// Completes when the grace period has run out.
    pub async fn aborted(&self) {
        self.abort.cancelled().await;
    }

    /// Begins shutdown when `trigger` completes. Returns at once; the watch runs in a task.
    pub fn stop_on(&self, trigger: impl Future<Output = ()> + Send + 'static) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = trigger => shutdown.stop(),
                () = shutdown.stopped() => {}
            }
        });
    }
}

/// Completes on the first SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = match signal(SignalKind::terminate()) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM; only Ctrl-C stops Herald");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "shutdown requested"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(signal = "SIGINT", "shutdown requested");
    }
}
