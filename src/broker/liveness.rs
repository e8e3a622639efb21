//! Noticing that a session's connections or channels have closed, whatever the session is
//! waiting for.
//!
//! The consumer's stream ends when its channel dies, but nothing reads it while consumption
//! is paused for the ledger. A broker restart would then go unnoticed until the ledger came
//! back, and readiness and `herald_broker_connected` would be wrong meanwhile.

use std::time::Duration;

use lapin::{ChannelStatus, Connection, ConnectionStatus};

use super::Publisher;

/// How often the states are read. Reading one is a lock and a comparison.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// The consuming connection, the consuming channel when there is one, and the publishing
/// channel of a session.
#[derive(Clone)]
pub struct Liveness {
    connection: ConnectionStatus,
    consuming: Option<ChannelStatus>,
    publisher: Publisher,
}

impl Liveness {
    pub fn new(connection: &Connection, publisher: Publisher) -> Liveness {
        Liveness {
            connection: connection.status().clone(),
            consuming: None,
            publisher,
        }
    }

    /// Returns a copy that also watches the consuming channel `channel`.
    pub fn consuming_on(&self, channel: &lapin::Channel) -> Liveness {
        Liveness {
            consuming: Some(channel.status().clone()),
            ..self.clone()
        }
    }

    /// Returns the reason the session can no longer work, if it cannot.
    pub fn check(&self) -> Option<&'static str> {
        if !self.connection.connected() {
            return Some("the consuming connection was closed");
        }
        if self
            .consuming
            .as_ref()
            .is_some_and(|channel| !channel.connected())
        {
            return Some("the consuming channel was closed");
        }
        if !self.publisher.is_open() {
            // Without it no follow-up or event can be confirmed, so every job would be
            // requeued at once. A new session opens a new channel.
            return Some("the publishing channel was closed");
        }
        None
    }

    /// Resolves with the reason once anything watched is no longer open.
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
