//! Webhooks against a receiver on 127.0.0.1 that checks each request the way a Standard
//! Webhooks consumer does: it recomputes the HMAC-SHA256 of `{id}.{timestamp}.{body}` with
//! the secret it shares with Herald, independently of Herald's signing code. Requests to
//! blocked addresses use only addresses that are blocked before any connection, so no test
//! sends traffic beyond loopback.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use herald::config::ProviderConfig;
use herald::job::{JobId, Notification, WebhookMessage, WebhookTarget};
use herald::metrics::Metrics;
use herald::providers::webhook::{self, WebhookSender};
use herald::providers::{ErrorClass, Provider, SendRequest, SendResult};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{self, JOB_ID};

/// Secrets in the `whsec_` form: 24 and 32 random-looking bytes.
const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";
/// The clock's start: 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600;

/// A clock the test moves by hand, in whole seconds.
#[derive(Clone)]
struct TestClock(Arc<AtomicI64>);

impl TestClock {
    fn new() -> TestClock {
        TestClock(Arc::new(AtomicI64::new(START)))
    }

    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    fn as_clock(&self) -> webhook::Clock {
        let seconds = self.0.clone();
        Arc::new(move || {
            DateTime::<Utc>::from_timestamp(seconds.load(Ordering::SeqCst), 0).unwrap()
        })
    }
}

/// Builds the `webhook` provider from layered settings, as Herald does, with `overrides`.
fn sender(overrides: &[(&str, &str)], clock: &TestClock, metrics: &Arc<Metrics>) -> WebhookSender {
    let mut all = vec![("CHANNELS__WEBHOOK", "webhook")];
    all.extend_from_slice(overrides);
    let settings = helpers::settings(&all);
    let ProviderConfig::Webhook(config) = &settings.providers["webhook"] else {
        panic!("providers.webhook is not of kind webhook");
    };
    WebhookSender::new("webhook", config, &settings.http, metrics.clone())
        .expect("webhook provider builds")
        .with_clock(clock.as_clock())
}

/// Builds a sender with endpoint `billing` at `url`, signed with `secrets`, loopback allowed.
fn billing_sender(url: &str, secrets: &str, clock: &TestClock) -> WebhookSender {
    sender(
        &[
            ("PROVIDERS__WEBHOOK__ALLOW_LOOPBACK", "true"),
            ("PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__URL", url),
            (
                "PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__SIGNING_SECRETS",
                secrets,
            ),
            (
                "PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__HEADERS__X-TEAM",
                "billing",
            ),
        ],
        clock,
        &Arc::new(Metrics::new()),
    )
}

fn webhook_to(target: WebhookTarget) -> Notification {
    let payload = json!({"invoice": "in_42", "amount": 1999});
    Notification::Webhook(WebhookMessage {
        target,
        event_type: "invoice.paid".to_owned(),
        occurred_at: None,
        payload: payload.as_object().unwrap().clone(),
    })
}

fn to_endpoint(name: &str) -> Notification {
    webhook_to(WebhookTarget::endpoint("endpoint", name).unwrap())
}

fn to_url(url: &str) -> Notification {
    webhook_to(WebhookTarget::url("url", url).unwrap())
}

async fn send(sender: &WebhookSender, notification: &Notification) -> SendResult {
    let job_id = JobId::parse(JOB_ID).unwrap();
    sender
        .send(SendRequest {
            job_id: &job_id,
            notification,
        })
        .await
}

async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("request has no {name} header"))
        .to_str()
        .unwrap()
}

/// Verifies a request as a receiver holding `secret` does: some `v1` signature in
/// `webhook-signature` must equal the HMAC of `{id}.{timestamp}.{body}`.
fn verifies_with(request: &Request, secret: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        header(request, "webhook-id"),
        header(request, "webhook-timestamp"),
        String::from_utf8(request.body.clone()).unwrap()
    );
    header(request, "webhook-signature")
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|encoded| {
            let Ok(signature) = STANDARD.decode(encoded) else {
                return false;
            };
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(signed.as_bytes());
            mac.verify_slice(&signature).is_ok()
        })
}

fn error_code(result: &SendResult) -> Option<&str> {
    result.as_ref().unwrap_err().code.as_deref()
}

