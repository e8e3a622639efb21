//! Invalid-recipient feedback: which channels of a delivery ended because the provider
//! reported the recipient invalid, recording them in the ledger's suppression table, and
//! skipping suppressed recipients before a channel is claimed.
//!
//! A channel is recorded once its outcome in the delivery is final: a failure with
//! `recipient_invalid` set that is not going to a delay queue. The record is keyed by
//! channel and recipient hash, so it outlives the job.

use tracing::{error, info};

use crate::config::SuppressionConfig;
use crate::fanout::{ChannelOutcome, ChannelReport};
use crate::job::{ChannelKind, ChannelRequest, DeviceToken, EmailAddress, Job, JobError, JobId};
use crate::job::{Notification, PhoneNumber, WebhookTarget};
use crate::ledger::{InvalidRecipient, Ledger, LedgerError, Recipient};
use crate::metrics::Metrics;
use crate::providers::SendError;
use crate::redelivery::FollowUp;

/// The `[suppression]` settings that the fan-out applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct SuppressionPolicy {
    pub skip: bool,
}

impl SuppressionPolicy {
    pub fn new(config: &SuppressionConfig) -> SuppressionPolicy {
        SuppressionPolicy { skip: config.skip }
    }

    /// Returns whether the channel of `notification` must not be sent because its
    /// recipient is suppressed. Nothing is looked up when skipping is off or the job has
    /// expired. A failed lookup becomes the outcome of a channel that is not sent, and the
    /// delivery is requeued like any ledger failure.
    pub async fn screen(
        &self,
        ledger: &Ledger,
        notification: &Notification,
        expired: bool,
    ) -> Result<bool, ChannelOutcome> {
        if !self.skip || expired {
            return Ok(false);
        }
        match ledger.is_suppressed(Recipient::from(notification)).await {
            Ok(true) => {
                info!("recipient is suppressed; not sending the channel");
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(ledger_error) => {
                error!(error.message = %ledger_error, "failed to look up the recipient in the suppression table; not sending the channel");
                Err(ChannelOutcome::LedgerUnavailable(ledger_error.to_string()))
            }
        }
    }
}

/// A channel of this delivery that ended because its recipient is invalid.
pub struct InvalidChannel<'a> {
    pub report: &'a ChannelReport,
    pub error: &'a SendError,
    pub notification: &'a Notification,
}

impl<'a> InvalidChannel<'a> {
    pub fn recipient(&self) -> Recipient<'a> {
        Recipient::from(self.notification)
    }

    pub fn provider(&self) -> &'a str {
        self.report.provider.as_deref().unwrap_or("none")
    }
}

/// Returns the channels whose final outcome in this delivery is a failure the provider
/// marked `recipient_invalid`. A channel going to a delay queue is not final yet.
pub fn invalid_channels<'a>(
    job: &'a Job,
    reports: &'a [ChannelReport],
    follow_ups: &[Option<FollowUp>],
) -> Vec<InvalidChannel<'a>> {
    reports
        .iter()
        .zip(follow_ups)
        .filter_map(|(report, follow_up)| {
            let ChannelOutcome::Failed(error) = &report.outcome else {
                return None;
            };
            let retrying = matches!(follow_up, Some(FollowUp::Retry { .. }));
            if !error.recipient_invalid || retrying {
                return None;
            }
            let notification = notification(job, &report.channel)?;
            Some(InvalidChannel {
                report,
                error,
                notification,
            })
        })
        .collect()
}

fn notification<'a>(job: &'a Job, channel: &str) -> Option<&'a Notification> {
    job.channels.iter().find_map(|request| match request {
        ChannelRequest::Known(notification) if notification.kind().as_str() == channel => {
            Some(notification)
        }
        _ => None,
    })
}

/// Records each invalid channel's recipient in the suppression table. A redelivery of the
/// same job changes no row, so this is safe to repeat.
pub async fn record(
    ledger: &Ledger,
    metrics: &Metrics,
    job_id: &JobId,
    invalid: &[InvalidChannel<'_>],
) -> Result<(), LedgerError> {
    for channel in invalid {
        let entry = InvalidRecipient {
            recipient: channel.recipient(),
            provider: channel.provider(),
            provider_code: channel.error.code.as_deref(),
            reason: &channel.error.message,
        };
        if ledger.suppress(job_id, &entry).await? {
            metrics.suppression_recorded(&channel.report.channel, channel.provider());
            info!(channel = %channel.report.channel, provider = channel.provider(), error.code = entry.provider_code, "recipient recorded as suppressed");
        }
    }
    Ok(())
}

/// Removes the suppression of `recipient` on `channel`, as `herald suppression remove`
/// does. The recipient is checked as a job's recipient of that channel would be, so its
/// hash matches the one recorded. Returns whether a suppression was removed.
pub async fn lift(
    ledger: &Ledger,
    channel: ChannelKind,
    recipient: &str,
) -> Result<bool, LiftError> {
    let field = "--recipient";
    let exposed = match channel {
        ChannelKind::Email => EmailAddress::parse(field, recipient)?.expose().to_owned(),
        ChannelKind::Sms => PhoneNumber::parse(field, recipient)?.expose().to_owned(),
        // A Web Push subscription is recorded by its endpoint URL.
        ChannelKind::Push
            if recipient.starts_with("https://") || recipient.starts_with("http://") =>
        {
            recipient.to_owned()
        }
        ChannelKind::Push => DeviceToken::parse(field, recipient)?.expose().to_owned(),
        ChannelKind::Webhook => WebhookTarget::parse_exposed(recipient)
            .ok_or_else(|| {
                JobError::field(field, "is neither `endpoint:NAME` nor an http or https URL")
            })?
            .expose(),
    };
    Ok(ledger.lift_exposed_suppression(channel, &exposed).await?)
}

/// The reason `herald suppression remove` failed.
#[derive(Debug, thiserror::Error)]
pub enum LiftError {
    #[error(transparent)]
    InvalidRecipient(#[from] JobError),

    #[error(transparent)]
    Ledger(#[from] LedgerError),
}
