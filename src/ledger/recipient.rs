//! Recipients in the ledger: the keyed hash every row carries, and the masked form that
//! `herald status` prints.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::job::{
    ChannelKind, DeviceToken, EmailAddress, Notification, PhoneNumber, PushTarget, WebhookTarget,
    mask_endpoint,
};

/// Hex digits of the recipient hash that `herald status` prints.
const HASH_PREFIX_LEN: usize = 12;

/// The recipient of one channel, borrowed from a parsed job.
#[derive(Clone, Copy, Debug)]
pub enum Recipient<'a> {
    Email(&'a EmailAddress),
    Sms(&'a PhoneNumber),
    Push(&'a PushTarget),
    Webhook(&'a WebhookTarget),
}

impl<'a> From<&'a Notification> for Recipient<'a> {
    fn from(notification: &'a Notification) -> Self {
        match notification {
            Notification::Email(message) => Recipient::Email(&message.to),
            Notification::Sms(message) => Recipient::Sms(&message.to),
            Notification::Push(message) => Recipient::Push(&message.target),
            Notification::Webhook(message) => Recipient::Webhook(&message.target),
        }
    }
}

impl<'a> Recipient<'a> {
    pub fn channel(self) -> ChannelKind {
        match self {
            Recipient::Email(_) => ChannelKind::Email,
            Recipient::Sms(_) => ChannelKind::Sms,
            Recipient::Push(_) => ChannelKind::Push,
            Recipient::Webhook(_) => ChannelKind::Webhook,
        }
    }

    /// Returns the recipient itself, for hashing and for the events that hand it back to
    /// the producer that sent it.
    pub fn expose(self) -> Cow<'a, str> {
        match self {
            Recipient::Email(address) => Cow::Borrowed(address.expose()),
            Recipient::Sms(number) => Cow::Borrowed(number.expose()),
            Recipient::Push(target) => Cow::Borrowed(target.expose()),
            Recipient::Webhook(target) => Cow::Owned(target.expose()),
        }
    }
}

/// Computes the keyed recipient hash: HMAC-SHA256 of the recipient's bytes, in lowercase hex.
/// Without the key, a hash cannot be checked against guessed addresses or numbers.
#[derive(Clone)]
pub(super) struct RecipientHasher {
    key: Secret,
}

impl RecipientHasher {
    pub(super) fn new(key: Secret) -> RecipientHasher {
        RecipientHasher { key }
    }

    pub(super) fn hash(&self, recipient: &str) -> String {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(recipient.as_bytes());
        to_hex(&mac.finalize().into_bytes())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Returns the recipient as `herald status` prints it: a stored recipient masked as the job
/// module masks it in logs, or else the start of its hash.
pub(super) fn display_form(channel: &str, stored: Option<&str>, hash: &str) -> String {
    let masked = stored.and_then(|text| mask_stored(channel, text));
    masked.unwrap_or_else(|| {
        let prefix: String = hash.chars().take(HASH_PREFIX_LEN).collect();
        format!("hmac:{prefix}")
    })
}

/// Masks a stored recipient by parsing it as its channel's type. Returns `None` when the
/// channel is unknown or the text no longer parses, so nothing unmasked is ever printed.
fn mask_stored(channel: &str, text: &str) -> Option<String> {
    let field = "recipient";
    match ChannelKind::from_name(channel)? {
        ChannelKind::Email => EmailAddress::parse(field, text).ok().map(|a| a.to_string()),
        ChannelKind::Sms => PhoneNumber::parse(field, text).ok().map(|n| n.to_string()),
        // A Web Push recipient is stored as its endpoint URL, a device token as itself.
        ChannelKind::Push if text.starts_with("https://") || text.starts_with("http://") => {
            Some(mask_endpoint(text))
        }
        ChannelKind::Push => DeviceToken::parse(field, text).ok().map(|t| t.to_string()),
        ChannelKind::Webhook => WebhookTarget::parse_exposed(text).map(|t| t.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_rfc_4231_case_2() {
        let hasher = RecipientHasher::new(Secret::new("Jefe"));
        assert_eq!(
            hasher.hash("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hash_depends_on_key() {
        let first = RecipientHasher::new(Secret::new("0123456789abcdef"));
        let second = RecipientHasher::new(Secret::new("fedcba9876543210"));
        assert_ne!(first.hash("+15555550123"), second.hash("+15555550123"));
    }

    #[test]
    fn stored_email_is_masked() {
        let shown = display_form("email", Some("alice@example.com"), "ab");
        assert_eq!(shown, "a***@example.com");
    }

    #[test]
    fn stored_phone_is_masked() {
        assert_eq!(display_form("sms", Some("+15555550123"), "ab"), "***23");
    }

    #[test]
    fn stored_webhook_target_is_masked() {
        let endpoint = display_form("webhook", Some("endpoint:billing"), "ab");
        assert_eq!(endpoint, "endpoint:billing");
        let url = display_form("webhook", Some("https://h.example/t/secret?k=1"), "ab");
        assert!(url.starts_with("https://h.example/…#"), "{url}");
        assert!(!url.contains("secret"), "{url}");
    }

    #[test]
    fn stored_push_endpoint_is_masked() {
        let endpoint = "https://push.example.net/send/abc123";
        let shown = display_form("push", Some(endpoint), "ab");
        assert!(shown.starts_with("sub:"), "{shown}");
        assert!(!shown.contains("example"), "{shown}");
        assert_eq!(shown, mask_endpoint(endpoint));
    }

    #[test]
    fn missing_recipient_shows_hash_prefix() {
        let hash = "0123456789abcdef0123";
        assert_eq!(display_form("push", None, hash), "hmac:0123456789ab");
    }

    #[test]
    fn unparsable_recipient_shows_hash_prefix() {
        assert_eq!(
            display_form("sms", Some("not a number"), "ffff"),
            "hmac:ffff"
        );
        assert_eq!(display_form("fax", Some("+15555550123"), "ee"), "hmac:ee");
    }
}
