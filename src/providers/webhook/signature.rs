//! Standard Webhooks symmetric signatures: `v1,` and the base64 HMAC-SHA256 of
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the decoded `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Secret};
use crate::job::{ChannelKind, JobId};

/// Prefix of a serialized signing secret.
const SECRET_PREFIX: &str = "whsec_";
/// Shortest and longest decoded secret, in bytes, as the specification bounds them.
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// Hex digits of the job's digest in a webhook id.
const ID_HEX_DIGITS: usize = 32;

/// The decoded secrets that sign one endpoint's webhooks, in configured order.
#[derive(Clone)]
pub struct SigningKeys(Vec<Vec<u8>>);

impl SigningKeys {
    /// Parses one or more `whsec_<base64>` secrets separated by whitespace or commas. `key`
    /// names the config key in errors, which never quote a secret.
    pub fn parse(key: &str, secrets: &Secret) -> Result<SigningKeys, ConfigError> {
        let mut keys = Vec::new();
        let tokens = secrets
            .expose()
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|token| !token.is_empty());
        for (index, token) in tokens.enumerate() {
            keys.push(decode(key, index, token)?);
        }
        if keys.is_empty() {
            return Err(ConfigError::invalid(key, "contains no signing secret"));
        }
        Ok(SigningKeys(keys))
    }

    /// Returns the `webhook-signature` header value: one `v1,<signature>` per secret,
    /// separated by spaces.
    pub fn signature_header(&self, webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
        self.0
            .iter()
            .map(|secret| sign(secret, webhook_id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKeys({} secrets)", self.0.len())
    }
}

fn decode(key: &str, index: usize, token: &str) -> Result<Vec<u8>, ConfigError> {
    let position = index + 1;
    let Some(encoded) = token.strip_prefix(SECRET_PREFIX) else {
        return Err(ConfigError::invalid(
            key,
            format!("secret {position} does not start with `{SECRET_PREFIX}`"),
        ));
    };
    let secret = STANDARD
        .decode(encoded)
        .map_err(|_| ConfigError::invalid(key, format!("secret {position} is not valid base64")))?;
    if !SECRET_BYTES.contains(&secret.len()) {
        return Err(ConfigError::invalid(
            key,
            format!(
                "secret {position} decodes to {} bytes; use {} to {} random bytes",
                secret.len(),
                SECRET_BYTES.start(),
                SECRET_BYTES.end()
            ),
        ));
    }
    Ok(secret)
}

/// Signs one request with one secret: `v1,<base64 HMAC-SHA256>`.
fn sign(secret: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(webhook_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Returns the `webhook-id` of one channel of a job: `msg_` and the start of the SHA-256 of
/// its dedupe key, in hex. It is the same for every attempt and redelivery. A job id may
/// contain `.`, which the specification forbids in the id, so the id is a digest.
pub fn webhook_id(job_id: &JobId, channel: ChannelKind) -> String {
    let digest = Sha256::digest(job_id.dedupe_key(channel).as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("msg_{}", &hex[..ID_HEX_DIGITS])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example secret, id, timestamp, body and signature of the Standard Webhooks
    /// reference libraries' tests.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1_614_265_330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn keys(text: &str) -> Result<SigningKeys, ConfigError> {
        SigningKeys::parse("signing_secrets", &Secret::new(text))
    }

    #[test]
    fn signature_matches_spec_vector() {
        let header =
            keys(SPEC_SECRET)
                .unwrap()
                .signature_header(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(header, SPEC_SIGNATURE);
    }

    #[test]
    fn every_secret_signs() {
        let other = format!("{SECRET_PREFIX}{}", STANDARD.encode([7u8; 32]));
        let header = keys(&format!("{other}\n{SPEC_SECRET}"))
            .unwrap()
            .signature_header(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let signatures: Vec<&str> = header.split(' ').collect();
        assert_eq!(signatures.len(), 2);
        assert_ne!(signatures[0], SPEC_SIGNATURE);
        assert_eq!(signatures[1], SPEC_SIGNATURE);
    }

    #[test]
    fn secrets_split_on_commas_and_spaces() {
        let text = format!("{SPEC_SECRET}, {SPEC_SECRET} {SPEC_SECRET}");
        assert_eq!(keys(&text).unwrap().0.len(), 3);
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        let short = format!("{SECRET_PREFIX}{}", STANDARD.encode([1u8; 8]));
        for text in [
            "",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!",
            short.as_str(),
        ] {
            let error = keys(text).unwrap_err().to_string();
            assert!(
                !error.contains("MfKQ9r8G"),
                "error quotes the secret: {error}"
            );
        }
    }

    #[test]
    fn webhook_id_is_stable_and_dotless() {
        let job = JobId::parse("invoice.paid:42").unwrap();
        let id = webhook_id(&job, ChannelKind::Webhook);
        assert_eq!(id, webhook_id(&job, ChannelKind::Webhook));
        assert!(id.starts_with("msg_"), "{id}");
        assert!(!id.contains('.'), "{id}");
        assert_eq!(id.len(), 4 + ID_HEX_DIGITS);
        let other = JobId::parse("invoice.paid:43").unwrap();
        assert_ne!(id, webhook_id(&other, ChannelKind::Webhook));
    }
}
