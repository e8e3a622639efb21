//! The consumer of the work queue.

use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

use super::topology;
use crate::config::BrokerConfig;

/// How long cancelling the consumer waits for the broker's confirmation.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long `return_prefetched` waits for one more buffered delivery.
const PREFETCH_DRAIN_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// A consumer with manual acknowledgements, and the channel its deliveries are settled on.
pub struct JobConsumer {
    pub channel: Channel,
    pub consumer: Consumer,
}

/// Opens a channel, declares the topology when configured, sets the prefetch and starts
/// consuming the work queue.
pub async fn open_consumer(
    connection: &Connection,
    config: &BrokerConfig,
    delay_tiers: &[u64],
) -> Result<JobConsumer, lapin::Error> {
    let channel = connection.create_channel().await?;
    if config.declare_topology {
        topology::declare(&channel, config, delay_tiers).await?;
    }
    channel
        .basic_qos(config.prefetch, BasicQosOptions { global: false })
        .await?;
    let consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(
        queue = %config.queue,
        prefetch = config.prefetch,
        consumer_tag = %consumer.tag(),
        "consuming"
    );
    Ok(JobConsumer { channel, consumer })
}

impl JobConsumer {
    /// Cancels the consumer and returns every delivery it had received but not handed out to
    /// the queue, so another consumer can take them. `waiting` are deliveries already read
    /// from the stream. They are returned after the cancel, so that RabbitMQ does not send
    /// them straight back to this consumer.
    pub async fn return_prefetched(&mut self, waiting: &[lapin::message::Delivery]) {
        if let Err(error) = self.cancel().await {
            tracing::warn!(error.message = %error, "failed to cancel the consumer");
        }
        for delivery in waiting {
            crate::pool::requeue(delivery).await;
        }
        // After the cancel, the stream yields what it had buffered and then ends.
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout(
            PREFETCH_DRAIN_WAIT,
            futures::StreamExt::next(&mut self.consumer),
        )
        .await
        {
            crate::pool::requeue(&delivery).await;
        }
    }

    /// Asks RabbitMQ to stop sending deliveries. Deliveries already received stay valid and
    /// can still be settled on this channel. A broker that went silent never confirms, so
    /// the wait is limited to `CANCEL_TIMEOUT`, keeping a shutdown within its grace period.
    pub async fn cancel(&self) -> Result<(), lapin::Error> {
        let cancelling = self
            .channel
            .basic_cancel(self.consumer.tag(), BasicCancelOptions::default());
        tokio::time::timeout(CANCEL_TIMEOUT, cancelling)
            .await
            .map_err(|_| {
                lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the broker did not confirm the cancel within {} s",
                        CANCEL_TIMEOUT.as_secs()
                    ),
                ))
            })?
    }
}
