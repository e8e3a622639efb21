//! Attempts across a channel's providers: failover when a breaker opens, no failover after
//! a permanent error, deferral when every breaker is open, and unsupported notifications.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::config::{CircuitBreakerConfig, RateLimitConfig};
use crate::job::{ChannelKind, ChannelRequest, Job, JobId, Notification};
use crate::limits::ProviderLimits;
use crate::providers::{Provider, SendResult};
use crate::routes::{CircuitBreaker, CircuitState, Routes, Verdict};

/// An adapter that returns scripted results, then successes, and counts its requests.
struct ScriptedProvider {
    script: Mutex<VecDeque<SendResult>>,
    requests: Arc<Mutex<u32>>,
    supports: bool,
}

#[async_trait]
impl Provider for ScriptedProvider {
    async fn send(&self, _request: SendRequest<'_>) -> SendResult {
        *self.requests.lock().unwrap() += 1;
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Ok(Delivered {
                message_id: None,
                status: 202,
            }))
    }

    fn supports(&self, _notification: &Notification) -> bool {
        self.supports
    }
}

/// A provider under test: its route and its request count.
struct Stub {
    route: Route,
    requests: Arc<Mutex<u32>>,
}

fn stub(name: &str, script: Vec<SendResult>, supports: bool, metrics: &Arc<Metrics>) -> Stub {
    let fast = RateLimitConfig {
        per_second: 1000,
        burst: 1000,
    };
    limited_stub(name, script, supports, fast, metrics)
}

fn limited_stub(
    name: &str,
    script: Vec<SendResult>,
    supports: bool,
    rate: RateLimitConfig,
    metrics: &Arc<Metrics>,
) -> Stub {
    let requests = Arc::new(Mutex::new(0));
    let adapter = ScriptedProvider {
        script: Mutex::new(script.into()),
        requests: requests.clone(),
        supports,
    };
    let provider_name: Arc<str> = Arc::from(name);
    let limits = ProviderLimits::new(
        provider_name.clone(),
        rate,
        8,
        Duration::ZERO,
        metrics.clone(),
    );
    let breaker = CircuitBreaker::new(&CircuitBreakerConfig {
        enabled: true,
        failure_threshold: 2,
        window_secs: 60,
        cool_down_secs: 30,
    });
    Stub {
        route: Route::new(provider_name, Arc::new(adapter), limits, breaker),
        requests,
    }
}

fn unavailable() -> SendResult {
    Err(SendError::transient("service unavailable").with_status(503))
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
        max_retry_after: Duration::from_secs(30),
        max_permit_wait: Duration::from_secs(10),
        max_pause: Duration::from_secs(60),
    }
}

fn email() -> (JobId, Notification) {
    let body = crate::publish::example_job("job-1", 1, &["email".to_owned()]);
    let job = Job::parse(body.to_string().as_bytes(), 65_536).unwrap();
    match job.channels.into_iter().next() {
        Some(ChannelRequest::Known(notification)) => (job.id, notification),
        other => panic!("expected an email notification, got {other:?}"),
    }
}

/// Sends one email through `stubs` in order and returns the outcome with the request count
/// of each stub.
async fn send(stubs: Vec<Stub>, metrics: &Metrics) -> (AttemptsOutcome, Vec<u32>, Routes) {
    let counts: Vec<Arc<Mutex<u32>>> = stubs.iter().map(|stub| stub.requests.clone()).collect();
    let routes = Routes::from_routes([(
        ChannelKind::Email,
        stubs.into_iter().map(|stub| stub.route).collect(),
    )]);
    let (job_id, notification) = email();
    let request = SendRequest {
        job_id: &job_id,
        notification: &notification,
    };
    let channel = routes.get(ChannelKind::Email).unwrap();
    let outcome = send_with_retries(channel, &policy(), request, metrics).await;
    let counts = counts.iter().map(|count| *count.lock().unwrap()).collect();
    (outcome, counts, routes)
}

#[tokio::test]
async fn opened_breaker_fails_over_within_attempts() {
    let metrics = Arc::new(Metrics::new());
    let stubs = vec![
        stub(
            "primary",
            vec![unavailable(), unavailable()],
            true,
            &metrics,
        ),
        stub("secondary", vec![], true, &metrics),
    ];
    let (outcome, counts, routes) = send(stubs, &metrics).await;

    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    assert_eq!(counts, [2, 1]);
    assert_eq!(outcome.attempts, 3);
    assert_eq!(outcome.provider.as_deref(), Some("secondary"));
    let providers: Vec<&str> = outcome.calls.iter().map(|c| c.provider.as_str()).collect();
    assert_eq!(providers, ["primary", "primary", "secondary"]);
    let primary = &routes.providers()["primary"];
    assert_eq!(primary.breaker.state(), CircuitState::Open);
    assert!(
        metrics.render().contains(
            "herald_failovers_total{channel=\"email\",from=\"primary\",to=\"secondary\"} 1"
        )
    );
}

