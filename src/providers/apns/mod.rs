//! APNs adapter: `POST {base_url}/3/device/{token}` over HTTP/2, authenticated with an ES256
//! provider token (see [`token`]).
//!
//! APNs replies 200 with an empty body and the `apns-id` header. Errors carry a JSON body
//! `{"reason": "BadDeviceToken"}` (a 410 adds `timestamp`), and the reason decides the
//! class, because one status covers both a dead token and a bad request.

mod token;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};

use self::token::ProviderTokens;
use super::http::{self, Reply};
use super::{Delivered, ErrorClass, Provider, SendError, SendRequest, SendResult, dedupe};
use crate::config::{ApnsConfig, ConfigError, HttpConfig};
use crate::job::{ApnsPushType, ChannelKind, Notification, PushMessage, PushPlatform, PushTarget};

/// Largest payload APNs accepts for the alert and background push types, in bytes.
const MAX_PAYLOAD_BYTES: usize = 4096;

pub struct ApnsSender {
    client: reqwest::Client,
    /// `{base_url}/3/device/`, to which the device token is appended.
    device_url: String,
    topic: String,
    tokens: ProviderTokens,
}

impl ApnsSender {
    pub fn new(key: &str, config: &ApnsConfig, http: &HttpConfig) -> Result<Self, ConfigError> {
        let key_field = match &config.private_key_file {
            Some(path) if !path.as_os_str().is_empty() => format!("{key}.private_key_file"),
            _ => format!("{key}.private_key"),
        };
        let tokens = ProviderTokens::new(
            &key_field,
            &config.team_id,
            &config.key_id,
            &config.private_key(key)?,
            config.token_refresh(),
        )?;
        let device_url = http::endpoint(key, &config.base_url, "/3/device/")?.to_string();
        // APNs speaks only HTTP/2. Prior knowledge makes every request HTTP/2 without
        // negotiation, which also lets tests use a plain-text mock.
        let client = http::client_builder(http)
            .http2_prior_knowledge()
            .build()
            .map_err(|error| http::client_error(key, &error))?;
        Ok(ApnsSender {
            client,
            device_url,
            topic: config.topic.clone(),
            tokens,
        })
    }
}

#[async_trait]
impl Provider for ApnsSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Push(push) = request.notification else {
            return Err(SendError::permanent(format!(
                "APNs sends push notifications, not {}",
                request.notification.kind()
            )));
        };
        let PushTarget::Apns(device) = &push.target else {
            return Err(super::unsupported_platform("APNs", push.target.platform()));
        };

        let payload = encode_payload(push)?;
        let provider_token = self.tokens.current()?;
        let apns_id = dedupe::message_uuid(request.job_id, ChannelKind::Push).to_string();
        let collapse_id = push
            .apns
            .collapse_id
            .clone()
            .unwrap_or_else(|| dedupe::collapse_key(request.job_id, ChannelKind::Push));
        let mut builder = self
            .client
            .post(format!("{}{}", self.device_url, device.expose()))
            .header(
                "authorization",
                format!("bearer {}", provider_token.expose()),
            )
            .header("apns-topic", &self.topic)
            .header("apns-push-type", push.apns.push_type.as_str())
            .header("apns-priority", priority(push).to_string())
            .header("apns-collapse-id", collapse_id)
            .header("apns-id", &apns_id)
            .header("content-type", "application/json")
            .body(payload);
        if let Some(ttl) = push.ttl_secs {
            builder = builder.header("apns-expiration", expiration(ttl).to_string());
        }

        let response = builder
            .send()
            .await
            .map_err(|error| http::transport_error(&error))?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "APNs replied");

        classify(&reply, &apns_id, &[device.expose()])
    }

    fn invalidate_credentials(&self) {
        self.tokens.invalidate();
    }

    fn supports(&self, notification: &Notification) -> bool {
        matches!(notification, Notification::Push(push) if push.target.platform() == PushPlatform::Apns)
    }
}

