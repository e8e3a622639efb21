//! SendGrid v3 Mail Send: `POST /v3/mail/send`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use serde_json::{Value, json};

use super::faults::{ErrorStatus, with_rng};
use super::record::{Outcome, ProviderKind, mask_email};
use super::{AppState, bearer_token};

/// Maximum request body size SendGrid accepts: 30 MB.
pub(super) const MAX_BODY_BYTES: usize = 30 * 1024 * 1024;
/// Maximum number of personalizations in one request.
const MAX_PERSONALIZATIONS: usize = 1000;

pub(super) async fn mail_send(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    state.arrive().await;

    let mail = body
        .map_err(|rejection| (rejection.status(), rejection.body_text()))
        .and_then(|bytes| {
            serde_json::from_slice::<Value>(&bytes).map_err(|error| {
                let message = format!("request body is not valid JSON: {error}");
                (StatusCode::BAD_REQUEST, message)
            })
        });
    let (job_id, recipient) = mail.as_ref().map(summarize).unwrap_or_default();

    let outcome = reply(&state, &headers, mail);
    state
        .record(ProviderKind::Sendgrid, job_id, recipient, outcome)
        .await
}

/// Checks, in order, the API key, error injection and the mail's shape.
fn reply(
    state: &AppState,
    headers: &HeaderMap,
    mail: Result<Value, (StatusCode, String)>,
) -> Outcome {
    if bearer_token(headers).is_none() {
        let message = "authorization required: send the API key as `Authorization: Bearer <key>`";
        return Outcome::plain(error(StatusCode::UNAUTHORIZED, None, message));
    }
    if let Some(status) = state.faults.roll(ProviderKind::Sendgrid) {
        let response = injected(status, state.faults.retry_after_secs(status));
        return Outcome::injected(state.faults.finish(status, response));
    }

    let mail = match mail {
        Ok(mail) => mail,
        Err((status, message)) => return Outcome::plain(error(status, None, &message)),
    };
    if let Err(invalid) = validate(&mail) {
        let response = error(
            StatusCode::BAD_REQUEST,
            Some(&invalid.field),
            &invalid.message,
        );
        return Outcome::plain(response);
    }

    // In sandbox mode SendGrid validates the mail and returns 200 without queuing it.
    let sandbox_mode = mail
        .pointer("/mail_settings/sandbox_mode/enable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if sandbox_mode {
        return Outcome::plain(StatusCode::OK.into_response());
    }

    let message_id = new_message_id();
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(value) = HeaderValue::from_str(&message_id) {
        response.headers_mut().insert("x-message-id", value);
    }
    Outcome::accepted(response, message_id)
}

/// A validation failure: the dotted path of the offending field and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct FieldError {
    pub(super) field: String,
    pub(super) message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks the parts of a mail that SendGrid requires: recipients, sender, subject, content.
/// A `template_id` replaces the subject and the content, as it does at SendGrid.
pub(super) fn validate(mail: &Value) -> Result<(), FieldError> {
    let personalizations = mail
        .get("personalizations")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or_else(|| {
            invalid(
                "personalizations",
                "is required and must contain at least one personalization",
            )
        })?;
    if personalizations.len() > MAX_PERSONALIZATIONS {
        let message = "must not contain more than 1000 personalizations";
        return Err(invalid("personalizations", message));
    }
    for (index, personalization) in personalizations.iter().enumerate() {
        validate_recipients(index, personalization)?;
    }

    match mail.pointer("/from/email").and_then(Value::as_str) {
        None => return Err(invalid("from.email", "is required")),
        Some(address) if !is_email(address) => {
            return Err(invalid("from.email", "does not contain a valid address"));
        }
        Some(_) => {}
    }

    let has_template = non_empty_str(mail.get("template_id"));
    let every_personalization_has_subject = personalizations
        .iter()
        .all(|personalization| non_empty_str(personalization.get("subject")));
    if !has_template && !non_empty_str(mail.get("subject")) && !every_personalization_has_subject {
        let message = "is required unless every personalization has one or a template_id is set";
        return Err(invalid("subject", message));
    }

    match mail.get("content") {
        None if has_template => Ok(()),
        content => validate_content(content),
    }
}

fn validate_recipients(index: usize, personalization: &Value) -> Result<(), FieldError> {
    let to = personalization
        .get("to")
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or_else(|| {
            let field = format!("personalizations.{index}.to");
            invalid(field, "is required and must contain at least one recipient")
        })?;
    for (position, recipient) in to.iter().enumerate() {
        let field = format!("personalizations.{index}.to.{position}.email");
        match recipient.get("email").and_then(Value::as_str) {
            None => return Err(invalid(field, "is required")),
            Some(address) if !is_email(address) => {
                return Err(invalid(field, "does not contain a valid address"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn validate_content(content: Option<&Value>) -> Result<(), FieldError> {
    let parts = content
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty())
        .ok_or_else(|| {
            let message =
                "is required and must contain at least one part, unless a template_id is set";
            invalid("content", message)
        })?;
    for (index, part) in parts.iter().enumerate() {
        for key in ["type", "value"] {
            if !non_empty_str(part.get(key)) {
                let message = "is required and must be a non-empty string";
                return Err(invalid(format!("content.{index}.{key}"), message));
            }
        }
    }
    Ok(())
}

fn non_empty_str(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_str)
        .is_some_and(|text| !text.trim().is_empty())
}

/// Checks an address loosely: text, an `@`, and a dotted domain. SendGrid does not publish
/// its rules in full, so this only catches addresses that are plainly wrong.
fn is_email(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !address.chars().any(char::is_whitespace)
}

/// Extracts Herald's job id and the masked first recipient, for the record.
fn summarize(mail: &Value) -> (Option<String>, Option<String>) {
    let job_id = mail
        .pointer("/personalizations/0/custom_args/herald_job_id")
        .or_else(|| mail.pointer("/custom_args/herald_job_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let recipient = mail
        .pointer("/personalizations/0/to/0/email")
        .and_then(Value::as_str)
        .map(mask_email);
    (job_id, recipient)
}

/// Builds an id shaped like SendGrid's `X-Message-Id`: 22 URL-safe base64 characters.
fn new_message_id() -> String {
    let bytes: [u8; 16] = with_rng(|rng| rng.random());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds SendGrid's error body: `{"errors":[{"field":…,"message":…}]}`.
fn error(status: StatusCode, field: Option<&str>, message: &str) -> Response {
    let body = json!({ "errors": [{ "field": field, "message": message }] });
    (status, axum::Json(body)).into_response()
}

/// Builds an injected error reply. A 429 also carries SendGrid's `X-RateLimit-Remaining` and
/// `X-RateLimit-Reset` headers when a retry delay is configured, with the reset that delay
/// from now.
fn injected(status: ErrorStatus, retry_after_secs: Option<u64>) -> Response {
    let message = match status {
        ErrorStatus::TooManyRequests => "too many requests",
        ErrorStatus::InternalServerError => "internal server error",
        ErrorStatus::ServiceUnavailable => "service unavailable",
    };
    let mut response = error(status.status_code(), None, message);
    if let (ErrorStatus::TooManyRequests, Some(seconds)) = (status, retry_after_secs) {
        let reset = chrono::Utc::now().timestamp() + i64::try_from(seconds).unwrap_or(i64::MAX / 2);
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
        headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    }
    response
}
