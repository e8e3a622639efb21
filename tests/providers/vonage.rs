//! Vonage SMS API against a mock that reads only form-encoded bodies. As Vonage does, it
//! replies HTTP 200 with a per-message `status` code, and fails some fixed numbers with the
//! codes Vonage documents for them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use herald::providers::{ErrorClass, Provider, SendResult};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::form_data::urlencoded_fields;
use crate::helpers::{self, JOB_ID};

const SEND_PATH: &str = "/sms/json";
const API_KEY: &str = "a1b2c3d4";
const API_SECRET: &str = "vonage-test-secret";
const FROM: &str = "Herald";
const RECIPIENT: &str = "+447700900000";
const BARRED_NUMBER: &str = "+447700900007";
const DEACTIVATED_NUMBER: &str = "+447700900033";
const MESSAGE_ID: &str = "0C000000217B7F02";

/// A send reply with one message part of `status`.
fn status_reply(status: &str, error_text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "message-count": "1",
        "messages": [{ "status": status, "error-text": error_text }],
    }))
}

/// Replies to send requests as Vonage does. `canned` replaces the reply to a valid
/// request, for codes the mock cannot provoke from the request itself.
struct VonageMock {
    canned: Option<ResponseTemplate>,
}

impl Respond for VonageMock {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        // Vonage reads only form fields here, so any other body lacks every parameter.
        let fields = urlencoded_fields(request).unwrap_or_default();
        for required in ["api_key", "api_secret", "from", "to", "text"] {
            if !fields.contains_key(required) {
                return status_reply("2", &format!("Missing {required}"));
            }
        }
        if fields["api_key"] != API_KEY || fields["api_secret"] != API_SECRET {
            return status_reply("4", "Bad Credentials");
        }
        let to = &fields["to"];
        if !to.chars().all(|c| c.is_ascii_digit()) {
            return status_reply("3", "Invalid to address");
        }
        if let Some(canned) = &self.canned {
            return canned.clone();
        }
        match format!("+{to}").as_str() {
            BARRED_NUMBER => status_reply("7", "Number barred."),
            DEACTIVATED_NUMBER => status_reply("33", "Number de-activated."),
            _ => accepted(to, fields.get("client-ref")),
        }
    }
}

fn accepted(to: &str, client_ref: Option<&String>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "message-count": "1",
        "messages": [{
            "to": to,
            "message-id": MESSAGE_ID,
            "status": "0",
            "remaining-balance": "15.53590000",
            "message-price": "0.03330000",
            "network": "23410",
            "client-ref": client_ref,
        }],
    }))
}

async fn mount_vonage(server: &MockServer, canned: Option<ResponseTemplate>, expected: u64) {
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(VonageMock { canned })
        .expect(expected)
        .mount(server)
        .await;
}

fn vonage(server: &MockServer, overrides: &[(&str, &str)]) -> Arc<dyn Provider> {
    let uri = server.uri();
    let mut all = vec![
        ("PROVIDERS__VONAGE__KIND", "vonage"),
        ("PROVIDERS__VONAGE__BASE_URL", uri.as_str()),
        ("PROVIDERS__VONAGE__API_KEY", API_KEY),
        ("PROVIDERS__VONAGE__API_SECRET", API_SECRET),
        ("PROVIDERS__VONAGE__FROM", FROM),
        ("PROVIDERS__VONAGE__MAX_IN_FLIGHT", "4"),
        ("PROVIDERS__VONAGE__RATE_LIMIT__PER_SECOND", "30"),
        ("PROVIDERS__VONAGE__RATE_LIMIT__BURST", "30"),
        ("CHANNELS__SMS", "vonage"),
    ];
    all.extend_from_slice(overrides);
    helpers::provider("vonage", &all)
}

async fn send_to(server: &MockServer, to: &str) -> SendResult {
    let provider = vonage(server, &[]);
    helpers::send(provider.as_ref(), &helpers::sms(to, "Your code is 123456")).await
}

async fn received_fields(server: &MockServer) -> HashMap<String, String> {
    let requests = server.received_requests().await.unwrap();
    urlencoded_fields(&requests[0]).expect("the request is form-encoded")
}

#[tokio::test]
async fn accepted_message_returns_id() {
    let server = MockServer::start().await;
    mount_vonage(&server, None, 1).await;

    let delivered = send_to(&server, RECIPIENT).await.unwrap();

    assert_eq!(delivered.message_id.as_deref(), Some(MESSAGE_ID));
    assert_eq!(delivered.status, 200);
    let fields = received_fields(&server).await;
    assert_eq!(fields["api_key"], API_KEY);
    assert_eq!(fields["api_secret"], API_SECRET);
    assert_eq!(fields["from"], FROM);
    assert_eq!(fields["to"], "447700900000");
    assert_eq!(fields["text"], "Your code is 123456");
    assert_eq!(fields["client-ref"], JOB_ID);
    assert_eq!(fields.len(), 6, "{fields:?}");
}

