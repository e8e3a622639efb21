//! What the ledger keeps of a recipient, and what `status` shows of it.

use herald::job::ChannelKind;
use herald::ledger::{Claim, Outcome, Recipient};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::helpers::{HASH_KEY, TestDatabase, claim_email, email, job_id, phone};

async fn stored_recipient(ledger: &herald::ledger::Ledger, job: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT recipient_hash, recipient FROM deliveries WHERE job_id = $1")
        .bind(job)
        .fetch_one(ledger.pool())
        .await
        .unwrap()
}

fn expected_hash(recipient: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(HASH_KEY.as_bytes()).unwrap();
    mac.update(recipient.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn recipients_are_only_hashed_by_default() {
    let database = TestDatabase::create().await;
    assert!(!database.config.store_recipients);
    let ledger = database.ledger().await;

    claim_email(&ledger, &job_id("job-hashed")).await;

    let (hash, recipient) = stored_recipient(&ledger, "job-hashed").await;
    assert_eq!(hash, expected_hash("alice@example.com"));
    assert_eq!(recipient, None);
}

#[tokio::test]
async fn recipients_are_stored_when_configured() {
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.store_recipients = true;
    let ledger = database.ledger_with(&config).await;

    claim_email(&ledger, &job_id("job-stored")).await;

    let (hash, recipient) = stored_recipient(&ledger, "job-stored").await;
    assert_eq!(hash, expected_hash("alice@example.com"));
    assert_eq!(recipient.as_deref(), Some("alice@example.com"));
}

#[tokio::test]
async fn status_lists_rows_with_masked_recipients() {
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.store_recipients = true;
    let stored = database.ledger_with(&config).await;
    let hashed = database.ledger().await;
    let job = job_id("job-status");
    let number = phone("+15555550123");

    let claim = claim_email(&stored, &job).await;
    let Claim::Acquired { token, .. } = claim else {
        panic!("expected Acquired, got {claim:?}");
    };
    let delivered = Outcome::Delivered {
        provider_message_id: Some("msg-9".to_owned()),
    };
    assert!(
        stored
            .finish(&job, ChannelKind::Email, token, &delivered)
            .await
            .unwrap()
    );
    hashed
        .claim(&job, "twilio", Recipient::Sms(&number))
        .await
        .unwrap();

    let rows = hashed.status(&job).await.unwrap();

    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].channel, "email");
    assert_eq!(rows[0].recipient, "a***@example.com");
    assert_eq!(rows[0].provider_message_id.as_deref(), Some("msg-9"));
    assert_eq!(rows[1].channel, "sms");
    assert_eq!(rows[1].provider, "twilio");
    let hash_prefix = &expected_hash("+15555550123")[..12];
    assert_eq!(rows[1].recipient, format!("hmac:{hash_prefix}"));
    let table = herald::ledger::render_table(&rows);
    assert!(!table.contains("alice@"), "{table}");
    assert!(!table.contains("5555550123"), "{table}");
}

#[tokio::test]
async fn status_of_unknown_job_is_empty() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;

    let rows = ledger.status(&job_id("job-never-seen")).await.unwrap();

    assert!(rows.is_empty());
}

#[tokio::test]
async fn stored_recipient_is_masked_in_debug() {
    let database = TestDatabase::create().await;
    let mut config = database.config.clone();
    config.store_recipients = true;
    let ledger = database.ledger_with(&config).await;
    let job = job_id("job-debug");
    let address = email("bob@example.org");
    ledger
        .claim(&job, "sendgrid", Recipient::Email(&address))
        .await
        .unwrap();

    let rows = ledger.status(&job).await.unwrap();

    let debug = format!("{rows:?}");
    assert!(!debug.contains("bob@"), "{debug}");
    assert!(debug.contains("b***@example.org"), "{debug}");
}
