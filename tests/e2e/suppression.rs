//! Invalid-recipient feedback: a recipient the provider rejects is recorded in the
//! suppression table and announced on the events exchange, later jobs skip it when
//! skipping is on, and every channel's outcome can be published as an event.

use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// Makes Twilio reject every message with error 21211, as it does for a `To` number that
/// is not a valid phone number.
async fn reject_numbers(providers: &Providers) {
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
        )))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21211,
            "message": "The 'To' number +15555550007 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400
        })))
        .with_priority(1)
        .mount(&providers.twilio)
        .await;
}

/// Returns the SMS recipient of `job`.
fn sms_recipient(job: &serde_json::Value) -> String {
    job["channels"]["sms"]["to"].as_str().unwrap().to_owned()
}

async fn ledger_pool(topology: &Topology) -> sqlx::PgPool {
    sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", topology.database))
        .await
        .expect("the test's ledger database exists")
}

/// Returns (channel, provider, provider_code, count) of every suppression row.
async fn suppressions(topology: &Topology) -> Vec<(String, String, Option<String>, i32)> {
    let pool = ledger_pool(topology).await;
    let rows = sqlx::query_as(
        "SELECT channel, provider, provider_code, count FROM suppressions ORDER BY channel",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

async fn states(topology: &Topology, job_id: &str) -> Vec<(String, String)> {
    let pool = ledger_pool(topology).await;
    let rows =
        sqlx::query_as("SELECT channel, state FROM deliveries WHERE job_id = $1 ORDER BY channel")
            .bind(job_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn invalid_number_is_suppressed_and_announced() {
    let fixture = Fixture::new("suppression-record").await;
    let topology = &fixture.topology;
    reject_numbers(&fixture.providers).await;
    let herald = fixture.start(&[]).await;
    topology.bind_events("recipient.invalid.#").await;

    let invalid = job("invalid-1", 7, &["email", "sms"]);
    topology.publish_jobs(std::slice::from_ref(&invalid)).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "partial")],
            1.0,
            WAIT,
        )
        .await;

    let metrics = herald.metrics().await;
    let published = [("event", "recipient_invalid")];
    assert_eq!(
        metric_value(&metrics, "herald_events_published_total", &published),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, "herald_event_publish_failures_total", &published),
        0.0
    );
    let recorded = [("channel", "sms"), ("provider", "twilio")];
    assert_eq!(
        metric_value(&metrics, "herald_suppressions_recorded_total", &recorded),
        1.0
    );
    assert_eq!(herald.stop().await, 0);

    assert_eq!(
        suppressions(topology).await,
        [(
            "sms".to_owned(),
            "twilio".to_owned(),
            Some("21211".to_owned()),
            1
        )]
    );
    let events = topology.drain(&topology.events_queue).await;
    assert_eq!(events.len(), 1, "one event for the one invalid recipient");
    assert_eq!(events[0].routing_key, "recipient.invalid.sms");
    let event: serde_json::Value = serde_json::from_slice(&events[0].body).unwrap();
    assert_eq!(event["type"], "recipient.invalid");
    assert_eq!(event["job_id"], "invalid-1");
    assert_eq!(event["channel"], "sms");
    assert_eq!(event["provider"], "twilio");
    assert_eq!(event["provider_code"], "21211");
    assert_eq!(event["http_status"], 400);
    assert_eq!(event["recipient"], sms_recipient(&invalid).as_str());
    assert!(
        !event["reason"].as_str().unwrap().contains("5555550007"),
        "the reason is the redacted provider message: {event}"
    );
    assert!(event["occurred_at"].as_str().is_some(), "{event}");
    topology.delete().await;
}

#[tokio::test]
async fn unregistered_token_is_suppressed_and_announced() {
    let fixture = Fixture::new("suppression-push").await;
    let topology = &fixture.topology;
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{FCM_PROJECT}/messages:send")))
        .respond_with(ResponseTemplate::new(404).set_body_json(serde_json::json!({
            "error": {
                "code": 404,
                "message": "Requested entity was not found.",
                "status": "NOT_FOUND",
                "details": [{
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "UNREGISTERED"
                }]
            }
        })))
        .with_priority(1)
        .mount(&fixture.providers.fcm)
        .await;
    let herald = fixture
        .start(&[("HERALD__SUPPRESSION__SKIP", "true")])
        .await;
    topology.bind_events("recipient.invalid.push").await;

    let unregistered = job("unregistered-1", 4, &["push"]);
    topology
        .publish_jobs(std::slice::from_ref(&unregistered))
        .await;
    herald
        .wait_for_metric(
            "herald_suppressions_recorded_total",
            &[("channel", "push"), ("provider", "fcm")],
            1.0,
            WAIT,
        )
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "failed")],
            1.0,
            WAIT,
        )
        .await;
    topology
        .publish_jobs(&[job("unregistered-2", 4, &["push"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "suppressed")],
            1.0,
            WAIT,
        )
        .await;
    assert_eq!(fixture.providers.push_requests().await.len(), 1);
    assert_eq!(herald.stop().await, 0);

    assert_eq!(
        suppressions(topology).await,
        [(
            "push".to_owned(),
            "fcm".to_owned(),
            Some("UNREGISTERED".to_owned()),
            1
        )]
    );
    let events = topology.drain(&topology.events_queue).await;
    assert_eq!(events.len(), 1, "one event, for the first job only");
    let event: serde_json::Value = serde_json::from_slice(&events[0].body).unwrap();
    assert_eq!(event["job_id"], "unregistered-1");
    assert_eq!(event["provider_code"], "UNREGISTERED");
    assert_eq!(event["http_status"], 404);
    let token = unregistered["channels"]["push"]["token"].as_str().unwrap();
    assert_eq!(event["recipient"], token);
    assert_eq!(
        states(topology, "unregistered-2").await,
        pairs(&[("push", "suppressed")])
    );
    topology.delete().await;
}

