//! Provider rate limits: sends are paced to the configured rate and burst, and a throttled
//! provider does not hold up jobs for other providers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::*;

#[tokio::test]
async fn throttled_provider_does_not_stall_others() {
    let topology = Topology::new("throttled");
    let providers = Providers::start().await;
    providers.accept_all().await;
    let mut env = topology.env();
    env.extend(providers.env());
    env.push(env_pair(
        "HERALD__PROVIDERS__TWILIO__RATE_LIMIT__PER_SECOND",
        "1",
    ));
    env.push(env_pair(
        "HERALD__PROVIDERS__TWILIO__RATE_LIMIT__BURST",
        "1",
    ));
    env.push(env_pair("HERALD__SHUTDOWN__GRACE_PERIOD_SECS", "1"));
    let herald = RunningHerald::start(env).await;

    let sms_jobs: Vec<_> = (0..200)
        .map(|i| job(&format!("sms-{i}"), i, &["sms"]))
        .collect();
    let email_jobs: Vec<_> = (0..20)
        .map(|i| job(&format!("email-{i}"), i, &["email"]))
        .collect();
    topology.publish_jobs(&sms_jobs).await;
    topology.publish_jobs(&email_jobs).await;
    let published = Instant::now();

    herald
        .wait_for_metric(
            "herald_channel_sends_total",
            &[("channel", "email"), ("outcome", "delivered")],
            20.0,
            Duration::from_secs(10),
        )
        .await;
    let elapsed = published.elapsed();
    let sms_sent = providers.sms_requests().await.len();
    assert_eq!(providers.email_requests().await.len(), 20);
    assert!(
        sms_sent < 30,
        "{sms_sent} SMS sent in {elapsed:?} at 1/s: the SMS limit was not applied"
    );

    assert_eq!(herald.stop().await, 0);
    let sent = providers.sms_requests().await.len() as u32;
    assert_eventually_waiting(&topology, 200 - sent).await;
    topology.delete().await;
}

/// A mock provider that enforces a token bucket itself and returns 429 for a request above
/// the limit, as a provider with that limit would.
struct BucketResponder {
    interval: Duration,
    burst: u32,
    /// GCRA's theoretical arrival time of the next request.
    next_arrival: Arc<Mutex<Option<Instant>>>,
    rejected: Arc<Mutex<u32>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

/// Loopback delivery can shift two requests closer by a few milliseconds than Herald sent
/// them; the mock allows this much for it.
const DELIVERY_SKEW: Duration = Duration::from_millis(50);

impl Respond for BucketResponder {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let now = Instant::now();
        self.arrivals.lock().unwrap().push(now);
        let mut next = self.next_arrival.lock().unwrap();
        let tat = next.unwrap_or(now).max(now);
        let tolerance = self.interval * (self.burst - 1) + DELIVERY_SKEW;
        if tat > now + tolerance {
            *self.rejected.lock().unwrap() += 1;
            return ResponseTemplate::new(429).set_body_json(serde_json::json!({
                "errors": [{"field": null, "message": "too many requests"}]
            }));
        }
        *next = Some(tat + self.interval);
        ResponseTemplate::new(202).insert_header("X-Message-Id", "paced")
    }
}

#[tokio::test]
async fn pacing_respects_rate_and_burst() {
    const SENDS: u32 = 30;
    const RATE: u32 = 10;
    const BURST: u32 = 5;

    let topology = Topology::new("pacing");
    let providers = Providers::start().await;
    let rejected = Arc::new(Mutex::new(0));
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(BucketResponder {
            interval: Duration::from_secs(1) / RATE,
            burst: BURST,
            next_arrival: Arc::new(Mutex::new(None)),
            rejected: rejected.clone(),
            arrivals: arrivals.clone(),
        })
        .mount(&providers.sendgrid)
        .await;
    providers.accept_all().await;
    let mut env = topology.env();
    env.extend(providers.env());
    env.push(env_pair(
        "HERALD__PROVIDERS__SENDGRID__RATE_LIMIT__PER_SECOND",
        &RATE.to_string(),
    ));
    env.push(env_pair(
        "HERALD__PROVIDERS__SENDGRID__RATE_LIMIT__BURST",
        &BURST.to_string(),
    ));
    let herald = RunningHerald::start(env).await;

    let jobs: Vec<_> = (0..u64::from(SENDS))
        .map(|i| job(&format!("paced-{i}"), i, &["email"]))
        .collect();
    topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            f64::from(SENDS),
            Duration::from_secs(30),
        )
        .await;

    assert_eq!(
        *rejected.lock().unwrap(),
        0,
        "the provider saw requests above its limit"
    );
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), SENDS as usize);
    let span = *arrivals.last().unwrap() - arrivals[0];
    let minimum =
        Duration::from_secs_f64(f64::from(SENDS - BURST) / f64::from(RATE)) - DELIVERY_SKEW;
    assert!(
        span >= minimum,
        "{SENDS} sends took {span:?}, less than {minimum:?}"
    );

    assert_eq!(herald.stop().await, 0);
    topology.delete().await;
}
