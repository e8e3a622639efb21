//! Firebase Cloud Messaging HTTP v1, `POST /v1/projects/{project}/messages:send`, and the
//! OAuth2 token endpoint, `POST /token`, that issues its access tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Form;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FormRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::faults::{ErrorStatus, with_rng};
use super::record::{Outcome, ProviderKind, mask_token};
use super::{AppState, bearer_token};

/// The only grant the token endpoint accepts: a signed JWT exchanged for an access token.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of an issued access token, as Google issues them.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Maximum assertion lifetime (`exp - iat`) Google accepts, in seconds.
const MAX_ASSERTION_SECS: i64 = 3600;
/// How far in the future an assertion's `iat` may lie, in seconds, to allow for clock skew.
const CLOCK_SKEW_SECS: i64 = 300;

/// Access tokens issued by the token endpoint, with their expiry.
#[derive(Debug, Default)]
pub(super) struct TokenStore {
    issued: Mutex<HashMap<String, Instant>>,
}

impl TokenStore {
    /// Issues a fresh token valid for [`TOKEN_LIFETIME`], dropping expired ones.
    fn issue(&self) -> String {
        // The token is a bearer credential, so it comes from the OS-seeded generator.
        let bytes: [u8; 24] = rand::rng().random();
        let token = format!("ya29.sandbox.{}", URL_SAFE_NO_PAD.encode(bytes));
        let now = Instant::now();
        let mut issued = self.lock();
        issued.retain(|_, expiry| *expiry > now);
        issued.insert(token.clone(), now + TOKEN_LIFETIME);
        token
    }

    fn is_valid(&self, token: &str) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.issued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Issues an access token for a JWT-bearer grant.
///
/// The assertion's shape and claims are checked (three base64url parts, JSON header and
/// claims, `iss`, `scope`, `aud`, `iat`, `exp`, a lifetime of at most an hour) but not its
/// signature: the sandbox has no service account's public key to verify it with. The
/// endpoint gets no injected latency or errors, so FCM faults show at the send endpoint.
pub(super) async fn token(
    State(state): State<Arc<AppState>>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    let pairs = match form {
        Ok(Form(pairs)) => pairs,
        Err(rejection) => {
            let description = format!("the body was not read: {}", rejection.body_text());
            return oauth_error("invalid_request", &description);
        }
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };

    match field("grant_type") {
        None => return oauth_error("invalid_request", "grant_type is missing"),
        Some(JWT_BEARER_GRANT) => {}
        Some(other) => {
            let description =
                format!("grant_type {other} is not supported, use {JWT_BEARER_GRANT}");
            return oauth_error("unsupported_grant_type", &description);
        }
    }
    let Some(assertion) = field("assertion") else {
        return oauth_error("invalid_request", "assertion is missing");
    };
    if let Err(reason) = check_assertion(assertion, unix_now()) {
        return oauth_error("invalid_grant", &format!("Invalid JWT: {reason}"));
    }

    let access_token = state.tokens.issue();
    state.log.count_token();
    tracing::debug!("sandbox issued an access token");
    let body = json!({
        "access_token": access_token,
        "expires_in": TOKEN_LIFETIME.as_secs(),
        "token_type": "Bearer",
    });
    axum::Json(body).into_response()
}

/// Checks a JWT's structure and claims against the time `now`, in Unix seconds.
pub(super) fn check_assertion(assertion: &str, now: i64) -> Result<(), String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err(format!(
            "expected three base64url parts separated by dots, found {}",
            parts.len()
        ));
    };
    let header = decode_part("header", header)?;
    if !header.get("alg").is_some_and(Value::is_string) {
        return Err("the header has no alg".to_owned());
    }
    let claims = decode_part("claims", claims)?;
    if signature.is_empty() || URL_SAFE_NO_PAD.decode(signature).is_err() {
        return Err("the signature is empty or not base64url".to_owned());
    }

    for name in ["iss", "scope", "aud"] {
        let present = claims
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(|value| !value.is_empty());
        if !present {
            return Err(format!("the {name} claim is missing or empty"));
        }
    }
    let time_claim = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("the {name} claim is missing or not a number of seconds"))
    };
    let issued_at = time_claim("iat")?;
    let expires_at = time_claim("exp")?;
    check_lifetime(issued_at, expires_at, now)
}

fn check_lifetime(issued_at: i64, expires_at: i64, now: i64) -> Result<(), String> {
    if expires_at <= issued_at {
        return Err("exp must be after iat".to_owned());
    }
    if expires_at - issued_at > MAX_ASSERTION_SECS {
        return Err("exp must be at most 3600 seconds after iat".to_owned());
    }
    if issued_at > now + CLOCK_SKEW_SECS {
        return Err("iat is in the future; check the clock".to_owned());
    }
    if expires_at <= now {
        return Err("the assertion has expired; check iat, exp and the clock".to_owned());
    }
    Ok(())
}

