//! Noticing that a session's channels have closed, whatever the consume loop is waiting for.
//!
//! The consumer's stream ends when its channel dies, but the loop only reads it when a worker
//! is free. With every worker busy, a broker restart would otherwise go unnoticed until a job
//! finished, and readiness would stay true for that long.

use std::time::Duration;

use lapin::ChannelStatus;

use super::Publisher;

/// How often the channels' states are read. Reading one is a lock and a comparison.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The channels a consume session depends on.
pub struct Liveness {
    consuming: ChannelStatus,
    publisher: Publisher,
}

impl Liveness {
    pub fn new(consuming: ChannelStatus, publisher: Publisher) -> Liveness {
        Liveness {
            consuming,
            publisher,
        }
    }

    /// Returns the reason the session can no longer work, if it cannot.
    pub fn check(&self) -> Option<&'static str> {
        if !self.consuming.connected() {
            return Some("the consuming channel was closed");
        }
        if !self.publisher.is_open() {
            // Without it no follow-up or event can be confirmed, so every job would be
            // requeued at once. A new session opens a new channel.
            return Some("the publishing channel was closed");
        }
        None
    }

    /// Resolves with the reason once either channel is no longer open.
    pub async fn lost(&self) -> &'static str {
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Some(reason) = self.check() {
                return reason;
            }
        }
    }
}
