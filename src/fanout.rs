//! Fan-out of one job: every requested channel is sent concurrently, and each channel's
//! failure stays its own. No channel waits for, cancels or delays another.

use chrono::Utc;
use futures::future::join_all;
use sqlx::types::Uuid;
use tracing::{Instrument, error, info, info_span, warn};

use crate::job::{ChannelRequest, Job, Notification};
use crate::ledger::{AttemptRecord, Claim, DeliveryState, Ledger, LedgerError, Outcome, Recipient};
use crate::metrics::Metrics;
use crate::providers::{Delivered, ErrorClass, SendError, SendRequest};
use crate::retry::{RetryPolicy, send_with_retries};
use crate::routes::Routes;
use crate::suppression::SuppressionPolicy;

/// The final outcome of one channel of a job.
#[derive(Debug)]
pub enum ChannelOutcome {
    Delivered(Delivered),
    Failed(SendError),
    /// The job's `expires_at` had passed, so nothing was sent.
    Expired,
    /// The channel is turned off in `[channels]`.
    NotConfigured,
    /// The job named a channel Herald does not know.
    UnknownChannel,
    /// The ledger shows the channel delivered by an earlier delivery, so it was not sent.
    AlreadyDelivered,
    /// The ledger shows the channel ended for good (failed permanently, dead-lettered or
    /// expired) in an earlier delivery, so it was not sent.
    AlreadySettled(DeliveryState),
    /// Another worker has a fresh claim on the channel and may be sending it now.
    InProgress,
    /// The ledger could not be reached, so the channel was not sent.
    LedgerUnavailable(String),
    /// The recipient is in the suppression table and skipping is on, so the channel was
    /// not sent. Final: it is neither retried nor dead-lettered.
    Suppressed,
}

impl ChannelOutcome {
    /// Returns the bounded label used in metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ChannelOutcome::Delivered(_) => "delivered",
            ChannelOutcome::Failed(error) if crate::retry::is_deferral(error) => "deferred",
            ChannelOutcome::Failed(error) => error.class.as_str(),
            ChannelOutcome::Expired => "expired",
            ChannelOutcome::NotConfigured => "not_configured",
            ChannelOutcome::UnknownChannel => "unknown_channel",
            ChannelOutcome::AlreadyDelivered => "already_delivered",
            ChannelOutcome::AlreadySettled(_) => "already_settled",
            ChannelOutcome::InProgress => "in_progress",
            ChannelOutcome::LedgerUnavailable(_) => "ledger_unavailable",
            ChannelOutcome::Suppressed => "suppressed",
        }
    }

    /// Returns whether the channel has reached its recipient, now or in an earlier delivery.
    pub fn is_delivered(&self) -> bool {
        matches!(
            self,
            ChannelOutcome::Delivered(_) | ChannelOutcome::AlreadyDelivered
        )
    }
}

/// One channel's report: what was requested, who sent it, how it ended.
#[derive(Debug)]
pub struct ChannelReport {
    pub channel: String,
    pub provider: Option<String>,
    pub attempts: u32,
    pub outcome: ChannelOutcome,
    /// The ledger claim this delivery holds on the channel, to be finished before the ack.
    pub claim: Option<Uuid>,
}

/// The shared context of a job's channel sends.
pub struct FanOut<'a> {
    pub routes: &'a Routes,
    pub policy: &'a RetryPolicy,
    pub ledger: &'a Ledger,
    pub metrics: &'a Metrics,
    pub suppression: SuppressionPolicy,
}

/// Sends every channel of `job` concurrently and returns one report per channel. Each
/// channel is claimed in the ledger first, and sent only when the claim is acquired.
pub async fn fan_out(job: &Job, context: &FanOut<'_>) -> Vec<ChannelReport> {
    let expired = job.is_expired(Utc::now());
    let sends = job
        .channels
        .iter()
        .map(|request| send_channel(job, request, expired, context));
    join_all(sends).await
}

