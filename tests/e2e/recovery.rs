//! Broker connection loss: a forced close under load and a deleted work queue. Herald
//! reconnects, declares its topology again and resumes, and nothing is lost or sent twice.

use std::time::Duration;

use crate::crash::{
    borrowed, repeated, settings, slow_providers, wait_all_delivered, wait_all_sent,
};
use crate::helpers::*;
use crate::session_loss::force_close;

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
    force_close(herald.pid(), "herald-consume");
    herald
        .wait_for_log(Duration::from_secs(15), |line| {
            message(line) == "broker session ended; reconnecting"
        })
        .await;

    assert_recovered_once(fixture, herald, JOBS, unknown_tags_before).await;
}

/// Checks that every channel of `jobs` three-channel jobs was delivered and that each
/// repeated send was counted as a possible duplicate. Then checks that Herald consumes
/// again with nothing left waiting, and that no acknowledgement went to a channel that did
/// not deliver it. Stops Herald and deletes the fixture's topology.
pub(crate) async fn assert_recovered_once(
    fixture: Fixture,
    herald: RunningHerald,
    jobs: u64,
    unknown_tags_before: usize,
) {
    wait_all_delivered(&fixture.topology, 3 * jobs as i64, Duration::from_secs(180)).await;
    let counts = wait_all_sent(&fixture.providers, jobs as usize, Duration::from_secs(5)).await;
    let metrics = herald.metrics().await;
    let possible = metric_value(&metrics, "herald_possible_duplicates_total", &[]) as usize;
    let repeated = repeated(&counts);
    assert!(
        repeated <= possible,
        "{repeated} channels sent twice, {possible} counted as possible duplicates"
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
