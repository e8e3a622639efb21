//! Failover between the providers of one channel: a failing provider's breaker opens, its
//! traffic moves to the next provider, and it comes back once a probe succeeds. A rejected
//! message never fails over.

use std::time::Duration;

use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const MAIL_SEND: &str = "/v3/mail/send";
/// Cool-down of the tests' breakers. Long enough for a job to pass through Herald while the
/// breaker is open, short enough to wait out.
const COOL_DOWN: Duration = Duration::from_secs(3);

/// Starts a mock of a second SendGrid account, `backup`, that accepts every message.
async fn start_backup() -> MockServer {
    let backup = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MAIL_SEND))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "backup-message-1"))
        .mount(&backup)
        .await;
    backup
}

/// Settings that add `backup` after `sendgrid` on the email channel.
fn backup_env(backup: &MockServer, threshold: &str) -> Vec<(String, String)> {
    let cool_down = COOL_DOWN.as_secs().to_string();
    [
        ("HERALD__PROVIDERS__BACKUP__KIND", "sendgrid"),
        ("HERALD__PROVIDERS__BACKUP__BASE_URL", &backup.uri()),
        ("HERALD__PROVIDERS__BACKUP__API_KEY", "SG.backup-key"),
        (
            "HERALD__PROVIDERS__BACKUP__FROM_EMAIL",
            "backup@example.com",
        ),
        ("HERALD__PROVIDERS__BACKUP__MAX_IN_FLIGHT", "4"),
        ("HERALD__PROVIDERS__BACKUP__RATE_LIMIT__PER_SECOND", "50"),
        ("HERALD__PROVIDERS__BACKUP__RATE_LIMIT__BURST", "50"),
        ("HERALD__CHANNELS__EMAIL", "sendgrid,backup"),
        ("HERALD__CIRCUIT_BREAKER__FAILURE_THRESHOLD", threshold),
        ("HERALD__CIRCUIT_BREAKER__WINDOW_SECS", "60"),
        ("HERALD__CIRCUIT_BREAKER__COOL_DOWN_SECS", &cool_down),
        ("HERALD__RETRY__IN_PLACE_ATTEMPTS", "5"),
        ("HERALD__RETRY__BASE_DELAY_MS", "20"),
        ("HERALD__RETRY__MAX_DELAY_MS", "50"),
    ]
    .map(|(key, value)| env_pair(key, value))
    .to_vec()
}

/// SendGrid's reply while it is unavailable: 503 with its error body.
fn unavailable() -> ResponseTemplate {
    ResponseTemplate::new(503).set_body_json(serde_json::json!({
        "errors": [{"field": null, "message": "Service Unavailable"}]
    }))
}

async fn delivered_emails(herald: &RunningHerald, expected: f64) {
    herald
        .wait_for_metric(
            "herald_channel_sends_total",
            &[("channel", "email"), ("outcome", "delivered")],
            expected,
            Duration::from_secs(20),
        )
        .await;
}

async fn circuit_state(herald: &RunningHerald, provider: &str) -> f64 {
    let metrics = herald.metrics().await;
    metric_value(
        &metrics,
        "herald_provider_circuit_state",
        &[("provider", provider)],
    )
}

async fn failovers(herald: &RunningHerald) -> f64 {
    let metrics = herald.metrics().await;
    metric_value(
        &metrics,
        "herald_failovers_total",
        &[("channel", "email"), ("from", "sendgrid"), ("to", "backup")],
    )
}