#[tokio::test]
async fn request_is_signed_per_standard_webhooks() {
    let server = receiver(204).await;
    let clock = TestClock::new();
    let sender = billing_sender(&format!("{}/hooks/billing", server.uri()), SECRET_A, &clock);

    let delivered = send(&sender, &to_endpoint("billing")).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.url.path(), "/hooks/billing");
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "x-team"), "billing");
    assert_eq!(header(request, "webhook-timestamp"), START.to_string());
    let expected_id = webhook::webhook_id(
        &JobId::parse(JOB_ID).unwrap(),
        herald::job::ChannelKind::Webhook,
    );
    assert_eq!(header(request, "webhook-id"), expected_id);
    assert_eq!(delivered.message_id.as_deref(), Some(expected_id.as_str()));
    assert!(
        verifies_with(request, SECRET_A),
        "signature does not verify"
    );
    assert!(
        !verifies_with(request, SECRET_B),
        "signature verifies with another secret"
    );

    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "invoice.paid");
    assert_eq!(body["timestamp"], "2026-01-01T00:00:00.000000Z");
    assert_eq!(body["data"], json!({"invoice": "in_42", "amount": 1999}));
}

#[tokio::test]
async fn retry_keeps_id_with_fresh_timestamp() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let clock = TestClock::new();
    let sender = billing_sender(&format!("{}/hook", server.uri()), SECRET_A, &clock);
    let notification = to_endpoint("billing");

    let first = send(&sender, &notification).await;
    assert_eq!(first.unwrap_err().class, ErrorClass::Transient);
    clock.advance(7);
    send(&sender, &notification).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let (first, second) = (&requests[0], &requests[1]);
    assert_eq!(header(first, "webhook-id"), header(second, "webhook-id"));
    assert_eq!(header(first, "webhook-timestamp"), START.to_string());
    assert_eq!(header(second, "webhook-timestamp"), (START + 7).to_string());
    assert_ne!(
        header(first, "webhook-signature"),
        header(second, "webhook-signature")
    );
    assert!(verifies_with(first, SECRET_A));
    assert!(verifies_with(second, SECRET_A));
}

#[tokio::test]
async fn rotation_signs_with_both_secrets() {
    let server = receiver(200).await;
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{SECRET_A}\n{SECRET_B}").unwrap();
    let url = format!("{}/hook", server.uri());
    let sender = sender(
        &[
            ("PROVIDERS__WEBHOOK__ALLOW_LOOPBACK", "true"),
            ("PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__URL", &url),
            (
                "PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__SIGNING_SECRETS_FILE",
                file.path().to_str().unwrap(),
            ),
        ],
        &TestClock::new(),
        &Arc::new(Metrics::new()),
    );

    send(&sender, &to_endpoint("billing")).await.unwrap();

    let request = &server.received_requests().await.unwrap()[0];
    let signatures: Vec<&str> = header(request, "webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert!(signatures.iter().all(|s| s.starts_with("v1,")));
    assert!(
        verifies_with(request, SECRET_A),
        "receiver on the old secret rejects"
    );
    assert!(
        verifies_with(request, SECRET_B),
        "receiver on the new secret rejects"
    );
}

#[tokio::test]
async fn private_addresses_are_blocked_before_connecting() {
    // A receiver on loopback that must never be reached, because loopback is not allowed.
    let server = receiver(200).await;
    let port = server.address().port();
    let localhost = format!("http://localhost:{port}/hook");
    let loopback = format!("http://127.0.0.1:{port}/hook");
    // 2130706433 is 127.0.0.1 as one decimal number, which URL parsing normalizes.
    let decimal = format!("http://2130706433:{port}/hook");
    let cases = [
        ("ten", "http://10.0.0.1/hook"),
        ("metadata", "http://169.254.169.254/latest/meta-data/"),
        ("metadata_v6", "http://[fd00:ec2::254]/"),
        ("mapped", "http://[::ffff:10.0.0.1]/hook"),
        ("localhost", localhost.as_str()),
        ("loopback", loopback.as_str()),
        ("decimal", decimal.as_str()),
    ];
    let mut env = Vec::new();
    for (name, url) in cases {
        env.push((
            format!(
                "PROVIDERS__WEBHOOK__ENDPOINTS__{}__URL",
                name.to_uppercase()
            ),
            url.to_owned(),
        ));
        env.push((
            format!(
                "PROVIDERS__WEBHOOK__ENDPOINTS__{}__SIGNING_SECRETS",
                name.to_uppercase()
            ),
            SECRET_A.to_owned(),
        ));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let sender = sender(&env, &TestClock::new(), &Arc::new(Metrics::new()));

    for (name, _) in cases {
        let result = send(&sender, &to_endpoint(name)).await;
        let error = result.as_ref().unwrap_err();
        assert_eq!(error.class, ErrorClass::Permanent, "{name}: {error}");
        assert_eq!(
            error_code(&result),
            Some(webhook::ADDRESS_BLOCKED),
            "{name}: {error}"
        );
        assert_eq!(error.status, None, "{name}");
    }
    let received = server.received_requests().await.unwrap();
    assert!(
        received.is_empty(),
        "the loopback receiver got {} requests",
        received.len()
    );
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("{}/elsewhere", server.uri())),
        )
        .mount(&server)
        .await;
    Mock::given(path("/elsewhere"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let clock = TestClock::new();
    let sender = billing_sender(&format!("{}/hook", server.uri()), SECRET_A, &clock);

    let result = send(&sender, &to_endpoint("billing")).await;

    let error = result.as_ref().unwrap_err();
    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.status, Some(302));
    assert_eq!(error_code(&result), Some(webhook::REDIRECT));
    assert!(error.message.contains("302"), "{}", error.message);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let server = receiver(410).await;
    let clock = TestClock::new();
    let metrics = Arc::new(Metrics::new());
    let url = format!("{}/hook", server.uri());
    let sender = sender(
        &[
            ("PROVIDERS__WEBHOOK__ALLOW_LOOPBACK", "true"),
            ("PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__URL", &url),
            (
                "PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__SIGNING_SECRETS",
                SECRET_A,
            ),
        ],
        &clock,
        &metrics,
    );
    let disabled_series =
        r#"herald_webhook_endpoint_disabled{endpoint="billing",provider="webhook"}"#;
    assert!(metrics.render().contains(&format!("{disabled_series} 0")));

    let first = send(&sender, &to_endpoint("billing")).await;
    let error = first.as_ref().unwrap_err();
    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.status, Some(410));
    assert_eq!(error_code(&first), Some(webhook::ENDPOINT_GONE));
    assert!(metrics.render().contains(&format!("{disabled_series} 1")));

    let second = send(&sender, &to_endpoint("billing")).await;
    let error = second.as_ref().unwrap_err();
    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error_code(&second), Some(webhook::ENDPOINT_DISABLED));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn too_many_requests_is_rate_limited() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "12"))
        .mount(&server)
        .await;
    let sender = billing_sender(
        &format!("{}/hook", server.uri()),
        SECRET_A,
        &TestClock::new(),
    );

    let error = send(&sender, &to_endpoint("billing")).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.retry_after, Some(Duration::from_secs(12)));
}

