//! Mailgun Messages API against a mock that accepts only what Mailgun documents: a
//! `multipart/form-data` body with HTTP Basic auth as `api:KEY`, on the domain's path.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use herald::providers::{ErrorClass, Provider, SendResult};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::form_data::{has_basic_auth, multipart_fields};
use crate::helpers::{self, JOB_ID};

const DOMAIN: &str = "mg.example.com";
const API_KEY: &str = "key-0123456789abcdef";
const FROM: &str = "Herald <notifications@mg.example.com>";
const RECIPIENT: &str = "ada@example.com";
/// An address the mock rejects the way Mailgun rejects a malformed `to`.
const REJECTED_RECIPIENT: &str = "bounce@rejected.example";
const MESSAGE_ID: &str = "<20260101120000.1.0123456789ABCDEF@mg.example.com>";

fn messages_path() -> String {
    format!("/v3/{DOMAIN}/messages")
}

fn mailgun_error(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "message": message }))
}

/// Replies to Messages requests as Mailgun does.
struct MailgunMock;

impl Respond for MailgunMock {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !has_basic_auth(request, "api", API_KEY) {
            return ResponseTemplate::new(401)
                .insert_header("content-type", "text/plain; charset=utf-8")
                .set_body_string("Forbidden");
        }
        let Some(fields) = multipart_fields(request) else {
            return mailgun_error(400, "from parameter is missing");
        };
        for required in ["from", "to", "subject"] {
            if !fields.contains_key(required) {
                return mailgun_error(400, &format!("{required} parameter is missing"));
            }
        }
        if !fields.contains_key("text") && !fields.contains_key("html") {
            return mailgun_error(
                400,
                "Need at least one of 'text', 'html' or 'template' parameters specified",
            );
        }
        if fields["to"] == REJECTED_RECIPIENT {
            return mailgun_error(
                400,
                &format!("to parameter is not a valid address: {REJECTED_RECIPIENT}"),
            );
        }
        ResponseTemplate::new(200)
            .set_body_json(json!({ "id": MESSAGE_ID, "message": "Queued. Thank you." }))
    }
}

async fn mount_mailgun(server: &MockServer, expected_requests: u64) {
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(MailgunMock)
        .expect(expected_requests)
        .mount(server)
        .await;
}

async fn mount_reply(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(response)
        .expect(1)
        .mount(server)
        .await;
}

fn mailgun(server: &MockServer, overrides: &[(&str, &str)]) -> Arc<dyn Provider> {
    let uri = server.uri();
    let mut all = vec![
        ("PROVIDERS__MAILGUN__KIND", "mailgun"),
        ("PROVIDERS__MAILGUN__BASE_URL", uri.as_str()),
        ("PROVIDERS__MAILGUN__DOMAIN", DOMAIN),
        ("PROVIDERS__MAILGUN__FROM", FROM),
        ("PROVIDERS__MAILGUN__API_KEY", API_KEY),
        ("PROVIDERS__MAILGUN__MAX_IN_FLIGHT", "4"),
        ("PROVIDERS__MAILGUN__RATE_LIMIT__PER_SECOND", "10"),
        ("PROVIDERS__MAILGUN__RATE_LIMIT__BURST", "10"),
        ("CHANNELS__EMAIL", "mailgun"),
    ];
    all.extend_from_slice(overrides);
    helpers::provider("mailgun", &all)
}

async fn send_to(server: &MockServer, to: &str) -> SendResult {
    let provider = mailgun(server, &[]);
    helpers::send(provider.as_ref(), &helpers::email(to, Some("Hi Ada"), None)).await
}

async fn received_fields(server: &MockServer) -> HashMap<String, String> {
    let requests = server.received_requests().await.unwrap();
    multipart_fields(&requests[0]).expect("the request is multipart/form-data")
}

#[tokio::test]
async fn queued_message_returns_id() {
    let server = MockServer::start().await;
    mount_mailgun(&server, 1).await;
    let provider = mailgun(&server, &[]);
    let email = helpers::email(RECIPIENT, Some("Hi Ada"), Some("<p>Hi Ada</p>"));

    let delivered = helpers::send(provider.as_ref(), &email).await.unwrap();

    assert_eq!(delivered.message_id.as_deref(), Some(MESSAGE_ID));
    assert_eq!(delivered.status, 200);
    let fields = received_fields(&server).await;
    assert_eq!(fields["from"], FROM);
    assert_eq!(fields["to"], RECIPIENT);
    assert_eq!(fields["subject"], "Your order shipped");
    assert_eq!(fields["text"], "Hi Ada");
    assert_eq!(fields["html"], "<p>Hi Ada</p>");
    assert_eq!(fields["v:herald_job_id"], JOB_ID);
    assert_eq!(fields.len(), 6, "{fields:?}");
}

