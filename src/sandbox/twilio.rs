//! Twilio Programmable Messaging: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.

use std::sync::Arc;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};

use super::faults::{ErrorStatus, with_rng};
use super::record::{Outcome, ProviderKind, mask_phone};
use super::{AppState, basic_credentials};

/// Maximum message body length Twilio accepts, in characters.
const MAX_BODY_CHARS: usize = 1600;

/// The form fields of a create-Message request. Twilio field names are case-sensitive.
#[derive(Debug, Default)]
struct MessageForm {
    to: Option<String>,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    body: Option<String>,
    has_media: bool,
}

impl MessageForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> MessageForm {
        let mut form = MessageForm::default();
        for (name, value) in pairs {
            match name.as_str() {
                "To" => form.to = Some(value),
                "From" => form.from = Some(value),
                "MessagingServiceSid" => form.messaging_service_sid = Some(value),
                "Body" => form.body = Some(value),
                "MediaUrl" | "ContentSid" => form.has_media = true,
                _ => {}
            }
        }
        form
    }
}

pub(super) async fn create_message(
    State(state): State<Arc<AppState>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    state.arrive().await;

    let form = form.map(|Form(pairs)| MessageForm::from_pairs(pairs));
    let recipient = form
        .as_ref()
        .ok()
        .and_then(|form| form.to.as_deref())
        .map(mask_phone);

    let outcome = reply(&state, &account_sid, &headers, form);
    state
        .record(ProviderKind::Twilio, None, recipient, outcome)
        .await
}

/// Checks, in order, Basic auth, error injection and the form's fields.
fn reply(
    state: &AppState,
    account_sid: &str,
    headers: &HeaderMap,
    form: Result<MessageForm, FormRejection>,
) -> Outcome {
    if !has_basic_credentials(headers) {
        let message = "authentication required: send the Account SID (or API key SID) and \
                       secret with HTTP Basic auth";
        let mut response = error(StatusCode::UNAUTHORIZED, 20003, message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
        return Outcome::plain(response);
    }
    if let Some(status) = state.faults.roll(ProviderKind::Twilio) {
        return Outcome::injected(state.faults.finish(status, injected(status)));
    }

    // Twilio reads only form bodies, so any other body leaves every field missing.
    let form = match form {
        Ok(form) => form,
        Err(rejection) => {
            let message = format!(
                "A 'To' phone number is required. The body was not read: {}",
                rejection.body_text()
            );
            return Outcome::plain(error(StatusCode::BAD_REQUEST, 21604, &message));
        }
    };
    if let Err((code, message)) = validate(&form) {
        return Outcome::plain(error(StatusCode::BAD_REQUEST, code, message));
    }

    let sid = new_message_sid();
    let message = message_resource(account_sid, &sid, &form);
    let response = (StatusCode::CREATED, axum::Json(message)).into_response();
    Outcome::accepted(response, sid)
}

/// Checks the fields Twilio requires, returning its error code and a message on failure.
/// Messages never repeat the phone number, so they can be logged as they are.
fn validate(form: &MessageForm) -> Result<(), (u32, &'static str)> {
    match form.to.as_deref() {
        None | Some("") => return Err((21604, "A 'To' phone number is required.")),
        Some(to) if !is_e164(to) => {
            return Err((21211, "The 'To' number is not a valid E.164 phone number."));
        }
        Some(_) => {}
    }
    let from = form.from.as_deref().is_some_and(|from| !from.is_empty());
    let service = form
        .messaging_service_sid
        .as_deref()
        .is_some_and(|sid| !sid.is_empty());
    if !from && !service {
        return Err((
            21603,
            "A 'From' phone number or a MessagingServiceSid is required.",
        ));
    }
    let body = form.body.as_deref().unwrap_or("");
    if body.is_empty() && !form.has_media {
        return Err((21602, "Message body is required."));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err((21617, "The message body exceeds the 1600 character limit."));
    }
    Ok(())
}

/// Digits in the shortest assigned E.164 numbers: a three-digit country code and a
/// four-digit subscriber number, as in Niue (+683).
const MIN_E164_DIGITS: usize = 7;

/// E.164: `+`, then 7 to 15 digits, the first not zero. Shorter numbers cannot be dialled,
/// so Twilio rejects them as it does here.
fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (MIN_E164_DIGITS..=15).contains(&digits.len())
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && !digits.starts_with('0')
}

fn has_basic_credentials(headers: &HeaderMap) -> bool {
    basic_credentials(headers).is_some_and(|(user, secret)| !user.is_empty() && !secret.is_empty())
}

/// Builds the Message resource Twilio returns on create. With a Messaging Service the
/// status is `accepted` and `num_segments` is "0" until Twilio picks a sender. Without one
/// the status is `queued`.
fn message_resource(account_sid: &str, sid: &str, form: &MessageForm) -> Value {
    let now = chrono::Utc::now().to_rfc2822();
    let service_sid = form
        .messaging_service_sid
        .as_deref()
        .filter(|sid| !sid.is_empty());
    let body = form.body.as_deref().unwrap_or("");
    let (status, segments) = match service_sid {
        Some(_) => ("accepted", 0),
        None => ("queued", count_segments(body)),
    };
    let from = form.from.as_deref().filter(|from| !from.is_empty());
    let uri = format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json");
    json!({
        "sid": sid,
        "account_sid": account_sid,
        "messaging_service_sid": service_sid,
        "api_version": "2010-04-01",
        "status": status,
        "direction": "outbound-api",
        "to": form.to,
        "from": from,
        "body": body,
        "num_segments": segments.to_string(),
        "num_media": if form.has_media { "1" } else { "0" },
        "error_code": null,
        "error_message": null,
        "price": null,
        "price_unit": "USD",
        "date_created": now,
        "date_updated": now,
        "date_sent": null,
        "uri": uri,
        "subresource_uris": {
            "media": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"),
        },
    })
}

/// Characters of the GSM 03.38 default alphabet, one septet each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
                          ¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters of the GSM 03.38 extension table, two septets each (escape plus character).
const GSM7_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// Counts the SMS segments of a body: 160 septets in one GSM-7 segment or 153 per part of
/// a longer one, and 70 UTF-16 units in one UCS-2 segment or 67 per part.
///
/// NOTE: a GSM-7 escape pair is never split across parts here, which real encoders avoid
/// by moving it to the next part, so a long body near a boundary may count one part less.
pub(super) fn count_segments(body: &str) -> usize {
    let septets: Option<usize> = body
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    match septets {
        Some(septets) if septets <= 160 => 1,
        Some(septets) => septets.div_ceil(153),
        None => {
            let units = body.encode_utf16().count();
            if units <= 70 { 1 } else { units.div_ceil(67) }
        }
    }
}

/// Builds a message SID: `SM` and 32 hex digits.
fn new_message_sid() -> String {
    let value: u128 = with_rng(|rng| rng.random());
    format!("SM{value:032x}")
}

/// Builds Twilio's error body: `{"code","message","more_info","status"}`.
fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, axum::Json(body)).into_response()
}

fn injected(status: ErrorStatus) -> Response {
    let (code, message) = match status {
        ErrorStatus::TooManyRequests => (20429, "Too Many Requests"),
        ErrorStatus::InternalServerError => (20500, "Internal Server Error"),
        ErrorStatus::ServiceUnavailable => (20503, "Service Unavailable"),
    };
    error(status.status_code(), code, message)
}
