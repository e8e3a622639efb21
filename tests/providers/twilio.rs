//! Twilio create-Message against a mock that accepts only what Twilio accepts: a form body
//! with Basic auth. Like Twilio's test credentials, the mock fails some fixed `To` numbers
//! with the error codes Twilio documents for them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use herald::providers::{ErrorClass, Provider, SendResult};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{self, TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM};

const RECIPIENT: &str = "+15558675310";
const INVALID_NUMBER: &str = "+15005550001";
const UNSUBSCRIBED_NUMBER: &str = "+15005550004";
const LANDLINE_NUMBER: &str = "+15005550009";
const MESSAGING_SERVICE_SID: &str = "MG0123456789abcdef0123456789abcdef";

fn messages_path() -> String {
    format!("/2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json")
}

fn twilio_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

/// Replies to create-Message requests as Twilio does.
struct TwilioMock {
    auth_token: String,
}

impl Respond for TwilioMock {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !has_basic_auth(request, TWILIO_ACCOUNT_SID, &self.auth_token) {
            return twilio_error(401, 20003, "Authenticate");
        }
        let Some(form) = form_fields(request) else {
            return twilio_error(400, 21604, "A 'To' phone number is required.");
        };
        let Some(to) = form.get("To") else {
            return twilio_error(400, 21604, "A 'To' phone number is required.");
        };
        if !form.contains_key("Body") {
            return twilio_error(400, 21602, "Message body is required.");
        }
        let status = match (form.get("From"), form.get("MessagingServiceSid")) {
            (Some(_), None) => "queued",
            (None, Some(_)) => "accepted",
            _ => return twilio_error(400, 21603, "A 'From' phone number is required."),
        };

        match to.as_str() {
            INVALID_NUMBER => twilio_error(
                400,
                21211,
                &format!("The 'To' number {to} is not a valid phone number."),
            ),
            UNSUBSCRIBED_NUMBER => {
                twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
            }
            LANDLINE_NUMBER => twilio_error(
                400,
                21614,
                &format!("'To' number {to} is not a valid mobile number"),
            ),
            _ => ResponseTemplate::new(201).set_body_json(json!({
                "sid": "SM0123456789abcdef0123456789abcdef",
                "account_sid": TWILIO_ACCOUNT_SID,
                "to": to,
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form.get("Body"),
                "status": status,
                "num_segments": "1",
                "error_code": null,
                "error_message": null,
            })),
        }
    }
}

fn has_basic_auth(request: &Request, user: &str, password: &str) -> bool {
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    request
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(format!("Basic {expected}").as_str())
}

/// Parses the body as a form, or returns `None` when the request is not form-encoded.
fn form_fields(request: &Request) -> Option<HashMap<String, String>> {
    let content_type = request.headers.get("content-type")?.to_str().ok()?;
    if content_type != "application/x-www-form-urlencoded" {
        return None;
    }
    serde_urlencoded::from_bytes(&request.body).ok()
}

async fn mount_twilio(server: &MockServer, expected_requests: u64) {
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(TwilioMock {
            auth_token: TWILIO_AUTH_TOKEN.to_owned(),
        })
        .expect(expected_requests)
        .mount(server)
        .await;
}

/// Mounts a mock that replies to one create-Message request with `response`.
async fn mount_reply(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(response)
        .expect(1)
        .mount(server)
        .await;
}

fn twilio(server: &MockServer, overrides: &[(&str, &str)]) -> Arc<dyn Provider> {
    let uri = server.uri();
    let mut all = vec![("PROVIDERS__TWILIO__BASE_URL", uri.as_str())];
    all.extend_from_slice(overrides);
    helpers::provider("twilio", &all)
}

async fn send_to(server: &MockServer, to: &str) -> SendResult {
    let provider = twilio(server, &[]);
    helpers::send(provider.as_ref(), &helpers::sms(to, "Your code is 123456")).await
}

#[tokio::test]
async fn created_message_returns_sid() {
    let server = MockServer::start().await;
    mount_twilio(&server, 1).await;

    let delivered = send_to(&server, RECIPIENT).await.unwrap();

    assert_eq!(
        delivered.message_id.as_deref(),
        Some("SM0123456789abcdef0123456789abcdef")
    );
    assert_eq!(delivered.status, 201);
    let requests = server.received_requests().await.unwrap();
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&requests[0].body).unwrap();
    assert_eq!(form.len(), 3);
    assert_eq!(form["To"], RECIPIENT);
    assert_eq!(form["From"], TWILIO_FROM);
    assert_eq!(form["Body"], "Your code is 123456");
}

#[tokio::test]
async fn messaging_service_replaces_from() {
    let server = MockServer::start().await;
    mount_twilio(&server, 1).await;
    let provider = twilio(
        &server,
        &[
            ("PROVIDERS__TWILIO__FROM", ""),
            (
                "PROVIDERS__TWILIO__MESSAGING_SERVICE_SID",
                MESSAGING_SERVICE_SID,
            ),
        ],
    );

    let delivered = helpers::send(provider.as_ref(), &helpers::sms(RECIPIENT, "Hi"))
        .await
        .unwrap();

    assert_eq!(delivered.status, 201);
    let requests = server.received_requests().await.unwrap();
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&requests[0].body).unwrap();
    assert_eq!(form["MessagingServiceSid"], MESSAGING_SERVICE_SID);
    assert!(!form.contains_key("From"));
}