#[tokio::test]
async fn suppressed_recipient_is_skipped() {
    let fixture = Fixture::new("suppression-skip").await;
    let (topology, providers) = (&fixture.topology, &fixture.providers);
    reject_numbers(providers).await;
    let herald = fixture
        .start(&[("HERALD__SUPPRESSION__SKIP", "true")])
        .await;

    topology.publish_jobs(&[job("skip-1", 7, &["sms"])]).await;
    herald
        .wait_for_metric(
            "herald_suppressions_recorded_total",
            &[("channel", "sms")],
            1.0,
            WAIT,
        )
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "failed")],
            1.0,
            WAIT,
        )
        .await;
    topology
        .publish_jobs(&[job("skip-2", 7, &["email", "sms", "push"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "partial")],
            1.0,
            WAIT,
        )
        .await;

    assert_eq!(
        providers.sms_requests().await.len(),
        1,
        "only the first job reached Twilio"
    );
    assert_eq!(providers.email_requests().await.len(), 1);
    assert_eq!(providers.push_requests().await.len(), 1);
    let metrics = herald.metrics().await;
    let sends = |outcome| {
        metric_value(
            &metrics,
            "herald_channel_sends_total",
            &[("channel", "sms"), ("outcome", outcome)],
        )
    };
    assert_eq!(sends("suppressed"), 1.0);
    assert_eq!(sends("permanent"), 1.0);
    assert_eq!(herald.stop().await, 0);
    assert_eventually_waiting(topology, 0).await;

    assert_eq!(
        states(topology, "skip-2").await,
        pairs(&[
            ("email", "delivered"),
            ("push", "delivered"),
            ("sms", "suppressed")
        ])
    );
    let dead = topology.drain(&topology.dead_letter_queue).await;
    assert_eq!(dead.len(), 1, "only the first job's SMS is dead-lettered");
    assert_eq!(dead[0].headers["x-herald-job-id"], "skip-1");

    let status = herald_status(topology, "skip-2").await;
    let sms_line = status
        .lines()
        .find(|line| line.starts_with("sms"))
        .unwrap_or_else(|| panic!("no sms line in:\n{status}"));
    assert!(sms_line.contains("suppressed"), "{status}");
    topology.delete().await;
}

/// Runs `herald status JOB_ID` against the test's ledger and returns its output.
async fn herald_status(topology: &Topology, job_id: &str) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["status", job_id])
        .env_clear()
        .envs(topology.env())
        .output()
        .await
        .expect("run herald status");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn outcome_events_carry_channel_and_outcome() {
    let fixture = Fixture::new("suppression-outcomes").await;
    let topology = &fixture.topology;
    reject_numbers(&fixture.providers).await;
    let herald = fixture
        .start(&[("HERALD__EVENTS__PUBLISH_OUTCOMES", "true")])
        .await;
    topology.bind_events("#").await;

    topology
        .publish_jobs(&[job("outcomes-1", 3, &["email", "sms", "push"])])
        .await;
    herald
        .wait_for_metric(
            "herald_events_published_total",
            &[("event", "channel_outcome")],
            3.0,
            WAIT,
        )
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "partial")],
            1.0,
            WAIT,
        )
        .await;
    assert_eq!(herald.stop().await, 0);

    let events = topology.drain(&topology.events_queue).await;
    let mut keys: Vec<&str> = events.iter().map(|e| e.routing_key.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "email.delivered",
            "push.delivered",
            "recipient.invalid.sms",
            "sms.permanent"
        ]
    );
    let sms = events
        .iter()
        .find(|event| event.routing_key == "sms.permanent")
        .unwrap();
    let sms: serde_json::Value = serde_json::from_slice(&sms.body).unwrap();
    assert_eq!(sms["type"], "channel.outcome");
    assert_eq!(sms["job_id"], "outcomes-1");
    assert_eq!(sms["outcome"], "permanent");
    assert_eq!(sms["follow_up"], "dead_letter");
    assert_eq!(sms["provider_code"], "21211");
    assert!(sms.get("recipient").is_none(), "{sms}");
    let email = events
        .iter()
        .find(|event| event.routing_key == "email.delivered")
        .unwrap();
    let email: serde_json::Value = serde_json::from_slice(&email.body).unwrap();
    assert_eq!(email["provider"], "sendgrid");
    assert_eq!(email["provider_message_id"], "sg-message-1");
    assert_eq!(email["attempts"], 1);
    topology.delete().await;
}

