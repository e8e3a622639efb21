//! The daemon's lifecycle: build the components, serve the admin port, consume through
//! broker sessions that reconnect when lost, and drain on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::admin::AdminServer;
use crate::broker::{self, Publisher};
use crate::config::{ConfigError, Settings};
use crate::handler::JobHandler;
use crate::metrics::Metrics;
use crate::pool::{ConsumeEnd, WorkerPool};
use crate::providers::http::build_client;
use crate::redelivery::RedeliveryPolicy;
use crate::retry::RetryPolicy;
use crate::routes::Routes;
use crate::shutdown::Shutdown;

/// A failure that stops Herald at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("failed to build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),

    #[error("failed to bind the admin server to {address}: {source}")]
    AdminBind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// A started daemon.
pub struct Herald {
    admin_addr: SocketAddr,
    metrics: Arc<Metrics>,
    task: JoinHandle<()>,
}

impl Herald {
    /// Builds every component and starts consuming in the background. Returns once the
    /// admin port is bound; connecting to RabbitMQ goes on in the background, with retries.
    pub async fn start(settings: Settings, shutdown: Shutdown) -> Result<Herald, StartError> {
        let metrics = Arc::new(Metrics::new());
        let client = build_client(&settings.http)?;
        let routes = Arc::new(Routes::build(&settings, &client, &metrics)?);

        let address = settings.admin.listen;
        let admin = AdminServer::bind(address, metrics.clone())
            .await
            .map_err(|source| StartError::AdminBind { address, source })?;
        let admin_addr = admin.local_addr().unwrap_or(address);
        info!(admin = %admin_addr, "admin server listening");

        let daemon = Daemon {
            pool: WorkerPool::new(settings.pool.workers),
            settings,
            routes,
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(daemon.run(admin, shutdown));
        Ok(Herald {
            admin_addr,
            metrics,
            task,
        })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Waits until shutdown has finished: jobs drained, connections closed.
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            error!(error.message = %error, "the daemon task failed");
        }
    }
}

struct Daemon {
    settings: Settings,
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    pool: WorkerPool,
}

impl Daemon {
    async fn run(self, admin: AdminServer, shutdown: Shutdown) {
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(admin.serve(admin_stop.clone().cancelled_owned()));
        info!(workers = self.settings.pool.workers, "herald started");

        let mut backoff = Duration::from_secs(1);
        while !shutdown.is_stopping() {
            match self.session(&shutdown).await {
                Ok(()) => break,
                Err(SessionLost { reason, consumed }) => {
                    if consumed {
                        backoff = Duration::from_secs(1);
                    }
                    self.metrics.set_consuming(false);
                    self.metrics.set_broker_connected(false);
                    error!(error.message = %reason, retry_in_secs = backoff.as_secs(), "broker session ended; reconnecting");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.stopped() => {}
            }
            backoff = (backoff * 2).min(self.settings.broker.reconnect_max_backoff());
        }

        // Jobs from a lost session may still run; give them the same grace period.
        self.pool
            .drain(self.settings.shutdown.grace_period(), &shutdown)
            .await;
        admin_stop.cancel();
        if let Ok(Err(error)) = admin_task.await {
            warn!(error.message = %error, "admin server stopped with an error");
        }
        info!("herald stopped");
    }

    /// Connects, consumes until shutdown or loss, and on shutdown drains before closing the
    /// channel the deliveries must be acknowledged on.
    async fn session(&self, shutdown: &Shutdown) -> Result<(), SessionLost> {
        let config = &self.settings.broker;
        let lost = |what: &str, error: lapin::Error| SessionLost {
            reason: format!("{what}: {error}"),
            consumed: false,
        };
        let consume_connection = broker::connect(config, "consume")
            .await
            .map_err(|error| lost("failed to connect", error))?;
        let publish_connection = broker::connect(config, "publish")
            .await
            .map_err(|error| lost("failed to connect", error))?;
        self.metrics.set_broker_connected(true);

        let publisher = Publisher::open(&publish_connection)
            .await
            .map_err(|error| lost("failed to open the publishing channel", error))?;
        let delay_tiers = self.settings.retry.delay_tiers();
        let mut consumer = broker::open_consumer(&consume_connection, config, &delay_tiers)
            .await
            .map_err(|error| lost("failed to start consuming", error))?;
        self.metrics.set_consuming(true);

        let handler = Arc::new(JobHandler {
            routes: self.routes.clone(),
            policy: RetryPolicy::new(&self.settings.retry, &self.settings.limits),
            redelivery: RedeliveryPolicy::new(&self.settings.retry),
            metrics: self.metrics.clone(),
            publisher,
            broker: config.clone(),
        });
        let end = self
            .pool
            .consume(&mut consumer.consumer, &handler, shutdown)
            .await;
        self.metrics.set_consuming(false);

        match end {
            ConsumeEnd::Stopped => {
                info!("shutdown: consumer stopping");
                if let Err(error) = consumer.cancel().await {
                    warn!(error.message = %error, "failed to cancel the consumer");
                }
                self.pool
                    .drain(self.settings.shutdown.grace_period(), shutdown)
                    .await;
                close(&consume_connection, &publish_connection).await;
                self.metrics.set_broker_connected(false);
                Ok(())
            }
            ConsumeEnd::Lost(reason) => {
                close(&consume_connection, &publish_connection).await;
                Err(SessionLost {
                    reason,
                    consumed: true,
                })
            }
        }
    }
}

/// The reason a broker session ended other than by shutdown.
struct SessionLost {
    reason: String,
    /// Whether the session got as far as consuming, which resets the reconnection backoff.
    consumed: bool,
}

async fn close(consume: &lapin::Connection, publish: &lapin::Connection) {
    for connection in [consume, publish] {
        if !connection.status().connected() {
            continue;
        }
        if let Err(error) = connection.close(200, "herald shutting down".into()).await {
            warn!(error.message = %error, "failed to close a broker connection");
        }
    }
}
