//! The `vonage` provider kind: Vonage's SMS API.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::breaker::CircuitBreakerOverride;
use super::providers::{RateLimitConfig, required};
use super::secret::{self, Secret, redact_option};

const DEFAULT_BASE_URL: &str = "https://rest.nexmo.com";

/// Vonage SMS API (`POST /sms/json`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The account's API key. It is sent in every request body beside the secret.
    #[serde(default)]
    pub api_key: String,
    #[serde(default, serialize_with = "redact_option")]
    pub api_secret: Option<SecretString>,
    #[serde(default)]
    pub api_secret_file: Option<PathBuf>,
    /// The sender: a number in international format or an alphanumeric sender id.
    pub from: String,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

impl VonageConfig {
    /// Loads the API secret, `key` being the section path such as `providers.vonage`.
    pub fn api_secret(&self, key: &str) -> Result<Secret, ConfigError> {
        required(format!("{key}.api_key"), &self.api_key)?;
        secret::resolve(
            &format!("{key}.api_secret"),
            &format!("{key}.api_secret_file"),
            self.api_secret.as_ref(),
            self.api_secret_file.as_ref(),
        )
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        required(format!("{key}.from"), &self.from)
    }
}
