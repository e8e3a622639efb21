//! `herald migrate` and `herald status` as an operator runs them.

use std::process::Output;

use herald::ledger::Claim;
use tokio::process::Command;

use crate::helpers::{TestDatabase, claim_email, job_id};

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
