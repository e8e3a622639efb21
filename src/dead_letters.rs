//! `herald dead`: a summary of the dead-letter queue, and replay of its messages to the
//! work queue.
//!
//! Both commands read the queue with `basic.get` up to the number of messages it held when
//! they started, so messages added meanwhile are left alone. Messages they do not take stay
//! unacknowledged until the command's channel closes, when RabbitMQ returns them to the
//! queue. The order may change, and on a quorum queue each read raises the message's
//! delivery count.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use crate::broker::{self, PublishError, Publisher, headers};
use crate::config::BrokerConfig;
use crate::job::{ChannelKind, JobId};
use crate::ledger::Ledger;

/// One dead letter's identity, as the summary groups it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeadLetterKind {
    pub reason: String,
    pub channel: String,
    pub provider: String,
    pub error_code: String,
}

/// The filter that selects the dead letters `herald dead replay` moves.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only these reasons; empty means every reason.
    pub reasons: Vec<String>,
    pub job_id: Option<String>,
    pub limit: Option<u64>,
    /// Messages published per second at most.
    pub rate: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),

    #[error("failed to publish a replayed message: {0}")]
    Publish(#[from] PublishError),

    #[error("failed to reopen a replayed channel in the ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// Counts the dead-letter queue's messages by reason, channel, provider and error code.
pub async fn summarize(
    config: &BrokerConfig,
) -> Result<BTreeMap<DeadLetterKind, u64>, DeadLetterError> {
    let connection = broker::connect(config, "dead-list").await?;
    let channel = connection.create_channel().await?;
    let mut counts = BTreeMap::new();
    for _ in 0..queue_length(&channel, &config.dead_letter_queue).await? {
        let Some(message) = get(&channel, &config.dead_letter_queue).await? else {
            break;
        };
        *counts.entry(kind_of(&message.properties)).or_insert(0) += 1;
    }
    close(&connection).await;
    Ok(counts)
}

/// Publishes the dead letters that match `filter` to the work exchange, each acknowledged
/// only after the broker confirmed its copy. Returns the number replayed.
///
/// A replayed message loses Herald's failure headers and the broker's `x-death`, so it
/// starts again at attempt 1. Its channel's ledger row is reopened first, so the channel is
/// sent again unless it was delivered meanwhile.
pub async fn replay(
    config: &BrokerConfig,
    ledger: &Ledger,
    filter: &ReplayFilter,
) -> Result<u64, DeadLetterError> {
    let connection = broker::connect(config, "dead-replay").await?;
    let channel = connection.create_channel().await?;
    let publisher = Publisher::open(&connection).await?;
    let pause = Duration::from_secs(1) / filter.rate.max(1);
    let limit = filter.limit.unwrap_or(u64::MAX);
    let mut replayed = 0;

    for _ in 0..queue_length(&channel, &config.dead_letter_queue).await? {
        if replayed >= limit {
            break;
        }
        let Some(message) = get(&channel, &config.dead_letter_queue).await? else {
            break;
        };
        if !matches(filter, &message.properties) {
            continue;
        }
        reopen(ledger, message.properties.headers().as_ref()).await?;
        let table = without_failure_headers(message.properties.headers().as_ref());
        publisher
            .publish(
                &config.exchange,
                &config.routing_key,
                &message.data,
                table,
                "application/json",
            )
            .await?;
        message.ack(BasicAckOptions::default()).await?;
        replayed += 1;
        tokio::time::sleep(pause).await;
    }
    close(&connection).await;
    Ok(replayed)
}

/// Reopens the ledger row of a channel's dead letter. Whole-job dead letters (poison jobs)
/// have no channel header and no row.
async fn reopen(
    ledger: &Ledger,
    table: Option<&FieldTable>,
) -> Result<(), crate::ledger::LedgerError> {
    let job_id = headers::text(table, headers::JOB_ID).and_then(|id| JobId::parse(&id).ok());
    let channel =
        headers::text(table, headers::CHANNEL).and_then(|name| ChannelKind::from_name(&name));
    if let (Some(job_id), Some(channel)) = (job_id, channel) {
        ledger.reopen(&job_id, channel).await?;
    }
    Ok(())
}

async fn queue_length(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let queue = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await?;
    Ok(queue.message_count())
}

async fn get(
    channel: &Channel,
    queue: &str,
) -> Result<Option<lapin::message::BasicGetMessage>, lapin::Error> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
}

fn kind_of(properties: &BasicProperties) -> DeadLetterKind {
    let table = properties.headers().as_ref();
    let text = |name| headers::text(table, name).unwrap_or_else(|| "-".to_owned());
    DeadLetterKind {
        reason: headers::text(table, headers::REASON).unwrap_or_else(|| "broker".to_owned()),
        channel: text(headers::CHANNEL),
        provider: text(headers::PROVIDER),
        error_code: text(headers::ERROR_CODE),
    }
}

fn matches(filter: &ReplayFilter, properties: &BasicProperties) -> bool {
    let kind = kind_of(properties);
    let reason_matches = filter.reasons.is_empty() || filter.reasons.contains(&kind.reason);
    let job_id = headers::text(properties.headers().as_ref(), headers::JOB_ID);
    let job_matches = filter.job_id.is_none() || filter.job_id == job_id;
    reason_matches && job_matches
}

/// Returns `original` without Herald's `x-herald-*` headers and the broker's dead-letter
/// bookkeeping.
fn without_failure_headers(original: Option<&FieldTable>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers::republished(original).inner() {
        if !name.as_str().starts_with("x-herald-") {
            table.insert(name.clone(), value.clone());
        }
    }
    table
}

async fn close(connection: &Connection) {
    if let Err(error) = connection.close(200, "done".into()).await {
        tracing::warn!(error.message = %error, "failed to close the broker connection");
    }
}
