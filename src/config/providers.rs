//! Provider sections: `[providers.NAME]` with a `kind` that selects the adapter.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::breaker::CircuitBreakerOverride;
use super::mailgun::MailgunConfig;
use super::push::{ApnsConfig, WebpushConfig};
use super::secret::{self, Secret, redact_option};
use super::sections::positive;
use super::ses::SesConfig;
use super::smtp::SmtpConfig;
use super::vonage::VonageConfig;
use super::webhook::WebhookConfig;
use crate::job::ChannelKind;

/// One configured provider.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderConfig {
    Sendgrid(SendgridConfig),
    Twilio(TwilioConfig),
    Fcm(FcmConfig),
    Smtp(SmtpConfig),
    Webhook(WebhookConfig),
    Mailgun(MailgunConfig),
    Ses(SesConfig),
    Vonage(VonageConfig),
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
    /// Every accepted `kind`, for error messages.
    pub const KINDS: [&'static str; 10] = [
        "sendgrid", "twilio", "fcm", "apns", "webpush", "smtp", "mailgun", "ses", "vonage",
        "webhook",
    ];

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
            "smtp" => value
                .try_deserialize()
                .map(ProviderConfig::Smtp)
                .map_err(typed),
            "webhook" => value
                .try_deserialize()
                .map(ProviderConfig::Webhook)
                .map_err(typed),
            "mailgun" => value
                .try_deserialize()
                .map(ProviderConfig::Mailgun)
                .map_err(typed),
            "ses" => value
                .try_deserialize()
                .map(ProviderConfig::Ses)
                .map_err(typed),
            "vonage" => value
                .try_deserialize()
                .map(ProviderConfig::Vonage)
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
                    "unknown provider kind `{other}`; expected one of: {}",
                    ProviderConfig::KINDS.join(", ")
                ),
            )),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Sendgrid(_) => "sendgrid",
            ProviderConfig::Twilio(_) => "twilio",
            ProviderConfig::Fcm(_) => "fcm",
            ProviderConfig::Smtp(_) => "smtp",
            ProviderConfig::Webhook(_) => "webhook",
            ProviderConfig::Mailgun(_) => "mailgun",
            ProviderConfig::Ses(_) => "ses",
            ProviderConfig::Vonage(_) => "vonage",
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
            ProviderConfig::Smtp(_) => ChannelKind::Email,
            ProviderConfig::Webhook(_) => ChannelKind::Webhook,
            ProviderConfig::Mailgun(_) | ProviderConfig::Ses(_) => ChannelKind::Email,
            ProviderConfig::Vonage(_) => ChannelKind::Sms,
        }
    }

    pub fn rate_limit(&self) -> RateLimitConfig {
        match self {
            ProviderConfig::Sendgrid(config) => config.rate_limit,
            ProviderConfig::Twilio(config) => config.rate_limit,
            ProviderConfig::Fcm(config) => config.rate_limit,
            ProviderConfig::Smtp(config) => config.rate_limit,
            ProviderConfig::Webhook(config) => config.rate_limit,
            ProviderConfig::Mailgun(config) => config.rate_limit,
            ProviderConfig::Ses(config) => config.rate_limit,
            ProviderConfig::Vonage(config) => config.rate_limit,
            ProviderConfig::Apns(config) => config.rate_limit,
            ProviderConfig::Webpush(config) => config.rate_limit,
        }
    }

    pub fn circuit_breaker_override(&self) -> &CircuitBreakerOverride {
        match self {
            ProviderConfig::Sendgrid(config) => &config.circuit_breaker,
            ProviderConfig::Twilio(config) => &config.circuit_breaker,
            ProviderConfig::Fcm(config) => &config.circuit_breaker,
            ProviderConfig::Smtp(config) => &config.circuit_breaker,
            ProviderConfig::Webhook(config) => &config.circuit_breaker,
            ProviderConfig::Mailgun(config) => &config.circuit_breaker,
            ProviderConfig::Ses(config) => &config.circuit_breaker,
            ProviderConfig::Vonage(config) => &config.circuit_breaker,
            ProviderConfig::Apns(config) => &config.circuit_breaker,
            ProviderConfig::Webpush(config) => &config.circuit_breaker,
        }
    }

    pub fn max_in_flight(&self) -> usize {
        match self {
            ProviderConfig::Sendgrid(config) => config.max_in_flight,
            ProviderConfig::Twilio(config) => config.max_in_flight,
            ProviderConfig::Fcm(config) => config.max_in_flight,
            ProviderConfig::Smtp(config) => config.max_in_flight,
            ProviderConfig::Webhook(config) => config.max_in_flight,
            ProviderConfig::Mailgun(config) => config.max_in_flight,
            ProviderConfig::Ses(config) => config.max_in_flight,
            ProviderConfig::Vonage(config) => config.max_in_flight,
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
            ProviderConfig::Smtp(config) => config.check_secrets(key),
            ProviderConfig::Webhook(config) => config.check_secrets(key),
            ProviderConfig::Mailgun(config) => config.api_key(key).map(drop),
            ProviderConfig::Ses(config) => config.credentials(key).map(drop),
            ProviderConfig::Vonage(config) => config.api_secret(key).map(drop),
            ProviderConfig::Apns(config) => config.private_key(key).map(drop),
            ProviderConfig::Webpush(config) => config.vapid_private_key(key).map(drop),
        }
    }

    /// Returns the files the section's secrets are read from, for reloading them when their
    /// content changes. Empty when every secret is inline.
    pub fn secret_files(&self) -> Vec<&Path> {
        let files: Vec<Option<&Path>> = match self {
            ProviderConfig::Sendgrid(config) => vec![config.api_key_file.as_deref()],
            ProviderConfig::Twilio(config) => vec![config.auth_token_file.as_deref()],
            ProviderConfig::Fcm(config) => vec![config.service_account_file.as_deref()],
            ProviderConfig::Smtp(config) => vec![config.password_file.as_deref()],
            ProviderConfig::Webhook(config) => {
                std::iter::once(config.signing_secrets_file.as_deref())
                    .chain(
                        config
                            .endpoints
                            .values()
                            .map(|endpoint| endpoint.signing_secrets_file.as_deref()),
                    )
                    .collect()
            }
            ProviderConfig::Mailgun(config) => vec![config.api_key_file.as_deref()],
            ProviderConfig::Ses(config) => vec![
                config.secret_access_key_file.as_deref(),
                config.session_token_file.as_deref(),
            ],
            ProviderConfig::Vonage(config) => vec![config.api_secret_file.as_deref()],
            ProviderConfig::Apns(config) => vec![config.private_key_file.as_deref()],
            ProviderConfig::Webpush(config) => vec![config.vapid_private_key_file.as_deref()],
        };
        files
            .into_iter()
            .flatten()
            .filter(|path| !path.as_os_str().is_empty())
            .collect()
    }

    /// Returns the HTTP API's base URL. SES derives it from the region when unset. SMTP has
    /// none, a webhook provider's URLs are per endpoint, and each Web Push subscription
    /// names its own endpoint.
    pub fn base_url(&self) -> Option<Cow<'_, str>> {
        match self {
            ProviderConfig::Sendgrid(config) => Some(Cow::Borrowed(&config.base_url)),
            ProviderConfig::Twilio(config) => Some(Cow::Borrowed(&config.base_url)),
            ProviderConfig::Fcm(config) => Some(Cow::Borrowed(&config.base_url)),
            ProviderConfig::Mailgun(config) => Some(Cow::Borrowed(&config.base_url)),
            ProviderConfig::Ses(config) => Some(config.base_url()),
            ProviderConfig::Vonage(config) => Some(Cow::Borrowed(&config.base_url)),
            ProviderConfig::Apns(config) => Some(Cow::Borrowed(&config.base_url)),
            ProviderConfig::Smtp(_) | ProviderConfig::Webhook(_) | ProviderConfig::Webpush(_) => {
                None
            }
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
        // The kind's own checks come first, because SES builds its URL from the region.
        match self {
            ProviderConfig::Sendgrid(config) => config.validate(key),
            ProviderConfig::Twilio(config) => config.validate(key),
            ProviderConfig::Fcm(config) => config.validate(key),
            ProviderConfig::Smtp(config) => config.validate(key),
            ProviderConfig::Webhook(config) => config.validate(key),
            ProviderConfig::Mailgun(config) => config.validate(key),
            ProviderConfig::Ses(config) => config.validate(key),
            ProviderConfig::Vonage(config) => config.validate(key),
            ProviderConfig::Apns(config) => config.validate(key),
            ProviderConfig::Webpush(config) => config.validate(key),
        }?;
        match self.base_url() {
            Some(base_url) => check_url(&format!("{key}.base_url"), &base_url),
            None => Ok(()),
        }
    }
}

fn strip_kind(mut table: config::Map<String, config::Value>) -> config::Map<String, config::Value> {
    table.remove("kind");
    table
}

pub(super) fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
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
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
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
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
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
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
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
