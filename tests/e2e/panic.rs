//! A job whose handling panics is dead-lettered with reason `handler_panic`, once, and the
//! deliveries prefetched with it are handled as if nothing had happened.
//!
//! Herald runs in this process here, so that a push adapter that panics can take the place
//! of the FCM one. Nothing in the shipped binary panics on demand.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use herald::app::Herald;
use herald::config::Settings;
use herald::providers::{Provider, SendRequest, SendResult};
use herald::shutdown::Shutdown;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

/// Jobs published with the panicking one, each asking only for email.
const INNOCENT_JOBS: u64 = 30;

/// A push adapter whose every send panics.
struct PanickingPush;

#[async_trait]
impl Provider for PanickingPush {
    async fn send(&self, _request: SendRequest<'_>) -> SendResult {
        panic!("this push adapter panics on purpose");
    }
}

#[tokio::test]
async fn panicking_job_is_dead_lettered_alone() {
    let fixture = Fixture::new("panic").await;
    let (topology, providers) = (&fixture.topology, &fixture.providers);

    // Each email takes a while, so the innocent jobs are still unacknowledged, in flight
    // beside the panicking one, when it panics.
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("X-Message-Id", "sg-slow-1")
                .set_delay(Duration::from_millis(500)),
        )
        .mount(&providers.sendgrid)
        .await;

    let mut env = topology.env();
    env.extend(providers.env());
    env.push(env_pair("HERALD__ADMIN__LISTEN", "127.0.0.1:0"));
    create_ledger_database(&env).await;
    let settings = Settings::load_with_env(None, env).expect("the test settings are valid");
    let adapters: HashMap<String, Arc<dyn Provider>> = HashMap::from([(
        "fcm".to_owned(),
        Arc::new(PanickingPush) as Arc<dyn Provider>,
    )]);
    let shutdown = Shutdown::new();
    let herald = Herald::start_with_adapters(settings, adapters, shutdown.clone())
        .await
        .expect("Herald starts");
    wait_until(&herald, "herald consumes", |metrics| {
        metric_value(metrics, "herald_consuming", &[]) == 1.0
    })
    .await;

    let mut jobs: Vec<serde_json::Value> = (0..INNOCENT_JOBS)
        .map(|index| job(&format!("innocent-{index}"), index + 2, &["email"]))
        .collect();
    jobs.push(job("panic-1", 1, &["email", "push"]));
    topology.publish_jobs(&jobs).await;

    let completed = |metrics: &str, outcome: &str| {
        metric_value(
            metrics,
            "herald_jobs_completed_total",
            &[("outcome", outcome)],
        )
    };
    let metrics = wait_until(&herald, "every job is settled", |metrics| {
        completed(metrics, "delivered") >= INNOCENT_JOBS as f64
            && completed(metrics, "failed") >= 1.0
    })
    .await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_dead_letters_total",
            &[("channel", "none"), ("reason", "handler_panic")]
        ),
        1.0,
        "exactly one delivery was dead-lettered for a panic"
    );

    // Nothing is left for redelivery: the panicking delivery was settled, not requeued.
    assert_eventually_waiting(topology, 0).await;
    let dead = topology.drain(&topology.dead_letter_queue).await;
    assert_eq!(dead.len(), 1, "one dead letter, for the panicking job");
    let letter = &dead[0];
    assert_eq!(
        letter.headers.get("x-herald-reason").map(String::as_str),
        Some("handler_panic")
    );
    let body: serde_json::Value = serde_json::from_slice(&letter.body).unwrap();
    assert_eq!(body["id"], "panic-1", "the dead letter is the original job");
    assert!(
        body["channels"]["push"].is_object(),
        "with every channel it asked for"
    );

    // Every innocent job's email was sent exactly once: none was requeued or redelivered
    // because of the panic beside it.
    let mut sends: BTreeMap<String, usize> = BTreeMap::new();
    for request in providers.email_requests().await {
        let mail: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let id = mail["personalizations"][0]["custom_args"]["herald_job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        *sends.entry(id).or_default() += 1;
    }
    for index in 0..INNOCENT_JOBS {
        let id = format!("innocent-{index}");
        assert_eq!(
            sends.get(&id),
            Some(&1),
            "{id} was emailed once; all sends: {sends:?}"
        );
    }
    assert_eq!(
        completed(&herald.metrics().render(), "delivered"),
        INNOCENT_JOBS as f64,
        "each innocent job was handled once"
    );

    shutdown.stop();
    tokio::time::timeout(Duration::from_secs(30), herald.wait())
        .await
        .expect("Herald stops within 30 s");
    topology.delete().await;
}

/// Polls the in-process Herald's metrics until `done` holds, and returns them.
async fn wait_until(herald: &Herald, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = herald.metrics().render();
        if done(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "waited 60 s for: {what}; metrics:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
