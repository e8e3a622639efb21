//! Mailgun Messages API: `POST /v3/{domain}/messages`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;

use super::faults::{ErrorStatus, with_rng};
use super::record::{Outcome, ProviderKind, mask_email};
use super::{AppState, basic_credentials};

pub(super) async fn send_message(
    State(state): State<Arc<AppState>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    state.arrive().await;

    // Only multipart/form-data is read, so any other body leaves every field missing.
    let fields = match multipart {
        Ok(multipart) => read_fields(multipart).await,
        Err(_) => HashMap::new(),
    };
    let job_id = fields.get("v:herald_job_id").cloned();
    let recipient = fields.get("to").map(|to| mask_email(to));

    let outcome = reply(&state, &domain, &headers, &fields);
    state
        .record(ProviderKind::Mailgun, job_id, recipient, outcome)
        .await
}

/// Reads the text fields of a multipart body. A malformed part ends the reading, so the
/// fields after it count as missing.
async fn read_fields(mut multipart: Multipart) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while let Ok(Some(field)) = multipart.next_field().await {
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        match field.text().await {
            Ok(value) => {
                fields.insert(name, value);
            }
            Err(_) => break,
        }
    }
    fields
}

/// Checks, in order, Basic auth as `api`, error injection and the message's fields.
fn reply(
    state: &AppState,
    domain: &str,
    headers: &HeaderMap,
    fields: &HashMap<String, String>,
) -> Outcome {
    let authorized =
        basic_credentials(headers).is_some_and(|(user, key)| user == "api" && !key.is_empty());
    if !authorized {
        let response = (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Forbidden",
        );
        return Outcome::plain(response.into_response());
    }
    if let Some(status) = state.faults.roll(ProviderKind::Mailgun) {
        let response = error(status.status_code(), injected_message(status));
        return Outcome::injected(state.faults.finish(status, response));
    }
    for required in ["from", "to", "subject"] {
        if fields.get(required).is_none_or(String::is_empty) {
            let message = format!("{required} parameter is missing");
            return Outcome::plain(error(StatusCode::BAD_REQUEST, &message));
        }
    }
    if !fields.contains_key("text") && !fields.contains_key("html") {
        let message = "Need at least one of 'text', 'html' or 'template' parameters specified";
        return Outcome::plain(error(StatusCode::BAD_REQUEST, message));
    }

    let message_id = new_message_id(domain);
    let body = json!({ "id": message_id, "message": "Queued. Thank you." });
    Outcome::accepted(
        (StatusCode::OK, axum::Json(body)).into_response(),
        message_id,
    )
}

fn injected_message(status: ErrorStatus) -> &'static str {
    match status {
        ErrorStatus::TooManyRequests => "Too many requests",
        ErrorStatus::InternalServerError => "Internal Server Error",
        ErrorStatus::ServiceUnavailable => "Service Unavailable",
    }
}

/// Builds Mailgun's error body: `{"message": …}`.
fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

/// Builds an id shaped like Mailgun's: `<timestamp.random@domain>`.
fn new_message_id(domain: &str) -> String {
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let random: u64 = with_rng(|rng| rng.random());
    format!("<{now}.{random:016X}@{domain}>")
}
