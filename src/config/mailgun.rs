//! The `mailgun` provider kind: Mailgun's Messages API.

use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::breaker::CircuitBreakerOverride;
use super::providers::{RateLimitConfig, required};
use super::secret::{self, Secret, redact_option};

/// Mailgun's US API host. Domains in Mailgun's EU region use `https://api.eu.mailgun.net`.
const DEFAULT_BASE_URL: &str = "https://api.mailgun.net";

/// Mailgun Messages API (`POST /v3/{domain}/messages`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailgunConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The sending domain registered in Mailgun, such as `mg.example.com`.
    pub domain: String,
    #[serde(default, serialize_with = "redact_option")]
    pub api_key: Option<SecretString>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The `From` header: an address, optionally with a display name (`Herald <a@b.c>`).
    pub from: String,
    /// Sends with `o:testmode=yes`: Mailgun accepts the message but does not deliver it.
    #[serde(default)]
    pub test_mode: bool,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

impl MailgunConfig {
    /// Loads the API key, `key` being the section path such as `providers.mailgun`.
    pub fn api_key(&self, key: &str) -> Result<Secret, ConfigError> {
        secret::resolve(
            &format!("{key}.api_key"),
            &format!("{key}.api_key_file"),
            self.api_key.as_ref(),
            self.api_key_file.as_ref(),
        )
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        required(format!("{key}.domain"), &self.domain)?;
        if self.domain.contains(['/', '?', '#']) || self.domain.trim() != self.domain {
            return Err(ConfigError::invalid(
                format!("{key}.domain"),
                "must be a bare domain name such as `mg.example.com`",
            ));
        }
        required(format!("{key}.from"), &self.from)
    }
}
