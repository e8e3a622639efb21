//! The `[reload]` section: how often providers' secret files are checked for new content.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings for rereading provider secrets while Herald runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Seconds between checks of the providers' secret files. 0 turns the checks off, and
    /// SIGHUP still reloads.
    pub secret_poll_interval_secs: u64,
}

impl ReloadConfig {
    /// Returns the interval between checks, or `None` when checking is off.
    pub fn secret_poll_interval(&self) -> Option<Duration> {
        (self.secret_poll_interval_secs > 0)
            .then(|| Duration::from_secs(self.secret_poll_interval_secs))
    }
}
