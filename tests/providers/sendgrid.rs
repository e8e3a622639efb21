//! SendGrid v3 Mail Send against a mock that checks the request and replies as SendGrid does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::providers::{ErrorClass, Provider};
use serde_json::json;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{self, JOB_ID, SENDGRID_API_KEY};

const PATH: &str = "/v3/mail/send";

fn sendgrid(server: &MockServer, overrides: &[(&str, &str)]) -> std::sync::Arc<dyn Provider> {
    let uri = server.uri();
    let mut all = vec![("PROVIDERS__SENDGRID__BASE_URL", uri.as_str())];
    all.extend_from_slice(overrides);
    helpers::provider("sendgrid", &all)
}

fn errors(message: &str, field: Option<&str>) -> serde_json::Value {
    json!({"errors": [{"message": message, "field": field, "help": null}]})
}

/// Mounts a mock that replies to one Mail Send request with `response`.
async fn mount_reply(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(response)
        .expect(1)
        .mount(server)
        .await;
}

async fn send_one(server: &MockServer) -> herald::providers::SendResult {
    let provider = sendgrid(server, &[]);
    let email = helpers::email("bob@example.com", Some("plain"), None);
    helpers::send(provider.as_ref(), &email).await
}

#[tokio::test]
async fn accepted_mail_returns_message_id() {
    let server = MockServer::start().await;
    let expected = json!({
        "personalizations": [{
            "to": [{"email": "bob@example.com"}],
            "custom_args": {"herald_job_id": JOB_ID},
        }],
        "from": {"email": "notifications@example.com", "name": "Herald"},
        "subject": "Your order shipped",
        "content": [
            {"type": "text/plain", "value": "Shipped."},
            {"type": "text/html", "value": "<p>Shipped.</p>"},
        ],
    });
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header(
            "authorization",
            format!("Bearer {SENDGRID_API_KEY}"),
        ))
        .and(header("content-type", "application/json"))
        .and(body_json(expected))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-msg-1"))
        .expect(1)
        .mount(&server)
        .await;

    let provider = sendgrid(&server, &[]);
    let email = helpers::email("bob@example.com", Some("Shipped."), Some("<p>Shipped.</p>"));
    let delivered = helpers::send(provider.as_ref(), &email).await.unwrap();

    assert_eq!(delivered.message_id.as_deref(), Some("sg-msg-1"));
    assert_eq!(delivered.status, 202);
}

#[tokio::test]
async fn html_only_mail_omits_text_and_from_name() {
    let server = MockServer::start().await;
    let expected = json!({
        "personalizations": [{
            "to": [{"email": "bob@example.com"}],
            "custom_args": {"herald_job_id": JOB_ID},
        }],
        "from": {"email": "notifications@example.com"},
        "subject": "Your order shipped",
        "content": [{"type": "text/html", "value": "<p>Shipped.</p>"}],
    });
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(body_json(expected))
        .respond_with(ResponseTemplate::new(202).insert_header("X-Message-Id", "sg-msg-2"))
        .expect(1)
        .mount(&server)
        .await;

    let provider = sendgrid(&server, &[("PROVIDERS__SENDGRID__FROM_NAME", "")]);
    let email = helpers::email("bob@example.com", None, Some("<p>Shipped.</p>"));
    let delivered = helpers::send(provider.as_ref(), &email).await.unwrap();

    assert_eq!(delivered.message_id.as_deref(), Some("sg-msg-2"));
}

#[tokio::test]
async fn sandbox_reply_is_delivered_without_id() {
    let server = MockServer::start().await;
    mount_reply(&server, ResponseTemplate::new(200)).await;

    let delivered = send_one(&server).await.unwrap();

    assert_eq!(delivered.status, 200);
    assert_eq!(delivered.message_id, None);
}

#[tokio::test]
async fn validation_error_is_permanent() {
    let server = MockServer::start().await;
    let body = errors(
        "The personalizations field is required and must have at least one personalization.",
        Some("personalizations"),
    );
    mount_reply(&server, ResponseTemplate::new(400).set_body_json(body)).await;

    let error = send_one(&server).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.status, Some(400));
    assert!(
        error
            .message
            .starts_with("personalizations: The personalizations field")
    );
    assert!(!error.recipient_invalid);
}