async fn ledger_provider(topology: &Topology, job_id: &str) -> String {
    let pool = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", topology.database))
        .await
        .expect("the test's ledger database exists");
    let (provider,): (String,) =
        sqlx::query_as("SELECT provider FROM deliveries WHERE job_id = $1 AND channel = 'email'")
            .bind(job_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    provider
}

#[tokio::test]
async fn open_breaker_moves_email_to_backup_and_back() {
    let fixture = Fixture::new("failover").await;
    let primary = &fixture.providers.sendgrid;
    let backup = start_backup().await;
    // Three 503s open the primary's breaker; after them the primary accepts again.
    Mock::given(method("POST"))
        .and(path(MAIL_SEND))
        .respond_with(unavailable())
        .up_to_n_times(3)
        .with_priority(1)
        .mount(primary)
        .await;
    let herald = RunningHerald::start(
        [
            fixture.topology.env(),
            fixture.providers.env(),
            backup_env(&backup, "3"),
        ]
        .concat(),
    )
    .await;
    assert_eq!(circuit_state(&herald, "sendgrid").await, 0.0);
    assert_eq!(circuit_state(&herald, "backup").await, 0.0);

    // The fourth attempt of the first job fails over within the same delivery.
    fixture
        .topology
        .publish_jobs(&[job("failover-1", 1, &["email"])])
        .await;
    delivered_emails(&herald, 1.0).await;
    let opened = Instant::now();
    assert_eq!(Providers::requests(primary, MAIL_SEND).await.len(), 3);
    assert_eq!(Providers::requests(&backup, MAIL_SEND).await.len(), 1);
    assert_eq!(circuit_state(&herald, "sendgrid").await, 2.0);
    assert_eq!(failovers(&herald).await, 1.0);
    assert_eq!(
        ledger_provider(&fixture.topology, "failover-1").await,
        "backup"
    );
    let log = herald
        .wait_for_log(Duration::from_secs(5), |line| {
            message(line) == "provider circuit open; failing over to the next provider"
        })
        .await;
    assert_eq!(field(&log, "job_id").unwrap(), "failover-1");
    assert_eq!(field(&log, "from").unwrap(), "sendgrid");
    assert_eq!(field(&log, "to").unwrap(), "backup");

    // While the breaker is open, a new job goes straight to the backup, and Herald stays
    // ready with the open breaker in its readiness details.
    fixture
        .topology
        .publish_jobs(&[job("failover-2", 2, &["email"])])
        .await;
    delivered_emails(&herald, 2.0).await;
    assert!(
        opened.elapsed() < COOL_DOWN,
        "the test ran too slowly to see the open breaker"
    );
    assert_eq!(Providers::requests(primary, MAIL_SEND).await.len(), 3);
    assert_eq!(Providers::requests(&backup, MAIL_SEND).await.len(), 2);
    assert_eq!(failovers(&herald).await, 2.0);
    let ready = reqwest::get(format!("http://{}/health/ready", herald.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let details = ready.text().await.unwrap();
    assert!(
        details.contains("provider sendgrid: circuit open"),
        "{details}"
    );
    assert!(
        details.contains("provider backup: circuit closed"),
        "{details}"
    );

    // After the cool-down, the next job is the probe: the primary accepts it and its
    // breaker closes, so the job after it goes to the primary too.
    tokio::time::sleep_until(opened + COOL_DOWN).await;
    fixture
        .topology
        .publish_jobs(&[job("failover-3", 3, &["email"])])
        .await;
    delivered_emails(&herald, 3.0).await;
    fixture
        .topology
        .publish_jobs(&[job("failover-4", 4, &["email"])])
        .await;
    delivered_emails(&herald, 4.0).await;
    assert_eq!(Providers::requests(primary, MAIL_SEND).await.len(), 5);
    assert_eq!(Providers::requests(&backup, MAIL_SEND).await.len(), 2);
    assert_eq!(circuit_state(&herald, "sendgrid").await, 0.0);
    assert_eq!(failovers(&herald).await, 2.0);
    let metrics = herald.metrics().await;
    let closed = metric_value(
        &metrics,
        "herald_provider_circuit_transitions_total",
        &[
            ("provider", "sendgrid"),
            ("from", "half_open"),
            ("to", "closed"),
        ],
    );
    assert_eq!(closed, 1.0);
    assert_eq!(
        ledger_provider(&fixture.topology, "failover-4").await,
        "sendgrid"
    );

    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

#[tokio::test]
async fn rejected_email_does_not_fail_over() {
    let fixture = Fixture::new("no-failover").await;
    let primary = &fixture.providers.sendgrid;
    let backup = start_backup().await;
    Mock::given(method("POST"))
        .and(path(MAIL_SEND))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "errors": [{
                "field": "personalizations.0.to.0.email",
                "message": "Does not contain a valid address."
            }]
        })))
        .with_priority(1)
        .mount(primary)
        .await;
    // A threshold of one: had the 400 counted, the breaker would open at once.
    let herald = RunningHerald::start(
        [
            fixture.topology.env(),
            fixture.providers.env(),
            backup_env(&backup, "1"),
        ]
        .concat(),
    )
    .await;

    fixture
        .topology
        .publish_jobs(&[job("rejected-1", 1, &["email"])])
        .await;
    herald
        .wait_for_metric(
            "herald_dead_letters_total",
            &[("channel", "email"), ("reason", "permanent")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(Providers::requests(primary, MAIL_SEND).await.len(), 1);
    assert_eq!(Providers::requests(&backup, MAIL_SEND).await.len(), 0);
    assert_eq!(circuit_state(&herald, "sendgrid").await, 0.0);
    assert_eq!(failovers(&herald).await, 0.0);

    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

#[tokio::test]
async fn channel_with_every_breaker_open_is_deferred() {
    let fixture = Fixture::new("all-open").await;
    let primary = &fixture.providers.sendgrid;
    Mock::given(method("POST"))
        .and(path(MAIL_SEND))
        .respond_with(unavailable())
        .with_priority(1)
        .mount(primary)
        .await;
    let cool_down = COOL_DOWN.as_secs().to_string();
    let herald = fixture
        .start(&[
            ("HERALD__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "1"),
            ("HERALD__CIRCUIT_BREAKER__COOL_DOWN_SECS", &cool_down),
            ("HERALD__RETRY__BASE_DELAY_MS", "20"),
        ])
        .await;

    // The first attempt opens the only breaker, so the first delivery ends with its 503 and
    // uses up a round. The delivery after it finds the breaker still open, sends nothing
    // and is deferred without using up a round.
    fixture
        .topology
        .publish_jobs(&[job("all-open-1", 1, &["email"])])
        .await;
    herald
        .wait_for_metric(
            "herald_delayed_retries_total",
            &[("channel", "email"), ("reason", "deferred")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    let metrics = herald.metrics().await;
    let deferred = metric_value(
        &metrics,
        "herald_channel_sends_total",
        &[("channel", "email"), ("outcome", "deferred")],
    );
    assert!(deferred >= 1.0, "{metrics}");
    assert_eq!(
        metric_value(
            &metrics,
            "herald_dead_letters_total",
            &[("channel", "email")]
        ),
        0.0
    );
    let log = herald
        .wait_for_log(Duration::from_secs(5), |line| {
            message(line)
                == "every provider of the channel has an open circuit; deferring the channel"
        })
        .await;
    assert_eq!(field(&log, "channel").unwrap(), "email");

    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}
