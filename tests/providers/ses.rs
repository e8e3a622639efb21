//! Amazon SES v2 `SendEmail` against a mock that verifies each request's Signature
//! Version 4 from the known secret, accepts only a JSON body, and replies with SES's
//! rest-json errors: the type in `x-amzn-ErrorType`, a `{"message"}` body.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herald::providers::{ErrorClass, Provider, SendResult};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{self, JOB_ID};
use crate::sigv4::{self, Expected};

const SEND_PATH: &str = "/v2/email/outbound-emails";
const REGION: &str = "eu-west-1";
const ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLETOKEN";
const EXPIRED_SESSION_TOKEN: &str = "FwoGZXIvYXdzEXPIREDTOKEN";
const FROM: &str = "notifications@example.com";
const RECIPIENT: &str = "ada@example.com";
/// A recipient the mock treats as unverified, as SES does in its sandbox.
const UNVERIFIED_RECIPIENT: &str = "stranger@example.net";
const CONFIGURATION_SET: &str = "herald-events";
const MESSAGE_ID: &str = "0102018c5f0a1b2c-3d4e5f60-7182-93a4-b5c6-d7e8f9a0b1c2-000000";

fn ses_error(status: u16, error_type: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header(
            "x-amzn-ErrorType",
            format!("{error_type}:http://internal.amazon.com/coral/com.amazonaws.sesv2/").as_str(),
        )
        .insert_header("x-amzn-RequestId", "6f2a3c1e-0000-4000-8000-000000000000")
        .set_body_json(json!({ "message": message }))
}

/// Replies to `SendEmail` as SES does. `canned` replaces the reply to a well-signed,
/// well-formed request, for errors the mock cannot provoke from the request itself.
struct SesMock {
    session_token: Option<&'static str>,
    canned: Option<ResponseTemplate>,
}

impl Respond for SesMock {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if self.session_token.is_some()
            && request
                .headers
                .get("x-amz-security-token")
                .and_then(|v| v.to_str().ok())
                == Some(EXPIRED_SESSION_TOKEN)
        {
            return ses_error(
                403,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            );
        }
        let expected = Expected {
            session_token: self.session_token,
            ..expected_keys()
        };
        if let Err(rejection) = sigv4::verify(request, &expected, SystemTime::now()) {
            return ses_error(403, rejection.error_type, &rejection.message);
        }
        let content_type = request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok());
        let body = match (content_type, serde_json::from_slice::<Value>(&request.body)) {
            (Some("application/json"), Ok(body)) => body,
            _ => {
                return ses_error(
                    400,
                    "BadRequestException",
                    "Request body is not valid JSON.",
                );
            }
        };
        if let Err(message) = check_request(&body) {
            return ses_error(400, "BadRequestException", &message);
        }
        if let Some(canned) = &self.canned {
            return canned.clone();
        }
        reply_to(&body)
    }
}

/// The credentials and scope every request must be signed with.
fn expected_keys() -> Expected<'static> {
    Expected {
        access_key_id: ACCESS_KEY_ID,
        secret_access_key: SECRET_ACCESS_KEY,
        session_token: None,
        region: REGION,
        service: "ses",
    }
}

/// Checks the fields `SendEmail` requires for simple content.
fn check_request(body: &Value) -> Result<(), String> {
    let text = |pointer: &str| body.pointer(pointer).and_then(Value::as_str);
    if text("/FromEmailAddress").is_none() {
        return Err("FromEmailAddress is required.".to_owned());
    }
    let recipients = body
        .pointer("/Destination/ToAddresses")
        .and_then(Value::as_array);
    if recipients.is_none_or(|list| list.is_empty()) {
        return Err("Destination must contain at least one address.".to_owned());
    }
    if text("/Content/Simple/Subject/Data").is_none() {
        return Err("Content.Simple.Subject is required.".to_owned());
    }
    if text("/Content/Simple/Body/Text/Data").is_none()
        && text("/Content/Simple/Body/Html/Data").is_none()
    {
        return Err("Content.Simple.Body needs Text or Html.".to_owned());
    }
    Ok(())
}

