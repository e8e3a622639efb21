//! The daemon's lifecycle: build the components, serve the admin port, consume through
//! broker sessions that reconnect when lost, and drain on shutdown.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::admin::AdminServer;
use crate::broker::{self, JobConsumer, Liveness, Publisher};
use crate::config::{ConfigError, ProviderConfig, Settings};
use crate::events::EventPublisher;
use crate::handler::{JobHandler, LedgerGate};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::pool::{ConsumeEnd, WorkerPool};
use crate::providers::Provider;
use crate::providers::http::build_client;
use crate::redelivery::RedeliveryPolicy;
use crate::reload::CredentialReloader;
use crate::retry::RetryPolicy;
use crate::routes::Routes;
use crate::shutdown::Shutdown;
use crate::suppression::SuppressionPolicy;

/// A failure that stops Herald at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error("failed to set up the ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),

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
        Herald::start_with_adapters(settings, HashMap::new(), shutdown).await
    }

    /// Starts like [`Herald::start`], but sends through `adapters` instead of building the
    /// providers of those names from their configuration. Their sections must still be
    /// configured, for the limits and the channel they serve. For embedding and tests.
    pub async fn start_with_adapters(
        settings: Settings,
        adapters: HashMap<String, Arc<dyn Provider>>,
        shutdown: Shutdown,
    ) -> Result<Herald, StartError> {
        let metrics = Arc::new(Metrics::new());
        let client = build_client(&settings.http)?;
        let routes = Arc::new(Routes::build_with_adapters(
            &settings, &client, &metrics, &adapters,
        )?);
        // Adapters supplied by the embedder have no configured secrets to reload.
        let reloadable: BTreeMap<String, ProviderConfig> = settings
            .providers
            .iter()
            .filter(|(name, _)| !adapters.contains_key(*name))
            .map(|(name, config)| (name.clone(), config.clone()))
            .collect();
        let reloader = CredentialReloader::new(
            &reloadable,
            client.clone(),
            settings.http.clone(),
            routes.clone(),
            metrics.clone(),
        );
        settings.ledger.recipient_hash_key()?;
        let ledger = Ledger::connect(&settings.ledger).await?;

        let address = settings.admin.listen;
        let admin = AdminServer::bind(address, metrics.clone())
            .await
            .map_err(|source| StartError::AdminBind { address, source })?;
        let admin_addr = admin.local_addr().unwrap_or(address);
        info!(admin = %admin_addr, "admin server listening");

        let daemon = Daemon {
            pool: WorkerPool::new(settings.pool.workers),
            ledger,
            ledger_gate: Arc::new(LedgerGate::default()),
            migrated: std::sync::atomic::AtomicBool::new(false),
            settings,
            routes,
            metrics: metrics.clone(),
        };
        tokio::spawn(reloader.run(
            shutdown.clone(),
            daemon.settings.reload.secret_poll_interval(),
        ));
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
    ledger: Ledger,
    ledger_gate: Arc<LedgerGate>,
    /// Whether this process has applied the ledger's migrations.
    migrated: std::sync::atomic::AtomicBool,
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
        let Some(consume_connection) = connect_unless_stopped(config, "consume", shutdown).await?
        else {
            return Ok(());
        };
        let Some(publish_connection) = connect_unless_stopped(config, "publish", shutdown).await?
        else {
            return Ok(());
        };
        self.metrics.set_broker_connected(true);

        let publisher = Publisher::open(&publish_connection)
            .await
            .map_err(|error| lost("failed to open the publishing channel", error))?;
        broker::check_events_exchange(&publish_connection, config)
            .await
            .map_err(|error| {
                lost(
                    "the events exchange is missing; create it as a durable topic exchange, or set broker.events_exchange to \"\" to turn events off",
                    error,
                )
            })?;
        let handler = Arc::new(JobHandler {
            routes: self.routes.clone(),
            ledger: self.ledger.clone(),
            ledger_gate: self.ledger_gate.clone(),
            policy: RetryPolicy::new(&self.settings.retry, &self.settings.limits),
            redelivery: RedeliveryPolicy::new(&self.settings.retry),
            metrics: self.metrics.clone(),
            events: EventPublisher::new(
                publisher.clone(),
                config,
                &self.settings.events,
                self.metrics.clone(),
            ),
            publisher,
            broker: config.clone(),
            suppression: SuppressionPolicy::new(&self.settings.suppression),
        });
        let liveness = Liveness::new(&consume_connection, handler.publisher.clone());

        // Consumers paused for the ledger stay open while jobs under way may still
        // acknowledge deliveries on their channels.
        let mut paused: Vec<JobConsumer> = Vec::new();
        let mut consumed = false;
        loop {
            match self.wait_for_ledger(shutdown, &liveness).await {
                LedgerWait::Ready => {}
                LedgerWait::Stopped => {
                    return self
                        .stop_session(&consume_connection, &publish_connection, shutdown)
                        .await;
                }
                LedgerWait::Lost(reason) => {
                    close_in_background(consume_connection, publish_connection);
                    return Err(SessionLost {
                        reason: reason.to_owned(),
                        consumed,
                    });
                }
            }
            if self.pool.in_flight() == 0 {
                close_paused(&mut paused).await;
            }
            let delay_tiers = self.settings.retry.delay_tiers();
            let mut consumer = broker::open_consumer(&consume_connection, config, &delay_tiers)
                .await
                .map_err(|error| SessionLost {
                    reason: format!("failed to start consuming: {error}"),
                    consumed,
                })?;
            consumed = true;
            self.metrics.set_consuming(true);
            let end = self
                .pool
                .consume(
                    &mut consumer.consumer,
                    &liveness.consuming_on(&consumer.channel),
                    &handler,
                    shutdown,
                    &self.ledger_gate,
                )
                .await;
            self.metrics.set_consuming(false);

            match end {
                ConsumeEnd::Stopped(waiting) => {
                    info!("shutdown: consumer stopping");
                    if let Err(error) = consumer.cancel().await {
                        warn!(error.message = %error, "failed to cancel the consumer");
                    }
                    // These go back only now that the consumer is cancelled, so RabbitMQ does
                    // not hand them straight back and count each return twice.
                    for delivery in &waiting {
                        crate::pool::requeue(delivery).await;
                    }
                    return self
                        .stop_session(&consume_connection, &publish_connection, shutdown)
                        .await;
                }
                ConsumeEnd::Lost(reason) => {
                    close_in_background(consume_connection, publish_connection);
                    return Err(SessionLost {
                        reason,
                        consumed: true,
                    });
                }
                ConsumeEnd::LedgerUnavailable(waiting) => {
                    warn!(
                        "ledger unavailable: consumption paused, prefetched jobs returned to the queue"
                    );
                    consumer.return_prefetched(&waiting).await;
                    paused.push(consumer);
                }
            }
        }
    }

    /// Drains jobs under way, then closes the session's connections.
    async fn stop_session(
        &self,
        consume: &lapin::Connection,
        publish: &lapin::Connection,
        shutdown: &Shutdown,
    ) -> Result<(), SessionLost> {
        self.pool
            .drain(self.settings.shutdown.grace_period(), shutdown)
            .await;
        close(consume, publish, "herald shutting down").await;
        self.metrics.set_broker_connected(false);
        Ok(())
    }

    /// Waits until the ledger responds, applying migrations first when configured, unless
    /// shutdown begins or `liveness` finds the session lost meanwhile.
    async fn wait_for_ledger(&self, shutdown: &Shutdown, liveness: &Liveness) -> LedgerWait {
        let mut reported = false;
        loop {
            let probe = tokio::select! {
                probe = self.ledger_ready() => probe,
                () = shutdown.stopped() => return LedgerWait::Stopped,
            };
            match probe {
                Ok(()) => {
                    if reported {
                        info!("ledger reachable again; resuming consumption");
                    }
                    self.metrics.set_ledger_available(true);
                    self.ledger_gate.open();
                    return LedgerWait::Ready;
                }
                Err(error) if !reported => {
                    self.metrics.set_ledger_available(false);
                    warn!(error.message = %error, "ledger unavailable; waiting for it before consuming");
                    reported = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = tokio::time::sleep(LEDGER_PROBE_INTERVAL) => {}
                () = shutdown.stopped() => return LedgerWait::Stopped,
                reason = liveness.lost() => return LedgerWait::Lost(reason),
            }
        }
    }

    async fn ledger_ready(&self) -> Result<(), crate::ledger::LedgerError> {
        self.ledger.ping().await?;
        if self.settings.ledger.migrate_on_start
            && !self.migrated.load(std::sync::atomic::Ordering::Acquire)
        {
            let applied = self.ledger.migrate().await?;
            info!(applied = applied.len(), "ledger migrations applied");
            self.migrated
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }
}

/// How often a paused consumer checks whether the ledger is back.
const LEDGER_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long closing a broker connection may wait for the broker's confirmation.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The reason a broker session ended other than by shutdown.
struct SessionLost {
    reason: String,
    /// Whether the session got as far as consuming, which resets the reconnection backoff.
    consumed: bool,
}

/// Describes a session that failed before it consumed.
fn lost(what: &str, error: lapin::Error) -> SessionLost {
    SessionLost {
        reason: format!("{what}: {error}"),
        consumed: false,
    }
}

/// The end of a wait for the ledger.
enum LedgerWait {
    Ready,
    Stopped,
    Lost(&'static str),
}

/// Opens a connection named for `purpose`, or returns `None` when shutdown begins first.
async fn connect_unless_stopped(
    config: &crate::config::BrokerConfig,
    purpose: &str,
    shutdown: &Shutdown,
) -> Result<Option<lapin::Connection>, SessionLost> {
    tokio::select! {
        connected = broker::connect(config, purpose) => connected
            .map(Some)
            .map_err(|error| lost("failed to connect", error)),
        () = shutdown.stopped() => Ok(None),
    }
}

/// Closes the connections of a lost session in a task of its own. A connection that went
/// silent never confirms its close, so the next session connects meanwhile, and each close
/// is bounded by `CLOSE_TIMEOUT`.
fn close_in_background(consume: lapin::Connection, publish: lapin::Connection) {
    tokio::spawn(async move {
        close(&consume, &publish, "herald reconnecting").await;
    });
}

/// Closes the channels of consumers paused for the ledger. Called only with no job under
/// way, when no delivery remains to be settled on them.
async fn close_paused(paused: &mut Vec<JobConsumer>) {
    for consumer in paused.drain(..) {
        if let Err(error) = consumer.channel.close(200, "consumer paused".into()).await {
            debug!(error.message = %error, "failed to close a paused consumer's channel");
        }
    }
}

/// Closes both connections at once, each given `CLOSE_TIMEOUT`. A connection that is
/// closed regardless, such as one the broker ended first, is logged at debug level.
async fn close(consume: &lapin::Connection, publish: &lapin::Connection, reason: &str) {
    tokio::join!(
        close_one(consume, "consume", reason),
        close_one(publish, "publish", reason)
    );
}

async fn close_one(connection: &lapin::Connection, purpose: &str, reason: &str) {
    if !connection.status().connected() {
        return;
    }
    let closing = connection.close(200, reason.into());
    match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) if !connection.status().connected() => {
            debug!(connection = purpose, error.message = %error, "broker connection was already closing");
        }
        Ok(Err(error)) => {
            warn!(connection = purpose, error.message = %error, "failed to close a broker connection");
        }
        Err(_) => warn!(
            connection = purpose,
            timeout_secs = CLOSE_TIMEOUT.as_secs(),
            "the broker did not confirm closing a connection; dropping it"
        ),
    }
}
