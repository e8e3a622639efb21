//! Recipient newtypes. Each validates its syntax on parse, and its `Display` and `Debug`
//! print a masked form, so a recipient cannot reach a log line or a metric label by accident.
//! The real value is only available through `expose`, which adapters call to build requests.

use std::fmt;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha256};

use super::JobError;

/// Maximum length of an email address, in bytes (RFC 5321 path limit less the angle brackets).
const MAX_EMAIL_LEN: usize = 254;
/// Maximum length of the local part of an email address, in bytes (RFC 5321).
const MAX_LOCAL_PART_LEN: usize = 64;
/// Maximum length of a device token, in bytes. FCM registration tokens are about 160 bytes and
/// APNs tokens 64 hex digits, so this leaves room without admitting whole documents.
const MAX_TOKEN_LEN: usize = 4096;

/// An email address with a plausible `local@domain` shape.
#[derive(Clone, PartialEq, Eq)]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(field: &str, text: &str) -> Result<EmailAddress, JobError> {
        let invalid = |reason: &str| JobError::field(field, reason);
        if text.len() > MAX_EMAIL_LEN {
            return Err(invalid("is longer than 254 bytes"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters"));
        }
        let Some((local, domain)) = text.rsplit_once('@') else {
            return Err(invalid("is not an email address: no @"));
        };
        if local.is_empty() || local.len() > MAX_LOCAL_PART_LEN {
            return Err(invalid("has an empty or over-long local part"));
        }
        if !is_domain(domain) {
            return Err(invalid("has an invalid domain"));
        }
        Ok(EmailAddress(text.to_owned()))
    }

    /// Returns the address itself, for building provider requests only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn is_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

impl fmt::Display for EmailAddress {
    /// Prints the first character of the local part and the domain: `a***@example.com`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or(("", &self.0));
        let first = local.chars().next().unwrap_or('*');
        write!(f, "{first}***@{domain}")
    }
}

/// A phone number in E.164 form: `+`, then 2 to 15 digits, the first not zero.
#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(field: &str, text: &str) -> Result<PhoneNumber, JobError> {
        let digits = text.strip_prefix('+').unwrap_or("");
        let valid = (2..=15).contains(&digits.len())
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if !valid {
            return Err(JobError::field(
                field,
                "is not an E.164 phone number such as +15555550123",
            ));
        }
        Ok(PhoneNumber(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    /// Prints only the last two digits: `***23`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = &self.0[self.0.len().saturating_sub(2)..];
        write!(f, "***{tail}")
    }
}

/// Maximum length of a Web Push endpoint URL, in bytes. Push services issue URLs of a few
/// hundred bytes.
const MAX_ENDPOINT_LEN: usize = 2048;
/// Length of an uncompressed P-256 public key (SEC 1 form), as the Push API gives `p256dh`.
const P256DH_LEN: usize = 65;
/// Length of a Web Push authentication secret (RFC 8291).
const AUTH_SECRET_LEN: usize = 16;

/// Base64url with or without padding: browsers omit it, some server libraries add it.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A push device token, opaque to Herald.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken(String);

impl DeviceToken {
    pub fn parse(field: &str, text: &str) -> Result<DeviceToken, JobError> {
        if text.is_empty() {
            return Err(JobError::field(field, "must not be empty"));
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err(JobError::field(field, "is longer than 4096 bytes"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(JobError::field(
                field,
                "contains whitespace or control characters",
            ));
        }
        Ok(DeviceToken(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceToken {
    /// Prints a short hash: `tok:1a2b3c4d`. Equal tokens print alike, so logs can still be
    /// correlated without revealing the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tok:{}", short_hash(&self.0))
    }
}

/// A Web Push subscription as the browser's Push API returns it: the push service endpoint
/// and the keys that encrypt messages for this browser. The whole subscription is the
/// recipient, so it prints masked.
#[derive(Clone, PartialEq, Eq)]
pub struct PushSubscription {
    endpoint: reqwest::Url,
    p256dh: Vec<u8>,
    auth: Vec<u8>,
}

impl PushSubscription {
    /// Parses a subscription. `field` is the path of the `subscription` object, used to name
    /// the member at fault. The endpoint must be an absolute `http` or `https` URL. Which
    /// schemes and hosts are sent to is decided by the adapter.
    pub fn parse(
        field: &str,
        endpoint: &str,
        p256dh: &str,
        auth: &str,
    ) -> Result<PushSubscription, JobError> {
        let endpoint_field = format!("{field}.endpoint");
        if endpoint.len() > MAX_ENDPOINT_LEN {
            return Err(JobError::field(endpoint_field, "is longer than 2048 bytes"));
        }
        let url = reqwest::Url::parse(endpoint)
            .map_err(|error| JobError::field(&endpoint_field, format!("is not a URL: {error}")))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(JobError::field(
                endpoint_field,
                "must be an https URL with a host (http is accepted only where the provider allows it)",
            ));
        }
        let p256dh = decode_key(&format!("{field}.keys.p256dh"), p256dh, P256DH_LEN)?;
        if p256dh[0] != 0x04 {
            return Err(JobError::field(
                format!("{field}.keys.p256dh"),
                "is not an uncompressed P-256 public key (it must start with byte 0x04)",
            ));
        }
        let auth = decode_key(&format!("{field}.keys.auth"), auth, AUTH_SECRET_LEN)?;
        Ok(PushSubscription {
            endpoint: url,
            p256dh,
            auth,
        })
    }

    /// Returns the push service endpoint, for building requests only.
    pub fn endpoint(&self) -> &reqwest::Url {
        &self.endpoint
    }

    /// Returns the browser's P-256 public key, 65 bytes in uncompressed SEC 1 form.
    pub fn p256dh(&self) -> &[u8] {
        &self.p256dh
    }

    /// Returns the 16-byte authentication secret.
    pub fn auth(&self) -> &[u8] {
        &self.auth
    }
}

fn decode_key(field: &str, text: &str, len: usize) -> Result<Vec<u8>, JobError> {
    let bytes = BASE64URL
        .decode(text)
        .map_err(|_| JobError::field(field, "is not base64url"))?;
    if bytes.len() != len {
        return Err(JobError::field(
            field,
            format!("decodes to {} bytes; expected {len}", bytes.len()),
        ));
    }
    Ok(bytes)
}

impl fmt::Display for PushSubscription {
    /// Prints a short hash of the endpoint: `sub:1a2b3c4d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_endpoint(self.endpoint.as_str()))
    }
}

/// Masks a Web Push endpoint URL as [`PushSubscription`] prints it, for places that hold
/// only the endpoint, such as a stored ledger recipient.
pub fn mask_endpoint(endpoint: &str) -> String {
    format!("sub:{}", short_hash(endpoint))
}

/// Returns the first four bytes of the SHA-256 of `text` in hex.
fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

macro_rules! debug_as_display {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }
    )*};
}

debug_as_display!(EmailAddress, PhoneNumber, DeviceToken, PushSubscription);
