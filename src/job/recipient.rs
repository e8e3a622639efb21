//! Recipient newtypes. Each validates its syntax on parse, and its `Display` and `Debug`
//! print a masked form, so a recipient cannot reach a log line or a metric label by accident.
//! The real value is only available through `expose`, which adapters call to build requests.

use std::fmt;

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
        let digest = Sha256::digest(self.0.as_bytes());
        write!(
            f,
            "tok:{:02x}{:02x}{:02x}{:02x}",
            digest[0], digest[1], digest[2], digest[3]
        )
    }
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

debug_as_display!(EmailAddress, PhoneNumber, DeviceToken);
