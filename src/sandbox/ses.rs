//! Amazon SES v2 `SendEmail`: `POST /v2/email/outbound-emails`.
//!
//! The sandbox has no secret to verify signatures with, so it checks only that a request
//! carries a Signature Version 4 `Authorization` header and an `x-amz-date`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};

use super::AppState;
use super::faults::{ErrorStatus, with_rng};
use super::record::{Outcome, ProviderKind, mask_email};

pub(super) async fn send_email(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.arrive().await;

    let is_json = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let request = serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|_| is_json);
    let job_id = request.as_ref().and_then(job_id);
    let recipient = request
        .as_ref()
        .and_then(|request| request.pointer("/Destination/ToAddresses/0"))
        .and_then(Value::as_str)
        .map(mask_email);

    let outcome = reply(&state, &headers, request.as_ref());
    state
        .record(ProviderKind::Ses, job_id, recipient, outcome)
        .await
}

/// Checks, in order, the signature headers, error injection and the request's fields.
fn reply(state: &AppState, headers: &HeaderMap, request: Option<&Value>) -> Outcome {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(authorization) = authorization else {
        let response = error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
        return Outcome::plain(response);
    };
    let signed = authorization.starts_with("AWS4-HMAC-SHA256 Credential=")
        && authorization.contains("SignedHeaders=")
        && authorization.contains("Signature=")
        && headers.contains_key("x-amz-date");
    if !signed {
        let message = "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders', and X-Amz-Date is required.";
        let response = error(
            StatusCode::FORBIDDEN,
            "IncompleteSignatureException",
            message,
        );
        return Outcome::plain(response);
    }
    if let Some(status) = state.faults.roll(ProviderKind::Ses) {
        return Outcome::injected(state.faults.finish(status, injected(status)));
    }
    let Some(request) = request else {
        let response = error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            "Request body is not valid JSON.",
        );
        return Outcome::plain(response);
    };
    if let Err(message) = validate(request) {
        return Outcome::plain(error(
            StatusCode::BAD_REQUEST,
            "BadRequestException",
            message,
        ));
    }

    let message_id = new_message_id();
    let body = json!({ "MessageId": message_id });
    Outcome::accepted(
        (StatusCode::OK, axum::Json(body)).into_response(),
        message_id,
    )
}

/// Checks the fields `SendEmail` requires for simple content.
fn validate(request: &Value) -> Result<(), &'static str> {
    let text = |pointer: &str| request.pointer(pointer).and_then(Value::as_str);
    if text("/FromEmailAddress").is_none() {
        return Err("FromEmailAddress is required.");
    }
    if text("/Destination/ToAddresses/0").is_none() {
        return Err("Destination must contain at least one address.");
    }
    if text("/Content/Simple/Subject/Data").is_none() {
        return Err("Content.Simple.Subject is required.");
    }
    if text("/Content/Simple/Body/Text/Data").is_none()
        && text("/Content/Simple/Body/Html/Data").is_none()
    {
        return Err("Content.Simple.Body needs Text or Html.");
    }
    Ok(())
}

/// Returns the value of the `herald_job_id` message tag.
fn job_id(request: &Value) -> Option<String> {
    request
        .get("EmailTags")?
        .as_array()?
        .iter()
        .find(|tag| tag.get("Name").and_then(Value::as_str) == Some("herald_job_id"))?
        .get("Value")?
        .as_str()
        .map(str::to_owned)
}

/// Builds SES's error reply: the type in `x-amzn-ErrorType`, a `{"message"}` body.
fn error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "message": message }))).into_response();
    if let Ok(value) = HeaderValue::from_str(error_type) {
        response.headers_mut().insert("x-amzn-errortype", value);
    }
    response
}

fn injected(status: ErrorStatus) -> Response {
    let (error_type, message) = match status {
        ErrorStatus::TooManyRequests => ("TooManyRequestsException", "Too many requests."),
        ErrorStatus::InternalServerError => ("InternalFailure", "Internal failure."),
        ErrorStatus::ServiceUnavailable => ("ServiceUnavailable", "Service unavailable."),
    };
    error(status.status_code(), error_type, message)
}

/// Builds an id shaped like SES's `MessageId`.
fn new_message_id() -> String {
    let (high, low): (u64, u64) = with_rng(|rng| (rng.random(), rng.random()));
    format!("{high:016x}-{low:016x}-000000")
}