fn reply_to(body: &Value) -> ResponseTemplate {
    let from = body["FromEmailAddress"].as_str().unwrap_or_default();
    // The address is the whole value, or the part in angle brackets after a display name.
    let address = match from.rsplit_once('<') {
        Some((_, rest)) => rest.trim_end_matches('>'),
        None => from,
    };
    if address != FROM {
        return ses_error(
            400,
            "MessageRejected",
            &format!(
                "Email address is not verified. The following identities failed the check in region EU-WEST-1: {from}"
            ),
        );
    }
    if body["Destination"]["ToAddresses"][0] == UNVERIFIED_RECIPIENT {
        return ses_error(
            400,
            "MessageRejected",
            &format!(
                "Email address is not verified. The following identities failed the check in region EU-WEST-1: {UNVERIFIED_RECIPIENT}"
            ),
        );
    }
    if let Some(name) = body.get("ConfigurationSetName").and_then(Value::as_str)
        && name != CONFIGURATION_SET
    {
        return ses_error(
            404,
            "NotFoundException",
            &format!("Configuration set <{name}> does not exist."),
        );
    }
    ResponseTemplate::new(200)
        .insert_header("x-amzn-RequestId", "6f2a3c1e-0000-4000-8000-000000000001")
        .set_body_json(json!({ "MessageId": MESSAGE_ID }))
}

async fn mount_ses(server: &MockServer, mock: SesMock, expected_requests: u64) {
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(mock)
        .expect(expected_requests)
        .mount(server)
        .await;
}

async fn mount_default(server: &MockServer) {
    let mock = SesMock {
        session_token: None,
        canned: None,
    };
    mount_ses(server, mock, 1).await;
}

/// Mounts a mock that verifies the request, then answers with `canned`.
async fn mount_canned(server: &MockServer, canned: ResponseTemplate) {
    let mock = SesMock {
        session_token: None,
        canned: Some(canned),
    };
    mount_ses(server, mock, 1).await;
}

