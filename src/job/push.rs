//! The `push` channel: the target device or browser, the message, and the options that only
//! one platform reads.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::JobError;
use super::channels::deserialize;
use super::recipient::{DeviceToken, PushSubscription};

/// Largest push payload (title, body and data together), in bytes. FCM and APNs reject
/// larger messages.
const MAX_PUSH_PAYLOAD_BYTES: usize = 4096;
/// Longest `ttl_secs`: 28 days, FCM's maximum and below APNs' 30 days.
const MAX_TTL_SECS: u64 = 2_419_200;
/// Longest `apns-collapse-id`, in bytes (Apple's limit).
const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// The push platform a target belongs to, which decides the adapter that can send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PushPlatform {
    /// Firebase Cloud Messaging registration tokens. The default.
    Fcm,
    /// Apple Push Notification service device tokens.
    Apns,
    /// Web Push subscriptions (RFC 8030).
    WebPush,
}

impl PushPlatform {
    /// Returns the name used in jobs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PushPlatform::Fcm => "fcm",
            PushPlatform::Apns => "apns",
            PushPlatform::WebPush => "webpush",
        }
    }

    fn from_name(name: &str) -> Option<PushPlatform> {
        [PushPlatform::Fcm, PushPlatform::Apns, PushPlatform::WebPush]
            .into_iter()
            .find(|platform| platform.as_str() == name)
    }
}

impl fmt::Display for PushPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The destination of a push: a device token or a browser subscription. Each variant is a
/// recipient and prints masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTarget {
    Fcm(DeviceToken),
    Apns(DeviceToken),
    /// Boxed because a subscription is several times larger than a token.
    WebPush(Box<PushSubscription>),
}

impl PushTarget {
    pub fn platform(&self) -> PushPlatform {
        match self {
            PushTarget::Fcm(_) => PushPlatform::Fcm,
            PushTarget::Apns(_) => PushPlatform::Apns,
            PushTarget::WebPush(_) => PushPlatform::WebPush,
        }
    }

    /// Returns the recipient itself (a token or an endpoint URL), for the ledger's keyed
    /// hash and for requests only.
    pub fn expose(&self) -> &str {
        match self {
            PushTarget::Fcm(token) | PushTarget::Apns(token) => token.expose(),
            PushTarget::WebPush(subscription) => subscription.endpoint().as_str(),
        }
    }
}

impl fmt::Display for PushTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushTarget::Fcm(token) | PushTarget::Apns(token) => token.fmt(f),
            PushTarget::WebPush(subscription) => subscription.fmt(f),
        }
    }
}

/// The kind of APNs notification, sent as `apns-push-type`. Only the two kinds whose payload
/// Herald can build from a job are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApnsPushType {
    /// A visible notification with a title, body, sound or badge.
    #[default]
    Alert,
    /// A silent notification that wakes the app (`content-available`).
    Background,
}

impl ApnsPushType {
    pub fn as_str(self) -> &'static str {
        match self {
            ApnsPushType::Alert => "alert",
            ApnsPushType::Background => "background",
        }
    }
}

/// Options that only APNs reads. Every field is optional in the job.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApnsOptions {
    pub push_type: ApnsPushType,
    /// `apns-priority`: 10 (send now), 5 (power-aware) or 1 (lowest). `None` sends 10 for
    /// alerts and 5 for background pushes, as Apple requires for the latter.
    pub priority: Option<u8>,
    /// Replaces the `apns-collapse-id` Herald derives from the job id and channel.
    pub collapse_id: Option<String>,
    /// The sound to play, such as `default`.
    pub sound: Option<String>,
    /// The number to show on the app icon; 0 removes it.
    pub badge: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PushMessage {
    pub target: PushTarget,
    pub title: Option<String>,
    pub body: Option<String>,
    /// Custom key-value pairs delivered to the app. FCM only carries string values.
    pub data: BTreeMap<String, String>,
    /// How long the push service may keep the message for an offline device, in seconds.
    /// `None` leaves it to the provider's configuration.
    pub ttl_secs: Option<u64>,
    pub apns: ApnsOptions,
}

