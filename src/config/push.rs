//! Sections of the push providers that send to one platform each: APNs and Web Push.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::breaker::CircuitBreakerOverride;
use super::providers::{RateLimitConfig, required};
use super::secret::{self, Secret, redact_option};

/// Shortest and longest reuse of an APNs provider token, in seconds. Apple rejects a token
/// older than one hour and throttles a team that replaces its token more often than every
/// 20 minutes.
pub const APNS_TOKEN_REFRESH_RANGE: std::ops::RangeInclusive<u64> = 1200..=3600;

/// The `Urgency` values of RFC 8030, section 5.3.
const URGENCIES: [&str; 4] = ["very-low", "low", "normal", "high"];

/// Apple Push Notification service with token-based authentication.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    pub base_url: String,
    /// The 10-character Team ID, the provider token's `iss`.
    #[serde(default)]
    pub team_id: String,
    /// The 10-character Key ID of the signing key, the provider token's `kid`.
    #[serde(default)]
    pub key_id: String,
    /// The `.p8` signing key (PKCS #8 PEM).
    #[serde(default, serialize_with = "redact_option")]
    pub private_key: Option<SecretString>,
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// The app's bundle ID, sent as `apns-topic`.
    #[serde(default)]
    pub topic: String,
    /// How long one provider token is reused before a new one is signed, in seconds.
    pub token_refresh_secs: u64,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
}

impl ApnsConfig {
    /// Loads the signing key.
    pub fn private_key(&self, key: &str) -> Result<Secret, ConfigError> {
        secret::resolve(
            &format!("{key}.private_key"),
            &format!("{key}.private_key_file"),
            self.private_key.as_ref(),
            self.private_key_file.as_ref(),
        )
    }

    pub fn token_refresh(&self) -> Duration {
        Duration::from_secs(self.token_refresh_secs)
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        required(format!("{key}.team_id"), &self.team_id)?;
        required(format!("{key}.key_id"), &self.key_id)?;
        required(format!("{key}.topic"), &self.topic)?;
        if !APNS_TOKEN_REFRESH_RANGE.contains(&self.token_refresh_secs) {
            return Err(ConfigError::invalid(
                format!("{key}.token_refresh_secs"),
                format!(
                    "is {}; it must be between 1200 and 3600 (20 to 60 minutes, Apple's limits)",
                    self.token_refresh_secs
                ),
            ));
        }
        Ok(())
    }
}

/// Web Push (RFC 8030) with VAPID (RFC 8292) and `aes128gcm` encryption (RFC 8291).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebpushConfig {
    /// The contact sent as the VAPID token's `sub`: a `mailto:` or `https:` URI.
    #[serde(default)]
    pub subject: String,
    /// The VAPID signing key: a P-256 private key as PEM (PKCS #8 or SEC 1) or as the
    /// base64url of its 32 bytes.
    #[serde(default, serialize_with = "redact_option")]
    pub vapid_private_key: Option<SecretString>,
    #[serde(default)]
    pub vapid_private_key_file: Option<PathBuf>,
    /// The `TTL` header for jobs without `ttl_secs`, in seconds.
    pub default_ttl_secs: u64,
    /// The `Urgency` header; empty sends none, which push services read as `normal`.
    #[serde(default)]
    pub urgency: String,
    /// Accepts endpoints on loopback, private, link-local and unique-local addresses, and
    /// plain `http` endpoints. Only for tests and self-hosted push services.
    #[serde(default)]
    pub allow_private_endpoints: bool,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
}

impl WebpushConfig {
    /// Loads the VAPID signing key.
    pub fn vapid_private_key(&self, key: &str) -> Result<Secret, ConfigError> {
        secret::resolve(
            &format!("{key}.vapid_private_key"),
            &format!("{key}.vapid_private_key_file"),
            self.vapid_private_key.as_ref(),
            self.vapid_private_key_file.as_ref(),
        )
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let subject_key = format!("{key}.subject");
        required(subject_key.clone(), &self.subject)?;
        if !(self.subject.starts_with("mailto:") || self.subject.starts_with("https:")) {
            return Err(ConfigError::invalid(
                subject_key,
                "must be a mailto: or https: URI that push services can use to reach you",
            ));
        }
        if !self.urgency.is_empty() && !URGENCIES.contains(&self.urgency.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.urgency"),
                format!(
                    "is {:?}; expected one of very-low, low, normal, high, or empty",
                    self.urgency
                ),
            ));
        }
        Ok(())
    }
}
