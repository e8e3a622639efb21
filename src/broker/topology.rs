//! Declaration of the exchanges and queues Herald uses. Every declaration is idempotent:
//! declaring an existing exchange or queue with the same arguments changes nothing.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use super::headers::insert_text;
use crate::config::{BrokerConfig, QueueType};

/// Declares the work exchange and queue, the dead-letter exchange and queue, the delay
/// exchange with one queue per delay tier, and the events exchange unless it is turned off.
///
/// The work queue dead-letters to the dead-letter exchange. On a quorum queue it also
/// carries a delivery limit, and dead-letters at least once: RabbitMQ keeps a message until
/// the dead-letter queue has confirmed it, which needs `reject-publish` overflow.
pub async fn declare(
    channel: &Channel,
    config: &BrokerConfig,
    delay_tiers: &[u64],
) -> Result<(), lapin::Error> {
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

    declare_delay_queues(channel, config, delay_tiers).await?;
    if !config.events_exchange.is_empty() {
        channel
            .exchange_declare(
                config.events_exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
    }

    tracing::info!(
        exchange = %config.exchange,
        queue = %config.queue,
        dead_letter_queue = %config.dead_letter_queue,
        events_exchange = %config.events_exchange,
        "declared topology"
    );
    Ok(())
}

/// Declares the delay exchange and a queue per tier. A message waits in its tier's queue
/// for the tier's TTL, then RabbitMQ dead-letters it to the work exchange with the work
/// routing key, which makes it a new delivery of the work queue.
async fn declare_delay_queues(
    channel: &Channel,
    config: &BrokerConfig,
    delay_tiers: &[u64],
) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            config.delay_exchange().as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    for &seconds in delay_tiers {
        let queue = config.delay_queue(seconds);
        let mut arguments = queue_type_arguments(config.queue_type);
        arguments.insert(
            ShortString::from("x-message-ttl"),
            AMQPValue::LongLongInt(i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX)),
        );
        insert_text(&mut arguments, "x-dead-letter-exchange", &config.exchange);
        insert_text(
            &mut arguments,
            "x-dead-letter-routing-key",
            &config.routing_key,
        );
        if config.queue_type == QueueType::Quorum {
            insert_text(&mut arguments, "x-dead-letter-strategy", "at-least-once");
            insert_text(&mut arguments, "x-overflow", "reject-publish");
        }
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                config.delay_exchange().as_str().into(),
                queue.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Checks that the events exchange exists when Herald does not declare it. A publish to a
/// missing exchange would close the publishing channel, which every follow-up shares, so
/// the check runs on a channel of its own before consuming starts.
pub async fn check_events_exchange(
    connection: &Connection,
    config: &BrokerConfig,
) -> Result<(), lapin::Error> {
    if config.declare_topology || config.events_exchange.is_empty() {
        return Ok(());
    }
    let channel = connection.create_channel().await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            config.events_exchange.as_str().into(),
            ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await?;
    channel.close(200, "checked".into()).await
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
