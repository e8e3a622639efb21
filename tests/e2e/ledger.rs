//! The delivery ledger: no channel is sent twice when a job is published twice or
//! redelivered after its consumer died, and every channel's outcome is recorded.

use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

/// Opens a pool on the test's ledger database.
async fn ledger_pool(topology: &Topology) -> sqlx::PgPool {
    sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", topology.database))
        .await
        .expect("the test's ledger database exists")
}

async fn rows(topology: &Topology, job_id: &str) -> Vec<(String, String, i32)> {
    let pool = ledger_pool(topology).await;
    let rows = sqlx::query_as(
        "SELECT channel, state, attempts FROM deliveries WHERE job_id = $1 ORDER BY channel",
    )
    .bind(job_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

#[tokio::test]
async fn partial_failure_records_three_delivered_rows() {
    let fixture = Fixture::new("ledger-partial").await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{FCM_PROJECT}/messages:send")))
        .respond_with(ResponseTemplate::new(503).set_body_json(serde_json::json!({
            "error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}
        })))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&fixture.providers.fcm)
        .await;
    let herald = fixture
        .start(&[("HERALD__RETRY__BASE_DELAY_MS", "20")])
        .await;

    fixture
        .topology
        .publish_jobs(&[job("partial-1", 1, &["email", "sms", "push"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;

    assert_eq!(fixture.providers.email_requests().await.len(), 1);
    assert_eq!(fixture.providers.sms_requests().await.len(), 1);
    assert_eq!(fixture.providers.push_requests().await.len(), 3);
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(&metrics, "herald_jobs_received_total", &[]),
        1.0,
        "one delivery"
    );
    assert_eq!(herald.stop().await, 0);
    assert_eventually_waiting(&fixture.topology, 0).await;

    let rows = rows(&fixture.topology, "partial-1").await;
    assert_eq!(
        rows,
        [
            ("email".to_owned(), "delivered".to_owned(), 1),
            ("push".to_owned(), "delivered".to_owned(), 3),
            ("sms".to_owned(), "delivered".to_owned(), 1),
        ]
    );
    let pool = ledger_pool(&fixture.topology).await;
    let calls: Vec<(i32, String)> = sqlx::query_as(
        "SELECT attempt, outcome FROM delivery_attempts WHERE job_id = 'partial-1' AND channel = 'push' ORDER BY attempt",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(
        calls,
        [
            (1, "transient".to_owned()),
            (2, "transient".to_owned()),
            (3, "delivered".to_owned())
        ]
    );
    fixture.topology.delete().await;
}

#[tokio::test]
async fn job_published_twice_sends_each_channel_once() {
    let fixture = Fixture::new("ledger-twice").await;
    let herald = fixture.start(&[]).await;

    let twice = job("twice-1", 1, &["email", "sms", "push"]);
    fixture.topology.publish_jobs(&[twice.clone(), twice]).await;
    herald
        .wait_for_metric(
            "herald_channel_sends_total",
            &[("outcome", "already_delivered")],
            3.0,
            Duration::from_secs(30),
        )
        .await;

    assert_eq!(fixture.providers.email_requests().await.len(), 1);
    assert_eq!(fixture.providers.sms_requests().await.len(), 1);
    assert_eq!(fixture.providers.push_requests().await.len(), 1);
    assert_eq!(herald.stop().await, 0);
    assert_eventually_waiting(&fixture.topology, 0).await;
    fixture.topology.delete().await;
}

#[tokio::test]
async fn redelivery_after_crash_resends_only_in_flight_channel() {
    let fixture = Fixture::new("ledger-crash").await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("X-Message-Id", "slow")
                .set_delay(Duration::from_secs(2)),
        )
        .with_priority(1)
        .mount(&fixture.providers.sendgrid)
        .await;
    let settings = [
        ("HERALD__RETRY__IN_PLACE_ATTEMPTS", "1"),
        ("HERALD__HTTP__REQUEST_TIMEOUT_MS", "3000"),
        ("HERALD__LIMITS__MAX_PERMIT_WAIT_SECS", "1"),
        ("HERALD__LEDGER__SENDING_RECLAIM_SECS", "5"),
    ];
    let mut first = fixture.start(&settings).await;

    fixture
        .topology
        .publish_jobs(&[job("crash-1", 1, &["email", "sms"])])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fixture.providers.email_requests().await.is_empty()
        || fixture.providers.sms_requests().await.is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sends never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed once the ledger records the SMS as delivered, while the email still waits for
    // its slow reply. The "channel delivered" log line comes before that record.
    let ledger = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", fixture.topology.database))
        .await
        .expect("the test's ledger database exists");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let state: Option<(String,)> = sqlx::query_as(
            "SELECT state FROM deliveries WHERE job_id = 'crash-1' AND channel = 'sms'",
        )
        .fetch_optional(&ledger)
        .await
        .unwrap();
        if state.as_ref().is_some_and(|(state,)| state == "delivered") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SMS was not recorded as delivered within 5 s: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ledger.close().await;
    first.kill();
    first.wait_exit_by_signal(Duration::from_secs(10)).await;

    let second = fixture.start(&settings).await;
    second
        .wait_for_metric(
            "herald_channel_sends_total",
            &[("channel", "email"), ("outcome", "delivered")],
            1.0,
            Duration::from_secs(30),
        )
        .await;

    assert_eq!(
        fixture.providers.sms_requests().await.len(),
        1,
        "the delivered SMS is not sent again"
    );
    assert_eq!(
        fixture.providers.email_requests().await.len(),
        2,
        "the email in flight at the crash is sent again"
    );
    let metrics = second.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_possible_duplicates_total",
            &[("channel", "email")]
        ),
        1.0,
        "the resend is counted as a possible duplicate"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "herald_channel_sends_total",
            &[("channel", "sms"), ("outcome", "already_delivered")]
        ),
        1.0
    );
    assert_eq!(second.stop().await, 0);
    assert_eventually_waiting(&fixture.topology, 0).await;
    let rows = rows(&fixture.topology, "crash-1").await;
    assert!(
        rows.iter().all(|(_, state, _)| state == "delivered"),
        "{rows:?}"
    );
    fixture.topology.delete().await;
}
