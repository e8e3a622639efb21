//! The job format producers publish: parsing, validation and the typed job.
//!
//! A job body is JSON. Parsing is strict about the fields Herald reads and lenient about
//! everything else: unknown top-level fields are ignored so producers can add their own,
//! and an unknown channel name fails only that channel. The JSON Schema in
//! `docs/job.schema.json` describes the same rules for producers.

mod channels;
mod id;
mod push;
mod recipient;
mod webhook;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

pub use channels::{ChannelKind, EmailMessage, Notification, SmsMessage};
pub use id::{JobId, MAX_JOB_ID_LEN};
pub use push::{ApnsOptions, ApnsPushType, PushMessage, PushPlatform, PushTarget};
pub use recipient::{DeviceToken, EmailAddress, PhoneNumber, PushSubscription, mask_endpoint};
pub use webhook::{DEFAULT_EVENT_TYPE, WebhookMessage, WebhookTarget};

/// Largest job body accepted by default, in bytes.
pub const DEFAULT_MAX_JOB_BYTES: usize = 256 * 1024;

/// A validated notification job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub expires_at: Option<DateTime<Utc>>,
    /// The requested channels, in the order of their names.
    pub channels: Vec<ChannelRequest>,
}

/// One entry of a job's `channels` object.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelRequest {
    Known(Notification),
    /// A channel name this version of Herald does not serve. Only this channel fails.
    Unknown {
        name: String,
    },
}

impl ChannelRequest {
    /// Returns the channel's name as the job spelled it.
    pub fn name(&self) -> &str {
        match self {
            ChannelRequest::Known(notification) => notification.kind().as_str(),
            ChannelRequest::Unknown { name } => name,
        }
    }
}

/// The reason a job body was rejected. Every variant makes the job a poison job.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JobError {
    #[error("job body is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },

    #[error("job body is not valid JSON: {0}")]
    InvalidJson(String),

    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
}

impl JobError {
    /// Returns the bounded reason label used in metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            JobError::TooLarge { .. } => "too_large",
            JobError::InvalidJson(_) => "invalid_json",
            JobError::InvalidField { .. } => "invalid_job",
        }
    }

    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        JobError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The JSON shape before validation. Fields Herald does not know are ignored by serde.
#[derive(Deserialize)]
struct RawJob {
    id: Option<serde_json::Value>,
    expires_at: Option<serde_json::Value>,
    channels: Option<serde_json::Value>,
}

impl Job {
    /// Parses and validates a job body, rejecting bodies larger than `max_bytes`.
    pub fn parse(body: &[u8], max_bytes: usize) -> Result<Job, JobError> {
        if body.len() > max_bytes {
            return Err(JobError::TooLarge {
                size: body.len(),
                limit: max_bytes,
            });
        }

        let raw: RawJob = match serde_json::from_slice(body) {
            // Serde would also read a struct from a JSON array, by position.
            Ok(_) if !looks_like_object(body) => {
                return Err(JobError::field("$", "the job must be a JSON object"));
            }
            Ok(raw) => raw,
            Err(error) if error.is_data() && !looks_like_object(body) => {
                return Err(JobError::field("$", "the job must be a JSON object"));
            }
            // A data error inside an object, such as a duplicate `id`: serde names it.
            Err(error) if error.is_data() => return Err(JobError::field("$", error.to_string())),
            Err(error) => return Err(JobError::InvalidJson(error.to_string())),
        };

        let id = match raw.id {
            Some(serde_json::Value::String(id)) => JobId::parse(&id)?,
            Some(_) => return Err(JobError::field("id", "must be a string")),
            None => return Err(JobError::field("id", "is required")),
        };
        let expires_at = raw.expires_at.map(parse_expiry).transpose()?;
        let channels = parse_channels(raw.channels)?;

        Ok(Job {
            id,
            expires_at,
            channels,
        })
    }

    /// Returns whether the job's `expires_at` lies before `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= now)
    }
}

/// Returns the job id from a body that failed validation, when one can still be read, so
/// dead-letter headers and logs can name the job.
pub fn salvage_id(body: &[u8]) -> Option<JobId> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    JobId::parse(value.get("id")?.as_str()?).ok()
}

fn looks_like_object(body: &[u8]) -> bool {
    body.iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{')
}

fn parse_expiry(value: serde_json::Value) -> Result<DateTime<Utc>, JobError> {
    let serde_json::Value::String(text) = value else {
        return Err(JobError::field("expires_at", "must be an RFC 3339 string"));
    };
    DateTime::parse_from_rfc3339(&text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| {
            JobError::field(
                "expires_at",
                format!("is not an RFC 3339 timestamp: {error}"),
            )
        })
}

fn parse_channels(value: Option<serde_json::Value>) -> Result<Vec<ChannelRequest>, JobError> {
    let Some(value) = value else {
        return Err(JobError::field("channels", "is required"));
    };
    let serde_json::Value::Object(entries) = value else {
        return Err(JobError::field("channels", "must be an object"));
    };
    if entries.is_empty() {
        return Err(JobError::field(
            "channels",
            "must name at least one channel",
        ));
    }

    let sorted: BTreeMap<String, serde_json::Value> = entries.into_iter().collect();
    sorted
        .into_iter()
        .map(|(name, body)| match ChannelKind::from_name(&name) {
            Some(kind) => Notification::parse(kind, body).map(ChannelRequest::Known),
            None => Ok(ChannelRequest::Unknown { name }),
        })
        .collect()
}

#[cfg(test)]
mod tests;