#[tokio::test]
async fn missing_events_exchange_keeps_herald_unready() {
    let fixture = Fixture::new("events-missing").await;
    let first = fixture.start(&[]).await;
    assert_eq!(first.stop().await, 0);
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(
            fixture.topology.events_exchange.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();

    let mut env = fixture.topology.env();
    env.extend(fixture.providers.env());
    env.push(env_pair("HERALD__BROKER__DECLARE_TOPOLOGY", "false"));
    env.push(env_pair("HERALD__ADMIN__LISTEN", "127.0.0.1:0"));
    env.push(env_pair("HERALD__LOG__FORMAT", "json"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("run")
        .env_clear()
        .envs(env)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut error = None;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .expect("no log line in time")
    {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        assert_ne!(
            message(&value),
            "consuming",
            "consumed without the events exchange"
        );
        if message(&value) == "broker session ended; reconnecting" {
            error = value["error.message"].as_str().map(str::to_owned);
            break;
        }
    }
    let error = error.expect("the session ended");
    assert!(error.contains("events exchange is missing"), "{error}");
    assert!(error.contains("NOT_FOUND"), "{error}");
    child.kill().await.unwrap();
    fixture.topology.delete().await;
}

#[tokio::test]
async fn unconfirmed_event_holds_the_ack() {
    let fixture = Fixture::new("events-unconfirmed").await;
    let topology = &fixture.topology;
    reject_numbers(&fixture.providers).await;
    let settings = [
        ("HERALD__RETRY__IN_PLACE_ATTEMPTS", "1"),
        ("HERALD__HTTP__REQUEST_TIMEOUT_MS", "3000"),
        ("HERALD__LIMITS__MAX_PERMIT_WAIT_SECS", "1"),
        ("HERALD__LEDGER__SENDING_RECLAIM_SECS", "5"),
    ];
    let herald = fixture.start(&settings).await;
    // A publish to a missing exchange fails and closes the publishing channel.
    let connection = broker().await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(
            topology.events_exchange.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();

    let invalid = job("unconfirmed-1", 7, &["sms"]);
    topology.publish_jobs(std::slice::from_ref(&invalid)).await;
    herald
        .wait_for_metric(
            "herald_event_publish_failures_total",
            &[("event", "recipient_invalid")],
            1.0,
            WAIT,
        )
        .await;
    wait_for_consuming_again(&herald).await;
    let ended = herald
        .wait_for_log(WAIT, |line| {
            message(line) == "broker session ended; reconnecting"
        })
        .await;
    let reason = ended["error.message"].as_str().unwrap_or_default();
    assert!(reason.contains("publishing channel was closed"), "{ended}");
    topology.bind_events("recipient.invalid.#").await;

    // The requeued delivery takes the stale claim over, sends again and publishes the event.
    let events = wait_for_events(topology).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].routing_key, "recipient.invalid.sms");
    let event: serde_json::Value = serde_json::from_slice(&events[0].body).unwrap();
    assert_eq!(event["job_id"], "unconfirmed-1");
    assert_eq!(event["recipient"], sms_recipient(&invalid).as_str());
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "failed")],
            1.0,
            WAIT,
        )
        .await;
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_events_published_total",
            &[("event", "recipient_invalid")]
        ),
        1.0
    );
    assert_eq!(
        fixture.providers.sms_requests().await.len(),
        2,
        "the channel is sent again after its claim went stale"
    );
    assert_eq!(herald.stop().await, 0);
    assert_eventually_waiting(topology, 0).await;
    assert_eq!(suppressions(topology).await.len(), 1);
    assert_eq!(
        states(topology, "unconfirmed-1").await,
        pairs(&[("sms", "dead_lettered")])
    );
    topology.delete().await;
}

/// Waits until Herald has started consuming a second time, after a lost session.
async fn wait_for_consuming_again(herald: &RunningHerald) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let logs = herald.logs();
        let consuming = logs.iter().filter(|line| message(line) == "consuming");
        if consuming.count() >= 2 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Herald did not consume again; log:\n{}",
            herald.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the events queue contains an event, then takes every event in it.
async fn wait_for_events(topology: &Topology) -> Vec<Message> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while topology.depth(&topology.events_queue).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event arrived within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    topology.drain(&topology.events_queue).await
}
