//! One delivery from parse to settlement.
//!
//! A valid job is fanned out. Each channel that did not succeed is then published on its own,
//! to a delay queue for a later retry or to the dead-letter exchange, and only when the
//! broker has confirmed every such publish is the delivery acknowledged. If one is not
//! confirmed, the delivery is requeued whole.
//!
//! A body that fails validation is a poison job: a copy goes to the dead-letter exchange
//! with the reason in its headers and the original is acknowledged, so it is neither lost
//! nor redelivered forever. If that copy cannot be published, the delivery is rejected
//! without requeueing, and the work queue's own dead-letter exchange keeps it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::Utc;
use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::broker::{PublishError, Publisher, headers};
use crate::config::BrokerConfig;
use crate::events::EventPublisher;
use crate::fanout::{ChannelOutcome, ChannelReport, FanOut, fan_out, job_outcome};
use crate::job::{self, ChannelKind, Job, JobError, JobId};
use crate::ledger::{LastError, Ledger, LedgerError, Outcome};
use crate::metrics::Metrics;
use crate::redelivery::{FollowUp, RedeliveryPolicy, single_channel_body};
use crate::retry::{RetryPolicy, is_deferral};
use crate::routes::Routes;
use crate::shutdown::Shutdown;
use crate::suppression::{self, InvalidChannel, SuppressionPolicy};

/// Everything a worker needs to handle a delivery. Shared by all workers.
pub struct JobHandler {
    pub routes: Arc<Routes>,
    pub ledger: Ledger,
    /// Cleared when a ledger call fails as unavailable, so the consumer pauses.
    pub ledger_gate: Arc<LedgerGate>,
    pub policy: RetryPolicy,
    pub redelivery: RedeliveryPolicy,
    pub metrics: Arc<Metrics>,
    pub publisher: Publisher,
    pub broker: BrokerConfig,
    pub suppression: SuppressionPolicy,
    pub events: EventPublisher,
}

impl JobHandler {
    /// Handles one delivery until it is settled, or until shutdown's grace period runs out,
    /// in which case the delivery stays unacknowledged and RabbitMQ redelivers it.
    pub async fn handle(self: Arc<Self>, delivery: Delivery, shutdown: Shutdown) {
        self.metrics.job_received();
        let tag = delivery.delivery_tag;
        let work = AssertUnwindSafe(self.clone().process(&delivery)).catch_unwind();
        tokio::select! {
            result = work => {
                if result.is_err() {
                    error!(delivery_tag = tag, "job handler panicked; dead-lettering the delivery");
                    self.metrics.dead_lettered("none", "handler_panic");
                    let settled = self.dead_letter(&delivery, "handler_panic", "the job handler panicked", None).await;
                    self.count_settlement(settled, "failed");
                }
            }
            () = shutdown.aborted() => {
                let job_id = job::salvage_id(&delivery.data);
                warn!(job_id = job_id.as_ref().map(|id| id.as_str()), delivery_tag = tag, "shutdown grace period ended; leaving the delivery for redelivery");
                self.metrics.job_abandoned();
            }
        }
    }

    async fn process(self: Arc<Self>, delivery: &Delivery) {
        let job = match Job::parse(&delivery.data, self.broker.max_job_bytes) {
            Ok(job) => job,
            Err(error) => return self.reject_poison(delivery, &error).await,
        };

        let original_headers = delivery.properties.headers().as_ref();
        let round = headers::number(original_headers, headers::ATTEMPT)
            .and_then(|round| u32::try_from(round).ok())
            .filter(|round| *round >= 1)
            .unwrap_or(1);
        let span = info_span!("job", job_id = %job.id, delivery_tag = delivery.delivery_tag, redelivered = delivery.redelivered, attempt = round);
        async {
            debug!(channels = job.channels.len(), "job received");
            let context = FanOut {
                routes: &self.routes,
                policy: &self.policy,
                ledger: &self.ledger,
                metrics: &self.metrics,
                suppression: self.suppression,
            };
            let reports = fan_out(&job, &context).await;
            // Decided once: a delayed retry's tier is random, and the publish and the
            // ledger record must agree on it.
            let follow_ups: Vec<Option<FollowUp>> = reports
                .iter()
                .map(|report| self.redelivery.follow_up(report, round))
                .collect();
            let retrying = follow_ups
                .iter()
                .any(|follow_up| matches!(follow_up, Some(FollowUp::Retry { .. })));
            let outcome = if retrying {
                "retrying"
            } else {
                job_outcome(&reports)
            };
            let settled = self
                .settle(delivery, &job, round, &reports, &follow_ups)
                .await;
            if settled {
                info!(outcome, "job settled");
            }
            self.count_settlement(settled, outcome);
        }
        .instrument(span)
        .await;
    }

