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

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive(
            "circuit_breaker.failure_threshold",
            u64::from(self.failure_threshold),
        )?;
        positive("circuit_breaker.window_secs", self.window_secs)?;
        positive("circuit_breaker.cool_down_secs", self.cool_down_secs)
    }
}
