//! FCM HTTP v1 against two mocks on one server: an OAuth2 token endpoint that verifies the
//! service account's signed assertion, and `messages:send`, which accepts only the access
//! tokens that endpoint issued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::providers::{ErrorClass, Provider, SendResult};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers;

const SEND_PATH: &str = "/v1/projects/herald-test/messages:send";
const TOKEN_PATH: &str = "/token";
const CLIENT_EMAIL: &str = "herald-test@herald-test.iam.gserviceaccount.com";
const AUDIENCE: &str = "https://oauth2.googleapis.com/token";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const DEVICE_TOKEN: &str = "fMEQ0nUJRk2m1Pa_5Tx9Gy:APA91bHtestdevicetoken";
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// The OAuth2 token endpoint. It checks the JWT-bearer grant, verifies the assertion's
/// RS256 signature with the fixture's public key and its claims, and issues numbered
/// tokens: `ya29.test-1`, `ya29.test-2`, …
struct TokenEndpoint {
    issued: Arc<Mutex<Vec<String>>>,
    expires_in: u64,
    delay: Duration,
}

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if let Err(reason) = check_grant(request) {
            return ResponseTemplate::new(400)
                .set_body_json(json!({"error": "invalid_grant", "error_description": reason}));
        }
        let mut issued = self.issued.lock().unwrap();
        let token = format!("ya29.test-{}", issued.len() + 1);
        issued.push(token.clone());
        ResponseTemplate::new(200)
            .set_body_json(json!({
                "access_token": token,
                "expires_in": self.expires_in,
                "token_type": "Bearer",
            }))
            .set_delay(self.delay)
    }
}

fn check_grant(request: &Request) -> Result<(), String> {
    let content_type = request
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/x-www-form-urlencoded") {
        return Err(format!("unexpected content type {content_type:?}"));
    }
    let form: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&request.body).map_err(|error| error.to_string())?;
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .ok_or(format!("missing {name}"))
    };
    if field("grant_type")? != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return Err("unsupported grant_type".into());
    }

    let public_key = std::fs::read(helpers::fixture("fcm-service-account.pub.pem")).unwrap();
    let key = DecodingKey::from_rsa_pem(&public_key).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let claims = jsonwebtoken::decode::<Value>(&field("assertion")?, &key, &validation)
        .map_err(|error| format!("Invalid JWT: {error}"))?
        .claims;
    if claims["scope"] != SCOPE {
        return Err(format!("unexpected scope {}", claims["scope"]));
    }
    let lifetime = claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0);
    if lifetime != 3600 {
        return Err(format!("assertion lifetime is {lifetime} s"));
    }
    Ok(())
}

/// `messages:send`, accepting only tokens the token endpoint issued and not revoked.
struct SendEndpoint {
    issued: Arc<Mutex<Vec<String>>>,
    revoked: Vec<String>,
}

impl Respond for SendEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let bearer = request
            .headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        let issued = self.issued.lock().unwrap().contains(&bearer.to_owned());
        if !issued || self.revoked.iter().any(|token| token == bearer) {
            return google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                json!([]),
            );
        }
        ResponseTemplate::new(200)
            .set_body_json(json!({"name": "projects/herald-test/messages/0:1712345678%abcdef"}))
    }
}

fn google_error(status: u16, name: &str, message: &str, details: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"code": status, "message": message, "status": name, "details": details},
    }))
}

fn fcm_error(status: u16, name: &str, error_code: &str, message: &str) -> ResponseTemplate {
    let details = json!([{"@type": FCM_ERROR_TYPE, "errorCode": error_code}]);
    google_error(status, name, message, details)
}

/// A mock FCM: the token endpoint and `messages:send` on one server.
struct Fcm {
    server: MockServer,
    issued: Arc<Mutex<Vec<String>>>,
}

impl Fcm {
    async fn start() -> Fcm {
        let fcm = Fcm {
            server: MockServer::start().await,
            issued: Arc::default(),
        };
        fcm.mount_token_endpoint(3600, Duration::ZERO).await;
        fcm
    }

    async fn mount_token_endpoint(&self, expires_in: u64, delay: Duration) {
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(TokenEndpoint {
                issued: self.issued.clone(),
                expires_in,
                delay,
            })
            .mount(&self.server)
            .await;
    }