#[tokio::test]
async fn test_mode_adds_testmode_option() {
    let server = MockServer::start().await;
    mount_mailgun(&server, 1).await;
    let provider = mailgun(&server, &[("PROVIDERS__MAILGUN__TEST_MODE", "true")]);

    helpers::send(
        provider.as_ref(),
        &helpers::email(RECIPIENT, Some("Hi"), None),
    )
    .await
    .unwrap();

    assert_eq!(received_fields(&server).await["o:testmode"], "yes");
}

#[tokio::test]
async fn mock_rejects_urlencoded_body() {
    let server = MockServer::start().await;
    mount_mailgun(&server, 1).await;

    let response = reqwest::Client::new()
        .post(format!("{}{}", server.uri(), messages_path()))
        .basic_auth("api", Some(API_KEY))
        .form(&[
            ("from", FROM),
            ("to", RECIPIENT),
            ("subject", "s"),
            ("text", "t"),
        ])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn rejected_address_is_permanent() {
    let server = MockServer::start().await;
    mount_mailgun(&server, 1).await;

    let error = send_to(&server, REJECTED_RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.status, Some(400));
    // Mailgun names no error code, so a bad address cannot be distinguished from other 400s.
    assert!(!error.recipient_invalid);
    assert!(
        !error.message.contains(REJECTED_RECIPIENT),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn wrong_key_is_credentials() {
    let server = MockServer::start().await;
    mount_mailgun(&server, 1).await;
    let provider = mailgun(&server, &[("PROVIDERS__MAILGUN__API_KEY", "key-stale")]);

    let error = helpers::send(
        provider.as_ref(),
        &helpers::email(RECIPIENT, Some("Hi"), None),
    )
    .await
    .unwrap_err();

    assert_eq!(error.class, ErrorClass::Credentials);
    assert_eq!(error.status, Some(401));
    assert_eq!(error.message, "Forbidden");
}

#[tokio::test]
async fn invalidate_rereads_rotated_key_file() {
    let server = MockServer::start().await;
    mount_mailgun(&server, 2).await;
    let mut key_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(key_file, "key-stale").unwrap();
    let key_path = key_file.path().to_str().unwrap().to_owned();
    let provider = mailgun(
        &server,
        &[
            ("PROVIDERS__MAILGUN__API_KEY", ""),
            ("PROVIDERS__MAILGUN__API_KEY_FILE", &key_path),
        ],
    );
    let email = helpers::email(RECIPIENT, Some("Hi"), None);

    let first = helpers::send(provider.as_ref(), &email).await.unwrap_err();
    std::fs::write(&key_path, format!("{API_KEY}\n")).unwrap();
    provider.invalidate_credentials();
    let second = helpers::send(provider.as_ref(), &email).await;

    assert_eq!(first.class, ErrorClass::Credentials);
    assert_eq!(second.unwrap().status, 200);
}

#[tokio::test]
async fn rate_limit_keeps_retry_after() {
    let server = MockServer::start().await;
    let response = mailgun_error(429, "Too many requests").insert_header("Retry-After", "3");
    mount_reply(&server, response).await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.retry_after, Some(Duration::from_secs(3)));
}

#[tokio::test]
async fn fresh_domain_not_found_is_transient() {
    let server = MockServer::start().await;
    mount_reply(
        &server,
        mailgun_error(404, &format!("Domain not found: {DOMAIN}")),
    )
    .await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.status, Some(404));
}

#[tokio::test]
async fn server_error_is_transient() {
    let server = MockServer::start().await;
    mount_reply(&server, mailgun_error(500, "Internal Server Error")).await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.status, Some(500));
}

#[tokio::test]
async fn slow_reply_times_out_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;
    let provider = mailgun(&server, &[("HTTP__REQUEST_TIMEOUT_MS", "200")]);

    let error = helpers::send(
        provider.as_ref(),
        &helpers::email(RECIPIENT, Some("Hi"), None),
    )
    .await
    .unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
}
