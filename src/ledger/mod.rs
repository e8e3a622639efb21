//! The delivery ledger: one PostgreSQL row per (job, channel) that records whether the
//! channel was sent, so a job that RabbitMQ delivers again never sends a channel twice.
//!
//! A worker [claims](Ledger::claim) a channel before sending it, [records](Ledger::record_attempt)
//! each provider call, and [finishes](Ledger::finish) the claim with the outcome before it
//! acknowledges the delivery. `docs/ledger.md` describes the tables, the states and this
//! contract in full.

mod claim;
mod error;
mod recipient;
mod record;
mod status;
mod suppression;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use claim::Claim;
pub use error::LedgerError;
pub use recipient::Recipient;
pub use record::{AttemptRecord, LastError, Outcome};
pub use status::{DeliveryRow, render_table};
pub use suppression::{InvalidRecipient, SuppressionRow, render_suppressions};

use crate::config::LedgerConfig;
use error::ErrorContext;
use recipient::RecipientHasher;

/// The migrations in `migrations/`, compiled into the binary.
static MIGRATOR: Migrator = sqlx::migrate!();

/// A ledger handle. Clones share one connection pool.
#[derive(Clone)]
pub struct Ledger {
    pool: PgPool,
    errors: ErrorContext,
    hasher: Option<RecipientHasher>,
    store_recipients: bool,
    sending_reclaim: Duration,
    instance_id: Arc<str>,
}

/// A migration that [`Ledger::migrate`] applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

