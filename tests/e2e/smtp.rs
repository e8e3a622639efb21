//! Email through an SMTP relay: the `herald` binary against the scripted SMTP server, with
//! the outcome recorded in the ledger and dead-letter headers.

use std::time::Duration;

use crate::helpers::*;
use crate::smtp_server::{Auth, Security, SmtpServer};

/// Settings that send email through `server` in plain text, which Herald accepts only on
/// loopback.
fn smtp_settings(server: &SmtpServer) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD__CHANNELS__EMAIL", "smtp".to_owned()),
        ("HERALD__PROVIDERS__SMTP__HOST", "127.0.0.1".to_owned()),
        ("HERALD__PROVIDERS__SMTP__PORT", server.port().to_string()),
        ("HERALD__PROVIDERS__SMTP__TLS", "none".to_owned()),
    ]
}

async fn start_with(fixture: &Fixture, settings: &[(&'static str, String)]) -> RunningHerald {
    let extra: Vec<(&str, &str)> = settings
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    fixture.start(&extra).await
}

#[tokio::test]
async fn smtp_delivery_is_recorded_once() {
    let server = SmtpServer::start(Security::Plain, Auth::None).await;
    let fixture = Fixture::new("smtp-delivery").await;
    let herald = start_with(&fixture, &smtp_settings(&server)).await;

    let email = job("smtp-1", 1, &["email"]);
    fixture.topology.publish_jobs(&[email.clone(), email]).await;
    herald
        .wait_for_metric(
            "herald_channel_sends_total",
            &[("outcome", "already_delivered")],
            1.0,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(herald.stop().await, 0);

    let received = server.received();
    assert_eq!(received.len(), 1, "the second publication sends nothing");
    assert_eq!(received[0].to, ["user1@example.com"]);
    assert_eq!(received[0].header("X-Herald-Job-Id"), Some("smtp-1"));
    let message_id = received[0].header("Message-ID").expect("Message-ID set");

    let pool = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", fixture.topology.database))
        .await
        .unwrap();
    let (provider, stored_id): (String, Option<String>) = sqlx::query_as(
        "SELECT provider, provider_message_id FROM deliveries WHERE job_id = 'smtp-1' AND channel = 'email'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let status: Option<i32> = sqlx::query_scalar(
        "SELECT status_code FROM delivery_attempts WHERE job_id = 'smtp-1' AND channel = 'email'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(provider, "smtp");
    assert_eq!(stored_id.as_deref(), Some(message_id));
    assert_eq!(status, Some(250));
    fixture.topology.delete().await;
}

#[tokio::test]
async fn smtp_bad_mailbox_is_dead_lettered() {
    let server = SmtpServer::start(Security::Plain, Auth::None).await;
    server.script(|script| {
        script
            .rcpt
            .push_back((550, "5.1.1 Bad destination mailbox address"))
    });
    let fixture = Fixture::new("smtp-bad-mailbox").await;
    let herald = start_with(&fixture, &smtp_settings(&server)).await;

    fixture
        .topology
        .publish_jobs(&[job("smtp-2", 2, &["email"])])
        .await;
    herald
        .wait_for_metric(
            "herald_dead_letters_total",
            &[("channel", "email"), ("reason", "permanent")],
            1.0,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(herald.stop().await, 0);

    assert!(server.received().is_empty());
    let dead = fixture
        .topology
        .drain(&fixture.topology.dead_letter_queue)
        .await;
    assert_eq!(dead.len(), 1);
    let headers = &dead[0].headers;
    assert_eq!(headers["x-herald-reason"], "permanent");
    assert_eq!(headers["x-herald-channel"], "email");
    assert_eq!(headers["x-herald-provider"], "smtp");
    assert_eq!(headers["x-herald-error-code"], "5.1.1");
    fixture.topology.delete().await;
}