fn ses(server: &MockServer, overrides: &[(&str, &str)]) -> Arc<dyn Provider> {
    let uri = server.uri();
    let mut all = vec![
        ("PROVIDERS__SES__KIND", "ses"),
        ("PROVIDERS__SES__BASE_URL", uri.as_str()),
        ("PROVIDERS__SES__REGION", REGION),
        ("PROVIDERS__SES__ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("PROVIDERS__SES__SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("PROVIDERS__SES__FROM_EMAIL", FROM),
        ("PROVIDERS__SES__MAX_IN_FLIGHT", "4"),
        ("PROVIDERS__SES__RATE_LIMIT__PER_SECOND", "14"),
        ("PROVIDERS__SES__RATE_LIMIT__BURST", "14"),
        ("CHANNELS__EMAIL", "ses"),
    ];
    all.extend_from_slice(overrides);
    helpers::provider("ses", &all)
}

async fn send_with(provider: &dyn Provider, to: &str) -> SendResult {
    helpers::send(provider, &helpers::email(to, Some("Hi Ada"), None)).await
}

async fn send_to(server: &MockServer, to: &str) -> SendResult {
    send_with(ses(server, &[]).as_ref(), to).await
}

async fn received_body(server: &MockServer) -> Value {
    let requests = server.received_requests().await.unwrap();
    serde_json::from_slice(&requests[0].body).unwrap()
}

#[tokio::test]
async fn sent_email_returns_message_id() {
    let server = MockServer::start().await;
    mount_default(&server).await;
    let provider = ses(&server, &[]);
    let email = helpers::email(RECIPIENT, Some("Hi Ada"), Some("<p>Hi Ada</p>"));

    let delivered = helpers::send(provider.as_ref(), &email).await.unwrap();

    assert_eq!(delivered.message_id.as_deref(), Some(MESSAGE_ID));
    assert_eq!(delivered.status, 200);
    let body = received_body(&server).await;
    assert_eq!(
        body,
        json!({
            "FromEmailAddress": FROM,
            "Destination": { "ToAddresses": [RECIPIENT] },
            "Content": { "Simple": {
                "Subject": { "Data": "Your order shipped", "Charset": "UTF-8" },
                "Body": {
                    "Text": { "Data": "Hi Ada", "Charset": "UTF-8" },
                    "Html": { "Data": "<p>Hi Ada</p>", "Charset": "UTF-8" },
                },
            }},
            "EmailTags": [{ "Name": "herald_job_id", "Value": JOB_ID }],
        })
    );
}

#[tokio::test]
async fn from_name_and_configuration_set_are_sent() {
    let server = MockServer::start().await;
    mount_default(&server).await;
    let provider = ses(
        &server,
        &[
            ("PROVIDERS__SES__FROM_NAME", "Herald, Inc."),
            ("PROVIDERS__SES__CONFIGURATION_SET", CONFIGURATION_SET),
        ],
    );

    send_with(provider.as_ref(), RECIPIENT).await.unwrap();

    let body = received_body(&server).await;
    assert_eq!(
        body["FromEmailAddress"],
        format!("\"Herald, Inc.\" <{FROM}>")
    );
    assert_eq!(body["ConfigurationSetName"], CONFIGURATION_SET);
}

#[tokio::test]
async fn session_token_is_sent_and_signed() {
    let server = MockServer::start().await;
    mount_ses(
        &server,
        SesMock {
            session_token: Some(SESSION_TOKEN),
            canned: None,
        },
        1,
    )
    .await;
    let provider = ses(&server, &[("PROVIDERS__SES__SESSION_TOKEN", SESSION_TOKEN)]);

    let delivered = send_with(provider.as_ref(), RECIPIENT).await.unwrap();

    assert_eq!(delivered.message_id.as_deref(), Some(MESSAGE_ID));
}

#[tokio::test]
async fn wrong_secret_fails_signature_check() {
    let server = MockServer::start().await;
    mount_default(&server).await;
    let provider = ses(
        &server,
        &[("PROVIDERS__SES__SECRET_ACCESS_KEY", "not-the-secret")],
    );

    let error = send_with(provider.as_ref(), RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Credentials);
    assert_eq!(error.status, Some(403));
    assert_eq!(error.code.as_deref(), Some("InvalidSignatureException"));
    assert!(!error.message.contains("not-the-secret"));
}

#[tokio::test]
async fn unknown_access_key_is_credentials() {
    let server = MockServer::start().await;
    mount_default(&server).await;
    let provider = ses(
        &server,
        &[("PROVIDERS__SES__ACCESS_KEY_ID", "AKIAUNKNOWNEXAMPLE00")],
    );

    let error = send_with(provider.as_ref(), RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Credentials);
    assert_eq!(error.code.as_deref(), Some("UnrecognizedClientException"));
}

#[tokio::test]
async fn expired_session_token_is_credentials() {
    let server = MockServer::start().await;
    mount_ses(
        &server,
        SesMock {
            session_token: Some(SESSION_TOKEN),
            canned: None,
        },
        1,
    )
    .await;
    let provider = ses(
        &server,
        &[("PROVIDERS__SES__SESSION_TOKEN", EXPIRED_SESSION_TOKEN)],
    );

    let error = send_with(provider.as_ref(), RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Credentials);
    assert_eq!(error.code.as_deref(), Some("ExpiredTokenException"));
}

#[tokio::test]
async fn invalidate_rereads_rotated_secret_file() {
    let server = MockServer::start().await;
    mount_ses(
        &server,
        SesMock {
            session_token: None,
            canned: None,
        },
        2,
    )
    .await;
    let mut secret_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret_file, "stale-secret").unwrap();
    let secret_path = secret_file.path().to_str().unwrap().to_owned();
    let provider = ses(
        &server,
        &[
            ("PROVIDERS__SES__SECRET_ACCESS_KEY", ""),
            ("PROVIDERS__SES__SECRET_ACCESS_KEY_FILE", &secret_path),
        ],
    );

    let first = send_with(provider.as_ref(), RECIPIENT).await.unwrap_err();
    std::fs::write(&secret_path, format!("{SECRET_ACCESS_KEY}\n")).unwrap();
    provider.invalidate_credentials();
    let second = send_with(provider.as_ref(), RECIPIENT).await;

    assert_eq!(first.class, ErrorClass::Credentials);
    assert_eq!(second.unwrap().status, 200);
}