fn decode_part(name: &str, part: &str) -> Result<Value, String> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|error| format!("the {name} is not base64url: {error}"))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|error| format!("the {name} is not JSON: {error}"))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(format!("the {name} is not a JSON object"))
    }
}

fn unix_now() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
}

fn oauth_error(error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

pub(super) async fn send(
    State(state): State<Arc<AppState>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    state.arrive().await;

    let request = body
        .map_err(|rejection| rejection.body_text())
        .and_then(|bytes| {
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|error| format!("Invalid JSON payload received: {error}"))
        });
    let (job_id, recipient) = request.as_ref().map(summarize).unwrap_or_default();

    let outcome = reply(&state, &project, &headers, request);
    state
        .record(ProviderKind::Fcm, job_id, recipient, outcome)
        .await
}

/// Checks, in order, the access token, error injection and the message.
fn reply(
    state: &AppState,
    project: &str,
    headers: &HeaderMap,
    request: Result<Value, String>,
) -> Outcome {
    if !bearer_token(headers).is_some_and(|token| state.tokens.is_valid(token)) {
        let message = "Request had invalid authentication credentials: expected an OAuth 2 \
                       access token issued by this sandbox's /token endpoint.";
        let response = google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message, vec![]);
        return Outcome::plain(response);
    }
    if let Some(status) = state.faults.roll(ProviderKind::Fcm) {
        return Outcome::injected(state.faults.finish(status, injected(status)));
    }

    let request = match request {
        Ok(request) => request,
        Err(message) => return Outcome::plain(invalid_argument(&message, None)),
    };
    if let Err((field, message)) = validate(&request) {
        return Outcome::plain(invalid_argument(&message, Some(&field)));
    }

    // validate_only requests that FCM check the message without sending it.
    let message_id = if request.get("validate_only").and_then(Value::as_bool) == Some(true) {
        "fake_message_id".to_owned()
    } else {
        new_message_id()
    };
    let name = format!("projects/{project}/messages/{message_id}");
    let response = axum::Json(json!({ "name": name })).into_response();
    Outcome::accepted(response, name)
}

/// Checks the message fields Herald relies on, returning the offending field path and a
/// message. The sandbox sends only to device tokens, so `message.token` is required.
pub(super) fn validate(request: &Value) -> Result<(), (String, String)> {
    let Some(message) = request.get("message").filter(|message| message.is_object()) else {
        return Err(("message".to_owned(), "message is required".to_owned()));
    };
    let has_token = message
        .get("token")
        .and_then(Value::as_str)
        .is_some_and(|token| !token.is_empty());
    if !has_token {
        let text = "The registration token is missing: the sandbox sends only to message.token";
        return Err(("message.token".to_owned(), text.to_owned()));
    }
    match message.get("data") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(data)) => {
            // FCM data values must be strings, and it names a bad entry by its position.
            match data.values().position(|value| !value.is_string()) {
                Some(index) => Err((
                    format!("message.data[{index}].value"),
                    "data values must be strings".to_owned(),
                )),
                None => Ok(()),
            }
        }
        Some(_) => Err((
            "message.data".to_owned(),
            "data must be a map of strings".to_owned(),
        )),
    }
}

/// Extracts Herald's job id and the masked device token, for the record.
fn summarize(request: &Value) -> (Option<String>, Option<String>) {
    let job_id = request
        .pointer("/message/data/herald_job_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let recipient = request
        .pointer("/message/token")
        .and_then(Value::as_str)
        .map(mask_token);
    (job_id, recipient)
}

/// Builds a message id in FCM's form: `0:<millis>%<16 hex digits>`.
fn new_message_id() -> String {
    let millis = chrono::Utc::now().timestamp_millis();
    let suffix: u64 = with_rng(|rng| rng.random());
    format!("0:{millis}%{suffix:016x}")
}

/// Builds the Google API error body: `{"error":{"code","message","status","details"}}`.
fn google_error(code: StatusCode, status: &str, message: &str, details: Vec<Value>) -> Response {
    let mut error = json!({ "code": code.as_u16(), "message": message, "status": status });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    (code, axum::Json(json!({ "error": error }))).into_response()
}

fn fcm_error_detail(error_code: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": error_code,
    })
}

fn invalid_argument(message: &str, field: Option<&str>) -> Response {
    let mut details = vec![fcm_error_detail("INVALID_ARGUMENT")];
    if let Some(field) = field {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": field, "description": message }],
        }));
    }
    google_error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        message,
        details,
    )
}

fn injected(status: ErrorStatus) -> Response {
    let (google_status, error_code, message) = match status {
        ErrorStatus::TooManyRequests => (
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
            "Sending limit exceeded for the message target.",
        ),
        ErrorStatus::InternalServerError => (
            "INTERNAL",
            "INTERNAL",
            "An unknown internal error occurred.",
        ),
        ErrorStatus::ServiceUnavailable => (
            "UNAVAILABLE",
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ),
    };
    let details = vec![fcm_error_detail(error_code)];
    google_error(status.status_code(), google_status, message, details)
}