/// The delivery state of a (job, channel), stored as its lowercase name in
/// `deliveries.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Known but not yet claimed. The ledger API does not write it, but a claim accepts it.
    Pending,
    /// Claimed by a worker that may be calling the provider now.
    Sending,
    Delivered,
    /// The last attempt failed in a way a later delivery may fix.
    Retrying,
    /// Attempts ended in failure. Final when the last error's class is `permanent`.
    Failed,
    DeadLettered,
    /// The job expired before the channel was sent.
    Expired,
    /// The recipient is in the suppression table, so the channel was not sent.
    Suppressed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 8] = [
        DeliveryState::Pending,
        DeliveryState::Sending,
        DeliveryState::Delivered,
        DeliveryState::Retrying,
        DeliveryState::Failed,
        DeliveryState::DeadLettered,
        DeliveryState::Expired,
        DeliveryState::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Failed => "failed",
            DeliveryState::DeadLettered => "dead_lettered",
            DeliveryState::Expired => "expired",
            DeliveryState::Suppressed => "suppressed",
        }
    }

    pub fn from_name(name: &str) -> Option<DeliveryState> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Ledger {
    /// Builds the connection pool without contacting PostgreSQL, so Herald can start while
    /// the database is down. The first call that needs a connection fails with
    /// [`LedgerError::ConnectTimeout`], naming the URL with its password masked, if no
    /// connection opens within `acquire_timeout_secs`.
    ///
    /// The recipient hash key is loaded when one is configured. Without it the ledger still
    /// serves [`Ledger::migrate`] and [`Ledger::status`], but [`Ledger::claim`] fails.
    pub async fn connect(config: &LedgerConfig) -> Result<Ledger, LedgerError> {
        let url = config.masked_url();
        let options =
            PgConnectOptions::from_str(&config.url).map_err(|source| LedgerError::InvalidUrl {
                url: url.clone(),
                source,
            })?;
        let hasher = match config.has_recipient_hash_key() {
            true => Some(RecipientHasher::new(config.recipient_hash_key()?)),
            false => None,
        };

        let statement_timeout_ms = config.statement_timeout_ms;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout())
            .after_connect(move |connection, _metadata| {
                // Notices (such as "already exists, skipping" from migrations) would be
                // logged at info level by sqlx, and nothing in the ledger acts on them.
                let sql = format!(
                    "SET statement_timeout = {statement_timeout_ms}; SET client_min_messages = warning"
                );
                Box::pin(async move {
                    sqlx::raw_sql(AssertSqlSafe(sql)).execute(connection).await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options);

        Ok(Ledger {
            pool,
            errors: ErrorContext {
                url: url.into(),
                acquire_timeout_secs: config.acquire_timeout_secs,
                statement_timeout_ms,
            },
            hasher,
            store_recipients: config.store_recipients,
            sending_reclaim: config.sending_reclaim(),
            instance_id: instance_id().into(),
        })
    }

    /// Applies the migrations that the database lacks and returns them in order. An empty
    /// list means the schema was already current. Safe to run from several processes at
    /// once: a PostgreSQL advisory lock lets one apply while the others wait.
    pub async fn migrate(&self) -> Result<Vec<AppliedMigration>, LedgerError> {
        let mut connection = self.pool.acquire().await.map_err(|e| self.error(e))?;
        let migrate_error = |e| LedgerError::from_migrate(e, &self.errors);

        // The lock is taken here as well as inside `run` (advisory locks nest within a
        // session), so the list of applied versions cannot change before `run` starts.
        connection.lock().await.map_err(migrate_error)?;
        let outcome = self.run_migrations(&mut connection).await;
        let unlocked = connection.unlock().await.map_err(migrate_error);
        let applied = outcome?;
        unlocked?;
        Ok(applied)
    }

    async fn run_migrations(
        &self,
        connection: &mut sqlx::PgConnection,
    ) -> Result<Vec<AppliedMigration>, LedgerError> {
        let migrate_error = |e| LedgerError::from_migrate(e, &self.errors);
        let table = MIGRATOR.table_name.as_ref();
        connection
            .ensure_migrations_table(table)
            .await
            .map_err(migrate_error)?;
        let before: Vec<i64> = connection
            .list_applied_migrations(table)
            .await
            .map_err(migrate_error)?
            .into_iter()
            .map(|migration| migration.version)
            .collect();

        // `run_direct` takes the connection itself. `run` goes through sqlx's `Acquire`,
        // whose future is not `Send` for every lifetime, so the daemon could not await it in
        // a spawned task (sqlx-core 0.9.1 keeps `run_direct` public for this reason).
        MIGRATOR
            .run_direct(None, &mut *connection, false)
            .await
            .map_err(migrate_error)?;

        Ok(MIGRATOR
            .iter()
            .filter(|migration| !before.contains(&migration.version))
            .map(|migration| AppliedMigration {
                version: migration.version,
                description: migration.description.to_string(),
            })
            .collect())
    }

    /// Runs `SELECT 1`, for readiness checks and for probing whether an unavailable
    /// PostgreSQL is back.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Returns the underlying pool, for administration and tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Returns the id written to `deliveries.claimed_by`: `HOSTNAME/PID`.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Closes every connection. Calls made afterwards fail as unavailable.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn error(&self, source: sqlx::Error) -> LedgerError {
        LedgerError::from_sqlx(source, &self.errors)
    }

    /// Returns the keyed hash of `recipient`, or an error when no hash key is configured.
    fn recipient_hash(&self, recipient: Recipient<'_>) -> Result<String, LedgerError> {
        self.hash_exposed(&recipient.expose())
    }

    /// Returns the keyed hash of a recipient's exposed form.
    fn hash_exposed(&self, exposed: &str) -> Result<String, LedgerError> {
        let hasher = self.hasher.as_ref().ok_or_else(|| {
            crate::config::ConfigError::invalid(
                "ledger.recipient_hash_key",
                "is missing; claims and suppressions need it to hash recipients",
            )
        })?;
        Ok(hasher.hash(exposed))
    }
}

/// Returns `HOSTNAME/PID`. In Kubernetes `HOSTNAME` is the pod name, which makes a stuck
/// claim traceable to its pod.
/// Returns `HOSTNAME/PID`, which names this process in the ledger and in its broker
/// connections.
pub fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    format!("{host}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in DeliveryState::ALL {
            assert_eq!(DeliveryState::from_name(state.as_str()), Some(state));
        }
        assert_eq!(DeliveryState::from_name("sent"), None);
    }

    #[test]
    fn migrations_are_embedded_in_order() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3]);
    }
}