/// Returns `apns-priority`: the job's, else 10 for alerts and 5 for background pushes,
/// which Apple requires to be 5.
fn priority(push: &PushMessage) -> u8 {
    push.apns.priority.unwrap_or(match push.apns.push_type {
        ApnsPushType::Alert => 10,
        ApnsPushType::Background => 5,
    })
}

/// Returns `apns-expiration` for a TTL: 0 stays 0 (deliver once, never store), anything
/// else becomes the Unix time that far ahead.
fn expiration(ttl_secs: u64) -> u64 {
    if ttl_secs == 0 {
        return 0;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    now + ttl_secs
}

/// Serializes the payload, failing permanently when it exceeds what APNs accepts.
fn encode_payload(push: &PushMessage) -> Result<Vec<u8>, SendError> {
    let bytes = payload(push).to_string().into_bytes();
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(SendError::permanent(format!(
            "the APNs payload is {} bytes, more than the {MAX_PAYLOAD_BYTES} bytes APNs accepts",
            bytes.len()
        ))
        .with_code("payload_too_large"));
    }
    Ok(bytes)
}

/// Builds the JSON payload: the `aps` dictionary, then the job's data as top-level keys.
fn payload(push: &PushMessage) -> Value {
    let mut aps = Map::new();
    match push.apns.push_type {
        ApnsPushType::Alert => {
            let mut alert = Map::new();
            if let Some(title) = &push.title {
                alert.insert("title".into(), title.as_str().into());
            }
            if let Some(body) = &push.body {
                alert.insert("body".into(), body.as_str().into());
            }
            if !alert.is_empty() {
                aps.insert("alert".into(), alert.into());
            }
            if let Some(sound) = &push.apns.sound {
                aps.insert("sound".into(), sound.as_str().into());
            }
            if let Some(badge) = push.apns.badge {
                aps.insert("badge".into(), badge.into());
            }
        }
        ApnsPushType::Background => {
            aps.insert("content-available".into(), 1.into());
        }
    }

    let mut root = Map::new();
    root.insert("aps".into(), aps.into());
    for (key, value) in &push.data {
        root.insert(key.clone(), value.as_str().into());
    }
    root.into()
}

#[derive(Deserialize)]
struct ErrorReply {
    reason: Option<String>,
}

