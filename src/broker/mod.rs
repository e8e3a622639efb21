//! RabbitMQ: connections, topology, the consumer and confirmed publishing.
//!
//! Herald opens two connections: one to consume and acknowledge, one to publish. RabbitMQ
//! blocks a connection that publishes while the broker is short of memory or disk, so
//! acknowledgements go over the other connection, where such a block cannot stall them.

mod consumer;
pub mod headers;
mod liveness;
mod publisher;
mod topology;

use lapin::{Connection, ConnectionProperties};

pub use consumer::{JobConsumer, open_consumer};
pub use liveness::Liveness;
pub use publisher::{PublishError, Publisher};
pub use topology::{check_events_exchange, declare};

use crate::config::{BrokerConfig, mask_password};

/// Opens a connection named `herald-<purpose> <host>/<pid>`, so operators can tell Herald's
/// connections apart, and see which process owns one, in the management UI. The TCP
/// connection and the AMQP handshake together are limited to `broker.connect_timeout_secs`.
pub async fn connect(config: &BrokerConfig, purpose: &str) -> Result<Connection, lapin::Error> {
    let name = format!("herald-{purpose} {}", crate::ledger::instance_id());
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    // NOTE: lapin's own `connection_timeout` URL parameter does not bound the handshake, so
    // a broker that accepts TCP and never replies would hold this call forever. An attempt
    // abandoned here may leave lapin's I/O thread waiting on its socket until the socket fails.
    let url = config.connection_url();
    let connecting = Connection::connect(&url, properties);
    let connection = tokio::time::timeout(config.connect_timeout(), connecting)
        .await
        .map_err(|_| {
            lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no AMQP handshake within broker.connect_timeout_secs ({} s)",
                    config.connect_timeout_secs
                ),
            ))
        })??;
    tracing::info!(
        broker = %mask_password(&config.url),
        connection = purpose,
        "connected to RabbitMQ"
    );
    Ok(connection)
}
