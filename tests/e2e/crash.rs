//! Crashes and restarts under load: kill -9 with a thousand jobs in flight, and SIGTERM
//! followed by a restart. Every job ends delivered, and a channel is sent twice only when
//! its send was in flight at the crash, each such resend counted.

use std::collections::HashMap;
use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const LATENCY: Duration = Duration::from_millis(200);
/// Requests each provider may have under way.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// Settings for a fast, crash-tolerant run: limits far above the offered load, and a short
/// reclaim so stale claims are taken over within the test.
pub(crate) fn settings() -> Vec<(String, String)> {
    let mut settings = vec![
        env_pair("HERALD__RETRY__IN_PLACE_ATTEMPTS", "1"),
        env_pair("HERALD__HTTP__REQUEST_TIMEOUT_MS", "3000"),
        env_pair("HERALD__LIMITS__MAX_PERMIT_WAIT_SECS", "1"),
        env_pair("HERALD__LEDGER__SENDING_RECLAIM_SECS", "5"),
        env_pair("HERALD__SHUTDOWN__GRACE_PERIOD_SECS", "20"),
    ];
    for provider in ["SENDGRID", "TWILIO", "FCM"] {
        settings.push(env_pair(
            &format!("HERALD__PROVIDERS__{provider}__RATE_LIMIT__PER_SECOND"),
            "100000",
        ));
        settings.push(env_pair(
            &format!("HERALD__PROVIDERS__{provider}__RATE_LIMIT__BURST"),
            "100000",
        ));
        settings.push(env_pair(
            &format!("HERALD__PROVIDERS__{provider}__MAX_IN_FLIGHT"),
            &MAX_IN_FLIGHT.to_string(),
        ));
    }
    settings
}

pub(crate) async fn slow_providers(fixture: &Fixture) {
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("X-Message-Id", "m")
                .set_delay(LATENCY),
        )
        .with_priority(1)
        .mount(&fixture.providers.sendgrid)
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
        .mount(&fixture.providers.twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{FCM_PROJECT}/messages:send")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"name": "projects/herald-test/messages/1"}))
                .set_delay(LATENCY),
        )
        .with_priority(1)
        .mount(&fixture.providers.fcm)
        .await;
}

/// Counts the requests each recipient received, per channel. Job `i` of `job()` has its
/// own email address, phone number and device token.
pub(crate) async fn requests_per_recipient(providers: &Providers) -> [HashMap<String, usize>; 3] {
    let mut emails = HashMap::new();
    for request in providers.email_requests().await {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let to = body["personalizations"][0]["to"][0]["email"]
            .as_str()
            .unwrap()
            .to_owned();
        *emails.entry(to).or_insert(0) += 1;
    }
    let mut numbers = HashMap::new();
    for request in providers.sms_requests().await {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        *numbers.entry(form["To"].clone()).or_insert(0) += 1;
    }
    let mut tokens = HashMap::new();
    for request in providers.push_requests().await {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let token = body["message"]["token"].as_str().unwrap().to_owned();
        *tokens.entry(token).or_insert(0) += 1;
    }
    [emails, numbers, tokens]
}