#[tokio::test]
async fn job_url_must_match_the_allowlist() {
    let server = receiver(202).await;
    let allowed = format!("{}/herald", server.uri());
    let sender = sender(
        &[
            ("PROVIDERS__WEBHOOK__ALLOW_LOOPBACK", "true"),
            ("PROVIDERS__WEBHOOK__URL_ALLOWLIST", &allowed),
            ("PROVIDERS__WEBHOOK__SIGNING_SECRETS", SECRET_B),
        ],
        &TestClock::new(),
        &Arc::new(Metrics::new()),
    );

    for outside in [
        format!("{}/heraldry", server.uri()),
        format!("{}/other", server.uri()),
        "http://localhost:9/herald".to_owned(),
    ] {
        let result = send(&sender, &to_url(&outside)).await;
        assert_eq!(
            error_code(&result),
            Some(webhook::URL_NOT_ALLOWED),
            "{outside}"
        );
    }
    assert!(server.received_requests().await.unwrap().is_empty());

    send(&sender, &to_url(&format!("{allowed}/tenant/7?x=1")))
        .await
        .unwrap();
    let request = &server.received_requests().await.unwrap()[0];
    assert_eq!(request.url.path(), "/herald/tenant/7");
    assert!(verifies_with(request, SECRET_B));
}

#[tokio::test]
async fn unknown_endpoint_fails_permanently() {
    let server = receiver(200).await;
    let sender = billing_sender(
        &format!("{}/hook", server.uri()),
        SECRET_A,
        &TestClock::new(),
    );

    let result = send(&sender, &to_endpoint("shipping")).await;

    assert_eq!(result.as_ref().unwrap_err().class, ErrorClass::Permanent);
    assert_eq!(error_code(&result), Some(webhook::UNKNOWN_ENDPOINT));
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn timeout_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let url = format!("{}/hook", server.uri());
    let sender = sender(
        &[
            ("PROVIDERS__WEBHOOK__ALLOW_LOOPBACK", "true"),
            ("PROVIDERS__WEBHOOK__REQUEST_TIMEOUT_MS", "200"),
            ("PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__URL", &url),
            (
                "PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__SIGNING_SECRETS",
                SECRET_A,
            ),
        ],
        &TestClock::new(),
        &Arc::new(Metrics::new()),
    );

    let result = send(&sender, &to_endpoint("billing")).await;

    assert_eq!(result.as_ref().unwrap_err().class, ErrorClass::Transient);
    assert_eq!(error_code(&result), Some("timeout"));
}