#[tokio::test]
async fn non_ascii_text_is_sent_as_unicode() {
    let server = MockServer::start().await;
    mount_vonage(&server, None, 1).await;
    let provider = vonage(&server, &[]);

    helpers::send(provider.as_ref(), &helpers::sms(RECIPIENT, "こんにちは"))
        .await
        .unwrap();

    let fields = received_fields(&server).await;
    assert_eq!(fields["type"], "unicode");
    assert_eq!(fields["text"], "こんにちは");
}

#[tokio::test]
async fn mock_rejects_json_body() {
    let server = MockServer::start().await;
    mount_vonage(&server, None, 1).await;

    let response = reqwest::Client::new()
        .post(format!("{}{SEND_PATH}", server.uri()))
        .json(&json!({"api_key": API_KEY, "api_secret": API_SECRET, "from": FROM, "to": "447700900000", "text": "Hi"}))
        .send()
        .await
        .unwrap();

    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["messages"][0]["status"], "2");
}

#[tokio::test]
async fn barred_number_is_permanent_and_dead() {
    let server = MockServer::start().await;
    mount_vonage(&server, None, 1).await;

    let error = send_to(&server, BARRED_NUMBER).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.code.as_deref(), Some("7"));
    assert_eq!(error.status, Some(200));
}

#[tokio::test]
async fn deactivated_number_is_permanent_and_dead() {
    let server = MockServer::start().await;
    mount_vonage(&server, None, 1).await;

    let error = send_to(&server, DEACTIVATED_NUMBER).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.code.as_deref(), Some("33"));
}

#[tokio::test]
async fn wrong_secret_is_credentials() {
    let server = MockServer::start().await;
    mount_vonage(&server, None, 1).await;
    let provider = vonage(
        &server,
        &[("PROVIDERS__VONAGE__API_SECRET", "stale-secret")],
    );

    let error = helpers::send(provider.as_ref(), &helpers::sms(RECIPIENT, "Hi"))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Credentials);
    assert_eq!(error.code.as_deref(), Some("4"));
    assert!(!error.message.contains("stale-secret"));
}

#[tokio::test]
async fn invalidate_rereads_rotated_secret_file() {
    let server = MockServer::start().await;
    mount_vonage(&server, None, 2).await;
    let mut secret_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret_file, "stale-secret").unwrap();
    let secret_path = secret_file.path().to_str().unwrap().to_owned();
    let provider = vonage(
        &server,
        &[
            ("PROVIDERS__VONAGE__API_SECRET", ""),
            ("PROVIDERS__VONAGE__API_SECRET_FILE", &secret_path),
        ],
    );
    let sms = helpers::sms(RECIPIENT, "Hi");

    let first = helpers::send(provider.as_ref(), &sms).await.unwrap_err();
    std::fs::write(&secret_path, format!("{API_SECRET}\n")).unwrap();
    provider.invalidate_credentials();
    let second = helpers::send(provider.as_ref(), &sms).await;

    assert_eq!(first.class, ErrorClass::Credentials);
    assert_eq!(second.unwrap().message_id.as_deref(), Some(MESSAGE_ID));
}

#[tokio::test]
async fn throttled_is_rate_limited() {
    let server = MockServer::start().await;
    mount_vonage(&server, Some(status_reply("1", "Throttled")), 1).await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.code.as_deref(), Some("1"));
    // Vonage gives no hint for status 1, so the caller's backoff applies.
    assert_eq!(error.retry_after, None);
}

#[tokio::test]
async fn http_429_keeps_retry_after() {
    let server = MockServer::start().await;
    let response = ResponseTemplate::new(429).insert_header("Retry-After", "1");
    mount_vonage(&server, Some(response), 1).await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.retry_after, Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn account_errors_follow_vonage_table() {
    let cases = [
        ("5", "Internal Error", ErrorClass::Transient),
        ("8", "Partner Account Barred", ErrorClass::Permanent),
        ("9", "Partner Quota Violation", ErrorClass::Transient),
        ("15", "Invalid Sender Address", ErrorClass::Permanent),
        ("29", "Non White-listed Destination", ErrorClass::Permanent),
    ];
    for (status, text, class) in cases {
        let server = MockServer::start().await;
        mount_vonage(&server, Some(status_reply(status, text)), 1).await;

        let error = send_to(&server, RECIPIENT).await.unwrap_err();

        assert_eq!(error.class, class, "status {status}");
        assert_eq!(error.code.as_deref(), Some(status));
        assert!(!error.recipient_invalid, "status {status}");
        assert_eq!(error.message, text);
    }
}

#[tokio::test]
async fn server_error_is_transient() {
    let server = MockServer::start().await;
    mount_vonage(&server, Some(ResponseTemplate::new(503)), 1).await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.status, Some(503));
}

#[tokio::test]
async fn slow_reply_times_out_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;
    let provider = vonage(&server, &[("HTTP__REQUEST_TIMEOUT_MS", "200")]);

    let error = helpers::send(provider.as_ref(), &helpers::sms(RECIPIENT, "Hi"))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
}
