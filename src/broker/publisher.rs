//! Confirmed publishing: a publish succeeds only when RabbitMQ has routed and stored it.

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// The reason a publish was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publish failed: {0}")]
    Broker(#[from] lapin::Error),

    #[error("RabbitMQ rejected the message (basic.nack)")]
    Nacked,

    #[error("RabbitMQ could not route the message to any queue: {reply_code} {reply_text}")]
    Unroutable { reply_code: u16, reply_text: String },
}

/// A channel in confirm mode. Clones share the channel; concurrent publishes are fine.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

impl Publisher {
    pub async fn open(connection: &Connection) -> Result<Publisher, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Publishes a persistent message with the mandatory flag and waits for its confirm. An
    /// unroutable message is an error, never a silent drop.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
        content_type: &str,
    ) -> Result<(), PublishError> {
        let properties = BasicProperties::default()
            .with_content_type(content_type.into())
            .with_headers(headers);
        self.send(exchange, routing_key, body, properties, true)
            .await
    }

    /// Publishes a persistent message without the mandatory flag and waits for its confirm.
    /// RabbitMQ confirms a message that no queue is bound for and drops it, which suits
    /// events that may have no subscriber.
    pub async fn publish_unrouted_ok(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<(), PublishError> {
        let properties = BasicProperties::default().with_content_type(content_type.into());
        self.send(exchange, routing_key, body, properties, false)
            .await
    }

    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<(), PublishError> {
        let properties = properties.with_delivery_mode(PERSISTENT);
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let confirmation = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                body,
                properties,
            )
            .await?
            .await?;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) => Err(PublishError::Unroutable {
                reply_code: returned.reply_code,
                reply_text: returned.reply_text.to_string(),
            }),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    }

    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Returns whether the channel is open. RabbitMQ closes it after a publish to an
    /// exchange that does not exist, and every later publish on it fails.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }
}