async fn send_channel(
    job: &Job,
    request: &ChannelRequest,
    expired: bool,
    context: &FanOut<'_>,
) -> ChannelReport {
    let FanOut {
        routes,
        policy,
        ledger,
        metrics,
        suppression,
    } = *context;
    let notification = match request {
        ChannelRequest::Known(notification) => notification,
        ChannelRequest::Unknown { name } => {
            warn!(channel = %name, "job names an unknown channel; failing that channel");
            // The metric label is bounded; the report keeps the name, so the dead letter
            // carries the channel as the producer wrote it.
            let mut report = finish(metrics, "unknown", None, 0, ChannelOutcome::UnknownChannel);
            report.channel = name.clone();
            return report;
        }
    };
    let channel = notification.kind().as_str();

    let Some(route) = routes.get(notification.kind()) else {
        warn!(
            channel,
            "channel is turned off in the configuration; failing it"
        );
        return finish(metrics, channel, None, 0, ChannelOutcome::NotConfigured);
    };

    // The claim names the preferred provider. Each recorded call then stores the provider
    // that made it, so the ledger ends with the one actually used.
    let preferred = route.preferred().provider_name.to_string();
    let span = info_span!("send", channel, provider = %preferred, recipient = %notification.masked_recipient());
    let suppressed = match suppression
        .screen(ledger, notification, expired)
        .instrument(span.clone())
        .await
    {
        Ok(suppressed) => suppressed,
        Err(outcome) => return finish(metrics, channel, Some(preferred), 0, outcome),
    };
    let claim = ledger
        .claim(&job.id, &preferred, Recipient::from(notification))
        .instrument(span.clone())
        .await;
    let token = match claimed(claim, &span, metrics, channel, &preferred) {
        Ok(token) => token,
        Err(outcome) => return finish(metrics, channel, Some(preferred), 0, outcome),
    };
    if expired {
        info!(parent: &span, "job expired before sending; channel not sent");
        let report = finish(
            metrics,
            channel,
            Some(preferred),
            0,
            ChannelOutcome::Expired,
        );
        return report.with_claim(token);
    }
    if suppressed {
        let report = finish(
            metrics,
            channel,
            Some(preferred),
            0,
            ChannelOutcome::Suppressed,
        );
        return report.with_claim(token);
    }

    let outcome = send_with_retries(route, policy, request_for(job, notification), metrics)
        .instrument(span.clone())
        .await;

    let provider = outcome.provider.as_deref().unwrap_or(&preferred).to_owned();
    // Recorded only after a failover: text logs print a recorded field a second time.
    if provider != preferred {
        span.record("provider", provider.as_str());
    }
    // Entered only now: a guard held across an await would lend this span to whatever
    // else the thread polls meanwhile.
    let _entered = span.enter();
    let report_outcome = match outcome.result {
        Ok(delivered) => {
            info!(
                attempts = outcome.attempts,
                message_id = delivered.message_id.as_deref(),
                "channel delivered"
            );
            ChannelOutcome::Delivered(delivered)
        }
        Err(error) => {
            log_failure(&error, outcome.attempts);
            ChannelOutcome::Failed(error)
        }
    };
    let report = finish(
        metrics,
        channel,
        Some(provider),
        outcome.attempts,
        report_outcome,
    );
    drop(_entered);
    let report = finish_delivered(ledger, job, notification, report, token)
        .instrument(span.clone())
        .await;
    record_calls(ledger, job, notification, &outcome.calls)
        .instrument(span)
        .await;
    report
}

/// Records a delivered channel in the ledger at once, so a crash before the job settles
/// leaves no doubt about it. Other outcomes wait for their follow-ups, and a failed record
/// leaves the claim with the report, to be finished before the ack.
async fn finish_delivered(
    ledger: &Ledger,
    job: &Job,
    notification: &Notification,
    report: ChannelReport,
    token: Uuid,
) -> ChannelReport {
    let ChannelOutcome::Delivered(delivered) = &report.outcome else {
        return report.with_claim(token);
    };
    let outcome = Outcome::Delivered {
        provider_message_id: delivered.message_id.clone(),
    };
    match ledger
        .finish(&job.id, notification.kind(), token, &outcome)
        .await
    {
        Ok(true) => report,
        Ok(false) => {
            warn!("the channel's claim was taken over before its delivery was recorded");
            report
        }
        Err(error) => {
            warn!(error.message = %error, "failed to record the delivery in the ledger; retrying before the ack");
            report.with_claim(token)
        }
    }
}

/// Records each provider call in the ledger. A failure is logged and not fatal: the calls
/// are history, and the channel's outcome is recorded separately before the ack.
async fn record_calls(
    ledger: &Ledger,
    job: &Job,
    notification: &Notification,
    calls: &[AttemptRecord],
) {
    for call in calls {
        if let Err(record_error) = ledger
            .record_attempt(&job.id, notification.kind(), call)
            .await
        {
            warn!(error.message = %record_error, "failed to record a provider call in the ledger");
        }
    }
}

