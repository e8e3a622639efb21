//! Declaration of the exchanges and queues Herald uses. Every declaration is idempotent:
//! declaring an existing exchange or queue with the same arguments changes nothing.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use super::headers::insert_text;
use crate::config::{BrokerConfig, QueueType};

/// Declares the work exchange and queue and the dead-letter exchange and queue.
///
/// The work queue dead-letters to the dead-letter exchange. On a quorum queue it also
/// carries a delivery limit, and dead-letters at least once: RabbitMQ keeps a message until
/// the dead-letter queue has confirmed it, which needs `reject-publish` overflow.
pub async fn declare(channel: &Channel, config: &BrokerConfig) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            config.dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;

    let queue_options = QueueDeclareOptions::durable();
    channel
        .queue_declare(
            config.dead_letter_queue.as_str().into(),
            queue_options,
            queue_type_arguments(config.queue_type),
        )
        .await?;
    channel
        .queue_bind(
            config.dead_letter_queue.as_str().into(),
            config.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    channel
        .queue_declare(
            config.queue.as_str().into(),
            queue_options,
            work_queue_arguments(config),
        )
        .await?;
    channel
        .queue_bind(
            config.queue.as_str().into(),
            config.exchange.as_str().into(),
            config.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    tracing::info!(
        exchange = %config.exchange,
        queue = %config.queue,
        dead_letter_queue = %config.dead_letter_queue,
        "declared topology"
    );
    Ok(())
}

fn work_queue_arguments(config: &BrokerConfig) -> FieldTable {
    let mut arguments = queue_type_arguments(config.queue_type);
    insert_text(
        &mut arguments,
        "x-dead-letter-exchange",
        &config.dead_letter_exchange,
    );
    if config.queue_type == QueueType::Quorum {
        insert_text(&mut arguments, "x-dead-letter-strategy", "at-least-once");
        insert_text(&mut arguments, "x-overflow", "reject-publish");
        if config.delivery_limit > 0 {
            arguments.insert(
                ShortString::from("x-delivery-limit"),
                AMQPValue::LongLongInt(i64::from(config.delivery_limit)),
            );
        }
    }
    arguments
}

fn queue_type_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    let name = match queue_type {
        QueueType::Quorum => "quorum",
        QueueType::Classic => "classic",
    };
    insert_text(&mut arguments, "x-queue-type", name);
    arguments
}