    /// Mounts `messages:send`, rejecting the tokens in `revoked` as FCM rejects a stale one.
    async fn mount_send(&self, revoked: &[&str]) {
        Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .and(header("content-type", "application/json"))
            .respond_with(SendEndpoint {
                issued: self.issued.clone(),
                revoked: revoked.iter().map(|token| (*token).to_owned()).collect(),
            })
            .mount(&self.server)
            .await;
    }

    /// Mounts `messages:send` replying with `response` to any request.
    async fn mount_reply(&self, response: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path(SEND_PATH))
            .respond_with(response)
            .mount(&self.server)
            .await;
    }

    fn provider(&self, overrides: &[(&str, &str)]) -> Arc<dyn Provider> {
        let uri = self.server.uri();
        let token_url = format!("{uri}{TOKEN_PATH}");
        let mut all = vec![
            ("PROVIDERS__FCM__BASE_URL", uri.as_str()),
            ("PROVIDERS__FCM__TOKEN_URL", token_url.as_str()),
        ];
        all.extend_from_slice(overrides);
        helpers::provider("fcm", &all)
    }

    async fn requests_to(&self, request_path: &str) -> Vec<Request> {
        let requests = self.server.received_requests().await.unwrap();
        requests
            .into_iter()
            .filter(|request| request.url.path() == request_path)
            .collect()
    }

    async fn token_calls(&self) -> usize {
        self.requests_to(TOKEN_PATH).await.len()
    }
}

fn notification() -> herald::job::Notification {
    helpers::push(
        DEVICE_TOKEN,
        Some("Order shipped"),
        Some("It arrives Tuesday."),
        &[("order_id", "42")],
    )
}

async fn send_with_reply(response: ResponseTemplate) -> SendResult {
    let fcm = Fcm::start().await;
    fcm.mount_reply(response).await;
    let provider = fcm.provider(&[]);
    helpers::send(provider.as_ref(), &notification()).await
}

#[tokio::test]
async fn sent_message_returns_name() {
    let fcm = Fcm::start().await;
    fcm.mount_send(&[]).await;
    let provider = fcm.provider(&[]);

    let delivered = helpers::send(provider.as_ref(), &notification())
        .await
        .unwrap();

    assert_eq!(
        delivered.message_id.as_deref(),
        Some("projects/herald-test/messages/0:1712345678%abcdef")
    );
    assert_eq!(delivered.status, 200);
    let sends = fcm.requests_to(SEND_PATH).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].headers["authorization"], "Bearer ya29.test-1");
    let body: Value = serde_json::from_slice(&sends[0].body).unwrap();
    let key = collapse_key();
    let expected = json!({"message": {
        "token": DEVICE_TOKEN,
        "notification": {"title": "Order shipped", "body": "It arrives Tuesday."},
        "data": {"order_id": "42"},
        "android": {"collapse_key": key},
        "apns": {"headers": {"apns-collapse-id": key}},
        "webpush": {"headers": {"Topic": key}},
    }});
    assert_eq!(body, expected);
}

/// The collapse key FCM receives for job [`helpers::JOB_ID`]'s push channel.
fn collapse_key() -> String {
    let job_id = herald::job::JobId::parse(helpers::JOB_ID).unwrap();
    herald::providers::dedupe::collapse_key(&job_id, herald::job::ChannelKind::Push)
}

#[tokio::test]
async fn data_only_message_omits_notification() {
    let fcm = Fcm::start().await;
    fcm.mount_send(&[]).await;
    let provider = fcm.provider(&[]);
    let push = helpers::push(DEVICE_TOKEN, None, None, &[("sync", "1")]);

    helpers::send(provider.as_ref(), &push).await.unwrap();

    let sends = fcm.requests_to(SEND_PATH).await;
    let body: Value = serde_json::from_slice(&sends[0].body).unwrap();
    let key = collapse_key();
    assert_eq!(
        body,
        json!({"message": {
            "token": DEVICE_TOKEN,
            "data": {"sync": "1"},
            "android": {"collapse_key": key},
            "apns": {"headers": {"apns-collapse-id": key}},
            "webpush": {"headers": {"Topic": key}},
        }})
    );
}

