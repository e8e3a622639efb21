//! The configuration sections other than providers.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::ConfigError;
use crate::job::ChannelKind;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    #[serde(serialize_with = "mask_url_password")]
    pub url: String,
    pub heartbeat_secs: u16,
    pub connect_timeout_secs: u64,
    pub reconnect_max_backoff_secs: u64,
    pub prefetch: u16,
    pub declare_topology: bool,
    pub exchange: String,
    pub routing_key: String,
    pub queue: String,
    pub queue_type: QueueType,
    pub delivery_limit: u32,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub delay_exchange: String,
    pub delay_queue_prefix: String,
    /// Durable topic exchange that delivery events go to. Empty turns events off.
    pub events_exchange: String,
    pub max_job_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

impl BrokerConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn reconnect_max_backoff(&self) -> Duration {
        Duration::from_secs(self.reconnect_max_backoff_secs)
    }

    /// Returns the delay exchange: `delay_exchange`, or `<exchange>.delay` when it is empty.
    pub fn delay_exchange(&self) -> String {
        match self.delay_exchange.as_str() {
            "" => format!("{}.delay", self.exchange),
            name => name.to_owned(),
        }
    }

    /// Returns the name of the delay queue for `seconds`, such as `herald.jobs.delay.5s`. It
    /// is also the routing key that binds it to the delay exchange.
    pub fn delay_queue(&self, seconds: u64) -> String {
        match self.delay_queue_prefix.as_str() {
            "" => format!("{}.delay.{seconds}s", self.queue),
            prefix => format!("{prefix}.{seconds}s"),
        }
    }

    /// Returns the URL with the heartbeat and connection timeout added as query parameters,
    /// which is how lapin takes them.
    pub fn connection_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}heartbeat={}&connection_timeout={}",
            self.url,
            self.heartbeat_secs,
            self.connect_timeout().as_millis()
        )
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            return Err(ConfigError::invalid(
                "broker.url",
                "must start with amqp:// or amqps://",
            ));
        }
        if let Err(error) = self.url.parse::<lapin::uri::AMQPUri>() {
            // The parser may quote the URL, password included.
            let error = error.replace(&self.url, &mask_password(&self.url));
            return Err(ConfigError::invalid(
                "broker.url",
                format!("is not a valid AMQP URL: {error}"),
            ));
        }
        if self.url.contains("heartbeat=") || self.url.contains("connection_timeout=") {
            return Err(ConfigError::invalid(
                "broker.url",
                "must not carry heartbeat or connection_timeout; set broker.heartbeat_secs and broker.connect_timeout_secs",
            ));
        }
        positive("broker.prefetch", u64::from(self.prefetch))?;
        positive("broker.heartbeat_secs", u64::from(self.heartbeat_secs))?;
        positive("broker.connect_timeout_secs", self.connect_timeout_secs)?;
        positive(
            "broker.reconnect_max_backoff_secs",
            self.reconnect_max_backoff_secs,
        )?;
        positive("broker.max_job_bytes", self.max_job_bytes as u64)?;
        for (key, value) in [
            ("broker.exchange", &self.exchange),
            ("broker.queue", &self.queue),
            ("broker.dead_letter_exchange", &self.dead_letter_exchange),
            ("broker.dead_letter_queue", &self.dead_letter_queue),
        ] {
            if value.is_empty() || value.len() > 255 {
                return Err(ConfigError::invalid(key, "must be 1 to 255 bytes long"));
            }
        }
        if self.events_exchange.len() > 255 {
            return Err(ConfigError::invalid(
                "broker.events_exchange",
                "must be at most 255 bytes long",
            ));
        }
        for (key, value) in [
            ("broker.delay_exchange", &self.delay_exchange),
            ("broker.delay_queue_prefix", &self.delay_queue_prefix),
        ] {
            if value.len() > 240 {
                return Err(ConfigError::invalid(key, "must be at most 240 bytes long"));
            }
        }
        if self.queue == self.dead_letter_queue {
            return Err(ConfigError::invalid(
                "broker.dead_letter_queue",
                "must differ from broker.queue",
            ));
        }
        Ok(())
    }
}

/// Serializes an AMQP URL with its password replaced by `***`.
fn mask_url_password<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&mask_password(url))
}

/// Returns `url` with the password of its user-info part, and the value of any query
/// parameter whose name contains `password`, replaced by `***`. The user info ends at the
/// last `@` before the query, so a password with an unencoded `/` or `@` is masked whole.
pub fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let masked = match before_query.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://{before_query}"),
        },
        None => format!("{scheme}://{before_query}"),
    };
    match query {
        Some(query) => format!("{masked}?{}", mask_query_passwords(query)),
        None => masked,
    }
}

fn mask_query_passwords(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub workers: usize,
}

