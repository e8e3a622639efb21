//! Fan-out of one job: every requested channel is sent concurrently, and each channel's
//! failure stays its own. No channel waits for, cancels or delays another.

use chrono::Utc;
use futures::future::join_all;
use tracing::{Instrument, info, info_span, warn};

use crate::job::{ChannelRequest, Job, Notification};
use crate::metrics::Metrics;
use crate::providers::{Delivered, ErrorClass, SendError, SendRequest};
use crate::retry::{RetryPolicy, send_with_retries};
use crate::routes::Routes;

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
}

impl ChannelOutcome {
    /// Returns the bounded label used in metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            ChannelOutcome::Delivered(_) => "delivered",
            ChannelOutcome::Failed(error) => error.class.as_str(),
            ChannelOutcome::Expired => "expired",
            ChannelOutcome::NotConfigured => "not_configured",
            ChannelOutcome::UnknownChannel => "unknown_channel",
        }
    }

    pub fn is_delivered(&self) -> bool {
        matches!(self, ChannelOutcome::Delivered(_))
    }
}

/// One channel's report: what was requested, who sent it, how it ended.
#[derive(Debug)]
pub struct ChannelReport {
    pub channel: String,
    pub provider: Option<String>,
    pub attempts: u32,
    pub outcome: ChannelOutcome,
}

/// Sends every channel of `job` concurrently and returns one report per channel.
pub async fn fan_out(
    job: &Job,
    routes: &Routes,
    policy: &RetryPolicy,
    metrics: &Metrics,
) -> Vec<ChannelReport> {
    let expired = job.is_expired(Utc::now());
    let sends = job
        .channels
        .iter()
        .map(|request| send_channel(job, request, expired, routes, policy, metrics));
    join_all(sends).await
}

async fn send_channel(
    job: &Job,
    request: &ChannelRequest,
    expired: bool,
    routes: &Routes,
    policy: &RetryPolicy,
    metrics: &Metrics,
) -> ChannelReport {
    let notification = match request {
        ChannelRequest::Known(notification) => notification,
        ChannelRequest::Unknown { name } => {
            warn!(channel = %name, "job names an unknown channel; failing that channel");
            return finish(metrics, "unknown", None, 0, ChannelOutcome::UnknownChannel);
        }
    };
    let channel = notification.kind().as_str();

    if expired {
        info!(channel, "job expired before sending; channel not sent");
        return finish(metrics, channel, None, 0, ChannelOutcome::Expired);
    }
    let Some(route) = routes.get(notification.kind()) else {
        warn!(
            channel,
            "channel is turned off in the configuration; failing it"
        );
        return finish(metrics, channel, None, 0, ChannelOutcome::NotConfigured);
    };

    let provider = route.provider_name.to_string();
    let span = info_span!("send", channel, provider = %provider, recipient = %notification.masked_recipient());
    let outcome = send_with_retries(route, policy, request_for(job, notification), metrics)
        .instrument(span.clone())
        .await;
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
    finish(
        metrics,
        channel,
        Some(provider),
        outcome.attempts,
        report_outcome,
    )
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
    }
}

/// Summarises a job's channel reports as one bounded label: `delivered` when every channel
/// was, `expired` when every channel expired, `failed` when none was delivered, and
/// `partial` otherwise.
pub fn job_outcome(reports: &[ChannelReport]) -> &'static str {
    let delivered = reports.iter().filter(|r| r.outcome.is_delivered()).count();
    if delivered == reports.len() {
        "delivered"
    } else if reports
        .iter()
        .all(|r| matches!(r.outcome, ChannelOutcome::Expired))
    {
        "expired"
    } else if delivered == 0 {
        "failed"
    } else {
        "partial"
    }
}
