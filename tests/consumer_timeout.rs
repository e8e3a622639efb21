//! A backlog that the rate limit cannot clear within RabbitMQ's consumer timeout. Sends
//! that would wait too long for a permit are deferred through the delay queues, so no
//! delivery stays unacknowledged long enough for the broker to close Herald's channel.
//!
//! The test shortens the broker's consumer timeout, a node-wide setting of RabbitMQ 3.10.
//! Cargo runs test binaries one at a time, so this test has a binary of its own.

#![allow(unreachable_pub, dead_code)]

#[path = "e2e/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use helpers::*;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};

/// The consumer timeout given to channels opened while the test sets up, in milliseconds.
const CONSUMER_TIMEOUT_MS: u64 = 3000;
/// How often the broker checks it, in milliseconds. The default is a minute.
const TICK_MS: u64 = 1000;
/// SMS jobs in the backlog. At one SMS per second they take about four times the timeout.
const JOBS: u64 = 12;

/// Reads one of RabbitMQ's application settings.
fn broker_setting(name: &str) -> u64 {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["eval", &format!("application:get_env(rabbit, {name}).")])
        .output()
        .expect("this test needs rabbitmqctl, installed with RabbitMQ");
    let text = String::from_utf8_lossy(&output.stdout);
    // Prints `{ok,1800000}`.
    text.trim()
        .trim_start_matches("{ok,")
        .trim_end_matches('}')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected answer for {name}: {text}"))
}

fn set_broker_setting(name: &str, value: u64) {
    let status = std::process::Command::new("rabbitmqctl")
        .args([
            "eval",
            &format!("application:set_env(rabbit, {name}, {value})."),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("this test needs rabbitmqctl, installed with RabbitMQ");
    assert!(status.success(), "rabbitmqctl could not set {name}");
}

/// Puts the broker's settings back when the test ends, whether it passes or not.
struct RestoreSettings {
    consumer_timeout: u64,
    tick: u64,
}

impl RestoreSettings {
    fn read() -> RestoreSettings {
        RestoreSettings {
            consumer_timeout: broker_setting("consumer_timeout"),
            tick: broker_setting("channel_tick_interval"),
        }
    }

    fn consumer_timeout(&self) {
        set_broker_setting("consumer_timeout", self.consumer_timeout);
    }
}

impl Drop for RestoreSettings {
    fn drop(&mut self) {
        set_broker_setting("consumer_timeout", self.consumer_timeout);
        set_broker_setting("channel_tick_interval", self.tick);
    }
}

/// Consumes one message from `queue` and never acknowledges it. The broker closes the
/// returned channel once the shortened timeout applies, which shows it is in force.
async fn hold_one_message(queue: &str) -> Channel {
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap();
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            b"unacknowledged",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "control".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the unacknowledged message arrives");
    assert!(
        matches!(delivery, Some(Ok(_))),
        "the unacknowledged message arrives"
    );

    // The connection must outlive this function; the channel keeps it.
    std::mem::forget(connection);
    channel
}

#[tokio::test]
async fn backlog_beyond_consumer_timeout_keeps_the_channel() {
    let settings = RestoreSettings::read();
    let fixture = Fixture::new("consumer-timeout").await;
    let (topology, providers) = (&fixture.topology, &fixture.providers);
    let control_queue = format!("{}.control", topology.queue);

    // Only channels opened while the timeout is short get it: RabbitMQ reads it when a
    // channel opens. The tick interval is read at every tick.
    set_broker_setting("channel_tick_interval", TICK_MS);
    set_broker_setting("consumer_timeout", CONSUMER_TIMEOUT_MS);
    let control = hold_one_message(&control_queue).await;
    let herald = fixture
        .start(&[
            ("HERALD__PROVIDERS__TWILIO__RATE_LIMIT__PER_SECOND", "1"),
            ("HERALD__PROVIDERS__TWILIO__RATE_LIMIT__BURST", "1"),
            ("HERALD__LIMITS__MAX_PERMIT_WAIT_SECS", "1"),
        ])
        .await;
    herald
        .wait_for_metric("herald_consuming", &[], 1.0, Duration::from_secs(30))
        .await;
    settings.consumer_timeout();

    // The control: a consumer that keeps a message unacknowledged past the timeout loses
    // its channel.
    let deadline = Instant::now() + Duration::from_secs(20);
    while control.status().connected() {
        assert!(
            Instant::now() < deadline,
            "the broker did not close a channel holding a message for 20 s; \
             the shortened consumer timeout is not in force, so this test proves nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let started = Instant::now();
    let jobs: Vec<serde_json::Value> = (0..JOBS)
        .map(|index| job(&format!("backlog-{index}"), index, &["sms"]))
        .collect();
    topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            JOBS as f64,
            Duration::from_secs(90),
        )
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed > Duration::from_millis(2 * CONSUMER_TIMEOUT_MS),
        "the backlog cleared in {elapsed:?}, too fast to test the consumer timeout"
    );

    let lost: Vec<String> = herald
        .logs()
        .iter()
        .map(|line| message(line).to_owned())
        .filter(|message| message.contains("broker session ended"))
        .collect();
    assert!(
        lost.is_empty(),
        "the broker closed Herald's session: {lost:?}\n{}",
        herald.log_text()
    );
    let metrics = herald.metrics().await;
    assert!(
        metric_value(
            &metrics,
            "herald_delayed_retries_total",
            &[
                ("channel", "sms"),
                ("provider", "twilio"),
                ("reason", "deferred")
            ]
        ) >= 1.0,
        "no send was deferred, so the backlog never outlasted a permit wait"
    );

    let mut sends: BTreeMap<String, usize> = BTreeMap::new();
    for request in providers.sms_requests().await {
        let form: BTreeMap<String, String> = serde_urlencoded::from_bytes(&request.body).unwrap();
        *sends.entry(form["To"].clone()).or_default() += 1;
    }
    assert_eq!(
        sends.len(),
        JOBS as usize,
        "every job's SMS was sent: {sends:?}"
    );
    assert!(
        sends.values().all(|count| *count == 1),
        "an SMS was sent twice: {sends:?}"
    );
    assert_eventually_waiting(topology, 0).await;

    herald.stop().await;
    let channel = broker().await.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(control_queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    topology.delete().await;
}
