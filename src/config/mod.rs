//! Configuration: layered loading, typed sections and validation.
//!
//! Layers, later ones winning: the built-in `config/default.toml`, an optional file given on
//! the command line, then `HERALD__SECTION__KEY` environment variables. Loading produces
//! [`Settings`], which is validated as a whole before any task starts, so a bad value stops
//! Herald at start with a message naming the key.

mod breaker;
mod ledger;
mod mailgun;
mod providers;
mod push;
mod reload;
mod secret;
mod sections;
mod ses;
mod smtp;
mod vonage;
mod webhook;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

pub use breaker::{CircuitBreakerConfig, CircuitBreakerOverride};
pub use ledger::{LedgerConfig, MIN_RECIPIENT_HASH_KEY_BYTES, mask_ledger_url};
pub use mailgun::MailgunConfig;
pub use providers::{FcmConfig, ProviderConfig, RateLimitConfig, SendgridConfig, TwilioConfig};
pub use push::{APNS_TOKEN_REFRESH_RANGE, ApnsConfig, WebpushConfig};
pub use reload::ReloadConfig;
pub use secret::{REDACTED, Secret};
pub use sections::{
    AdminConfig, BrokerConfig, ChannelsConfig, EventsConfig, HttpConfig, LimitsConfig, LogConfig,
    LogFormat, PoolConfig, QueueType, RetryConfig, ShutdownConfig, SuppressionConfig,
    mask_password,
};
pub use ses::{SesConfig, SesCredentials};
pub use smtp::{SmtpConfig, SmtpTls};
pub use vonage::VonageConfig;
pub use webhook::{WebhookConfig, WebhookEndpointConfig, parse_allowlist_entry};

use crate::job::ChannelKind;

/// The built-in defaults, compiled into the binary so it runs without its source tree.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of the environment variables Herald reads.
pub const ENV_PREFIX: &str = "HERALD";

/// Herald's whole configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub broker: BrokerConfig,
    pub pool: PoolConfig,
    pub retry: RetryConfig,
    pub limits: LimitsConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub channels: ChannelsConfig,
    pub circuit_breaker: CircuitBreakerConfig,
    pub reload: ReloadConfig,
    pub ledger: LedgerConfig,
    pub suppression: SuppressionConfig,
    pub events: EventsConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// A configuration that cannot be used. The message names the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read configuration: {0}")]
    Load(#[from] config::ConfigError),

    #[error("invalid configuration key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The sections read straight from the layers; `providers` is typed once `kind` is known.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    broker: BrokerConfig,
    pool: PoolConfig,
    retry: RetryConfig,
    limits: LimitsConfig,
    http: HttpConfig,
    admin: AdminConfig,
    log: LogConfig,
    shutdown: ShutdownConfig,
    channels: ChannelsConfig,
    circuit_breaker: CircuitBreakerConfig,
    reload: ReloadConfig,
    ledger: LedgerConfig,
    suppression: SuppressionConfig,
    events: EventsConfig,
    #[serde(default)]
    providers: BTreeMap<String, config::Value>,
}

impl Settings {
    /// Loads the layers from the built-in defaults, `file` and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Loads the layers with an explicit environment, so tests need not change the process's.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(key, _)| key.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .source(Some(env)),
        );

        let raw: RawSettings = builder.build()?.try_deserialize()?;
        let settings = Settings::from_raw(raw)?;
        settings.validate()?;
        Ok(settings)
    }

    fn from_raw(raw: RawSettings) -> Result<Settings, ConfigError> {
        let providers = raw
            .providers
            .into_iter()
            .map(|(name, value)| ProviderConfig::from_value(&name, value).map(|p| (name, p)))
            .collect::<Result<_, _>>()?;
        Ok(Settings {
            broker: raw.broker,
            pool: raw.pool,
            retry: raw.retry,
            limits: raw.limits,
            http: raw.http,
            admin: raw.admin,
            log: raw.log,
            shutdown: raw.shutdown,
            channels: raw.channels,
            circuit_breaker: raw.circuit_breaker,
            reload: raw.reload,
            ledger: raw.ledger,
            suppression: raw.suppression,
            events: raw.events,
            providers,
        })
    }

    /// Checks every section and that each channel names a provider of the right kind.
    /// Secrets are checked separately by [`Settings::check_secrets`], because commands such
    /// as `herald publish` need no provider credentials.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.broker.validate()?;
        self.pool.validate()?;
        self.retry.validate()?;
        self.http.validate()?;
        self.shutdown.validate()?;
        self.ledger
            .validate(&self.http, &self.retry, &self.limits)?;
        self.circuit_breaker.validate("circuit_breaker")?;
        for kind in ChannelKind::ALL {
            self.validate_channel(kind)?;
        }
        Ok(())
    }

    /// Checks that `kind`'s providers are configured, distinct and able to send `kind`.
    fn validate_channel(&self, kind: ChannelKind) -> Result<(), ConfigError> {
        let key = format!("channels.{kind}");
        let names = self.channels.providers(kind);
        for (index, name) in names.iter().enumerate() {
            if names[..index].contains(name) {
                return Err(ConfigError::invalid(
                    &key,
                    format!("names provider `{name}` more than once"),
                ));
            }
            let provider = self.providers.get(name).ok_or_else(|| {
                ConfigError::invalid(
                    &key,
                    format!("names provider `{name}`, which is not configured under [providers]"),
                )
            })?;
            if provider.channel() != kind {
                return Err(ConfigError::invalid(
                    &key,
                    format!(
                        "provider `{name}` is of kind `{}`, which sends {}, not {kind}",
                        provider.kind(),
                        provider.channel()
                    ),
                ));
            }
            provider.validate(&format!("providers.{name}"))?;
            self.circuit_breaker
                .with_override(provider.circuit_breaker_override())
                .validate(&format!("providers.{name}.circuit_breaker"))?;
        }
        Ok(())
    }

    /// Loads the ledger's recipient hash key and the secrets of every provider a channel uses.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        self.ledger.recipient_hash_key()?;
        for kind in ChannelKind::ALL {
            for name in self.channels.providers(kind) {
                if let Some(provider) = self.providers.get(name) {
                    provider.check_secrets(&format!("providers.{name}"))?;
                }
            }
        }
        Ok(())
    }

    /// Renders the effective configuration as TOML with every secret redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|error| format!("# failed to render: {error}\n"))
    }
}

#[cfg(test)]
mod tests;