#[tokio::test]
async fn permanent_error_does_not_fail_over() {
    let metrics = Arc::new(Metrics::new());
    let rejected = Err(SendError::permanent("invalid address").with_status(400));
    let stubs = vec![
        stub("primary", vec![rejected], true, &metrics),
        stub("secondary", vec![], true, &metrics),
    ];
    let (outcome, counts, routes) = send(stubs, &metrics).await;

    let error = outcome.result.unwrap_err();
    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(counts, [1, 0]);
    let primary = &routes.providers()["primary"];
    assert_eq!(primary.breaker.state(), CircuitState::Closed);
}

#[tokio::test]
async fn breaker_opened_by_this_delivery_keeps_its_failure() {
    let metrics = Arc::new(Metrics::new());
    let stubs = vec![stub(
        "primary",
        vec![unavailable(), unavailable()],
        true,
        &metrics,
    )];
    let (outcome, counts, _routes) = send(stubs, &metrics).await;

    let error = outcome.result.unwrap_err();
    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.status, Some(503));
    assert!(!is_deferral(&error));
    assert_eq!(counts, [2]);
    assert_eq!(outcome.attempts, 2);
}

#[tokio::test]
async fn every_breaker_open_defers_channel() {
    let metrics = Arc::new(Metrics::new());
    let primary = stub("primary", vec![], true, &metrics);
    let opened = Instant::now();
    primary.route.breaker.record(Verdict::Failing, opened);
    primary.route.breaker.record(Verdict::Failing, opened);
    let (outcome, counts, _routes) = send(vec![primary], &metrics).await;

    let error = outcome.result.unwrap_err();
    assert_eq!(error.code.as_deref(), Some(CIRCUIT_OPEN));
    assert_eq!(error.class, ErrorClass::RateLimited);
    let retry_after = error.retry_after.expect("a deferral carries the wait");
    assert!(retry_after <= Duration::from_secs(30), "{retry_after:?}");
    assert!(retry_after > Duration::from_secs(29), "{retry_after:?}");
    assert!(is_deferral(&error));
    assert_eq!(counts, [0]);
    assert_eq!(outcome.attempts, 0);
}

#[tokio::test]
async fn unsupported_notification_fails_permanently() {
    let metrics = Arc::new(Metrics::new());
    let stubs = vec![stub("primary", vec![], false, &metrics)];
    let (outcome, counts, _routes) = send(stubs, &metrics).await;

    let error = outcome.result.unwrap_err();
    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some(UNSUPPORTED));
    assert_eq!(counts, [0]);
    assert_eq!(outcome.attempts, 0);
    assert_eq!(outcome.provider, None);
}

#[tokio::test]
async fn failover_spends_the_backup_providers_own_permits() {
    let metrics = Arc::new(Metrics::new());
    let primary = stub("primary", vec![], true, &metrics);
    let opened = Instant::now();
    primary.route.breaker.record(Verdict::Failing, opened);
    primary.route.breaker.record(Verdict::Failing, opened);
    let slow = RateLimitConfig {
        per_second: 4,
        burst: 1,
    };
    let backup = limited_stub("backup", vec![], true, slow, &metrics);
    let counts = [primary.requests.clone(), backup.requests.clone()];
    let routes = Routes::from_routes([(ChannelKind::Email, vec![primary.route, backup.route])]);
    let channel = routes.get(ChannelKind::Email).unwrap();
    let (job_id, notification) = email();

    // The primary's permits are plentiful, but its open breaker sends every email to the
    // backup, whose own limit paces them: 5 sends at 4/s after a burst of 1 take 1 s.
    let policy = policy();
    let started = std::time::Instant::now();
    let sends = (0..5).map(|_| {
        let request = SendRequest {
            job_id: &job_id,
            notification: &notification,
        };
        send_with_retries(channel, &policy, request, &metrics)
    });
    let outcomes = futures::future::join_all(sends).await;
    let elapsed = started.elapsed();

    assert!(outcomes.iter().all(|outcome| outcome.result.is_ok()));
    assert_eq!(
        *counts[0].lock().unwrap(),
        0,
        "the open primary got nothing"
    );
    assert_eq!(*counts[1].lock().unwrap(), 5);
    assert!(
        elapsed >= Duration::from_millis(950),
        "5 sends at 4/s with a burst of 1 took only {elapsed:?}"
    );
}
