//! The webhook channel of a job: where to send it (a configured endpoint or an allowlisted
//! URL) and the event it carries.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::JobError;

/// Event type sent when a job gives none.
pub const DEFAULT_EVENT_TYPE: &str = "notification";
/// Maximum length of an endpoint name, in bytes.
const MAX_ENDPOINT_NAME_LEN: usize = 64;
/// Maximum length of an event type, in bytes.
const MAX_EVENT_TYPE_LEN: usize = 128;
/// Maximum length of a webhook URL, in bytes.
const MAX_URL_LEN: usize = 2048;

/// A validated webhook: its target and the event sent to it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookMessage {
    pub target: WebhookTarget,
    /// The event's `type`, such as `invoice.paid`.
    pub event_type: String,
    /// When the event happened, sent as the body's `timestamp`. `None` sends the time of
    /// each attempt.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The JSON object sent as the body's `data`.
    pub payload: serde_json::Map<String, serde_json::Value>,
}

/// The destination of a webhook. `Display` and `Debug` never print a URL's path, query or user info,
/// which can carry tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// An endpoint configured under the webhook provider, by name.
    Endpoint(String),
    /// A URL given in the job. It is sent only when it matches the provider's allowlist.
    Url(reqwest::Url),
}

#[derive(Deserialize)]
struct RawWebhook {
    endpoint: Option<String>,
    url: Option<String>,
    event_type: Option<String>,
    occurred_at: Option<String>,
    payload: Option<serde_json::Value>,
}

impl WebhookMessage {
    pub(super) fn parse(prefix: &str, body: serde_json::Value) -> Result<Self, JobError> {
        let raw: RawWebhook = super::channels::deserialize(prefix, body)?;
        let target = match (raw.endpoint, raw.url) {
            (Some(name), None) => WebhookTarget::endpoint(&format!("{prefix}.endpoint"), &name)?,
            (None, Some(url)) => WebhookTarget::url(&format!("{prefix}.url"), &url)?,
            _ => {
                return Err(JobError::field(
                    prefix,
                    "needs exactly one of `endpoint` and `url`",
                ));
            }
        };
        let event_type = match raw.event_type {
            Some(event_type) => check_event_type(&format!("{prefix}.event_type"), event_type)?,
            None => DEFAULT_EVENT_TYPE.to_owned(),
        };
        let occurred_at = raw
            .occurred_at
            .map(|text| parse_time(&format!("{prefix}.occurred_at"), &text))
            .transpose()?;
        let payload = match raw.payload {
            Some(serde_json::Value::Object(payload)) => payload,
            Some(_) => {
                return Err(JobError::field(
                    format!("{prefix}.payload"),
                    "must be an object",
                ));
            }
            None => return Err(JobError::field(format!("{prefix}.payload"), "is required")),
        };
        Ok(WebhookMessage {
            target,
            event_type,
            occurred_at,
            payload,
        })
    }
}

impl WebhookTarget {
    /// Validates an endpoint name: 1 to 64 characters from `a-z 0-9 _`, the form config keys
    /// and environment variables can carry.
    pub fn endpoint(field: &str, name: &str) -> Result<WebhookTarget, JobError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_ENDPOINT_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(JobError::field(
                field,
                "must be 1 to 64 characters from a-z 0-9 _",
            ));
        }
        Ok(WebhookTarget::Endpoint(name.to_owned()))
    }

    /// Validates a URL: absolute `http` or `https`, with a host and without user info.
    pub fn url(field: &str, text: &str) -> Result<WebhookTarget, JobError> {
        if text.len() > MAX_URL_LEN {
            return Err(JobError::field(field, "is longer than 2048 bytes"));
        }
        let url = reqwest::Url::parse(text)
            .map_err(|error| JobError::field(field, format!("is not a URL: {error}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(JobError::field(field, "must be an http or https URL"));
        }
        if url.host().is_none() {
            return Err(JobError::field(field, "must name a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(JobError::field(field, "must not carry user info"));
        }
        Ok(WebhookTarget::Url(url))
    }

    /// Returns the target as the ledger hashes it: `endpoint:NAME`, or the whole URL.
    pub fn expose(&self) -> String {
        match self {
            WebhookTarget::Endpoint(name) => format!("endpoint:{name}"),
            WebhookTarget::Url(url) => url.to_string(),
        }
    }

    /// Parses the form [`WebhookTarget::expose`] returns.
    pub fn parse_exposed(text: &str) -> Option<WebhookTarget> {
        match text.strip_prefix("endpoint:") {
            Some(name) => WebhookTarget::endpoint("recipient", name).ok(),
            None => WebhookTarget::url("recipient", text).ok(),
        }
    }
}

impl fmt::Display for WebhookTarget {
    /// Prints `endpoint:NAME`, or a URL's origin and a short hash of the whole URL:
    /// `https://hooks.example.com/…#1a2b3c4d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookTarget::Endpoint(name) => write!(f, "endpoint:{name}"),
            WebhookTarget::Url(url) => {
                let digest = Sha256::digest(url.as_str().as_bytes());
                write!(
                    f,
                    "{}/…#{:02x}{:02x}{:02x}{:02x}",
                    url.origin().ascii_serialization(),
                    digest[0],
                    digest[1],
                    digest[2],
                    digest[3]
                )
            }
        }
    }
}

impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookTarget({self})")
    }
}