#[derive(Deserialize)]
struct RawPush {
    platform: Option<String>,
    token: Option<String>,
    subscription: Option<serde_json::Value>,
    title: Option<String>,
    body: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
    ttl_secs: Option<u64>,
    apns: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawSubscription {
    endpoint: String,
    keys: RawSubscriptionKeys,
}

#[derive(Deserialize)]
struct RawSubscriptionKeys {
    p256dh: String,
    auth: String,
}

#[derive(Deserialize)]
struct RawApns {
    push_type: Option<String>,
    priority: Option<u8>,
    collapse_id: Option<String>,
    sound: Option<String>,
    badge: Option<u32>,
}

impl PushMessage {
    pub(super) fn parse(prefix: &str, body: serde_json::Value) -> Result<Self, JobError> {
        let raw: RawPush = deserialize(prefix, body)?;
        let platform = match raw.platform.as_deref() {
            None => PushPlatform::Fcm,
            Some(name) => PushPlatform::from_name(name).ok_or_else(|| {
                JobError::field(
                    format!("{prefix}.platform"),
                    format!("is {name:?}; expected \"fcm\", \"apns\" or \"webpush\""),
                )
            })?,
        };
        let target = parse_target(prefix, platform, raw.token, raw.subscription)?;

        let title = raw.title.filter(|title| !title.is_empty());
        let body = raw.body.filter(|body| !body.is_empty());
        if title.is_none() && body.is_none() && raw.data.is_empty() {
            return Err(JobError::field(
                prefix,
                "needs a `title`, a `body` or `data`",
            ));
        }
        check_data_keys(prefix, platform, &raw.data)?;
        check_payload_size(prefix, title.as_deref(), body.as_deref(), &raw.data)?;
        if let Some(ttl) = raw.ttl_secs.filter(|ttl| *ttl > MAX_TTL_SECS) {
            return Err(JobError::field(
                format!("{prefix}.ttl_secs"),
                format!("is {ttl}, more than {MAX_TTL_SECS} (28 days)"),
            ));
        }
        let has_alert = title.is_some() || body.is_some();
        let apns = match raw.apns {
            None => ApnsOptions {
                push_type: default_push_type(has_alert),
                ..ApnsOptions::default()
            },
            Some(_) if platform != PushPlatform::Apns => {
                return Err(JobError::field(
                    format!("{prefix}.apns"),
                    "is only allowed when `platform` is \"apns\"",
                ));
            }
            Some(value) => parse_apns(&format!("{prefix}.apns"), value, has_alert)?,
        };

        Ok(PushMessage {
            target,
            title,
            body,
            data: raw.data,
            ttl_secs: raw.ttl_secs,
            apns,
        })
    }
}

fn parse_target(
    prefix: &str,
    platform: PushPlatform,
    token: Option<String>,
    subscription: Option<serde_json::Value>,
) -> Result<PushTarget, JobError> {
    let token_field = format!("{prefix}.token");
    let subscription_field = format!("{prefix}.subscription");
    match platform {
        PushPlatform::Fcm | PushPlatform::Apns => {
            if subscription.is_some() {
                return Err(JobError::field(
                    subscription_field,
                    format!("is only allowed when `platform` is \"webpush\", not \"{platform}\""),
                ));
            }
            let Some(token) = token else {
                return Err(JobError::field(token_field, "is required"));
            };
            let token = DeviceToken::parse(&token_field, &token)?;
            if platform == PushPlatform::Fcm {
                return Ok(PushTarget::Fcm(token));
            }
            // The token becomes a URL path segment, so only hex digits may pass.
            if !token.expose().chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(JobError::field(
                    token_field,
                    "is not an APNs device token: expected hexadecimal digits",
                ));
            }
            Ok(PushTarget::Apns(token))
        }
        PushPlatform::WebPush => {
            if token.is_some() {
                return Err(JobError::field(
                    token_field,
                    "is not used when `platform` is \"webpush\"; give `subscription` instead",
                ));
            }
            let Some(value) = subscription else {
                return Err(JobError::field(subscription_field, "is required"));
            };
            let raw: RawSubscription = deserialize(&subscription_field, value)?;
            let subscription = PushSubscription::parse(
                &subscription_field,
                &raw.endpoint,
                &raw.keys.p256dh,
                &raw.keys.auth,
            )?;
            Ok(PushTarget::WebPush(Box::new(subscription)))
        }
    }
}