#[tokio::test]
async fn unverified_sender_is_permanent() {
    let server = MockServer::start().await;
    let body = errors(
        "The from address does not match a verified Sender Identity.",
        Some("from"),
    );
    mount_reply(&server, ResponseTemplate::new(403).set_body_json(body)).await;

    let error = send_one(&server).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.status, Some(403));
}

#[tokio::test]
async fn payload_too_large_is_permanent() {
    let server = MockServer::start().await;
    mount_reply(
        &server,
        ResponseTemplate::new(413).set_body_json(errors("Payload Too Large", None)),
    )
    .await;

    let error = send_one(&server).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.status, Some(413));
    assert_eq!(error.message, "Payload Too Large");
}

#[tokio::test]
async fn bad_key_is_permanent_unauthorized() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("authorization", "Bearer SG.revoked"))
        .respond_with(ResponseTemplate::new(401).set_body_json(errors(
            "The provided authorization grant is invalid, expired, or revoked",
            None,
        )))
        .expect(1)
        .mount(&server)
        .await;

    let provider = sendgrid(&server, &[("PROVIDERS__SENDGRID__API_KEY", "SG.revoked")]);
    let email = helpers::email("bob@example.com", Some("plain"), None);
    let error = helpers::send(provider.as_ref(), &email).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some("unauthorized"));
    assert!(!error.message.contains("SG.revoked"));
}

#[tokio::test]
async fn rate_limit_waits_for_reset() {
    let server = MockServer::start().await;
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 30;
    let response = ResponseTemplate::new(429)
        .insert_header("X-RateLimit-Limit", "600")
        .insert_header("X-RateLimit-Remaining", "0")
        .insert_header("X-RateLimit-Reset", reset.to_string())
        .set_body_json(errors("too many requests", None));
    mount_reply(&server, response).await;

    let error = send_one(&server).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.status, Some(429));
    let wait = error
        .retry_after
        .expect("retry hint from X-RateLimit-Reset");
    assert!(wait > Duration::from_secs(28), "waits {wait:?}");
    assert!(wait <= Duration::from_secs(30), "waits {wait:?}");
}

#[tokio::test]
async fn rate_limit_without_headers_has_no_hint() {
    let server = MockServer::start().await;
    mount_reply(
        &server,
        ResponseTemplate::new(429).set_body_json(errors("too many requests", None)),
    )
    .await;

    let error = send_one(&server).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.retry_after, None);
}

#[tokio::test]
async fn rate_limit_reads_retry_after_date() {
    let server = MockServer::start().await;
    let response =
        ResponseTemplate::new(429).insert_header("Retry-After", helpers::http_date_in(20));
    mount_reply(&server, response).await;

    let error = send_one(&server).await.unwrap_err();

    let wait = error.retry_after.expect("retry hint from Retry-After");
    assert!(wait > Duration::from_secs(17), "waits {wait:?}");
    assert!(wait <= Duration::from_secs(20), "waits {wait:?}");
}

#[tokio::test]
async fn unavailable_is_transient_with_retry_after() {
    let server = MockServer::start().await;
    mount_reply(
        &server,
        ResponseTemplate::new(503).insert_header("Retry-After", "5"),
    )
    .await;

    let error = send_one(&server).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.status, Some(503));
    assert_eq!(error.retry_after, Some(Duration::from_secs(5)));
}

#[tokio::test]
async fn slow_reply_times_out_as_transient() {
    let server = MockServer::start().await;
    mount_reply(
        &server,
        ResponseTemplate::new(202).set_delay(Duration::from_secs(2)),
    )
    .await;

    let provider = sendgrid(&server, &[("HTTP__REQUEST_TIMEOUT_MS", "200")]);
    let email = helpers::email("bob@example.com", Some("plain"), None);
    let error = helpers::send(provider.as_ref(), &email).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
    assert_eq!(error.status, None);
}