    /// Settles a delivery whose job was fanned out: publishes the follow-ups and then the
    /// events, records invalid recipients and every claimed channel's outcome in the
    /// ledger, then acknowledges. Returns whether the delivery was acknowledged. Any failure
    /// before the acknowledgement requeues the delivery whole, so a later delivery finishes
    /// the work.
    async fn settle(
        &self,
        delivery: &Delivery,
        job: &Job,
        round: u32,
        reports: &[ChannelReport],
        follow_ups: &[Option<FollowUp>],
    ) -> bool {
        let unavailable: Option<String> = reports.iter().find_map(|report| match &report.outcome {
            ChannelOutcome::LedgerUnavailable(reason) => Some(reason.clone()),
            _ => None,
        });
        if let Some(reason) = unavailable {
            warn!(error.message = %reason, "ledger unavailable; requeueing the job and pausing consumption");
            self.ledger_gate.close();
            self.metrics.set_ledger_available(false);
            self.requeue(delivery).await;
            return false;
        }

        if let Err(error) = self
            .publish_follow_ups(delivery, job.id.as_str(), round, reports, follow_ups)
            .await
        {
            error!(error.message = %error, "failed to publish a retry or dead letter; requeueing the job");
            self.requeue(delivery).await;
            return false;
        }
        // Events go out before the ledger settles the channels, so a channel that a
        // redelivery finds settled had its events confirmed.
        let invalid = suppression::invalid_channels(job, reports, follow_ups);
        if let Err(error) = self
            .events
            .publish(job, round, reports, follow_ups, &invalid)
            .await
        {
            error!(error.message = %error, "failed to publish a delivery event; requeueing the job");
            self.requeue(delivery).await;
            return false;
        }
        if let Err(error) = self
            .record_outcomes(job, reports, follow_ups, &invalid)
            .await
        {
            error!(error.message = %error, "failed to record outcomes in the ledger; requeueing the job");
            if error.is_unavailable() {
                self.ledger_gate.close();
                self.metrics.set_ledger_available(false);
            }
            self.requeue(delivery).await;
            return false;
        }
        self.ack(delivery).await
    }