/// Rejects data keys the platform reserves: FCM's `from`, `notification`, `message_type`
/// and anything starting with `google` or `gcm`, and APNs' `aps`, which contains the alert.
fn check_data_keys(
    prefix: &str,
    platform: PushPlatform,
    data: &BTreeMap<String, String>,
) -> Result<(), JobError> {
    let reserved = |key: &str| match platform {
        PushPlatform::Fcm => {
            matches!(key, "from" | "notification" | "message_type")
                || key.starts_with("google")
                || key.starts_with("gcm")
        }
        PushPlatform::Apns => key == "aps",
        PushPlatform::WebPush => false,
    };
    match data.keys().find(|key| reserved(key)) {
        Some(key) => Err(JobError::field(
            format!("{prefix}.data"),
            format!(
                "key {key:?} is reserved by {}",
                platform.as_str().to_uppercase()
            ),
        )),
        None => Ok(()),
    }
}

fn check_payload_size(
    prefix: &str,
    title: Option<&str>,
    body: Option<&str>,
    data: &BTreeMap<String, String>,
) -> Result<(), JobError> {
    let payload_bytes = title.map_or(0, str::len)
        + body.map_or(0, str::len)
        + data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
    if payload_bytes > MAX_PUSH_PAYLOAD_BYTES {
        return Err(JobError::field(
            prefix,
            format!(
                "title, body and data add up to {payload_bytes} bytes, more than {MAX_PUSH_PAYLOAD_BYTES}"
            ),
        ));
    }
    Ok(())
}

/// Returns the push type of a job that names none: an alert when it has a title or body,
/// else a background push that delivers only the data.
fn default_push_type(has_alert: bool) -> ApnsPushType {
    if has_alert {
        ApnsPushType::Alert
    } else {
        ApnsPushType::Background
    }
}

fn parse_apns(
    field: &str,
    value: serde_json::Value,
    has_alert: bool,
) -> Result<ApnsOptions, JobError> {
    let raw: RawApns = deserialize(field, value)?;
    let push_type = match raw.push_type.as_deref() {
        None => default_push_type(has_alert || raw.sound.is_some() || raw.badge.is_some()),
        Some("alert") => ApnsPushType::Alert,
        Some("background") => ApnsPushType::Background,
        Some(other) => {
            return Err(JobError::field(
                format!("{field}.push_type"),
                format!("is {other:?}; expected \"alert\" or \"background\""),
            ));
        }
    };
    if let Some(priority) = raw.priority.filter(|p| ![1, 5, 10].contains(p)) {
        return Err(JobError::field(
            format!("{field}.priority"),
            format!("is {priority}; expected 10, 5 or 1"),
        ));
    }
    if let Some(id) = &raw.collapse_id
        && (id.is_empty() || id.len() > MAX_COLLAPSE_ID_BYTES)
    {
        return Err(JobError::field(
            format!("{field}.collapse_id"),
            "must be 1 to 64 bytes long",
        ));
    }
    if raw.sound.as_deref() == Some("") {
        return Err(JobError::field(
            format!("{field}.sound"),
            "must not be empty",
        ));
    }

    if push_type == ApnsPushType::Background {
        // Apple delivers a background push only without an alert, sound or badge, and only
        // at priority 5.
        if has_alert || raw.sound.is_some() || raw.badge.is_some() {
            return Err(JobError::field(
                field,
                "a background push carries only `data`: remove `title`, `body`, `sound` and `badge`",
            ));
        }
        if raw.priority == Some(10) {
            return Err(JobError::field(
                format!("{field}.priority"),
                "must be 5 or 1 for a background push",
            ));
        }
    }

    Ok(ApnsOptions {
        push_type,
        priority: raw.priority,
        collapse_id: raw.collapse_id,
        sound: raw.sound,
        badge: raw.badge,
    })
}
