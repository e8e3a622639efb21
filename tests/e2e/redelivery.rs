//! Redelivery through the delay queues, dead letters of failed channels, the provider-wide
//! pause on 429, and deferral of long rate-limit waits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::*;

fn twilio_path() -> String {
    format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")
}

fn twilio_unavailable() -> ResponseTemplate {
    ResponseTemplate::new(503).set_body_json(serde_json::json!({
        "code": 20503, "message": "Service unavailable", "more_info": "https://www.twilio.com/docs/errors/20503", "status": 503
    }))
}

#[tokio::test]
async fn failed_channel_returns_through_delay_queue() {
    let fixture = Fixture::new("delayed-retry").await;
    let providers = &fixture.providers;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(twilio_unavailable())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&providers.twilio)
        .await;
    let herald = fixture
        .start(&[
            ("HERALD__RETRY__IN_PLACE_ATTEMPTS", "1"),
            ("HERALD__RETRY__REDELIVERY_BASE_DELAY_SECS", "1"),
        ])
        .await;

    fixture
        .topology
        .publish_jobs(&[job("comeback-1", 1, &["email", "sms"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;

    assert_eq!(
        providers.email_requests().await.len(),
        1,
        "the delivered email is not sent again"
    );
    assert_eq!(
        providers.sms_requests().await.len(),
        2,
        "the SMS is tried again on its own"
    );
    let logs = herald.logs();
    let scheduled = log_position(
        &logs,
        "channel scheduled for a delayed retry",
        &[("channel", "sms")],
    )
    .expect("the retry is logged");
    assert_eq!(logs[scheduled]["next_attempt"], 2);
    let second_round = logs.iter().any(|line| {
        message(line) == "job settled" && field(line, "attempt") == Some(&serde_json::json!(2))
    });
    assert!(
        second_round,
        "the SMS came back as attempt 2:\n{}",
        herald.log_text()
    );

    assert_eq!(herald.stop().await, 0);
    assert_eventually_waiting(&fixture.topology, 0).await;
    assert_eq!(
        fixture
            .topology
            .depth(&fixture.topology.dead_letter_queue)
            .await,
        0
    );
    fixture.topology.delete().await;
}

#[tokio::test]
async fn always_failing_channel_dead_letters_after_max_attempts() {
    const MAX_ATTEMPTS: usize = 3;
    let fixture = Fixture::new("exhausted").await;
    let providers = &fixture.providers;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(twilio_unavailable())
        .with_priority(1)
        .mount(&providers.twilio)
        .await;
    let herald = fixture
        .start(&[
            ("HERALD__RETRY__IN_PLACE_ATTEMPTS", "1"),
            ("HERALD__RETRY__MAX_ATTEMPTS", "3"),
            ("HERALD__RETRY__REDELIVERY_BASE_DELAY_SECS", "1"),
        ])
        .await;

    fixture
        .topology
        .publish_jobs(&[job("hopeless-1", 1, &["email", "sms"])])
        .await;
    herald
        .wait_for_metric(
            "herald_dead_letters_total",
            &[("channel", "sms"), ("reason", "exhausted")],
            1.0,
            Duration::from_secs(30),
        )
        .await;

    assert_eq!(
        providers.sms_requests().await.len(),
        MAX_ATTEMPTS,
        "one request per delivery"
    );
    assert_eq!(providers.email_requests().await.len(), 1);
    assert_eq!(herald.stop().await, 0);

    let dead = fixture
        .topology
        .drain(&fixture.topology.dead_letter_queue)
        .await;
    assert_eq!(dead.len(), 1);
    let headers = &dead[0].headers;
    assert_eq!(headers["x-herald-reason"], "exhausted");
    assert_eq!(headers["x-herald-channel"], "sms");
    assert_eq!(headers["x-herald-error-code"], "20503");
    assert_eq!(headers["x-herald-job-id"], "hopeless-1");
    assert!(
        headers["x-herald-first-failure-at"] < headers["x-herald-last-failure-at"],
        "{headers:?}"
    );
    assert!(
        !headers.contains_key("x-death"),
        "the broker's bookkeeping is dropped: {headers:?}"
    );
    assert_eventually_waiting(&fixture.topology, 0).await;
    fixture.topology.delete().await;
}

/// A provider that returns 429 with `Retry-After` to its first request and records when
/// every request arrived.
struct ThrottleOnce {
    retry_after_secs: u64,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Respond for ThrottleOnce {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let mut arrivals = self.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        if arrivals.len() == 1 {
            return ResponseTemplate::new(429)
                .insert_header("Retry-After", self.retry_after_secs.to_string().as_str())
                .set_body_json(serde_json::json!({"errors": [{"field": null, "message": "too many requests"}]}));
        }
        ResponseTemplate::new(202).insert_header("X-Message-Id", "after-pause")
    }
}

#[tokio::test]
async fn rate_limit_reply_pauses_every_worker() {
    let fixture = Fixture::new("provider-pause").await;
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(ThrottleOnce {
            retry_after_secs: 3,
            arrivals: arrivals.clone(),
        })
        .mount(&fixture.providers.sendgrid)
        .await;
    let herald = fixture
        .start(&[
            ("HERALD__PROVIDERS__SENDGRID__RATE_LIMIT__PER_SECOND", "20"),
            ("HERALD__PROVIDERS__SENDGRID__RATE_LIMIT__BURST", "1"),
        ])
        .await;

    let jobs: Vec<_> = (0..10)
        .map(|i| job(&format!("paused-{i}"), i, &["email"]))
        .collect();
    fixture.topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            10.0,
            Duration::from_secs(30),
        )
        .await;

    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 11, "ten sends and one retry");
    let throttled_at = arrivals[0];
    let during_pause: Vec<Duration> = arrivals[1..]
        .iter()
        .map(|at| *at - throttled_at)
        .filter(|since| *since < Duration::from_millis(2950))
        .collect();
    assert!(
        during_pause.is_empty(),
        "requests within the 3 s pause: {during_pause:?}"
    );
    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}

#[tokio::test]
async fn long_permit_wait_defers_channel() {
    let fixture = Fixture::new("deferral").await;
    let herald = fixture
        .start(&[
            ("HERALD__PROVIDERS__TWILIO__RATE_LIMIT__PER_SECOND", "2"),
            ("HERALD__PROVIDERS__TWILIO__RATE_LIMIT__BURST", "1"),
            ("HERALD__LIMITS__MAX_PERMIT_WAIT_SECS", "1"),
        ])
        .await;

    let jobs: Vec<_> = (0..12)
        .map(|i| job(&format!("deferred-{i}"), i, &["sms"]))
        .collect();
    fixture.topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            12.0,
            Duration::from_secs(40),
        )
        .await;

    let metrics = herald.metrics().await;
    let deferred = metric_value(
        &metrics,
        "herald_delayed_retries_total",
        &[("channel", "sms"), ("reason", "deferred")],
    );
    assert!(deferred >= 1.0, "no channel was deferred:\n{metrics}");
    assert_eq!(
        fixture.providers.sms_requests().await.len(),
        12,
        "each SMS sent exactly once"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "herald_provider_requests_total",
            &[("provider", "twilio"), ("result", "rate_limited")]
        ),
        0.0,
        "deferral makes no provider request"
    );
    assert_eq!(herald.stop().await, 0);
    assert_eventually_waiting(&fixture.topology, 0).await;
    fixture.topology.delete().await;
}

