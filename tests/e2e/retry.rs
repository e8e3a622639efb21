//! Retries within one delivery: transient failures, `Retry-After` hints and a stale FCM
//! access token.

use std::time::Duration;

use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

async fn start(topology: &Topology, providers: &Providers) -> RunningHerald {
    let mut env = topology.env();
    env.extend(providers.env());
    env.push(env_pair("HERALD__RETRY__BASE_DELAY_MS", "20"));
    RunningHerald::start(env).await
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let topology = Topology::new("transient");
    let providers = Providers::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{FCM_PROJECT}/messages:send")))
        .respond_with(ResponseTemplate::new(503).set_body_json(serde_json::json!({
            "error": {"code": 503, "message": "The service is currently unavailable.", "status": "UNAVAILABLE"}
        })))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&providers.fcm)
        .await;
    providers.accept_all().await;
    let herald = start(&topology, &providers).await;

    topology
        .publish_jobs(&[job("flaky-push", 0, &["email", "sms", "push"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;

    assert_eq!(providers.email_requests().await.len(), 1);
    assert_eq!(providers.sms_requests().await.len(), 1);
    assert_eq!(
        providers.push_requests().await.len(),
        3,
        "two 503 replies, then success"
    );
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_send_retries_total",
            &[("channel", "push"), ("reason", "transient")]
        ),
        2.0
    );
    assert_eq!(herald.stop().await, 0);
    assert_eq!(topology.depth(&topology.queue).await, 0);
    topology.delete().await;
}

async fn assert_retry_after_honoured(name: &str, retry_after: String) {
    let (topology, providers, herald) = throttle_first_email(name, &retry_after, &[]).await;

    let requests = providers.email_requests().await;
    assert_eq!(requests.len(), 2, "one 429, then success");
    let logs = herald.logs();
    let retry = log_position(
        &logs,
        "attempt failed; retrying",
        &[("error.class", "rate_limited")],
    )
    .expect("the rate-limited attempt is logged");
    let delay_ms = logs[retry]["delay_ms"].as_u64().unwrap();
    assert!(
        delay_ms >= 1000,
        "waited {delay_ms} ms, less than the Retry-After"
    );
    assert_eq!(herald.stop().await, 0);
    topology.delete().await;
}

#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    assert_retry_after_honoured("retry-after-seconds", "2".to_owned()).await;
}

#[tokio::test]
async fn retry_after_date_is_honoured() {
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    assert_retry_after_honoured("retry-after-date", httpdate::fmt_http_date(at)).await;
}

/// Starts Herald with `extra` settings, sends one email job whose first request gets a 429
/// carrying `retry_after`, and waits until the job is delivered.
async fn throttle_first_email(
    name: &str,
    retry_after: &str,
    extra: &[(&str, &str)],
) -> (Topology, Providers, RunningHerald) {
    let topology = Topology::new(name);
    let providers = Providers::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", retry_after)
                .set_body_json(serde_json::json!({"errors": [{"field": null, "message": "too many requests"}]})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&providers.sendgrid)
        .await;
    providers.accept_all().await;
    let mut env = topology.env();
    env.extend(providers.env());
    env.push(env_pair("HERALD__RETRY__BASE_DELAY_MS", "20"));
    env.extend(extra.iter().map(|(key, value)| env_pair(key, value)));
    let herald = RunningHerald::start(env).await;

    topology
        .publish_jobs(&[job(&format!("{name}-1"), 0, &["email"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    (topology, providers, herald)
}

#[tokio::test]
async fn garbage_retry_after_falls_back_to_backoff() {
    let (topology, providers, herald) =
        throttle_first_email("retry-after-garbage", "soon", &[]).await;

    assert_eq!(providers.email_requests().await.len(), 2);
    let logs = herald.logs();
    let retry = log_position(
        &logs,
        "attempt failed; retrying",
        &[("error.class", "rate_limited")],
    )
    .expect("the rate-limited attempt is retried in place");
    let delay_ms = logs[retry]["delay_ms"].as_u64().unwrap();
    assert!(
        delay_ms <= 20,
        "waited {delay_ms} ms, more than the first backoff step"
    );
    assert_eq!(herald.stop().await, 0);
    topology.delete().await;
}

#[tokio::test]
async fn huge_retry_after_is_clamped() {
    const CLAMP_SECS: u64 = 2;
    let clamp = CLAMP_SECS.to_string();
    let (topology, providers, herald) = throttle_first_email(
        "retry-after-huge",
        "999999",
        &[("HERALD__RETRY__MAX_REDELIVERY_RETRY_AFTER_SECS", &clamp)],
    )
    .await;

    // Beyond `retry.max_retry_after_secs` the channel leaves for a delay queue instead of
    // waiting in place, and the provider pauses for the clamp, not for eleven days.
    let requests = providers.email_requests().await;
    assert_eq!(requests.len(), 2, "one 429, then success");
    let logs = herald.logs();
    assert!(
        log_position(&logs, "attempt failed; retrying", &[]).is_none(),
        "a hint beyond retry.max_retry_after_secs was waited out in place"
    );
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_jobs_completed_total",
            &[("outcome", "delivered")]
        ),
        1.0
    );
    assert_eq!(herald.stop().await, 0);
    assert_eq!(topology.depth(&topology.queue).await, 0);
    topology.delete().await;
}

#[tokio::test]
async fn stale_fcm_token_is_reminted_once() {
    let topology = Topology::new("stale-token");
    let providers = Providers::start().await;
    let token = |value: &str| {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": value, "expires_in": 3600, "token_type": "Bearer"
        }))
    };
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("ya29.revoked"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&providers.fcm)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(token("ya29.fresh"))
        .with_priority(2)
        .mount(&providers.fcm)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{FCM_PROJECT}/messages:send")))
        .and(header("authorization", "Bearer ya29.revoked"))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}
        })))
        .mount(&providers.fcm)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{FCM_PROJECT}/messages:send")))
        .and(header("authorization", "Bearer ya29.fresh"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "name": format!("projects/{FCM_PROJECT}/messages/0:2")
        })))
        .mount(&providers.fcm)
        .await;
    let herald = start(&topology, &providers).await;

    topology
        .publish_jobs(&[job("stale-token-1", 0, &["push"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    topology
        .publish_jobs(&[job("stale-token-2", 1, &["push"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            2.0,
            Duration::from_secs(20),
        )
        .await;

    assert_eq!(
        Providers::requests(&providers.fcm, "/token").await.len(),
        2,
        "one mint, one re-mint"
    );
    assert_eq!(
        providers.push_requests().await.len(),
        3,
        "401, retry, then the second job"
    );
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_provider_requests_total",
            &[("provider", "fcm"), ("result", "credentials")]
        ),
        1.0
    );
    assert_eq!(herald.stop().await, 0);
    topology.delete().await;
}
