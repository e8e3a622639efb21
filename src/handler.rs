//! One delivery from parse to settlement.
//!
//! A valid job is fanned out and acknowledged once every channel has an outcome. A body that
//! fails validation is a poison job: a copy goes to the dead-letter exchange with the reason
//! in its headers and the original is acknowledged, so it is neither lost nor redelivered
//! forever. If that copy cannot be published, the delivery is rejected without requeueing,
//! and the work queue's own dead-letter exchange keeps it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::broker::{Publisher, headers};
use crate::config::BrokerConfig;
use crate::fanout::{fan_out, job_outcome};
use crate::job::{self, Job, JobError};
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::routes::Routes;
use crate::shutdown::Shutdown;

/// Everything a worker needs to handle a delivery. Shared by all workers.
pub struct JobHandler {
    pub routes: Arc<Routes>,
    pub policy: RetryPolicy,
    pub metrics: Arc<Metrics>,
    pub publisher: Publisher,
    pub broker: BrokerConfig,
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
                    let settled = self.dead_letter(&delivery, "handler_panic", "the job handler panicked", None).await;
                    self.count_settlement(settled, "failed");
                }
            }
            () = shutdown.aborted() => {
                warn!(delivery_tag = tag, "shutdown grace period ended; leaving the delivery for redelivery");
                self.metrics.job_abandoned();
            }
        }
    }

    async fn process(self: Arc<Self>, delivery: &Delivery) {
        let job = match Job::parse(&delivery.data, self.broker.max_job_bytes) {
            Ok(job) => job,
            Err(error) => return self.reject_poison(delivery, &error).await,
        };

        let span = info_span!("job", job_id = %job.id, delivery_tag = delivery.delivery_tag, redelivered = delivery.redelivered);
        async {
            debug!(channels = job.channels.len(), "job received");
            let reports = fan_out(&job, &self.routes, &self.policy, &self.metrics).await;
            let outcome = job_outcome(&reports);
            let settled = self.ack(delivery).await;
            if settled {
                info!(outcome, "job settled");
            }
            self.count_settlement(settled, outcome);
        }
        .instrument(span)
        .await;
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