/// Turns a ledger claim into the token to send under, or into the outcome of a channel that
/// must not be sent now.
fn claimed(
    claim: Result<Claim, LedgerError>,
    span: &tracing::Span,
    metrics: &Metrics,
    channel: &str,
    provider: &str,
) -> Result<Uuid, ChannelOutcome> {
    let _entered = span.enter();
    match claim {
        Ok(Claim::Acquired {
            token, ambiguous, ..
        }) => {
            if ambiguous {
                metrics.possible_duplicate(channel, provider);
                warn!(
                    "taking over a claim left in sending; the provider may have received this channel before"
                );
            }
            Ok(token)
        }
        Ok(Claim::AlreadyDelivered { .. }) => {
            info!("channel already delivered; not sending it again");
            Err(ChannelOutcome::AlreadyDelivered)
        }
        Ok(Claim::Final { state }) => {
            info!(
                state = state.as_str(),
                "channel already settled; not sending it again"
            );
            Err(ChannelOutcome::AlreadySettled(state))
        }
        Ok(Claim::Busy) => {
            info!("channel claimed by another worker; checking again later");
            Err(ChannelOutcome::InProgress)
        }
        Err(ledger_error) => {
            error!(error.message = %ledger_error, "failed to claim the channel in the ledger; not sending it");
            Err(ChannelOutcome::LedgerUnavailable(ledger_error.to_string()))
        }
    }
}

impl ChannelReport {
    fn with_claim(mut self, token: Uuid) -> ChannelReport {
        self.claim = Some(token);
        self
    }
}

fn request_for<'a>(job: &'a Job, notification: &'a Notification) -> SendRequest<'a> {
    SendRequest {
        job_id: &job.id,
        notification,
    }
}

fn log_failure(error: &SendError, attempts: u32) {
    let class = error.class.as_str();
    let code = error.code.as_deref();
    if error.class == ErrorClass::Credentials {
        tracing::error!(attempts, error.class = class, error.code = code, error.status = error.status, error.message = %error.message, "channel failed");
    } else {
        warn!(attempts, error.class = class, error.code = code, error.status = error.status, error.message = %error.message, recipient_invalid = error.recipient_invalid, "channel failed");
    }
}

fn finish(
    metrics: &Metrics,
    channel: &str,
    provider: Option<String>,
    attempts: u32,
    outcome: ChannelOutcome,
) -> ChannelReport {
    metrics.channel_finished(
        channel,
        provider.as_deref().unwrap_or("none"),
        outcome.label(),
    );
    ChannelReport {
        channel: channel.to_owned(),
        provider,
        attempts,
        outcome,
        claim: None,
    }
}

/// Summarises a job's channel reports as one bounded label: `delivered` when every channel
/// was, `expired` when every channel expired, `suppressed` when every channel was
/// suppressed, `failed` when none was delivered, and `partial` otherwise.
pub fn job_outcome(reports: &[ChannelReport]) -> &'static str {
    let delivered = reports.iter().filter(|r| r.outcome.is_delivered()).count();
    if delivered == reports.len() {
        "delivered"
    } else if reports.iter().all(|r| {
        matches!(
            r.outcome,
            ChannelOutcome::Expired | ChannelOutcome::AlreadySettled(DeliveryState::Expired)
        )
    }) {
        "expired"
    } else if reports.iter().all(|r| {
        matches!(
            r.outcome,
            ChannelOutcome::Suppressed | ChannelOutcome::AlreadySettled(DeliveryState::Suppressed)
        )
    }) {
        "suppressed"
    } else if delivered == 0 {
        "failed"
    } else {
        "partial"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: ChannelOutcome) -> ChannelReport {
        ChannelReport {
            channel: "sms".into(),
            provider: Some("twilio".into()),
            attempts: 0,
            outcome,
            claim: None,
        }
    }

    #[test]
    fn all_suppressed_job_is_suppressed() {
        let reports = [
            report(ChannelOutcome::Suppressed),
            report(ChannelOutcome::AlreadySettled(DeliveryState::Suppressed)),
        ];
        assert_eq!(job_outcome(&reports), "suppressed");
    }

    #[test]
    fn suppressed_beside_delivered_is_partial() {
        let reports = [
            report(ChannelOutcome::Suppressed),
            report(ChannelOutcome::AlreadyDelivered),
        ];
        assert_eq!(job_outcome(&reports), "partial");
    }
}
