//! A job's webhook channel travels from the work queue to a receiver on loopback, signed so
//! that the receiver can verify it, and a retried attempt keeps its `webhook-id`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Returns whether some `v1` signature of `request` is the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under [`SECRET`], as a Standard Webhooks receiver checks it.
fn signature_verifies(request: &wiremock::Request) -> bool {
    let text = |name: &str| request.headers[name].to_str().unwrap().to_owned();
    let key = STANDARD.decode(&SECRET["whsec_".len()..]).unwrap();
    let mut signed = format!("{}.{}.", text("webhook-id"), text("webhook-timestamp")).into_bytes();
    signed.extend_from_slice(&request.body);
    text("webhook-signature").split(' ').any(|entry| {
        let Some(Ok(signature)) = entry.strip_prefix("v1,").map(|s| STANDARD.decode(s)) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(&signed);
        mac.verify_slice(&signature).is_ok()
    })
}

/// Returns the settings that turn the webhook channel on with endpoint `example` at `url`.
fn webhook_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD__CHANNELS__WEBHOOK", "webhook".to_owned()),
        (
            "HERALD__PROVIDERS__WEBHOOK__ALLOW_LOOPBACK",
            "true".to_owned(),
        ),
        (
            "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__EXAMPLE__URL",
            url.to_owned(),
        ),
        (
            "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__EXAMPLE__SIGNING_SECRETS",
            SECRET.to_owned(),
        ),
    ]
}

async fn start_with(fixture: &Fixture, env: &[(&'static str, String)]) -> RunningHerald {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fixture.start(&env).await
}

#[tokio::test]
async fn webhook_job_is_delivered_signed() {
    let fixture = Fixture::new("webhook").await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/example"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hooks/example"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let url = format!("{}/hooks/example", receiver.uri());
    let herald = start_with(&fixture, &webhook_env(&url)).await;

    let job = job("webhook-7", 7, &["email", "webhook"]);
    fixture.topology.publish_jobs(&[job]).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;

    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "one failed attempt, then one delivered");
    let ids: Vec<_> = requests
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids[0], ids[1], "a retry changed the webhook-id");
    for request in &requests {
        assert!(signature_verifies(request), "a request failed verification");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["type"], "user.welcomed");
        assert_eq!(body["data"], serde_json::json!({"user": 7}));
        assert!(body["timestamp"].is_string(), "{body}");
    }
    assert_eq!(fixture.providers.email_requests().await.len(), 1);

    let metrics = herald.metrics().await;
    let sent = [
        ("channel", "webhook"),
        ("provider", "webhook"),
        ("outcome", "delivered"),
    ];
    assert_eq!(
        metric_value(&metrics, "herald_channel_sends_total", &sent),
        1.0
    );
    let logs = herald.log_text();
    assert!(
        logs.contains("endpoint:example"),
        "logs do not name the endpoint"
    );
    assert!(
        !logs.contains("/hooks/example"),
        "logs show the endpoint's URL"
    );
    fixture.topology.delete().await;
}

#[tokio::test]
async fn gone_endpoint_is_disabled() {
    let fixture = Fixture::new("webhook-gone").await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&receiver)
        .await;
    let url = format!("{}/hooks/example", receiver.uri());
    let herald = start_with(&fixture, &webhook_env(&url)).await;

    for (index, id) in ["gone-1", "gone-2"].into_iter().enumerate() {
        fixture
            .topology
            .publish_jobs(&[job(id, index as u64, &["webhook"])])
            .await;
        herald
            .wait_for_metric(
                "herald_jobs_completed_total",
                &[("outcome", "failed")],
                (index + 1) as f64,
                Duration::from_secs(20),
            )
            .await;
    }

    assert_eq!(receiver.received_requests().await.unwrap().len(), 1);
    let dead = fixture
        .topology
        .drain(&fixture.topology.dead_letter_queue)
        .await;
    let codes: Vec<&str> = dead
        .iter()
        .map(|message| message.headers["x-herald-error-code"].as_str())
        .collect();
    assert_eq!(codes, ["endpoint_gone", "endpoint_disabled"]);
    assert!(
        dead.iter()
            .all(|m| m.headers["x-herald-reason"] == "permanent")
    );

    let disabled = [("provider", "webhook"), ("endpoint", "example")];
    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(&metrics, "herald_webhook_endpoint_disabled", &disabled),
        1.0
    );
    let warned = log_position(
        &herald.logs(),
        "webhook endpoint replied 410 Gone; disabled until Herald restarts",
        &[("endpoint", "example"), ("provider", "webhook")],
    );
    assert!(warned.is_some(), "no warning names the disabled endpoint");
    fixture.topology.delete().await;
}
