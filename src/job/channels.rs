//! The channels a job can request and the validated message for each.

use serde::Deserialize;

use super::JobError;
use super::push::PushMessage;
use super::recipient::{EmailAddress, PhoneNumber};
use super::webhook::WebhookMessage;

/// Maximum length of an email subject, in characters (the RFC 5322 line limit).
const MAX_SUBJECT_CHARS: usize = 998;
/// Longest SMS body, in characters. Twilio rejects longer bodies.
const MAX_SMS_CHARS: usize = 1600;

/// A channel Herald can deliver through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    Email,
    Sms,
    Push,
    Webhook,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 4] = [
        ChannelKind::Email,
        ChannelKind::Sms,
        ChannelKind::Push,
        ChannelKind::Webhook,
    ];

    pub fn from_name(name: &str) -> Option<ChannelKind> {
        ChannelKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// Returns the name used in jobs, config keys and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
            ChannelKind::Push => "push",
            ChannelKind::Webhook => "webhook",
        }
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated message for one channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    Email(EmailMessage),
    Sms(SmsMessage),
    Push(PushMessage),
    Webhook(WebhookMessage),
}

impl Notification {
    pub fn kind(&self) -> ChannelKind {
        match self {
            Notification::Email(_) => ChannelKind::Email,
            Notification::Sms(_) => ChannelKind::Sms,
            Notification::Push(_) => ChannelKind::Push,
            Notification::Webhook(_) => ChannelKind::Webhook,
        }
    }

    /// Returns the masked recipient, safe for logs.
    pub fn masked_recipient(&self) -> String {
        match self {
            Notification::Email(message) => message.to.to_string(),
            Notification::Sms(message) => message.to.to_string(),
            Notification::Push(message) => message.target.to_string(),
            Notification::Webhook(message) => message.target.to_string(),
        }
    }

    pub(super) fn parse(kind: ChannelKind, body: serde_json::Value) -> Result<Self, JobError> {
        let prefix = format!("channels.{}", kind.as_str());
        match kind {
            ChannelKind::Email => EmailMessage::parse(&prefix, body).map(Notification::Email),
            ChannelKind::Sms => SmsMessage::parse(&prefix, body).map(Notification::Sms),
            ChannelKind::Push => PushMessage::parse(&prefix, body).map(Notification::Push),
            ChannelKind::Webhook => WebhookMessage::parse(&prefix, body).map(Notification::Webhook),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmailMessage {
    pub to: EmailAddress,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
}

#[derive(Deserialize)]
struct RawEmail {
    to: String,
    subject: String,
    text: Option<String>,
    html: Option<String>,
}

impl EmailMessage {
    fn parse(prefix: &str, body: serde_json::Value) -> Result<Self, JobError> {
        let raw: RawEmail = deserialize(prefix, body)?;
        let to = EmailAddress::parse(&format!("{prefix}.to"), &raw.to)?;
        check_text(
            &format!("{prefix}.subject"),
            &raw.subject,
            MAX_SUBJECT_CHARS,
        )?;
        if raw.subject.contains(['\r', '\n']) {
            return Err(JobError::field(
                format!("{prefix}.subject"),
                "must not contain line breaks",
            ));
        }
        let text = raw.text.filter(|text| !text.is_empty());
        let html = raw.html.filter(|html| !html.is_empty());
        if text.is_none() && html.is_none() {
            return Err(JobError::field(
                prefix,
                "needs a non-empty `text` or `html` body",
            ));
        }
        Ok(EmailMessage {
            to,
            subject: raw.subject,
            text,
            html,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmsMessage {
    pub to: PhoneNumber,
    pub body: String,
}

#[derive(Deserialize)]
struct RawSms {
    to: String,
    body: String,
}

impl SmsMessage {
    fn parse(prefix: &str, body: serde_json::Value) -> Result<Self, JobError> {
        let raw: RawSms = deserialize(prefix, body)?;
        let to = PhoneNumber::parse(&format!("{prefix}.to"), &raw.to)?;
        check_text(&format!("{prefix}.body"), &raw.body, MAX_SMS_CHARS)?;
        Ok(SmsMessage { to, body: raw.body })
    }
}

pub(super) fn deserialize<T: serde::de::DeserializeOwned>(
    prefix: &str,
    body: serde_json::Value,
) -> Result<T, JobError> {
    if !body.is_object() {
        return Err(JobError::field(prefix, "must be an object"));
    }
    serde_path_to_error::deserialize(body).map_err(|error| {
        let field = if error.path().iter().next().is_none() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", error.path())
        };
        JobError::field(field, without_values(&error.inner().to_string()))
    })
}

/// Serde's words for the kind of a value, each followed in its messages by the value itself.
const VALUE_KINDS: [&str; 6] = [
    "integer ",
    "floating point ",
    "boolean ",
    "character ",
    "string ",
    "unknown variant ",
];

/// Removes the values that serde quotes in an error message (``integer `15555550123` ``),
/// because a mistyped field may be a recipient, and the message reaches logs and
/// dead-letter headers.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((start, kind)) = VALUE_KINDS
        .iter()
        .filter_map(|kind| rest.find(kind).map(|at| (at, *kind)))
        .min_by_key(|(at, _)| *at)
    {
        let after = start + kind.len();
        out.push_str(&rest[..after]);
        rest = &rest[after..];
        let Some(quote) = rest.chars().next().filter(|c| matches!(c, '`' | '"')) else {
            continue;
        };
        match rest[1..].find(quote) {
            Some(end) => {
                out.push_str("(value hidden)");
                rest = &rest[end + 2..];
            }
            None => {
                out.push_str("(value hidden)");
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn check_text(field: &str, text: &str, max_chars: usize) -> Result<(), JobError> {
    if text.trim().is_empty() {
        return Err(JobError::field(field, "must not be empty"));
    }
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(JobError::field(
            field,
            format!("is {chars} characters long, more than {max_chars}"),
        ));
    }
    Ok(())
}
