//! Migrations and the constraints they create.

use crate::helpers::{TestDatabase, claim_email, job_id};

#[tokio::test]
async fn migrations_apply_twice() {
    let database = TestDatabase::create().await;
    let ledger = herald::ledger::Ledger::connect(&database.config)
        .await
        .unwrap();

    let first = ledger.migrate().await.unwrap();
    let second = ledger.migrate().await.unwrap();

    let versions: Vec<i64> = first.iter().map(|m| m.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(first[0].description, "create deliveries");
    assert!(second.is_empty(), "{second:?}");
    for table in ["deliveries", "delivery_attempts", "suppressions"] {
        let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(table)
            .fetch_one(ledger.pool())
            .await
            .unwrap();
        assert_eq!(exists.as_deref(), Some(table));
    }
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let database = TestDatabase::create().await;
    let first = herald::ledger::Ledger::connect(&database.config)
        .await
        .unwrap();
    let second = first.clone();

    let (a, b) = tokio::join!(first.migrate(), second.migrate());

    let mut applied: Vec<i64> = a
        .unwrap()
        .into_iter()
        .chain(b.unwrap())
        .map(|m| m.version)
        .collect();
    applied.sort_unstable();
    assert_eq!(applied, [1, 2, 3]);
}

#[tokio::test]
async fn unknown_state_is_rejected() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    claim_email(&ledger, &job_id("job-check")).await;

    let result = sqlx::query("UPDATE deliveries SET state = 'sent', sending_since = NULL")
        .execute(ledger.pool())
        .await;

    let error = result.expect_err("the state CHECK constraint");
    let code = error.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("23514"), "{error}");
}

#[tokio::test]
async fn attempts_require_a_delivery_row() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;

    let result = sqlx::query(
        "INSERT INTO delivery_attempts
             (job_id, channel, attempt, provider, outcome, latency_ms)
         VALUES ('job-orphan', 'email', 1, 'sendgrid', 'delivered', 5)",
    )
    .execute(ledger.pool())
    .await;

    let error = result.expect_err("the foreign key");
    let code = error.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("23503"), "{error}");
}