fn herald_command(args: &[&str], env: &[(String, String)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("failed to run the herald binary")
}

#[tokio::test]
async fn replay_resends_only_the_failed_channel() {
    let fixture = Fixture::new("replay").await;
    let providers = &fixture.providers;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&providers.twilio)
        .await;
    let herald = fixture.start(&[]).await;
    fixture
        .topology
        .publish_jobs(&[job("replay-1", 1, &["email", "sms"])])
        .await;
    fixture.topology.publish(&[b"not json".to_vec()]).await;
    herald
        .wait_for_metric(
            "herald_dead_letters_total",
            &[("channel", "sms"), ("reason", "permanent")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "poison")],
            1.0,
            Duration::from_secs(20),
        )
        .await;

    let env = fixture.topology.env();
    let listed = herald_command(&["dead", "list"], &env);
    assert_eq!(listed.status.code(), Some(0));
    let table = String::from_utf8(listed.stdout).unwrap();
    let permanent = table
        .lines()
        .find(|line| line.starts_with("permanent"))
        .expect(&table);
    assert!(
        permanent.contains("sms") && permanent.contains("twilio") && permanent.contains("21610"),
        "{table}"
    );
    assert!(
        table.lines().any(|line| line.starts_with("invalid_json")),
        "{table}"
    );
    assert!(table.contains("2 messages in"), "{table}");

    let replayed = herald_command(&["dead", "replay", "--reason", "permanent"], &env);
    assert_eq!(
        replayed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("replayed 1 messages"));
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;

    assert_eq!(
        providers.sms_requests().await.len(),
        2,
        "rejected once, then replayed"
    );
    assert_eq!(
        providers.email_requests().await.len(),
        1,
        "the delivered email is not in the dead letter"
    );
    assert_eq!(herald.stop().await, 0);
    let left = fixture
        .topology
        .drain(&fixture.topology.dead_letter_queue)
        .await;
    assert_eq!(left.len(), 1, "the poison job stays");
    assert_eq!(left[0].headers["x-herald-reason"], "invalid_json");
    fixture.topology.delete().await;
}

