//! Builds the MIME message for one attempt, with headers that let a resend be recognised.

use lettre::Message;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use sha2::{Digest, Sha256};

use crate::job::{EmailMessage, JobId};
use crate::providers::SendError;

/// The `X-Herald-Job-Id` header: the job that produced the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeraldJobId(String);

impl Header for HeraldJobId {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Herald-Job-Id")
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(HeraldJobId(text.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// Returns the `Message-ID` for a job's channel, angle brackets included. The same job and
/// channel always give the same id, so a resend after an attempt whose outcome is unknown
/// carries the id of the first, and receivers that deduplicate on it drop the copy. The
/// left part hashes the job id, because a job id may contain `:`, which RFC 5322 does not
/// allow there.
pub(super) fn message_id(job_id: &JobId, channel: &str, domain: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(job_id.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(channel.as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("<herald.{channel}.{hex}@{domain}>")
}

/// Builds the message: plain text, HTML, or both as `multipart/alternative`. An address
/// that lettre cannot parse is a permanent failure of this recipient, reported without the
/// address.
pub(super) fn build(
    from: &Mailbox,
    message_id: &str,
    job_id: &JobId,
    email: &EmailMessage,
) -> Result<Message, SendError> {
    let to: Mailbox = email.to.expose().parse().map_err(|_| {
        SendError::permanent("the recipient is not a valid SMTP mailbox address")
            .with_code("invalid_recipient")
            .recipient_invalid()
    })?;
    let builder = Message::builder()
        .message_id(Some(message_id.to_owned()))
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone())
        .header(HeraldJobId(job_id.as_str().to_owned()));

    let built = match (&email.text, &email.html) {
        (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
            text.clone(),
            html.clone(),
        )),
        (None, Some(html)) => builder.singlepart(SinglePart::html(html.clone())),
        (text, None) => builder.singlepart(SinglePart::plain(text.clone().unwrap_or_default())),
    };
    built.map_err(|error| {
        SendError::permanent(format!("failed to build the message: {error}"))
            .with_code("invalid_message")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_stable_per_job_and_channel() {
        let job = JobId::parse("order:42").unwrap();
        let first = message_id(&job, "email", "mail.example.com");
        assert_eq!(first, message_id(&job, "email", "mail.example.com"));
        assert_ne!(first, message_id(&job, "sms", "mail.example.com"));
        let other = JobId::parse("order:43").unwrap();
        assert_ne!(first, message_id(&other, "email", "mail.example.com"));
    }

    #[test]
    fn message_id_is_valid_msg_id() {
        let job = JobId::parse("order:42").unwrap();
        let id = message_id(&job, "email", "mail.example.com");
        assert!(id.starts_with("<herald.email."), "{id}");
        assert!(id.ends_with("@mail.example.com>"), "{id}");
        let left = &id[1..id.find('@').unwrap()];
        assert!(
            left.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
            "{id}"
        );
    }
}