fn check_event_type(field: &str, event_type: String) -> Result<String, JobError> {
    let valid = !event_type.is_empty()
        && event_type.len() <= MAX_EVENT_TYPE_LEN
        && event_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if !valid {
        return Err(JobError::field(
            field,
            "must be 1 to 128 characters from A-Z a-z 0-9 . _ - :",
        ));
    }
    Ok(event_type)
}

fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, JobError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| JobError::field(field, format!("is not an RFC 3339 timestamp: {error}")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: serde_json::Value) -> Result<WebhookMessage, JobError> {
        WebhookMessage::parse("channels.webhook", body)
    }

    #[test]
    fn endpoint_webhook_parses() {
        let message = parse(json!({
            "endpoint": "billing",
            "event_type": "invoice.paid",
            "occurred_at": "2026-01-02T03:04:05Z",
            "payload": {"invoice": 7}
        }))
        .unwrap();
        assert_eq!(message.target, WebhookTarget::Endpoint("billing".into()));
        assert_eq!(message.event_type, "invoice.paid");
        assert!(message.occurred_at.is_some());
        assert_eq!(message.payload["invoice"], 7);
    }

    #[test]
    fn event_type_defaults() {
        let message = parse(json!({"endpoint": "billing", "payload": {}})).unwrap();
        assert_eq!(message.event_type, DEFAULT_EVENT_TYPE);
        assert_eq!(message.occurred_at, None);
    }

    #[test]
    fn needs_exactly_one_target() {
        let both = json!({"endpoint": "a", "url": "https://x.example", "payload": {}});
        let neither = json!({"payload": {}});
        for body in [both, neither] {
            let error = parse(body).unwrap_err();
            assert!(error.to_string().contains("exactly one"), "{error}");
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let cases = [
            json!({"endpoint": "Billing", "payload": {}}),
            json!({"endpoint": "", "payload": {}}),
            json!({"url": "ftp://x.example/hook", "payload": {}}),
            json!({"url": "https://user:pw@x.example/hook", "payload": {}}),
            json!({"url": "not a url", "payload": {}}),
            json!({"endpoint": "a", "payload": [1]}),
            json!({"endpoint": "a"}),
            json!({"endpoint": "a", "event_type": "has space", "payload": {}}),
            json!({"endpoint": "a", "occurred_at": "yesterday", "payload": {}}),
        ];
        for body in cases {
            assert!(parse(body.clone()).is_err(), "accepted {body}");
        }
    }

    #[test]
    fn url_display_hides_path_and_query() {
        let target =
            WebhookTarget::url("url", "https://hooks.example.com/t/s3cret?key=abc").unwrap();
        let shown = target.to_string();
        assert!(shown.starts_with("https://hooks.example.com/…#"), "{shown}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("abc"),
            "{shown}"
        );
        assert!(!format!("{target:?}").contains("s3cret"));
    }

    #[test]
    fn exposed_form_round_trips() {
        for target in [
            WebhookTarget::Endpoint("billing".into()),
            WebhookTarget::url("url", "https://hooks.example.com/x").unwrap(),
        ] {
            assert_eq!(WebhookTarget::parse_exposed(&target.expose()), Some(target));
        }
    }
}
