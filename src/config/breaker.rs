//! The `[circuit_breaker]` section: when a provider counts as failing, and how long its
//! traffic goes to the next provider of its channel.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::sections::positive;

/// Circuit breaker settings shared by every provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Whether breakers open at all. Off, every attempt goes to the channel's first provider
    /// that supports the notification.
    pub enabled: bool,
    /// Transient failures or timeouts within `window_secs` that open a provider's breaker.
    pub failure_threshold: u32,
    /// Length of the sliding window that failures are counted in, in seconds.
    pub window_secs: u64,
    /// How long an open breaker stays open before it lets one probe through, in seconds.
    pub cool_down_secs: u64,
}

impl CircuitBreakerConfig {
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }

    pub fn cool_down(&self) -> Duration {
        Duration::from_secs(self.cool_down_secs)
    }

    /// Returns these settings with the keys that `provider` sets replaced.
    pub fn with_override(&self, provider: &CircuitBreakerOverride) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            enabled: provider.enabled.unwrap_or(self.enabled),
            failure_threshold: provider.failure_threshold.unwrap_or(self.failure_threshold),
            window_secs: provider.window_secs.unwrap_or(self.window_secs),
            cool_down_secs: provider.cool_down_secs.unwrap_or(self.cool_down_secs),
        }
    }

    /// Checks the settings, `prefix` being their section such as `circuit_breaker`.
    pub(super) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        positive(
            &format!("{prefix}.failure_threshold"),
            u64::from(self.failure_threshold),
        )?;
        positive(&format!("{prefix}.window_secs"), self.window_secs)?;
        positive(&format!("{prefix}.cool_down_secs"), self.cool_down_secs)
    }
}

/// A provider's own `[providers.NAME.circuit_breaker]`: each key set replaces the one of
/// `[circuit_breaker]` for that provider.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerOverride {
    pub enabled: Option<bool>,
    pub failure_threshold: Option<u32>,
    pub window_secs: Option<u64>,
    pub cool_down_secs: Option<u64>,
}

impl CircuitBreakerOverride {
    /// Returns whether no key is set, so the provider uses `[circuit_breaker]` as it is.
    pub fn is_empty(&self) -> bool {
        self.enabled.is_none()
            && self.failure_threshold.is_none()
            && self.window_secs.is_none()
            && self.cool_down_secs.is_none()
    }
}