#[tokio::test]
async fn unknown_channel_dead_letter_keeps_its_content() {
    let fixture = Fixture::new("unknown-channel").await;
    let herald = fixture.start(&[]).await;
    let mut with_fax = job("fax-1", 1, &["email"]);
    with_fax["channels"]["fax"] = serde_json::json!({"to": "+15555550199", "pages": 3});
    fixture.topology.publish_jobs(&[with_fax]).await;
    herald
        .wait_for_metric(
            "herald_dead_letters_total",
            &[("channel", "unknown"), ("reason", "unknown_channel")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(herald.stop().await, 0);

    let dead = fixture
        .topology
        .drain(&fixture.topology.dead_letter_queue)
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers["x-herald-channel"], "fax");
    let body: serde_json::Value = serde_json::from_slice(&dead[0].body).unwrap();
    assert_eq!(
        body["channels"]["fax"]["pages"], 3,
        "the channel's content survives: {body}"
    );
    assert_eq!(fixture.providers.email_requests().await.len(), 1);
    fixture.topology.delete().await;
}

/// A retry that RabbitMQ cannot route is an error, not a silent drop. The job goes back to
/// the work queue unacknowledged, and its provider is not called again while the first
/// claim is held. The work queue's delivery limit then hands it to the dead-letter queue.
#[tokio::test]
async fn unroutable_retry_keeps_the_job() {
    let fixture = Fixture::new("unroutable-retry").await;
    Mock::given(method("POST"))
        .and(path(twilio_path()))
        .respond_with(twilio_unavailable())
        .with_priority(1)
        .mount(&fixture.providers.twilio)
        .await;
    let herald = fixture
        .start(&[
            ("HERALD__RETRY__IN_PLACE_ATTEMPTS", "1"),
            ("HERALD__BROKER__DELIVERY_LIMIT", "3"),
        ])
        .await;

    // Unbinding the delay queues leaves the delay exchange with nowhere to route a retry.
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    for seconds in DELAY_TIERS {
        let queue = fixture.topology.delay_queue(seconds);
        channel
            .queue_unbind(
                queue.as_str().into(),
                fixture.topology.delay_exchange.as_str().into(),
                queue.as_str().into(),
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap();
    }
    connection.close(200, "done".into()).await.unwrap();

    fixture
        .topology
        .publish_jobs(&[job("unroutable-1", 0, &["sms"])])
        .await;
    let failure = herald
        .wait_for_log(Duration::from_secs(20), |line| {
            message(line) == "failed to publish a retry or dead letter; requeueing the job"
        })
        .await;
    let error = failure["error.message"].as_str().unwrap_or_default();
    assert!(error.contains("could not route"), "{error}");

    let deadline = Instant::now() + Duration::from_secs(30);
    while fixture
        .topology
        .depth(&fixture.topology.dead_letter_queue)
        .await
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the job left the work queue without reaching the dead-letter queue:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(herald.stop().await, 0);
    assert_eq!(
        fixture.providers.sms_requests().await.len(),
        1,
        "the SMS was sent again while its first claim stood"
    );
    let dead = fixture
        .topology
        .drain(&fixture.topology.dead_letter_queue)
        .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].headers["x-first-death-reason"], "delivery_limit");
    let body: serde_json::Value = serde_json::from_slice(&dead[0].body).unwrap();
    assert_eq!(body["id"], "unroutable-1");
    fixture.topology.delete().await;
}