/// Maps a reply to an outcome. `apns_id` is the id sent, the message id when the reply
/// does not echo one. `sensitive` lists values that must not reach the error message.
fn classify(reply: &Reply, apns_id: &str, sensitive: &[&str]) -> SendResult {
    if reply.status == 200 {
        let message_id = reply.header("apns-id").unwrap_or(apns_id).to_owned();
        return Ok(Delivered {
            message_id: Some(message_id),
            status: reply.status,
        });
    }

    let reason = serde_json::from_slice::<ErrorReply>(&reply.body)
        .ok()
        .and_then(|body| body.reason);
    let message = match &reason {
        Some(reason) => format!(
            "APNs rejected the notification: {}",
            http::provider_message(reason, sensitive)
        ),
        None => format!("APNs returned HTTP {} without a reason", reply.status),
    };

    let classified = match (reply.status, reason.as_deref()) {
        (400, Some("BadDeviceToken" | "DeviceTokenNotForTopic"))
        // 410 is `Unregistered` (or `ExpiredToken`): the token is no longer active.
        | (410, _) => {
            SendError::permanent(message).recipient_invalid()
        }
        // A token older than an hour, by Apple's clock: a new one can fix it. Every other
        // 403 (`InvalidProviderToken`, `MissingProviderToken`, `BadCertificate`,
        // `BadCertificateEnvironment`, `Forbidden`) needs a configuration change.
        (403, Some("ExpiredProviderToken")) => SendError::new(ErrorClass::Credentials, message),
        // `TooManyRequests` (too many pushes to this device) and
        // `TooManyProviderTokenUpdates`. APNs sends no `Retry-After`, but one is kept if
        // a proxy adds it.
        (429, _) => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        (500..=599, _) => SendError::transient(message).with_retry_after(reply.retry_after()),
        _ => SendError::permanent(message),
    };
    let classified = classified.with_status(reply.status);
    Err(match reason {
        Some(reason) => classified.with_code(reason),
        None => classified,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::job::{ApnsOptions, DeviceToken};

    fn push(push_type: ApnsPushType) -> PushMessage {
        PushMessage {
            target: PushTarget::Apns(DeviceToken::parse("token", "ab12").unwrap()),
            title: Some("Shipped".to_owned()),
            body: Some("It arrives Tuesday.".to_owned()),
            data: [("order_id".to_owned(), "42".to_owned())].into(),
            ttl_secs: None,
            apns: ApnsOptions {
                push_type,
                sound: Some("default".to_owned()),
                badge: Some(3),
                ..ApnsOptions::default()
            },
        }
    }

    fn error_of(status: u16, reason: &str) -> SendError {
        let body = json!({"reason": reason}).to_string();
        classify(&Reply::for_test(status, &body), "id", &[]).unwrap_err()
    }

    #[test]
    fn alert_payload_has_aps_and_data() {
        assert_eq!(
            payload(&push(ApnsPushType::Alert)),
            json!({
                "aps": {
                    "alert": {"title": "Shipped", "body": "It arrives Tuesday."},
                    "sound": "default",
                    "badge": 3,
                },
                "order_id": "42",
            })
        );
    }

    #[test]
    fn background_payload_is_content_available() {
        let push = push(ApnsPushType::Background);
        assert_eq!(
            payload(&push),
            json!({"aps": {"content-available": 1}, "order_id": "42"})
        );
        assert_eq!(priority(&push), 5);
    }

    #[test]
    fn oversized_payload_is_rejected_before_sending() {
        let mut push = push(ApnsPushType::Alert);
        push.data.insert("blob".to_owned(), "x".repeat(4000));
        let error = encode_payload(&push).unwrap_err();
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.code.as_deref(), Some("payload_too_large"));
    }

    #[test]
    fn expiration_zero_means_deliver_once() {
        assert_eq!(expiration(0), 0);
        assert!(expiration(60) > 1_700_000_000);
    }

    #[test]
    fn reasons_map_to_classes() {
        let cases = [
            (400, "BadDeviceToken", ErrorClass::Permanent, true),
            (400, "DeviceTokenNotForTopic", ErrorClass::Permanent, true),
            (400, "BadCollapseId", ErrorClass::Permanent, false),
            (400, "MissingTopic", ErrorClass::Permanent, false),
            (403, "ExpiredProviderToken", ErrorClass::Credentials, false),
            (403, "InvalidProviderToken", ErrorClass::Permanent, false),
            (404, "BadPath", ErrorClass::Permanent, false),
            (410, "Unregistered", ErrorClass::Permanent, true),
            (413, "PayloadTooLarge", ErrorClass::Permanent, false),
            (429, "TooManyRequests", ErrorClass::RateLimited, false),
            (
                429,
                "TooManyProviderTokenUpdates",
                ErrorClass::RateLimited,
                false,
            ),
            (500, "InternalServerError", ErrorClass::Transient, false),
            (503, "ServiceUnavailable", ErrorClass::Transient, false),
        ];
        for (status, reason, class, dead) in cases {
            let error = error_of(status, reason);
            assert_eq!(error.class, class, "{status} {reason}");
            assert_eq!(error.recipient_invalid, dead, "{status} {reason}");
            assert_eq!(error.code.as_deref(), Some(reason));
            assert_eq!(error.status, Some(status));
        }
    }

    #[test]
    fn success_keeps_echoed_apns_id() {
        let mut reply = Reply::for_test(200, "");
        reply
            .headers
            .insert("apns-id", "echoed-id".parse().unwrap());
        let delivered = classify(&reply, "sent-id", &[]).unwrap();
        assert_eq!(delivered.message_id.as_deref(), Some("echoed-id"));
    }
}
