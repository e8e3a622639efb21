//! `herald migrate`, `herald status` and `herald suppression` as an operator runs them.

use std::process::Output;

use herald::ledger::{Claim, InvalidRecipient, Recipient};
use tokio::process::Command;

use crate::helpers::{HASH_KEY, TestDatabase, claim_email, job_id, phone};

async fn herald(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD__LEDGER__URL", database_url)
        .env("HERALD__LEDGER__ACQUIRE_TIMEOUT_SECS", "1")
        .env_remove("HERALD_CONFIG")
        .output()
        .await
        .expect("run the herald binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn migrate_prints_applied_migrations() {
    let database = TestDatabase::create().await;

    let first = herald(&database.config.url, &["migrate"]).await;
    let second = herald(&database.config.url, &["migrate"]).await;

    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert!(
        stdout(&first).contains("applied migration 1: create deliveries"),
        "{}",
        stdout(&first)
    );
    assert!(stdout(&first).contains("applied migration 2: create delivery attempts"));
    assert!(stdout(&first).contains("applied migration 3: create suppressions"));
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stdout(&second).contains("no migrations applied"),
        "{}",
        stdout(&second)
    );
}

#[tokio::test]
async fn migrate_without_server_exits_1() {
    let output = herald(
        "postgres://postgres:hunter2@127.0.0.1:1/herald",
        &["migrate"],
    )
    .await;

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(message.contains("PostgreSQL"), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn status_prints_table() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let job = job_id("job-cli-status");
    let claim = claim_email(&ledger, &job).await;
    assert!(matches!(claim, Claim::Acquired { .. }));

    let output = herald(&database.config.url, &["status", "job-cli-status"]).await;

    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = stdout(&output);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("CHANNEL"), "{table}");
    assert!(lines[1].starts_with("email"), "{table}");
    assert!(lines[1].contains("sending"), "{table}");
    assert!(lines[1].contains("hmac:"), "{table}");
    assert!(!table.contains("alice"), "{table}");
}

#[tokio::test]
async fn status_of_unknown_job_exits_1() {
    let database = TestDatabase::create().await;
    database.ledger().await;

    let output = herald(&database.config.url, &["status", "job-nobody-sent"]).await;

    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no rows for job job-nobody-sent"),
        "{}",
        stderr(&output)
    );
}

/// Runs `herald` with the tests' recipient hash key, which suppression commands need.
async fn herald_with_key(database_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env("HERALD__LEDGER__URL", database_url)
        .env("HERALD__LEDGER__ACQUIRE_TIMEOUT_SECS", "1")
        .env("HERALD__LEDGER__RECIPIENT_HASH_KEY", HASH_KEY)
        .env_remove("HERALD_CONFIG")
        .output()
        .await
        .expect("run the herald binary")
}

#[tokio::test]
async fn suppression_list_and_remove() {
    let database = TestDatabase::create().await;
    let ledger = database.ledger().await;
    let number = phone("+15555550123");
    let entry = InvalidRecipient {
        recipient: Recipient::Sms(&number),
        provider: "twilio",
        provider_code: Some("21211"),
        reason: "The 'To' number is not a valid phone number.",
    };
    ledger.suppress(&job_id("job-cli-1"), &entry).await.unwrap();
    let url = &database.config.url;

    let listed = herald_with_key(url, &["suppression", "list", "--channel", "sms"]).await;
    assert_eq!(listed.status.code(), Some(0), "{}", stderr(&listed));
    let table = stdout(&listed);
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains("21211"), "{table}");
    assert!(table.contains("job-cli-1"), "{table}");
    assert!(!table.contains("+15555550123"), "{table}");

    let remove = [
        "suppression",
        "remove",
        "--channel",
        "sms",
        "--recipient",
        "+15555550123",
    ];
    let removed = herald_with_key(url, &remove).await;
    assert_eq!(removed.status.code(), Some(0), "{}", stderr(&removed));
    assert!(!ledger.is_suppressed(Recipient::Sms(&number)).await.unwrap());

    let again = herald_with_key(url, &remove).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("nothing removed"),
        "{}",
        stderr(&again)
    );
}

#[tokio::test]
async fn suppression_remove_rejects_invalid_recipient() {
    let database = TestDatabase::create().await;
    database.ledger().await;

    let args = [
        "suppression",
        "remove",
        "--channel",
        "sms",
        "--recipient",
        "not a number",
    ];
    let output = herald_with_key(&database.config.url, &args).await;

    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--recipient"),
        "{}",
        stderr(&output)
    );
}
