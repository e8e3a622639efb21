//! Statement timeouts and an unreachable server, as the pipeline will meet them.

use std::time::Duration;

use herald::ledger::{Ledger, LedgerError};
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use crate::helpers::{TestDatabase, claim_email, default_config, job_id};

#[tokio::test]
async fn statement_timeout_is_set_per_connection() {
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.statement_timeout_ms = 250;
    let ledger = database.ledger_with(&config).await;

    let setting: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(ledger.pool())
        .await
        .unwrap();
    let slept = sqlx::query("SELECT pg_sleep(2)")
        .execute(ledger.pool())
        .await;

    assert_eq!(setting, "250ms");
    let error = slept.expect_err("pg_sleep beyond the statement timeout");
    let code = error.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("57014"), "{error}");
}

#[tokio::test]
async fn blocked_claim_times_out_as_unavailable() {
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.statement_timeout_ms = 300;
    let ledger = database.ledger_with(&config).await;
    let job = job_id("job-locked");
    claim_email(&ledger, &job).await;
    // A second session holds the row lock, as a stuck transaction would.
    let mut holder = PgConnection::connect(&database.config.url).await.unwrap();
    let mut transaction = holder.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM deliveries WHERE job_id = $1 FOR UPDATE")
        .bind(job.as_str())
        .execute(&mut *transaction)
        .await
        .unwrap();

    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), claim_email_result(&ledger, &job))
        .await
        .expect("the claim returns once the statement timeout fires");

    let error = result.expect_err("a claim blocked beyond the statement timeout");
    assert!(
        matches!(
            error,
            LedgerError::StatementTimeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.is_unavailable());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    transaction.rollback().await.unwrap();
}

async fn claim_email_result(
    ledger: &Ledger,
    job: &herald::job::JobId,
) -> Result<herald::ledger::Claim, LedgerError> {
    let address = crate::helpers::email("alice@example.com");
    ledger
        .claim(job, "sendgrid", herald::ledger::Recipient::Email(&address))
        .await
}

#[tokio::test]
async fn unreachable_server_fails_within_acquire_timeout() {
    let mut config = default_config();
    // Nothing listens on port 1 of the loopback address, so every connect is refused.
    config.url = "postgres://herald:hunter2@127.0.0.1:1/herald".to_owned();
    config.acquire_timeout_secs = 1;
    config.recipient_hash_key = Some(crate::helpers::HASH_KEY.into());
    let ledger = Ledger::connect(&config).await.expect("connect is lazy");

    let started = Instant::now();
    let result = claim_email_result(&ledger, &job_id("job-unreachable")).await;
    let elapsed = started.elapsed();

    let error = result.expect_err("a claim against an unreachable server");
    assert!(error.is_unavailable(), "{error}");
    let message = error.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[tokio::test]
async fn ping_tells_reachable_from_unreachable() {
    let database = TestDatabase::create().await;
    let reachable = Ledger::connect(&database.config).await.unwrap();
    let mut config = default_config();
    config.url = "postgres://postgres@127.0.0.1:1/herald".to_owned();
    config.acquire_timeout_secs = 1;
    let unreachable = Ledger::connect(&config).await.unwrap();

    reachable.ping().await.expect("ping a running server");
    let error = unreachable.ping().await.expect_err("ping without a server");

    assert!(error.is_unavailable(), "{error}");
}

#[tokio::test]
async fn unreachable_server_fails_migrate_as_unavailable() {
    let mut config = default_config();
    config.url = "postgres://postgres@127.0.0.1:1/herald".to_owned();
    config.acquire_timeout_secs = 1;
    let ledger = Ledger::connect(&config).await.unwrap();

    let error = ledger
        .migrate()
        .await
        .expect_err("migrate without a server");

    assert!(error.is_unavailable(), "{error}");
}

#[tokio::test]
async fn missing_database_is_unavailable() {
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.url = config.url.replace("herald_test_", "herald_missing_");
    let ledger = Ledger::connect(&config).await.unwrap();

    let error = ledger.status(&job_id("job-x")).await.unwrap_err();

    assert!(error.is_unavailable(), "{error}");
    assert!(error.to_string().contains("does not exist"), "{error}");
}

#[tokio::test]
async fn invalid_url_is_rejected_at_connect() {
    let mut config = default_config();
    config.url = "postgres://127.0.0.1:notaport/herald".to_owned();

    let result = Ledger::connect(&config).await;

    assert!(
        matches!(result, Err(LedgerError::InvalidUrl { .. })),
        "{:?}",
        result.err()
    );
}
