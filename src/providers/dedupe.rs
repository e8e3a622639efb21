//! Keys derived from a job id and channel, sent to push providers so that a message sent
//! twice (after an ambiguous timeout, or a redelivery that lost its ledger row) replaces
//! the first on the device instead of showing twice. The same job and channel always give
//! the same keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::job::{ChannelKind, JobId};

/// The UUIDv5 namespace of Herald's message ids: a fixed random value, so that Herald's ids
/// differ from name-based UUIDs other systems derive from the same names.
const MESSAGE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_45a2_93d4_4e0b_a8f7_2b51_c0e3_9d86);

/// Bytes of the SHA-256 digest kept in a collapse key: 24 bytes are 32 base64url
/// characters, the most a Web Push `Topic` may hold (RFC 8030, section 5.4).
const COLLAPSE_KEY_BYTES: usize = 24;

/// Returns the UUIDv5 of `job_id` and `channel`, for APNs' `apns-id`.
pub fn message_uuid(job_id: &JobId, channel: ChannelKind) -> Uuid {
    Uuid::new_v5(&MESSAGE_ID_NAMESPACE, name(job_id, channel).as_bytes())
}

/// Returns a 32-character base64url key of `job_id` and `channel`, usable as a Web Push
/// `Topic`, an `apns-collapse-id` (64 bytes at most) and an FCM `collapse_key`.
pub fn collapse_key(job_id: &JobId, channel: ChannelKind) -> String {
    let digest = Sha256::digest(name(job_id, channel).as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..COLLAPSE_KEY_BYTES])
}

/// Joins the two parts with a byte that a job id cannot contain, so distinct pairs never
/// give the same name.
fn name(job_id: &JobId, channel: ChannelKind) -> String {
    format!("{}\n{}", job_id.as_str(), channel.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobId {
        JobId::parse(id).unwrap()
    }

    #[test]
    fn message_uuid_is_stable_version_5() {
        let first = message_uuid(&job("order-7"), ChannelKind::Push);
        let again = message_uuid(&job("order-7"), ChannelKind::Push);
        let other = message_uuid(&job("order-8"), ChannelKind::Push);
        assert_eq!(first, again);
        assert_ne!(first, other);
        assert_eq!(first.get_version_num(), 5);
        let text = first.hyphenated().to_string();
        assert_eq!(text, text.to_lowercase());
    }

    #[test]
    fn collapse_key_fits_a_web_push_topic() {
        let key = collapse_key(&job("order-7"), ChannelKind::Push);
        assert_eq!(key.len(), 32);
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{key}"
        );
        assert_eq!(key, collapse_key(&job("order-7"), ChannelKind::Push));
        assert_ne!(key, collapse_key(&job("order-7"), ChannelKind::Sms));
    }
}
