//! A RabbitMQ restart under load. It restarts the broker that every other test uses, so it
//! lives in a test binary of its own: cargo runs test binaries one at a time, and this
//! binary has this one test.

#![allow(unreachable_pub, dead_code)]

#[path = "e2e/helpers.rs"]
mod helpers;

use std::collections::HashMap;
use std::time::Duration;

use helpers::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const JOBS: u64 = 300;
const LATENCY: Duration = Duration::from_millis(100);

fn rabbitmqctl(args: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl is installed with RabbitMQ");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

async fn slow_mocks(providers: &Providers) {
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("X-Message-Id", "m")
                .set_delay(LATENCY),
        )
        .with_priority(1)
        .mount(&providers.sendgrid)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
        )))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": "SM1", "status": "queued"}))
                .set_delay(LATENCY),
        )
        .with_priority(1)
        .mount(&providers.twilio)
        .await;
}

async fn delivered_rows(topology: &Topology) -> i64 {
    let pool = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", topology.database))
        .await
        .expect("the test's ledger database exists");
    let (delivered,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    delivered
}

async fn requests_per_recipient(providers: &Providers) -> Vec<usize> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for request in providers.email_requests().await {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let to = body["personalizations"][0]["to"][0]["email"]
            .as_str()
            .unwrap()
            .to_owned();
        *counts.entry(to).or_insert(0) += 1;
    }
    for request in providers.sms_requests().await {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        *counts.entry(form["To"].clone()).or_insert(0) += 1;
    }
    counts.into_values().collect()
}

#[tokio::test]
async fn broker_restart_under_load_loses_nothing() {
    let fixture = Fixture::new("broker-restart").await;
    slow_mocks(&fixture.providers).await;
    let herald = fixture
        .start(&[
            ("HERALD__BROKER__HEARTBEAT_SECS", "2"),
            ("HERALD__RETRY__IN_PLACE_ATTEMPTS", "1"),
            ("HERALD__HTTP__REQUEST_TIMEOUT_MS", "3000"),
            ("HERALD__LIMITS__MAX_PERMIT_WAIT_SECS", "1"),
            ("HERALD__LEDGER__SENDING_RECLAIM_SECS", "5"),
            (
                "HERALD__PROVIDERS__SENDGRID__RATE_LIMIT__PER_SECOND",
                "100000",
            ),
            ("HERALD__PROVIDERS__SENDGRID__RATE_LIMIT__BURST", "100000"),
            (
                "HERALD__PROVIDERS__TWILIO__RATE_LIMIT__PER_SECOND",
                "100000",
            ),
            ("HERALD__PROVIDERS__TWILIO__RATE_LIMIT__BURST", "100000"),
            ("HERALD__PROVIDERS__TWILIO__MAX_IN_FLIGHT", "64"),
        ])
        .await;

    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("restart-{i}"), i, &["email", "sms"]))
        .collect();
    fixture.topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            30.0,
            Duration::from_secs(60),
        )
        .await;

    let unknown_tags_before = unknown_tag_errors();
    rabbitmqctl(&["stop_app"]);
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    // NOTE: some restarts reach Herald only as missed heartbeats, not as a closed
    // connection; the cause was not found. The test uses 2 s heartbeats so that either way
    // the session's end shows within seconds.
    herald
        .wait_for_log(Duration::from_secs(30), |line| {
            message(line) == "broker session ended; reconnecting"
        })
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while delivered_rows(&fixture.topology).await < 2 * JOBS as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every channel was delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eventually_waiting(&fixture.topology, 0).await;

    let counts = requests_per_recipient(&fixture.providers).await;
    assert_eq!(
        counts.len(),
        2 * JOBS as usize,
        "every recipient was reached"
    );
    let repeated: usize = counts.iter().map(|count| count - 1).sum();
    let metrics = herald.metrics().await;
    let possible = metric_value(&metrics, "herald_possible_duplicates_total", &[]) as usize;
    assert!(
        repeated <= possible,
        "{repeated} channels sent twice, {possible} counted as possible duplicates"
    );
    assert_eq!(
        unknown_tag_errors(),
        unknown_tags_before,
        "the broker logged an acknowledgement for an unknown delivery tag"
    );
    herald
        .wait_for_metric("herald_consuming", &[], 1.0, Duration::from_secs(30))
        .await;
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}