    /// Records invalid recipients in the suppression table, then the outcome of every
    /// channel this delivery claimed.
    async fn record_outcomes(
        &self,
        job: &Job,
        reports: &[ChannelReport],
        follow_ups: &[Option<FollowUp>],
        invalid: &[InvalidChannel<'_>],
    ) -> Result<(), LedgerError> {
        suppression::record(&self.ledger, &self.metrics, &job.id, invalid).await?;
        self.finish_claims(&job.id, reports, follow_ups).await
    }

    /// Records the outcome of every channel this delivery claimed.
    async fn finish_claims(
        &self,
        job_id: &JobId,
        reports: &[ChannelReport],
        follow_ups: &[Option<FollowUp>],
    ) -> Result<(), LedgerError> {
        for (report, follow_up) in reports.iter().zip(follow_ups) {
            let Some(token) = report.claim else {
                continue;
            };
            let Some(kind) = ChannelKind::from_name(&report.channel) else {
                continue;
            };
            let outcome = ledger_outcome(report, follow_up.as_ref());
            if !self.ledger.finish(job_id, kind, token, &outcome).await? {
                warn!(channel = %report.channel, "the channel's claim was taken over before its outcome was recorded");
            }
        }
        Ok(())
    }

    /// Publishes, confirmed, the follow-up of every channel that needs one: a delayed retry
    /// or a dead letter, each carrying that channel alone.
    async fn publish_follow_ups(
        &self,
        delivery: &Delivery,
        job_id: &str,
        round: u32,
        reports: &[ChannelReport],
        follow_ups: &[Option<FollowUp>],
    ) -> Result<(), PublishError> {
        let plans: Vec<(&ChannelReport, &FollowUp)> = reports
            .iter()
            .zip(follow_ups)
            .filter_map(|(report, follow_up)| Some((report, follow_up.as_ref()?)))
            .collect();
        if plans.is_empty() {
            return Ok(());
        }

        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
        let original = delivery.properties.headers().as_ref();
        let now = Utc::now().to_rfc3339();
        let first_failure =
            headers::text(original, headers::FIRST_FAILURE_AT).unwrap_or_else(|| now.clone());
        let publishes = plans.into_iter().map(|(report, follow_up)| {
            let mut table = failure_headers(original, report, &first_failure, &now);
            let body = single_channel_body(&body, &report.channel);
            async move {
                match *follow_up {
                    FollowUp::Retry {
                        tier_secs,
                        round: next_round,
                    } => {
                        self.publish_retry(report, table, &body, tier_secs, next_round)
                            .await
                    }
                    FollowUp::DeadLetter { reason } => {
                        headers::set_text(&mut table, headers::REASON, reason);
                        headers::set_number(&mut table, headers::ATTEMPTS, i64::from(round));
                        headers::set_text(&mut table, headers::JOB_ID, job_id);
                        headers::set_text(&mut table, headers::SOURCE_QUEUE, &self.broker.queue);
                        self.publish_channel_dead_letter(report, table, &body, reason)
                            .await
                    }
                }
            }
        });
        futures::future::join_all(publishes)
            .await
            .into_iter()
            .collect()
    }

    async fn publish_retry(
        &self,
        report: &ChannelReport,
        mut table: FieldTable,
        body: &[u8],
        tier_secs: u64,
        next_round: u32,
    ) -> Result<(), PublishError> {
        headers::set_number(&mut table, headers::ATTEMPT, i64::from(next_round));
        let queue = self.broker.delay_queue(tier_secs);
        self.publisher
            .publish(
                &self.broker.delay_exchange(),
                &queue,
                body,
                table,
                "application/json",
            )
            .await?;
        let provider = report.provider.as_deref().unwrap_or("none");
        let reason = retry_reason(&report.outcome);
        self.metrics
            .delayed_retry(&report.channel, provider, reason);
        info!(channel = %report.channel, provider, reason, delay_secs = tier_secs, next_attempt = next_round, "channel scheduled for a delayed retry");
        Ok(())
    }

    async fn publish_channel_dead_letter(
        &self,
        report: &ChannelReport,
        table: FieldTable,
        body: &[u8],
        reason: &str,
    ) -> Result<(), PublishError> {
        self.publisher
            .publish(
                &self.broker.dead_letter_exchange,
                &self.broker.queue,
                body,
                table,
                "application/json",
            )
            .await?;
        let channel_label = match report.outcome {
            ChannelOutcome::UnknownChannel => "unknown",
            _ => report.channel.as_str(),
        };
        self.metrics.dead_lettered(channel_label, reason);
        warn!(channel = %report.channel, provider = report.provider.as_deref(), reason, "channel dead-lettered");
        Ok(())
    }

    async fn reject_poison(&self, delivery: &Delivery, error: &JobError) {
        let job_id = job::salvage_id(&delivery.data);
        warn!(
            job_id = job_id.as_ref().map(|id| id.as_str()),
            delivery_tag = delivery.delivery_tag,
            reason = error.reason(),
            error.message = %error,
            "poison job; dead-lettering it"
        );
        self.metrics.poison_job(error.reason());
        self.metrics.dead_lettered("none", error.reason());
        let id = job_id.as_ref().map(|id| id.as_str());
        let settled = self
            .dead_letter(delivery, error.reason(), &error.to_string(), id)
            .await;
        self.count_settlement(settled, "poison");
    }

    fn count_settlement(&self, settled: bool, outcome: &str) {
        if settled {
            self.metrics.job_completed(outcome);
        } else {
            self.metrics.job_abandoned();
        }
    }

    /// Publishes a dead-letter copy and acknowledges the original. Returns whether the
    /// delivery was settled.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        error: &str,
        job_id: Option<&str>,
    ) -> bool {
        let table = headers::dead_letter(
            delivery.properties.headers().as_ref(),
            reason,
            error,
            job_id,
            &self.broker.queue,
        );
        let content_type = delivery
            .properties
            .content_type()
            .as_ref()
            .map_or("application/octet-stream", |value| value.as_str());
        let published = self
            .publisher
            .publish(
                &self.broker.dead_letter_exchange,
                &self.broker.queue,
                &delivery.data,
                table,
                content_type,
            )
            .await;
        match published {
            Ok(()) => self.ack(delivery).await,
            Err(publish_error) => {
                error!(delivery_tag = delivery.delivery_tag, error.message = %publish_error, "failed to publish the dead-letter copy; rejecting the delivery to the queue's dead-letter exchange");
                self.reject(delivery).await
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> bool {
        match delivery.ack(BasicAckOptions::default()).await {
            Ok(_) => true,
            Err(error) => {
                error!(delivery_tag = delivery.delivery_tag, error.message = %error, "failed to acknowledge; RabbitMQ will redeliver the job");
                false
            }
        }
    }

    async fn requeue(&self, delivery: &Delivery) {
        let options = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        if let Err(error) = delivery.nack(options).await {
            error!(delivery_tag = delivery.delivery_tag, error.message = %error, "failed to requeue; RabbitMQ will redeliver the job when the channel closes");
        }
    }

    async fn reject(&self, delivery: &Delivery) -> bool {
        let options = BasicRejectOptions { requeue: false };
        match delivery.reject(options).await {
            Ok(_) => true,
            Err(error) => {
                error!(delivery_tag = delivery.delivery_tag, error.message = %error, "failed to reject; RabbitMQ will redeliver the job");
                false
            }
        }
    }
}

/// Returns the ledger state of a claimed channel, given its follow-up.
fn ledger_outcome(report: &ChannelReport, follow_up: Option<&FollowUp>) -> Outcome {
    match &report.outcome {
        ChannelOutcome::Delivered(delivered) => Outcome::Delivered {
            provider_message_id: delivered.message_id.clone(),
        },
        ChannelOutcome::Failed(error) => match follow_up {
            Some(FollowUp::Retry { .. }) => Outcome::Retrying(LastError::from(error)),
            _ => Outcome::DeadLettered(LastError::from(error)),
        },
        ChannelOutcome::Expired => Outcome::Expired,
        ChannelOutcome::Suppressed => Outcome::Suppressed,
        other => Outcome::Failed(LastError::new("transient", other.label())),
    }
}

/// Builds the headers of a channel's follow-up: the original headers without the broker's
/// dead-letter bookkeeping, plus the channel, provider and failure details.
fn failure_headers(
    original: Option<&FieldTable>,
    report: &ChannelReport,
    first_failure: &str,
    now: &str,
) -> FieldTable {
    let mut table = headers::republished(original);
    headers::set_text(&mut table, headers::CHANNEL, &report.channel);
    headers::set_text(&mut table, headers::FIRST_FAILURE_AT, first_failure);
    headers::set_text(&mut table, headers::LAST_FAILURE_AT, now);
    if let Some(provider) = &report.provider {
        headers::set_text(&mut table, headers::PROVIDER, provider);
    }
    match &report.outcome {
        ChannelOutcome::Failed(error) => {
            headers::set_error(&mut table, &error.message);
            if let Some(code) = &error.code {
                headers::set_text(&mut table, headers::ERROR_CODE, code);
            }
            if let Some(status) = error.status {
                headers::set_number(&mut table, headers::HTTP_STATUS, i64::from(status));
            }
        }
        other => headers::set_error(&mut table, other.label()),
    }
    table
}

/// Returns the `reason` label of a delayed retry.
fn retry_reason(outcome: &ChannelOutcome) -> &'static str {
    match outcome {
        ChannelOutcome::Failed(error) if is_deferral(error) => "deferred",
        ChannelOutcome::Failed(error) => error.class.as_str(),
        _ => "transient",
    }
}

/// Whether the ledger is believed reachable. A job that finds it unreachable closes the
/// gate; the consumer then stops taking deliveries until a probe opens it again.
#[derive(Debug)]
pub struct LedgerGate {
    open: std::sync::atomic::AtomicBool,
}

impl Default for LedgerGate {
    fn default() -> Self {
        LedgerGate {
            open: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl LedgerGate {
    pub fn is_open(&self) -> bool {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
    }
}
