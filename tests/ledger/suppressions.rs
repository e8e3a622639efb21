//! The suppression table: recording invalid recipients, looking them up, listing and
//! lifting them, and the `suppressed` state of a skipped channel.

use herald::job::ChannelKind;
use herald::ledger::{Claim, DeliveryState, InvalidRecipient, Ledger, Outcome, Recipient};

use crate::helpers::{TestDatabase, email, job_id, phone};

const NUMBER: &str = "+15555550123";

fn invalid(recipient: Recipient<'_>) -> InvalidRecipient<'_> {
    InvalidRecipient {
        recipient,
        provider: "twilio",
        provider_code: Some("21211"),
        reason: "The 'To' number is not a valid phone number.",
    }
}

/// Returns (count, last_job_id, recipient) of the one suppression row.
async fn only_row(ledger: &Ledger) -> (i32, String, Option<String>) {
    sqlx::query_as("SELECT count, last_job_id, recipient FROM suppressions")
        .fetch_one(ledger.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn suppress_records_and_finds_recipient() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let number = phone(NUMBER);
    let other = phone("+15555550199");

    assert!(!ledger.is_suppressed(Recipient::Sms(&number)).await.unwrap());
    let changed = ledger
        .suppress(&job_id("job-1"), &invalid(Recipient::Sms(&number)))
        .await
        .unwrap();

    assert!(changed);
    assert!(ledger.is_suppressed(Recipient::Sms(&number)).await.unwrap());
    assert!(!ledger.is_suppressed(Recipient::Sms(&other)).await.unwrap());
    let (count, last_job, recipient) = only_row(&ledger).await;
    assert_eq!(count, 1);
    assert_eq!(last_job, "job-1");
    assert_eq!(recipient, None, "plain recipients are off by default");
}

#[tokio::test]
async fn suppress_is_idempotent_per_job() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let number = phone(NUMBER);
    let entry = invalid(Recipient::Sms(&number));

    assert!(ledger.suppress(&job_id("job-1"), &entry).await.unwrap());
    let repeated = ledger.suppress(&job_id("job-1"), &entry).await.unwrap();
    assert!(!repeated, "a redelivery of the same job changes nothing");
    assert_eq!(only_row(&ledger).await.0, 1);

    assert!(ledger.suppress(&job_id("job-2"), &entry).await.unwrap());
    let (count, last_job, _) = only_row(&ledger).await;
    assert_eq!(count, 2);
    assert_eq!(last_job, "job-2");
}

#[tokio::test]
async fn suppression_is_per_channel() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let address = email("alice@example.com");
    let mut entry = invalid(Recipient::Email(&address));
    entry.provider = "sendgrid";

    ledger.suppress(&job_id("job-1"), &entry).await.unwrap();

    let rows = ledger
        .suppressions(Some(ChannelKind::Sms), 10)
        .await
        .unwrap();
    assert!(rows.is_empty());
    let rows = ledger
        .suppressions(Some(ChannelKind::Email), 10)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].provider, "sendgrid");
}

#[tokio::test]
async fn list_masks_stored_recipient() {
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.store_recipients = true;
    let ledger = database.ledger_with(&config).await;
    let number = phone(NUMBER);

    ledger
        .suppress(&job_id("job-1"), &invalid(Recipient::Sms(&number)))
        .await
        .unwrap();

    assert_eq!(only_row(&ledger).await.2.as_deref(), Some(NUMBER));
    let rows = ledger.suppressions(None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].recipient, "***23");
    assert_eq!(rows[0].provider_code.as_deref(), Some("21211"));
    let table = herald::ledger::render_suppressions(&rows);
    assert!(table.starts_with("CHANNEL"), "{table}");
    assert!(!table.contains(NUMBER), "{table}");
}

#[tokio::test]
async fn lift_removes_only_that_recipient() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let number = phone(NUMBER);
    let other = phone("+15555550199");
    ledger
        .suppress(&job_id("job-1"), &invalid(Recipient::Sms(&number)))
        .await
        .unwrap();
    ledger
        .suppress(&job_id("job-2"), &invalid(Recipient::Sms(&other)))
        .await
        .unwrap();

    assert!(
        ledger
            .lift_suppression(Recipient::Sms(&number))
            .await
            .unwrap()
    );
    assert!(
        !ledger
            .lift_suppression(Recipient::Sms(&number))
            .await
            .unwrap()
    );

    assert!(!ledger.is_suppressed(Recipient::Sms(&number)).await.unwrap());
    assert!(ledger.is_suppressed(Recipient::Sms(&other)).await.unwrap());
}

#[tokio::test]
async fn suppressed_channel_is_final() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let number = phone(NUMBER);
    let job = job_id("job-suppressed");

    let Claim::Acquired { token, .. } = ledger
        .claim(&job, "twilio", Recipient::Sms(&number))
        .await
        .unwrap()
    else {
        panic!("the first claim acquires");
    };
    let finished = ledger
        .finish(&job, ChannelKind::Sms, token, &Outcome::Suppressed)
        .await
        .unwrap();
    assert!(finished);

    let again = ledger
        .claim(&job, "twilio", Recipient::Sms(&number))
        .await
        .unwrap();
    assert_eq!(
        again,
        Claim::Final {
            state: DeliveryState::Suppressed
        }
    );
    let rows = ledger.status(&job).await.unwrap();
    assert_eq!(rows[0].state, DeliveryState::Suppressed);
    assert!(herald::ledger::render_table(&rows).contains("suppressed"));
}
