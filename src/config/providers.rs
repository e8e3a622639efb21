//! Provider sections: `[providers.NAME]` with a `kind` that selects the adapter.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::push::{ApnsConfig, WebpushConfig};
use super::secret::{self, Secret, redact_option};
use super::sections::positive;
use crate::job::ChannelKind;

/// One configured provider.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    Sendgrid(SendgridConfig),
    Twilio(TwilioConfig),
    Fcm(FcmConfig),
    Apns(ApnsConfig),
    Webpush(WebpushConfig),
}

/// A provider's token bucket: a sustained rate and the burst it may spend at once.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_second: u32,
    pub burst: u32,
}

impl ProviderConfig {
    /// Types the section `providers.NAME` by its `kind`. The `config` crate's own value
    /// deserializer is used because it parses numbers given as environment strings.
    pub(super) fn from_value(name: &str, value: config::Value) -> Result<Self, ConfigError> {
        let key = format!("providers.{name}");
        let table = value
            .clone()
            .into_table()
            .map_err(|_| ConfigError::invalid(&key, "must be a table"))?;
        let kind = match table.get("kind") {
            Some(kind) => kind.clone().into_string().unwrap_or_default(),
            None => return Err(ConfigError::invalid(format!("{key}.kind"), "is required")),
        };

        let typed = |error: config::ConfigError| ConfigError::invalid(&key, error.to_string());
        let value = config::Value::new(None, strip_kind(table));
        match kind.as_str() {
            "sendgrid" => value
                .try_deserialize()
                .map(ProviderConfig::Sendgrid)
                .map_err(typed),
            "twilio" => value
                .try_deserialize()
                .map(ProviderConfig::Twilio)
                .map_err(typed),
            "fcm" => value
                .try_deserialize()
                .map(ProviderConfig::Fcm)
                .map_err(typed),
            "apns" => value
                .try_deserialize()
                .map(ProviderConfig::Apns)
                .map_err(typed),
            "webpush" => value
                .try_deserialize()
                .map(ProviderConfig::Webpush)
                .map_err(typed),
            other => Err(ConfigError::invalid(
                format!("{key}.kind"),
                format!(
                    "unknown provider kind `{other}`; expected sendgrid, twilio, fcm, apns or webpush"
                ),
            )),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Sendgrid(_) => "sendgrid",
            ProviderConfig::Twilio(_) => "twilio",
            ProviderConfig::Fcm(_) => "fcm",
            ProviderConfig::Apns(_) => "apns",
            ProviderConfig::Webpush(_) => "webpush",
        }
    }

    /// Returns the channel this kind of provider sends.
    pub fn channel(&self) -> ChannelKind {
        match self {
            ProviderConfig::Sendgrid(_) => ChannelKind::Email,
            ProviderConfig::Twilio(_) => ChannelKind::Sms,
            ProviderConfig::Fcm(_) | ProviderConfig::Apns(_) | ProviderConfig::Webpush(_) => {
                ChannelKind::Push
            }
        }
    }

    pub fn rate_limit(&self) -> RateLimitConfig {
        match self {
            ProviderConfig::Sendgrid(config) => config.rate_limit,
            ProviderConfig::Twilio(config) => config.rate_limit,
            ProviderConfig::Fcm(config) => config.rate_limit,
            ProviderConfig::Apns(config) => config.rate_limit,
            ProviderConfig::Webpush(config) => config.rate_limit,
        }
    }

    pub fn max_in_flight(&self) -> usize {
        match self {
            ProviderConfig::Sendgrid(config) => config.max_in_flight,
            ProviderConfig::Twilio(config) => config.max_in_flight,
            ProviderConfig::Fcm(config) => config.max_in_flight,
            ProviderConfig::Apns(config) => config.max_in_flight,
            ProviderConfig::Webpush(config) => config.max_in_flight,
        }
    }

    /// Loads the section's secrets and checks the account fields that only sending needs, to
    /// report a missing or unreadable one at start.
    pub fn check_secrets(&self, key: &str) -> Result<(), ConfigError> {
        match self {
            ProviderConfig::Sendgrid(config) => config.api_key(key).map(drop),
            ProviderConfig::Twilio(config) => config.check_account(key),
            ProviderConfig::Fcm(config) => config.service_account(key).map(drop),
            ProviderConfig::Apns(config) => config.private_key(key).map(drop),
            ProviderConfig::Webpush(config) => config.vapid_private_key(key).map(drop),
        }
    }