/// Waits until every one of `jobs` jobs reached every channel's provider at least once.
pub(crate) async fn wait_all_sent(
    providers: &Providers,
    jobs: usize,
    timeout: Duration,
) -> [HashMap<String, usize>; 3] {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let counts = requests_per_recipient(providers).await;
        if counts
            .iter()
            .all(|per_recipient| per_recipient.len() == jobs)
        {
            return counts;
        }
        let reached: Vec<usize> = counts.iter().map(HashMap::len).collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {timeout:?} only {reached:?} of {jobs} recipients per channel were reached"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Counts the ledger's delivered channels.
pub(crate) async fn delivered_rows(topology: &Topology) -> i64 {
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

/// Waits until the ledger shows `rows` delivered channels.
pub(crate) async fn wait_all_delivered(topology: &Topology, rows: i64, timeout: Duration) {
    let pool = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", topology.database))
        .await
        .expect("the test's ledger database exists");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (delivered,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if delivered == rows {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {timeout:?} the ledger shows {delivered} of {rows} channels delivered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    pool.close().await;
}

pub(crate) fn repeated(counts: &[HashMap<String, usize>; 3]) -> usize {
    counts
        .iter()
        .flat_map(|per_recipient| per_recipient.values())
        .map(|count| count - 1)
        .sum()
}

pub(crate) fn borrowed(settings: &[(String, String)]) -> Vec<(&str, &str)> {
    settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn kill_under_load_loses_nothing() {
    const JOBS: u64 = 1000;
    let fixture = Fixture::new("crash-kill").await;
    slow_providers(&fixture).await;
    let settings = settings();
    let mut first = fixture.start(&borrowed(&settings)).await;

    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("kill-{i}"), i, &["email", "sms", "push"]))
        .collect();
    fixture.topology.publish_jobs(&jobs).await;
    first
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            100.0,
            Duration::from_secs(60),
        )
        .await;
    first.kill();
    first.wait_exit_by_signal(Duration::from_secs(10)).await;
    // A send is in flight from the request until its delivery is recorded in the ledger:
    // only those can be ambiguous after the crash.
    let reached: usize = requests_per_recipient(&fixture.providers)
        .await
        .iter()
        .map(HashMap::len)
        .sum();
    let in_flight_at_kill = reached - delivered_rows(&fixture.topology).await as usize;

    let second = fixture.start(&borrowed(&settings)).await;
    wait_all_delivered(&fixture.topology, 3 * JOBS as i64, Duration::from_secs(180)).await;
    let counts = wait_all_sent(&fixture.providers, JOBS as usize, Duration::from_secs(5)).await;

    let metrics = second.metrics().await;
    let possible = metric_value(&metrics, "herald_possible_duplicates_total", &[]) as usize;
    let resent = repeated(&counts);
    assert!(
        resent <= possible,
        "{resent} channels were sent twice, {possible} counted as possible duplicates"
    );
    assert!(
        resent <= in_flight_at_kill,
        "{resent} channels were sent twice, more than the {in_flight_at_kill} in flight at the crash"
    );
    assert!(
        reached > 0,
        "the crash came before any send; the test proves nothing"
    );
    // Channels that found another delivery holding their claim come back from a
    // delay queue to be skipped; wait for them while Herald still consumes.
    assert_eventually_waiting(&fixture.topology, 0).await;
    assert_eq!(second.stop().await, 0);
    assert_eq!(
        fixture
            .topology
            .depth(&fixture.topology.dead_letter_queue)
            .await,
        0,
        "nothing was dead-lettered"
    );
    fixture.topology.delete().await;
}

#[tokio::test]
async fn sigterm_then_restart_sends_everything_once() {
    const JOBS: u64 = 300;
    let fixture = Fixture::new("crash-term").await;
    slow_providers(&fixture).await;
    let settings = settings();
    let mut first = fixture.start(&borrowed(&settings)).await;

    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("term-{i}"), i, &["email", "sms", "push"]))
        .collect();
    fixture.topology.publish_jobs(&jobs).await;
    first
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            30.0,
            Duration::from_secs(60),
        )
        .await;
    first.terminate();
    assert_eq!(first.wait_exit(Duration::from_secs(40)).await, 0);

    let second = fixture.start(&borrowed(&settings)).await;
    wait_all_delivered(&fixture.topology, 3 * JOBS as i64, Duration::from_secs(120)).await;
    let counts = wait_all_sent(&fixture.providers, JOBS as usize, Duration::from_secs(5)).await;
    assert_eq!(
        repeated(&counts),
        0,
        "a graceful shutdown leaves nothing to send twice"
    );
    // Channels that found another delivery holding their claim come back from a
    // delay queue to be skipped; wait for them while Herald still consumes.
    assert_eventually_waiting(&fixture.topology, 0).await;
    assert_eq!(second.stop().await, 0);
    fixture.topology.delete().await;
}