#[tokio::test]
async fn mock_rejects_signed_form_body() {
    let server = MockServer::start().await;
    mount_default(&server).await;
    let body = format!("FromEmailAddress={FROM}");
    let host = server.address().to_string();
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let content_type = "application/x-www-form-urlencoded";
    let authorization = sigv4::authorization(
        &expected_keys(),
        &amz_date,
        SEND_PATH,
        &[
            ("content-type", content_type),
            ("host", &host),
            ("x-amz-date", &amz_date),
        ],
        body.as_bytes(),
    );

    let response = reqwest::Client::new()
        .post(format!("{}{SEND_PATH}", server.uri()))
        .header("content-type", content_type)
        .header("x-amz-date", &amz_date)
        .header("authorization", authorization)
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["x-amzn-errortype"].to_str().unwrap(),
        "BadRequestException:http://internal.amazon.com/coral/com.amazonaws.sesv2/"
    );
}

#[tokio::test]
async fn unverified_recipient_is_permanent() {
    let server = MockServer::start().await;
    mount_default(&server).await;

    let error = send_to(&server, UNVERIFIED_RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some("MessageRejected"));
    assert_eq!(error.status, Some(400));
    // SES's MessageRejected covers unverified identities and content, not dead addresses.
    assert!(!error.recipient_invalid);
    assert!(
        !error.message.contains(UNVERIFIED_RECIPIENT),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn unknown_configuration_set_is_permanent() {
    let server = MockServer::start().await;
    mount_default(&server).await;
    let provider = ses(
        &server,
        &[("PROVIDERS__SES__CONFIGURATION_SET", "missing-set")],
    );

    let error = send_with(provider.as_ref(), RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.status, Some(404));
    assert_eq!(error.code.as_deref(), Some("NotFoundException"));
}

#[tokio::test]
async fn account_level_stops_are_permanent() {
    let cases = [
        (
            "SendingPausedException",
            "Sending is paused for this account.",
        ),
        (
            "AccountSuspendedException",
            "The account has been suspended.",
        ),
        (
            "MailFromDomainNotVerifiedException",
            "The MAIL FROM domain is not verified.",
        ),
    ];
    for (error_type, message) in cases {
        let server = MockServer::start().await;
        mount_canned(&server, ses_error(400, error_type, message)).await;

        let error = send_to(&server, RECIPIENT).await.unwrap_err();

        assert_eq!(error.class, ErrorClass::Permanent, "{error_type}");
        assert_eq!(error.code.as_deref(), Some(error_type));
        assert_eq!(error.message, message);
    }
}

#[tokio::test]
async fn too_many_requests_is_rate_limited() {
    let server = MockServer::start().await;
    mount_canned(
        &server,
        ses_error(429, "TooManyRequestsException", "Too many requests.")
            .insert_header("Retry-After", "2"),
    )
    .await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.code.as_deref(), Some("TooManyRequestsException"));
    assert_eq!(error.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn sending_quota_is_rate_limited() {
    let server = MockServer::start().await;
    mount_canned(
        &server,
        ses_error(400, "ThrottlingException", "Maximum sending rate exceeded."),
    )
    .await;

    let error = send_to(&server, RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.status, Some(400));
    assert_eq!(error.code.as_deref(), Some("ThrottlingException"));
    assert_eq!(error.retry_after, None);
}

#[tokio::test]
async fn server_error_is_transient() {
    let server = MockServer::start().await;
    mount_canned(
        &server,
        ses_error(503, "ServiceUnavailable", "Service unavailable."),
    )
    .await;

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
    let provider = ses(&server, &[("HTTP__REQUEST_TIMEOUT_MS", "200")]);

    let error = send_with(provider.as_ref(), RECIPIENT).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
}
