//! Vonage SMS API: `POST /sms/json`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::json;

use super::AppState;
use super::faults::{ErrorStatus, with_rng};
use super::record::{Outcome, ProviderKind, mask_phone};

pub(super) async fn send_sms(
    State(state): State<Arc<AppState>>,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    state.arrive().await;

    // Vonage reads only form bodies, so any other body leaves every field missing.
    let fields: HashMap<String, String> = form
        .map(|Form(pairs)| pairs.into_iter().collect())
        .unwrap_or_default();
    let job_id = fields.get("client-ref").cloned();
    let recipient = fields.get("to").map(|to| mask_phone(to));

    let outcome = reply(&state, &fields);
    state
        .record(ProviderKind::Vonage, job_id, recipient, outcome)
        .await
}

/// Checks, in order, the credentials, error injection and the message's fields. Vonage
/// replies HTTP 200 with a per-message `status` to all of these.
fn reply(state: &AppState, fields: &HashMap<String, String>) -> Outcome {
    for required in ["api_key", "api_secret"] {
        if fields.get(required).is_none_or(String::is_empty) {
            return Outcome::plain(status_reply("2", &format!("Missing {required}")));
        }
    }
    if let Some(status) = state.faults.roll(ProviderKind::Vonage) {
        return Outcome::injected(injected(state, status));
    }
    for required in ["from", "to", "text"] {
        if fields.get(required).is_none_or(String::is_empty) {
            return Outcome::plain(status_reply("2", &format!("Missing {required}")));
        }
    }
    let to = &fields["to"];
    if !to.chars().all(|c| c.is_ascii_digit()) {
        return Outcome::plain(status_reply("3", "Invalid to address"));
    }

    let message_id = new_message_id();
    let body = json!({
        "message-count": "1",
        "messages": [{
            "to": to,
            "message-id": message_id,
            "status": "0",
            "remaining-balance": "10.00000000",
            "message-price": "0.00000000",
            "network": "00000",
            "client-ref": fields.get("client-ref"),
        }],
    });
    Outcome::accepted(
        (StatusCode::OK, axum::Json(body)).into_response(),
        message_id,
    )
}

/// Builds a reply whose one message part failed with `status`.
fn status_reply(status: &str, error_text: &str) -> Response {
    let body = json!({
        "message-count": "1",
        "messages": [{ "status": status, "error-text": error_text }],
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Builds an injected error as Vonage reports it: a throttled or failed message in an HTTP
/// 200 reply for 429 and 500, and a bare HTTP 503 (with the configured `Retry-After`).
fn injected(state: &AppState, status: ErrorStatus) -> Response {
    match status {
        ErrorStatus::TooManyRequests => status_reply("1", "Throttled"),
        ErrorStatus::InternalServerError => status_reply("5", "Internal Error"),
        ErrorStatus::ServiceUnavailable => state
            .faults
            .finish(status, status.status_code().into_response()),
    }
}

/// Builds an id shaped like Vonage's `message-id`: 16 uppercase hexadecimal characters.
fn new_message_id() -> String {
    let value: u64 = with_rng(|rng| rng.random());
    format!("{value:016X}")
}
