//! Web Push adapter (RFC 8030): `POST` to the subscription's endpoint with the payload
//! encrypted as one `aes128gcm` record (RFC 8291) and a VAPID `Authorization` (RFC 8292).
//!
//! A push service replies 201 with a `Location` naming the message. Errors have no common
//! body format, so the status decides the class: 404 and 410 mean the subscription is gone,
//! 401 and 403 that the VAPID token or key was rejected.

mod address;
mod vapid;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use web_push_native::{Auth, p256};

use self::address::{EndpointRejected, PublicOnlyResolver};
use self::vapid::Vapid;
use super::http::{self, Reply};
use super::{Delivered, ErrorClass, Provider, SendError, SendRequest, SendResult, dedupe};
use crate::config::{ConfigError, HttpConfig, WebpushConfig};
use crate::job::{
    ChannelKind, Notification, PushMessage, PushPlatform, PushSubscription, PushTarget,
};

/// Largest plaintext that fits the 4096-byte body every push service must accept (RFC 8291,
/// section 4): the record adds a 86-byte header, a padding delimiter and a 16-byte tag.
const MAX_PLAINTEXT_BYTES: usize = 3993;

pub struct WebPushSender {
    client: reqwest::Client,
    vapid: Vapid,
    default_ttl_secs: u64,
    urgency: Option<String>,
    allow_private_endpoints: bool,
}

impl WebPushSender {
    pub fn new(key: &str, config: &WebpushConfig, http: &HttpConfig) -> Result<Self, ConfigError> {
        let key_field = match &config.vapid_private_key_file {
            Some(path) if !path.as_os_str().is_empty() => format!("{key}.vapid_private_key_file"),
            _ => format!("{key}.vapid_private_key"),
        };
        let vapid = Vapid::new(&key_field, &config.vapid_private_key(key)?, &config.subject)?;

        // No proxy: the address checks must apply to the host actually connected to.
        let mut builder = http::client_builder(http).no_proxy();
        if !config.allow_private_endpoints {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = builder
            .build()
            .map_err(|error| http::client_error(key, &error))?;

        Ok(WebPushSender {
            client,
            vapid,
            default_ttl_secs: config.default_ttl_secs,
            urgency: Some(config.urgency.clone()).filter(|urgency| !urgency.is_empty()),
            allow_private_endpoints: config.allow_private_endpoints,
        })
    }

    /// Builds the request: encrypted body and every Web Push header.
    fn request(
        &self,
        push: &PushMessage,
        subscription: &PushSubscription,
        topic: String,
    ) -> Result<reqwest::RequestBuilder, SendError> {
        let endpoint = subscription.endpoint();
        let audience = endpoint.origin().ascii_serialization();
        let body = encrypt(&plaintext(push)?, subscription)?;
        let ttl = push.ttl_secs.unwrap_or(self.default_ttl_secs);

        let mut builder = self
            .client
            .post(endpoint.clone())
            .header("TTL", ttl.to_string())
            .header("Topic", topic)
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Authorization", self.vapid.authorization(&audience)?)
            .body(body);
        if let Some(urgency) = &self.urgency {
            builder = builder.header("Urgency", urgency);
        }
        Ok(builder)
    }
}

#[async_trait]
impl Provider for WebPushSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Push(push) = request.notification else {
            return Err(SendError::permanent(format!(
                "Web Push sends push notifications, not {}",
                request.notification.kind()
            )));
        };
        let PushTarget::WebPush(subscription) = &push.target else {
            return Err(super::unsupported_platform(
                "Web Push",
                push.target.platform(),
            ));
        };
        address::check_endpoint(subscription.endpoint(), self.allow_private_endpoints)
            .map_err(|rejected| endpoint_rejected(&rejected))?;

        let topic = dedupe::collapse_key(request.job_id, ChannelKind::Push);
        let response = self
            .request(push, subscription, topic)?
            .send()
            .await
            .map_err(|error| match address::rejection_in(&error) {
                Some(rejected) => endpoint_rejected(rejected),
                None => http::transport_error(&error),
            })?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "push service replied");

        classify(&reply, subscription.endpoint())
    }

    fn supports(&self, notification: &Notification) -> bool {
        matches!(notification, Notification::Push(push) if push.target.platform() == PushPlatform::WebPush)
    }
}

/// The JSON the service worker receives in its `push` event.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: &'a BTreeMap<String, String>,
}

fn plaintext(push: &PushMessage) -> Result<Vec<u8>, SendError> {
    let payload = Payload {
        title: push.title.as_deref(),
        body: push.body.as_deref(),
        data: &push.data,
    };
    let bytes = serde_json::to_vec(&payload)
        .map_err(|error| SendError::permanent(format!("failed to encode the payload: {error}")))?;
    if bytes.len() > MAX_PLAINTEXT_BYTES {
        return Err(SendError::permanent(format!(
            "the payload is {} bytes as JSON, more than the {MAX_PLAINTEXT_BYTES} bytes a push service must accept",
            bytes.len()
        ))
        .with_code("payload_too_large"));
    }
    Ok(bytes)
}

