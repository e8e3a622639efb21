//! Broker connection loss: a forced close under load and a deleted work queue. Herald
//! reconnects, declares its topology again and resumes, and nothing is lost or sent twice.

use std::time::Duration;

use crate::crash::{
    borrowed, repeated, settings, slow_providers, wait_all_delivered, wait_all_sent,
};
use crate::helpers::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// Closes Herald's consuming connection from the broker side, as an operator or a broker
/// failover would.
fn force_close_consumer(herald_pid: i32) {
    let listing = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    let text = String::from_utf8_lossy(&listing.stdout);
    let suffix = format!("/{herald_pid}\"");
    let line = text
        .lines()
        .find(|line| line.contains("herald-consume") && line.contains(&suffix))
        .unwrap_or_else(|| panic!("no consuming connection of pid {herald_pid} in:\n{text}"));
    let connection = line.split_whitespace().next().unwrap();
    let status = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", connection, "closed by a Herald test"])
        .status()
        .unwrap();
    assert!(status.success(), "rabbitmqctl close_connection failed");
}

/// Waits until Herald has started consuming a second time, after a reconnection.
async fn wait_for_second_consumer(herald: &RunningHerald) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let consuming = herald
            .logs()
            .iter()
            .filter(|line| message(line) == "consuming")
            .count();
        if consuming >= 2 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Herald did not consume again:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn forced_close_under_load_loses_nothing() {
    const JOBS: u64 = 300;
    let unknown_tags_before = unknown_tag_errors();
    let fixture = Fixture::new("forced-close").await;
    slow_providers(&fixture).await;
    let settings = settings();
    let herald = fixture.start(&borrowed(&settings)).await;

    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("close-{i}"), i, &["email", "sms", "push"]))
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
    force_close_consumer(herald.pid());
    herald
        .wait_for_log(Duration::from_secs(15), |line| {
            message(line) == "broker session ended; reconnecting"
        })
        .await;

    wait_all_delivered(&fixture.topology, 3 * JOBS as i64, Duration::from_secs(120)).await;
    let counts = wait_all_sent(&fixture.providers, JOBS as usize, Duration::from_secs(5)).await;
    let metrics = herald.metrics().await;
    let possible = metric_value(&metrics, "herald_possible_duplicates_total", &[]) as usize;
    assert!(
        repeated(&counts) <= possible,
        "a channel was sent twice without being counted"
    );
    // Under load the ledger can time out and pause consumption for a moment, so consuming
    // is awaited rather than read once.
    herald
        .wait_for_metric("herald_consuming", &[], 1.0, Duration::from_secs(30))
        .await;
    // Channels that found another delivery holding their claim come back from a
    // delay queue to be skipped; wait for them while Herald still consumes.
    assert_eventually_waiting(&fixture.topology, 0).await;
    assert_eq!(herald.stop().await, 0);
    assert_eq!(
        unknown_tag_errors(),
        unknown_tags_before,
        "an ack went to a channel that did not deliver it"
    );
    fixture.topology.delete().await;
}

/// With every worker busy, a closed connection still ends the session at once, not when a
/// worker frees up, so readiness turns false while the jobs under way finish.
#[tokio::test]
async fn closed_connection_is_noticed_with_every_worker_busy() {
    const SEND_TIME: Duration = Duration::from_secs(10);
    let fixture = Fixture::new("busy-close").await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("X-Message-Id", "m")
                .set_delay(SEND_TIME),
        )
        .with_priority(1)
        .mount(&fixture.providers.sendgrid)
        .await;
    let herald = fixture
        .start(&[
            ("HERALD__POOL__WORKERS", "1"),
            ("HERALD__BROKER__PREFETCH", "1"),
            ("HERALD__HTTP__REQUEST_TIMEOUT_MS", "30000"),
        ])
        .await;

    fixture
        .topology
        .publish_jobs(&[job("busy-0", 0, &["email"])])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fixture.providers.email_requests().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never reached the provider:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The only worker is now inside a send that lasts SEND_TIME.
    force_close_consumer(herald.pid());
    herald
        .wait_for_log(Duration::from_secs(3), |line| {
            message(line) == "broker session ended; reconnecting"
        })
        .await;

    wait_all_delivered(&fixture.topology, 1, Duration::from_secs(60)).await;
    herald
        .wait_for_metric("herald_consuming", &[], 1.0, Duration::from_secs(30))
        .await;
    assert_eventually_waiting(&fixture.topology, 0).await;
    assert_eq!(
        fixture.providers.email_requests().await.len(),
        1,
        "the redelivered job sent its email again"
    );
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

#[tokio::test]
async fn deleted_queue_is_declared_again() {
    let fixture = Fixture::new("deleted-queue").await;
    let herald = fixture.start(&[]).await;

    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            fixture.topology.queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();

    herald
        .wait_for_log(Duration::from_secs(15), |line| {
            message(line) == "broker session ended; reconnecting"
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let consuming = herald
            .logs()
            .iter()
            .filter(|line| message(line) == "consuming")
            .count();
        if consuming >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Herald did not consume again:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fixture
        .topology
        .publish_jobs(&[job("after-delete-1", 1, &["email"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

#[tokio::test]
async fn silent_broker_is_detected_by_heartbeats() {
    const HEARTBEAT_SECS: u64 = 2;
    let fixture = Fixture::new("silent-broker").await;
    let proxy = crate::proxy::CuttableProxy::start("127.0.0.1:5672").await;
    let proxied = format!("amqp://guest:guest@{}/%2f", proxy.address);
    let heartbeat = HEARTBEAT_SECS.to_string();
    let herald = fixture
        .start(&[
            ("HERALD__BROKER__URL", &proxied),
            ("HERALD__BROKER__HEARTBEAT_SECS", &heartbeat),
        ])
        .await;

    proxy.freeze();
    let frozen_at = tokio::time::Instant::now();
    herald
        .wait_for_log(Duration::from_secs(4 * HEARTBEAT_SECS), |line| {
            message(line) == "broker session ended; reconnecting"
        })
        .await;
    let detected_after = frozen_at.elapsed();
    // Two heartbeat intervals, plus the client's check interval of half a heartbeat, plus a
    // second for scheduling on a loaded machine.
    let bound = Duration::from_millis(2500 * HEARTBEAT_SECS + 1000);
    assert!(
        detected_after <= bound,
        "a silent broker was noticed after {detected_after:?}, not within {bound:?}"
    );

    wait_for_second_consumer(&herald).await;
    fixture
        .topology
        .publish_jobs(&[job("after-silence-1", 1, &["email"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(herald.stop().await, 0);
    drop(proxy);
    fixture.topology.delete().await;
}