impl PoolConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("pool.workers", self.workers as u64)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    pub in_place_attempts: u32,
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    pub max_retry_after_secs: u64,
    pub max_attempts: u32,
    pub redelivery_base_delay_secs: u64,
    pub redelivery_max_delay_secs: u64,
    pub max_redelivery_retry_after_secs: u64,
    #[serde(deserialize_with = "numbers_list")]
    pub delay_tiers_secs: Vec<u64>,
}

impl RetryConfig {
    pub fn base_delay(&self) -> Duration {
        Duration::from_millis(self.base_delay_ms)
    }

    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms)
    }

    pub fn max_retry_after(&self) -> Duration {
        Duration::from_secs(self.max_retry_after_secs)
    }

    /// Returns the delay tiers, shortest first, without duplicates.
    pub fn delay_tiers(&self) -> Vec<u64> {
        let mut tiers = self.delay_tiers_secs.clone();
        tiers.sort_unstable();
        tiers.dedup();
        tiers
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("retry.in_place_attempts", u64::from(self.in_place_attempts))?;
        positive("retry.max_attempts", u64::from(self.max_attempts))?;
        if self.max_delay_ms < self.base_delay_ms {
            return Err(ConfigError::invalid(
                "retry.max_delay_ms",
                "must be at least retry.base_delay_ms",
            ));
        }
        if self.redelivery_max_delay_secs < self.redelivery_base_delay_secs {
            return Err(ConfigError::invalid(
                "retry.redelivery_max_delay_secs",
                "must be at least retry.redelivery_base_delay_secs",
            ));
        }
        if self.delay_tiers_secs.is_empty() || self.delay_tiers_secs.contains(&0) {
            return Err(ConfigError::invalid(
                "retry.delay_tiers_secs",
                "must list at least one delay, each greater than 0",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub jitter_ms: u64,
    pub max_permit_wait_secs: u64,
}

impl LimitsConfig {
    pub fn jitter(&self) -> Duration {
        Duration::from_millis(self.jitter_ms)
    }

    pub fn max_permit_wait(&self) -> Duration {
        Duration::from_secs(self.max_permit_wait_secs)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub pool_idle_timeout_secs: u64,
    pub pool_max_idle_per_host: usize,
}

impl HttpConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn pool_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.pool_idle_timeout_secs)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("http.connect_timeout_ms", self.connect_timeout_ms)?;
        positive("http.request_timeout_ms", self.request_timeout_ms)?;
        positive("http.pool_idle_timeout_secs", self.pool_idle_timeout_secs)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    pub grace_period_secs: u64,
}

impl ShutdownConfig {
    pub fn grace_period(&self) -> Duration {
        Duration::from_secs(self.grace_period_secs)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("shutdown.grace_period_secs", self.grace_period_secs)
    }
}

/// The `[suppression]` section, which sets what Herald does with recipients a provider
/// reported as invalid. They are recorded in the ledger's suppression table either way.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SuppressionConfig {
    /// Skip a channel whose recipient is suppressed, reporting it as `suppressed`.
    pub skip: bool,
}

/// The `[events]` section, which selects the delivery events sent to
/// `broker.events_exchange`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Publish `recipient.invalid.<channel>` when a provider reports a recipient invalid.
    pub recipient_invalid: bool,
    /// Publish `<channel>.<outcome>` for every channel of every delivery.
    pub publish_outcomes: bool,
}

/// The provider names that serve each channel, in order of preference.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    #[serde(deserialize_with = "names_list")]
    pub email: Vec<String>,
    #[serde(deserialize_with = "names_list")]
    pub sms: Vec<String>,
    #[serde(deserialize_with = "names_list")]
    pub push: Vec<String>,
    #[serde(default, deserialize_with = "names_list")]
    pub webhook: Vec<String>,
}

impl ChannelsConfig {
    /// Returns the providers of `kind` in order of preference. Empty when the channel is off.
    pub fn providers(&self, kind: ChannelKind) -> &[String] {
        match kind {
            ChannelKind::Email => &self.email,
            ChannelKind::Sms => &self.sms,
            ChannelKind::Push => &self.push,
            ChannelKind::Webhook => &self.webhook,
        }
    }
}

/// Accepts a TOML list of names or, as environment variables give it, one comma-separated
/// string.
pub(super) fn names_list<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Names {
        List(Vec<String>),
        Text(String),
    }
    let names = match Names::deserialize(deserializer)? {
        Names::List(names) => names,
        Names::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(names
        .into_iter()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .collect())
}

/// Accepts a TOML list of whole numbers or, as environment variables give it, one
/// comma-separated string.
fn numbers_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Numbers {
        List(Vec<u64>),
        Text(String),
    }
    match Numbers::deserialize(deserializer)? {
        Numbers::List(numbers) => Ok(numbers),
        Numbers::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<u64>().map_err(|_| {
                    serde::de::Error::custom(format!("{part:?} is not a whole number of seconds"))
                })
            })
            .collect(),
    }
}

pub(super) fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}