#[tokio::test]
async fn configured_project_overrides_key_file() {
    let fcm = Fcm::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/projects/other-project/messages:send"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": "projects/other-project/messages/1"})),
        )
        .expect(1)
        .mount(&fcm.server)
        .await;
    let provider = fcm.provider(&[("PROVIDERS__FCM__PROJECT_ID", "other-project")]);

    let delivered = helpers::send(provider.as_ref(), &notification())
        .await
        .unwrap();

    assert_eq!(
        delivered.message_id.as_deref(),
        Some("projects/other-project/messages/1")
    );
}

#[tokio::test]
async fn fifty_concurrent_sends_mint_once() {
    let fcm = Fcm {
        server: MockServer::start().await,
        issued: Arc::default(),
    };
    // A slow token reply keeps every send waiting on the same mint.
    fcm.mount_token_endpoint(3600, Duration::from_millis(200))
        .await;
    fcm.mount_send(&[]).await;
    let provider = fcm.provider(&[]);
    let push = notification();

    let sends = (0..50).map(|_| helpers::send(provider.as_ref(), &push));
    let results = futures::future::join_all(sends).await;

    let failures: Vec<_> = results
        .iter()
        .filter_map(|result| result.as_ref().err())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(fcm.token_calls().await, 1);
    assert_eq!(fcm.requests_to(SEND_PATH).await.len(), 50);
}

#[tokio::test]
async fn token_is_reminted_before_expiry() {
    let fcm = Fcm {
        server: MockServer::start().await,
        issued: Arc::default(),
    };
    // A 2 s token with a 1 s margin is due for refresh 1 s after it was requested.
    fcm.mount_token_endpoint(2, Duration::ZERO).await;
    fcm.mount_send(&[]).await;
    let provider = fcm.provider(&[("PROVIDERS__FCM__TOKEN_REFRESH_MARGIN_SECS", "1")]);
    let push = notification();

    helpers::send(provider.as_ref(), &push).await.unwrap();
    helpers::send(provider.as_ref(), &push).await.unwrap();
    let calls_before_refresh = fcm.token_calls().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    helpers::send(provider.as_ref(), &push).await.unwrap();

    assert_eq!(calls_before_refresh, 1);
    assert_eq!(fcm.token_calls().await, 2);
    let sends = fcm.requests_to(SEND_PATH).await;
    assert_eq!(sends[2].headers["authorization"], "Bearer ya29.test-2");
}

#[tokio::test]
async fn stale_token_is_credentials_then_reminted() {
    let fcm = Fcm::start().await;
    fcm.mount_send(&["ya29.test-1"]).await;
    let provider = fcm.provider(&[]);
    let push = notification();

    let first = helpers::send(provider.as_ref(), &push).await.unwrap_err();
    provider.invalidate_credentials();
    let second = helpers::send(provider.as_ref(), &push).await;

    assert_eq!(first.class, ErrorClass::Credentials);
    assert_eq!(first.status, Some(401));
    assert_eq!(first.code.as_deref(), Some("UNAUTHENTICATED"));
    assert!(!first.message.contains("ya29"), "{}", first.message);
    assert_eq!(second.unwrap().status, 200);
    assert_eq!(fcm.token_calls().await, 2);
}

#[tokio::test]
async fn third_party_auth_error_is_permanent() {
    let response = fcm_error(
        401,
        "UNAUTHENTICATED",
        "THIRD_PARTY_AUTH_ERROR",
        "Auth error from APNS or Web Push Service",
    );

    let error = send_with_reply(response).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some("THIRD_PARTY_AUTH_ERROR"));
    assert!(!error.recipient_invalid);
}

#[tokio::test]
async fn unregistered_token_is_dead() {
    let response = fcm_error(
        404,
        "NOT_FOUND",
        "UNREGISTERED",
        "Requested entity was not found.",
    );

    let error = send_with_reply(response).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.code.as_deref(), Some("UNREGISTERED"));
}

#[tokio::test]
async fn invalid_registration_token_is_dead() {
    let response = fcm_error(
        400,
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    );

    let error = send_with_reply(response).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
}

