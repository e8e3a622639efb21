//! A fresh database per test, and the jobs and recipients the tests claim.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use herald::config::{LedgerConfig, Settings};
use herald::job::{EmailAddress, JobId, PhoneNumber};
use herald::ledger::{Ledger, Recipient};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Key the tests hash recipients with.
pub(crate) const HASH_KEY: &str = "test-recipient-hash-key";

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// A database that exists for one test. Dropping it drops the database, even when the test
/// panicked, so failed runs leave nothing behind.
pub(crate) struct TestDatabase {
    name: String,
    admin_url: String,
    /// A ledger configuration that points at this database, with [`HASH_KEY`] set.
    pub(crate) config: LedgerConfig,
}

impl TestDatabase {
    /// Creates an empty database. Panics, saying how to start PostgreSQL, when the server
    /// cannot be reached.
    pub(crate) async fn create() -> TestDatabase {
        let admin_url = admin_url();
        let mut admin = connect_admin(&admin_url).await;
        let name = format!(
            "herald_test_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        let create = format!("CREATE DATABASE {name}");
        sqlx::raw_sql(AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|error| panic!("failed to create database {name}: {error}"));
        admin.close().await.ok();

        let mut config = default_config();
        config.url = database_url(&admin_url, &name);
        config.recipient_hash_key = Some(HASH_KEY.into());
        TestDatabase {
            name,
            admin_url,
            config,
        }
    }

    /// Connects a ledger with `config` and applies the migrations.
    pub(crate) async fn ledger_with(&self, config: &LedgerConfig) -> Ledger {
        let ledger = Ledger::connect(config).await.expect("connect the ledger");
        ledger.migrate().await.expect("apply the migrations");
        ledger
    }

    /// Connects a ledger with this database's configuration and applies the migrations.
    pub(crate) async fn ledger(&self) -> Ledger {
        self.ledger_with(&self.config).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on, so a thread with
        // its own runtime drops the database. FORCE ends the test's open connections.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("build a runtime");
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                sqlx::raw_sql(AssertSqlSafe(drop))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("failed to drop test database {}: {error}", self.name);
        }
    }
}

fn admin_url() -> String {
    std::env::var("HERALD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

async fn connect_admin(url: &str) -> PgConnection {
    let connected = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(url)).await;
    match connected {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => postgres_required(url, &error.to_string()),
        Err(_) => postgres_required(url, "no answer within 5 s"),
    }
}

fn postgres_required(url: &str, reason: &str) -> ! {
    panic!(
        "PostgreSQL is required for the ledger tests but is not reachable at {url}: {reason}. \
         Start it with `bash .ci/services`, or point HERALD_TEST_POSTGRES_URL at a server \
         where this user may create databases."
    )
}

/// Returns `admin_url` with its database name replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    format!("{server}/{name}{query}")
}

/// Returns the built-in `[ledger]` defaults.
pub(crate) fn default_config() -> LedgerConfig {
    Settings::load_with_env(None, Vec::new())
        .expect("the built-in configuration loads")
        .ledger
}

pub(crate) fn job_id(text: &str) -> JobId {
    JobId::parse(text).expect("a valid job id")
}

pub(crate) fn email(text: &str) -> EmailAddress {
    EmailAddress::parse("to", text).expect("a valid email address")
}

pub(crate) fn phone(text: &str) -> PhoneNumber {
    PhoneNumber::parse("to", text).expect("a valid phone number")
}

/// Claims the email channel of `job` for `alice@example.com` through `sendgrid`.
pub(crate) async fn claim_email(ledger: &Ledger, job: &JobId) -> herald::ledger::Claim {
    let address = email("alice@example.com");
    ledger
        .claim(job, "sendgrid", Recipient::Email(&address))
        .await
        .expect("claim the email channel")
}

/// Moves the channel's `sending_since` back by `secs` seconds, as if its claim were older.
pub(crate) async fn age_claim(ledger: &Ledger, job: &JobId, channel: &str, secs: i64) {
    sqlx::query(
        "UPDATE deliveries SET sending_since = sending_since - make_interval(secs => $3)
         WHERE job_id = $1 AND channel = $2",
    )
    .bind(job.as_str())
    .bind(channel)
    .bind(secs as f64)
    .execute(ledger.pool())
    .await
    .expect("age the claim");
}