    /// Returns the API's base URL. Web Push has none: each subscription names its endpoint.
    fn base_url(&self) -> Option<&str> {
        match self {
            ProviderConfig::Sendgrid(config) => Some(&config.base_url),
            ProviderConfig::Twilio(config) => Some(&config.base_url),
            ProviderConfig::Fcm(config) => Some(&config.base_url),
            ProviderConfig::Apns(config) => Some(&config.base_url),
            ProviderConfig::Webpush(_) => None,
        }
    }

    /// Checks the section, `key` being its path such as `providers.sendgrid`.
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let rate_limit = self.rate_limit();
        positive(
            &format!("{key}.rate_limit.per_second"),
            rate_limit.per_second.into(),
        )?;
        positive(&format!("{key}.rate_limit.burst"), rate_limit.burst.into())?;
        positive(&format!("{key}.max_in_flight"), self.max_in_flight() as u64)?;
        if let Some(base_url) = self.base_url() {
            check_url(&format!("{key}.base_url"), base_url)?;
        }
        match self {
            ProviderConfig::Sendgrid(config) => config.validate(key),
            ProviderConfig::Twilio(config) => config.validate(key),
            ProviderConfig::Fcm(config) => config.validate(key),
            ProviderConfig::Apns(config) => config.validate(key),
            ProviderConfig::Webpush(config) => config.validate(key),
        }
    }
}

fn strip_kind(mut table: config::Map<String, config::Value>) -> config::Map<String, config::Value> {
    table.remove("kind");
    table
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| ConfigError::invalid(key, format!("is not a URL: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(key, "must be an http or https URL"));
    }
    Ok(())
}

pub(super) fn required(key: String, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(ConfigError::invalid(key, "is required"));
    }
    Ok(())
}

/// SendGrid v3 Mail Send.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SendgridConfig {
    pub base_url: String,
    #[serde(default, serialize_with = "redact_option")]
    pub api_key: Option<SecretString>,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    pub from_email: String,
    #[serde(default)]
    pub from_name: String,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
}

impl SendgridConfig {
    /// Loads the API key, `key` being the section path such as `providers.sendgrid`.
    pub fn api_key(&self, key: &str) -> Result<Secret, ConfigError> {
        secret::resolve(
            &format!("{key}.api_key"),
            &format!("{key}.api_key_file"),
            self.api_key.as_ref(),
            self.api_key_file.as_ref(),
        )
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        required(format!("{key}.from_email"), &self.from_email)
    }
}

/// Twilio Programmable Messaging.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    pub base_url: String,
    pub account_sid: String,
    #[serde(default)]
    pub api_key_sid: String,
    #[serde(default, serialize_with = "redact_option")]
    pub auth_token: Option<SecretString>,
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub messaging_service_sid: String,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
}

impl TwilioConfig {
    /// Loads the auth token or API key secret.
    pub fn auth_token(&self, key: &str) -> Result<Secret, ConfigError> {
        secret::resolve(
            &format!("{key}.auth_token"),
            &format!("{key}.auth_token_file"),
            self.auth_token.as_ref(),
            self.auth_token_file.as_ref(),
        )
    }

    /// Returns the HTTP Basic user: the API key SID when set, else the Account SID.
    pub fn basic_auth_user(&self) -> &str {
        if self.api_key_sid.is_empty() {
            &self.account_sid
        } else {
            &self.api_key_sid
        }
    }

    fn validate(&self, _key: &str) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Checks the account, sender and secret, which only sending needs.
    fn check_account(&self, key: &str) -> Result<(), ConfigError> {
        required(format!("{key}.account_sid"), &self.account_sid)?;
        if self.from.is_empty() == self.messaging_service_sid.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.from"),
                "set exactly one of `from` and `messaging_service_sid`",
            ));
        }
        self.auth_token(key).map(drop)
    }
}

/// Firebase Cloud Messaging HTTP v1.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    pub base_url: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default, serialize_with = "redact_option")]
    pub service_account_json: Option<SecretString>,
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    #[serde(default)]
    pub token_url: String,
    pub token_refresh_margin_secs: u64,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
}

impl FcmConfig {
    /// Loads the service-account key JSON.
    pub fn service_account(&self, key: &str) -> Result<Secret, ConfigError> {
        secret::resolve(
            &format!("{key}.service_account_json"),
            &format!("{key}.service_account_file"),
            self.service_account_json.as_ref(),
            self.service_account_file.as_ref(),
        )
    }

    pub fn token_refresh_margin(&self) -> Duration {
        Duration::from_secs(self.token_refresh_margin_secs)
    }

    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !self.token_url.is_empty() {
            check_url(&format!("{key}.token_url"), &self.token_url)?;
        }
        Ok(())
    }
}