#[tokio::test]
async fn invalid_data_keeps_token() {
    let message = "Invalid value at 'message.data[0].value' (TYPE_STRING), 12";
    let details = json!([{
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.data[0].value", "description": message}],
    }]);

    let error = send_with_reply(google_error(400, "INVALID_ARGUMENT", message, details))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(!error.recipient_invalid);
    assert_eq!(error.code.as_deref(), Some("INVALID_ARGUMENT"));
}

#[tokio::test]
async fn sender_mismatch_is_dead() {
    let response = fcm_error(
        403,
        "PERMISSION_DENIED",
        "SENDER_ID_MISMATCH",
        "SenderId mismatch",
    );

    let error = send_with_reply(response).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
}

#[tokio::test]
async fn quota_exceeded_is_rate_limited() {
    let response = fcm_error(
        429,
        "RESOURCE_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "Quota exceeded for quota metric 'Send requests'",
    )
    .insert_header("Retry-After", "60");

    let error = send_with_reply(response).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.retry_after, Some(Duration::from_secs(60)));
    assert_eq!(error.code.as_deref(), Some("QUOTA_EXCEEDED"));
}

#[tokio::test]
async fn unavailable_is_transient_with_date() {
    let response = fcm_error(
        503,
        "UNAVAILABLE",
        "UNAVAILABLE",
        "The service is currently unavailable.",
    )
    .insert_header("Retry-After", helpers::http_date_in(30));

    let error = send_with_reply(response).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    let wait = error.retry_after.expect("retry hint from Retry-After");
    assert!(wait > Duration::from_secs(27), "waits {wait:?}");
    assert!(wait <= Duration::from_secs(30), "waits {wait:?}");
}

#[tokio::test]
async fn internal_error_is_transient() {
    let response = fcm_error(500, "INTERNAL", "INTERNAL", "Internal error encountered.");

    let error = send_with_reply(response).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.retry_after, None);
}

#[tokio::test]
async fn slow_reply_times_out_as_transient() {
    let fcm = Fcm::start().await;
    fcm.mount_reply(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .await;
    let provider = fcm.provider(&[("HTTP__REQUEST_TIMEOUT_MS", "300")]);

    let error = helpers::send(provider.as_ref(), &notification())
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
    assert!(!error.message.contains(DEVICE_TOKEN), "{}", error.message);
}

#[tokio::test]
async fn rejected_grant_is_permanent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
        ))
        .mount(&server)
        .await;
    let fcm = Fcm {
        server,
        issued: Arc::default(),
    };
    let provider = fcm.provider(&[]);

    let error = helpers::send(provider.as_ref(), &notification())
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some("token_invalid_grant"));
    assert!(!error.message.contains("eyJ"), "{}", error.message);
    assert!(fcm.requests_to(SEND_PATH).await.is_empty());
}

#[tokio::test]
async fn token_endpoint_outage_is_transient() {
    let server = MockServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(move |_: &Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(503)
        })
        .mount(&server)
        .await;
    let fcm = Fcm {
        server,
        issued: Arc::default(),
    };
    let provider = fcm.provider(&[]);

    let error = helpers::send(provider.as_ref(), &notification())
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("token_http_503"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn key_file_without_client_email_fails_build() {
    let mut key_file: Value = serde_json::from_slice(
        &std::fs::read(helpers::fixture("fcm-service-account.json")).unwrap(),
    )
    .unwrap();
    key_file.as_object_mut().unwrap().remove("client_email");
    let settings = helpers::settings(&[
        ("PROVIDERS__FCM__SERVICE_ACCOUNT_FILE", ""),
        (
            "PROVIDERS__FCM__SERVICE_ACCOUNT_JSON",
            &key_file.to_string(),
        ),
    ]);
    let client = herald::providers::http::build_client(&settings.http).unwrap();

    let metrics = std::sync::Arc::new(herald::metrics::Metrics::new());
    let Err(error) = herald::providers::build(
        "fcm",
        &settings.providers["fcm"],
        &client,
        &settings.http,
        &metrics,
    ) else {
        panic!("a key file without client_email was accepted");
    };

    let message = error.to_string();
    assert!(
        message.contains("providers.fcm.service_account_json"),
        "{message}"
    );
    assert!(message.contains("client_email"), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
}