#[tokio::test]
async fn mock_rejects_json_body() {
    let server = MockServer::start().await;
    mount_twilio(&server, 1).await;

    let response = reqwest::Client::new()
        .post(format!("{}{}", server.uri(), messages_path()))
        .basic_auth(TWILIO_ACCOUNT_SID, Some(TWILIO_AUTH_TOKEN))
        .json(&json!({"To": RECIPIENT, "From": TWILIO_FROM, "Body": "Hi"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn invalid_number_is_permanent_and_dead() {
    let server = MockServer::start().await;
    mount_twilio(&server, 1).await;

    let error = send_to(&server, INVALID_NUMBER).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.code.as_deref(), Some("21211"));
    assert_eq!(error.status, Some(400));
    assert!(!error.message.contains(INVALID_NUMBER), "{}", error.message);
}

#[tokio::test]
async fn unsubscribed_number_is_permanent_and_dead() {
    let server = MockServer::start().await;
    mount_twilio(&server, 1).await;

    let error = send_to(&server, UNSUBSCRIBED_NUMBER).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.code.as_deref(), Some("21610"));
}

#[tokio::test]
async fn landline_is_permanent_and_dead() {
    let server = MockServer::start().await;
    mount_twilio(&server, 1).await;

    let error = send_to(&server, LANDLINE_NUMBER).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.code.as_deref(), Some("21614"));
    assert!(
        !error.message.contains(LANDLINE_NUMBER),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn full_sender_queue_is_rate_limited() {
    let server = MockServer::start().await;
    mount_reply(
        &server,
        twilio_error(
            400,
            21611,
            "This 'From' number has exceeded the maximum number of queued messages",
        ),
    )
    .await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.status, Some(400));
    assert_eq!(error.code.as_deref(), Some("21611"));
    assert!(!error.recipient_invalid);
}

#[tokio::test]
async fn concurrency_limit_is_rate_limited() {
    let server = MockServer::start().await;
    let response = twilio_error(429, 20429, "Too Many Requests")
        .insert_header("Retry-After", "2")
        .insert_header("Twilio-Concurrent-Requests", "101");
    mount_reply(&server, response).await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.code.as_deref(), Some("20429"));
    assert_eq!(error.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn wrong_token_is_credentials() {
    let server = MockServer::start().await;
    mount_twilio(&server, 1).await;
    let provider = twilio(&server, &[("PROVIDERS__TWILIO__AUTH_TOKEN", "stale-token")]);

    let error = helpers::send(provider.as_ref(), &helpers::sms(RECIPIENT, "Hi"))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Credentials);
    assert_eq!(error.code.as_deref(), Some("20003"));
    assert_eq!(error.status, Some(401));
    assert!(!error.message.contains("stale-token"));
}

#[tokio::test]
async fn invalidate_rereads_rotated_token_file() {
    let server = MockServer::start().await;
    mount_twilio(&server, 2).await;
    let mut token_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(token_file, "stale-token").unwrap();
    let token_path = token_file.path().to_str().unwrap().to_owned();
    let provider = twilio(
        &server,
        &[
            ("PROVIDERS__TWILIO__AUTH_TOKEN", ""),
            ("PROVIDERS__TWILIO__AUTH_TOKEN_FILE", &token_path),
        ],
    );
    let sms = helpers::sms(RECIPIENT, "Hi");

    let first = helpers::send(provider.as_ref(), &sms).await.unwrap_err();
    std::fs::write(&token_path, format!("{TWILIO_AUTH_TOKEN}\n")).unwrap();
    provider.invalidate_credentials();
    let second = helpers::send(provider.as_ref(), &sms).await;

    assert_eq!(first.class, ErrorClass::Credentials);
    assert_eq!(second.unwrap().status, 201);
}

#[tokio::test]
async fn missing_resource_is_permanent() {
    let server = MockServer::start().await;
    let message = format!(
        "The requested resource /2010-04-01/Accounts/{TWILIO_ACCOUNT_SID}/Messages.json was not found"
    );
    mount_reply(&server, twilio_error(404, 20404, &message)).await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(!error.recipient_invalid);
    assert!(
        !error.message.contains(TWILIO_ACCOUNT_SID),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn server_error_is_transient_with_date() {
    let server = MockServer::start().await;
    let response =
        ResponseTemplate::new(503).insert_header("Retry-After", helpers::http_date_in(10));
    mount_reply(&server, response).await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.status, Some(503));
    let wait = error.retry_after.expect("retry hint from Retry-After");
    assert!(wait > Duration::from_secs(7), "waits {wait:?}");
    assert!(wait <= Duration::from_secs(10), "waits {wait:?}");
}

#[tokio::test]
async fn slow_reply_times_out_as_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(ResponseTemplate::new(201).set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;
    let provider = twilio(&server, &[("HTTP__REQUEST_TIMEOUT_MS", "200")]);

    let error = helpers::send(provider.as_ref(), &helpers::sms(RECIPIENT, "Hi"))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
    assert!(
        !error.message.contains(TWILIO_ACCOUNT_SID),
        "{}",
        error.message
    );
}