/// Encrypts `plaintext` for the subscription's browser as one `aes128gcm` record.
fn encrypt(plaintext: &[u8], subscription: &PushSubscription) -> Result<Vec<u8>, SendError> {
    let public_key = p256::PublicKey::from_sec1_bytes(subscription.p256dh()).map_err(|_| {
        SendError::permanent("the subscription's `p256dh` is not a point on the P-256 curve")
            .with_code("invalid_subscription_key")
            .recipient_invalid()
    })?;
    let auth = Auth::clone_from_slice(subscription.auth());
    web_push_native::encrypt(plaintext.to_vec(), &public_key, &auth).map_err(|error| {
        SendError::permanent(format!("failed to encrypt the payload: {error}"))
            .with_code("encryption")
    })
}

fn endpoint_rejected(rejected: &EndpointRejected) -> SendError {
    SendError::permanent(rejected.reason()).with_code("endpoint_rejected")
}

/// Maps a push service reply to an outcome. Neither the endpoint nor its last path segment,
/// which push services use as the subscription's id, reaches the error message.
fn classify(reply: &Reply, endpoint: &reqwest::Url) -> SendResult {
    if reply.is_success() {
        return Ok(Delivered {
            message_id: reply.header("location").map(str::to_owned),
            status: reply.status,
        });
    }

    let text = String::from_utf8_lossy(&reply.body);
    let subscription_id = endpoint
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .filter(|segment| segment.len() >= 8)
        .unwrap_or_default();
    let detail = http::provider_message(&text, &[endpoint.as_str(), subscription_id]);
    let message = if detail.is_empty() {
        format!("the push service returned HTTP {}", reply.status)
    } else {
        format!("the push service returned HTTP {}: {detail}", reply.status)
    };

    let (error, code) = match reply.status {
        // The subscription expired or was revoked (RFC 8030, section 7.3; 410 is what the
        // Chrome and Mozilla services send).
        404 | 410 => (
            SendError::permanent(message).recipient_invalid(),
            "subscription_gone",
        ),
        // RFC 8292, section 4.2: 401 for a missing or invalid VAPID token, 403 when the key
        // differs from the one the subscription was made with. Neither is fixed by signing
        // again, and a key mismatch may be a configuration error, so the subscription is
        // kept.
        401 => (SendError::permanent(message), "vapid_unauthorized"),
        403 => (SendError::permanent(message), "vapid_forbidden"),
        413 => (SendError::permanent(message), "payload_too_large"),
        429 => (
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after()),
            "too_many_requests",
        ),
        500..=599 => (
            SendError::transient(message).with_retry_after(reply.retry_after()),
            "server_error",
        ),
        _ => (SendError::permanent(message), "rejected"),
    };
    Err(error.with_status(reply.status).with_code(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENDPOINT: &str = "https://push.example.net/wpush/v2/gAAAAABk-subscription";

    fn endpoint() -> reqwest::Url {
        reqwest::Url::parse(ENDPOINT).unwrap()
    }

    fn error_of(status: u16) -> SendError {
        classify(&Reply::for_test(status, ""), &endpoint()).unwrap_err()
    }

    #[test]
    fn created_keeps_location() {
        let mut reply = Reply::for_test(201, "");
        reply
            .headers
            .insert("location", "https://push.example.net/m/7".parse().unwrap());
        let delivered = classify(&reply, &endpoint()).unwrap();
        assert_eq!(
            delivered.message_id.as_deref(),
            Some("https://push.example.net/m/7")
        );
        assert_eq!(delivered.status, 201);
    }

    #[test]
    fn statuses_map_to_classes() {
        let cases = [
            (400, ErrorClass::Permanent, false),
            (401, ErrorClass::Permanent, false),
            (403, ErrorClass::Permanent, false),
            (404, ErrorClass::Permanent, true),
            (410, ErrorClass::Permanent, true),
            (413, ErrorClass::Permanent, false),
            (429, ErrorClass::RateLimited, false),
            (500, ErrorClass::Transient, false),
            (503, ErrorClass::Transient, false),
        ];
        for (status, class, gone) in cases {
            let error = error_of(status);
            assert_eq!(error.class, class, "{status}");
            assert_eq!(error.recipient_invalid, gone, "{status}");
            assert_eq!(error.status, Some(status));
        }
    }

    #[test]
    fn endpoint_is_redacted_from_reply_text() {
        let body = format!("subscription {ENDPOINT} has expired (id gAAAAABk-subscription)");
        let error = classify(&Reply::for_test(410, &body), &endpoint()).unwrap_err();
        assert!(!error.message.contains(ENDPOINT), "{}", error.message);
        assert!(!error.message.contains("gAAAAABk"), "{}", error.message);
    }
}
