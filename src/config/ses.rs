//! The `ses` provider kind: Amazon SES API v2 `SendEmail`, signed with AWS Signature
//! Version 4.

use std::borrow::Cow;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::breaker::CircuitBreakerOverride;
use super::providers::{RateLimitConfig, required};
use super::secret::{self, Secret, redact_option};

/// Amazon SES API v2 (`POST /v2/email/outbound-emails`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SesConfig {
    /// Empty means the regional endpoint, `https://email.{region}.amazonaws.com`.
    #[serde(default)]
    pub base_url: String,
    /// The AWS region that signs and receives requests, such as `eu-west-1`.
    pub region: String,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default, serialize_with = "redact_option")]
    pub secret_access_key: Option<SecretString>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// The session token of temporary credentials. Optional.
    #[serde(default, serialize_with = "redact_option")]
    pub session_token: Option<SecretString>,
    #[serde(default)]
    pub session_token_file: Option<PathBuf>,
    /// The sender address, verified in SES.
    pub from_email: String,
    #[serde(default)]
    pub from_name: String,
    /// The configuration set applied to every message. Empty sends without one.
    #[serde(default)]
    pub configuration_set: String,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
}

/// The credentials one request is signed with.
#[derive(Debug, Clone)]
pub struct SesCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

impl SesConfig {
    /// Returns `base_url`, or the regional endpoint when it is empty.
    pub fn base_url(&self) -> Cow<'_, str> {
        if self.base_url.is_empty() {
            Cow::Owned(format!("https://email.{}.amazonaws.com", self.region))
        } else {
            Cow::Borrowed(&self.base_url)
        }
    }

    /// Loads the access key id, the secret access key and the optional session token.
    pub fn credentials(&self, key: &str) -> Result<SesCredentials, ConfigError> {
        required(format!("{key}.access_key_id"), &self.access_key_id)?;
        let secret_access_key = secret::resolve(
            &format!("{key}.secret_access_key"),
            &format!("{key}.secret_access_key_file"),
            self.secret_access_key.as_ref(),
            self.secret_access_key_file.as_ref(),
        )?;
        Ok(SesCredentials {
            access_key_id: self.access_key_id.clone(),
            secret_access_key,
            session_token: self.session_token(key)?,
        })
    }

    fn session_token(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        let inline = self.session_token.as_ref();
        let file = self.session_token_file.as_ref();
        let inline_set =
            inline.is_some_and(|value| !secrecy::ExposeSecret::expose_secret(value).is_empty());
        let file_set = file.is_some_and(|path| !path.as_os_str().is_empty());
        if !inline_set && !file_set {
            return Ok(None);
        }
        secret::resolve(
            &format!("{key}.session_token"),
            &format!("{key}.session_token_file"),
            inline,
            file,
        )
        .map(Some)
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        required(format!("{key}.region"), &self.region)?;
        let region_chars = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !self.region.chars().all(region_chars) {
            return Err(ConfigError::invalid(
                format!("{key}.region"),
                format!(
                    "`{}` is not an AWS region name such as `us-east-1`",
                    self.region
                ),
            ));
        }
        required(format!("{key}.from_email"), &self.from_email)
    }
}
