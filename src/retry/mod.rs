//! Attempts of one channel within one delivery: provider selection with failover, backoff
//! with full jitter, `Retry-After` hints, and one credentials refresh.
//!
//! The loop sits outside the rate limiter, so every attempt takes its own permit.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::{LimitsConfig, RetryConfig};
use crate::job::Notification;
use crate::ledger::AttemptRecord;
use crate::limits::Deferred;
use crate::metrics::Metrics;
use crate::providers::{Delivered, ErrorClass, SendError, SendRequest, UNSUPPORTED_PLATFORM};
use crate::routes::{ChannelRoute, Route, Selection};

/// Error code of a channel deferred because its rate-limit permit was too far away.
pub const DEFERRED: &str = "deferred";
/// Error code of a channel deferred because every provider of the channel had an open
/// circuit breaker.
pub const CIRCUIT_OPEN: &str = "circuit_open";
/// Error code of a notification that no provider of its channel supports.
pub const UNSUPPORTED: &str = "unsupported_notification";

/// How often and how long to retry in place.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
    /// Maximum wait for a rate-limit permit before the channel is deferred.
    pub max_permit_wait: Duration,
    /// Maximum pause a 429 can impose on the whole provider.
    pub max_pause: Duration,
}

impl RetryPolicy {
    pub fn new(retry: &RetryConfig, limits: &LimitsConfig) -> RetryPolicy {
        RetryPolicy {
            attempts: retry.in_place_attempts,
            base_delay: retry.base_delay(),
            max_delay: retry.max_delay(),
            max_retry_after: retry.max_retry_after(),
            max_permit_wait: limits.max_permit_wait(),
            max_pause: Duration::from_secs(retry.max_redelivery_retry_after_secs),
        }
    }
}

impl RetryPolicy {
    /// Returns the pause before attempt `failed + 1`: a random duration up to
    /// `base_delay * 2^(failed - 1)`, capped at `max_delay` ("full jitter").
    pub fn backoff(&self, failed: u32) -> Duration {
        let exponent = failed.saturating_sub(1).min(30);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        if ceiling.is_zero() {
            return Duration::ZERO;
        }
        rand::rng().random_range(Duration::ZERO..=ceiling)
    }

    /// Returns the pause before retrying after `error`, or `None` when it must not be
    /// retried in place. A provider's hint is waited out in full when it is within
    /// `max_retry_after`.
    pub fn delay_after(&self, error: &SendError, failed: u32) -> Option<Duration> {
        match error.class {
            ErrorClass::Permanent => None,
            ErrorClass::Credentials => Some(Duration::ZERO),
            ErrorClass::Transient | ErrorClass::RateLimited => match error.retry_after {
                Some(hint) if hint > self.max_retry_after => None,
                Some(hint) => Some(hint.max(self.backoff(failed))),
                None => Some(self.backoff(failed)),
            },
        }
    }
}

/// The final result of one channel's attempts.
#[derive(Debug)]
pub struct AttemptsOutcome {
    pub result: Result<Delivered, SendError>,
    pub attempts: u32,
    /// One record per provider request, for the delivery ledger.
    pub calls: Vec<AttemptRecord>,
    /// The provider of the last attempt, sent or deferred by its rate limit, or `None` when
    /// no provider was chosen.
    pub provider: Option<Arc<str>>,
}

/// Sends `request` through the providers of `channel`, retrying in place as `policy`
/// allows. Each attempt goes to the provider that [`ChannelRoute::select`] picks, so an
/// attempt fails over when an earlier provider's breaker is open.
///
/// A credentials failure drops the cached credentials and retries once without using up an
/// attempt; a second one in a row is final. A rate-limited reply with a hint pauses the whole
/// provider for that long. A permit that cannot be had within `max_permit_wait`, or a channel
/// whose every provider has an open breaker before this delivery sent anything, ends the
/// attempts with a rate-limited error coded [`DEFERRED`] or [`CIRCUIT_OPEN`]. When the
/// breakers close off a delivery that already failed, it ends with its latest failure.
pub async fn send_with_retries(
    channel: &ChannelRoute,
    policy: &RetryPolicy,
    request: SendRequest<'_>,
    metrics: &Metrics,
) -> AttemptsOutcome {
    let channel_name = request.notification.kind().as_str();
    let mut attempts = Attempts::default();
    let mut failed = 0;
    let mut refreshed_credentials = false;
    // The failure of the latest request, kept for when no provider admits a retry.
    let mut last_failure: Option<SendError> = None;

    loop {
        let route = match choose_route(channel, &request, metrics) {
            Ok(route) => route,
            Err(error) => {
                return attempts.finish(Err(final_error(channel_name, error, last_failure)));
            }
        };
        let provider = &*route.provider_name;
        attempts.provider = Some(route.provider_name.clone());

        let permit = match route.limits.acquire(policy.max_permit_wait).await {
            Ok(permit) => permit,
            Err(deferred) => {
                return attempts.finish(Err(permit_deferred(channel_name, provider, deferred)));
            }
        };
        attempts.count += 1;
        let started = Instant::now();
        let result = route.provider().send(request).await;
        drop(permit);
        attempts.record(route, &result, started.elapsed(), metrics);

        let error = match result {
            Ok(delivered) => return attempts.finish(Ok(delivered)),
            Err(error) => error,
        };

        if error.class == ErrorClass::Credentials {
            if refreshed_credentials {
                error!(
                    channel = channel_name, provider, attempt = attempts.count,
                    error.class = error.class.as_str(), error.code = error.code.as_deref(), error.message = %error.message,
                    "provider rejected fresh credentials; check the provider's configured secret"
                );
                return attempts.finish(Err(error));
            }
            refreshed_credentials = true;
            route.provider().invalidate_credentials();
            warn!(
                channel = channel_name,
                provider,
                attempt = attempts.count,
                error.code = error.code.as_deref(),
                "provider rejected credentials; refreshing them and retrying"
            );
            metrics.send_retry(channel_name, provider, error.class.as_str());
            continue;
        }

        if let (ErrorClass::RateLimited, Some(hint)) = (error.class, error.retry_after) {
            route.limits.pause(hint.min(policy.max_pause));
        }

        failed += 1;
        let delay = match policy.delay_after(&error, failed) {
            Some(delay) if failed < policy.attempts => delay,
            _ => return attempts.finish(Err(error)),
        };
        warn!(
            channel = channel_name, provider, attempt = attempts.count,
            error.class = error.class.as_str(), error.code = error.code.as_deref(), error.status = error.status, error.message = %error.message,
            delay_ms = delay.as_millis() as u64,
            "attempt failed; retrying"
        );
        metrics.send_retry(channel_name, provider, error.class.as_str());
        last_failure = Some(error);
        tokio::time::sleep(delay).await;
    }
}

/// The attempts made so far for one channel.
#[derive(Default)]
struct Attempts {
    count: u32,
    calls: Vec<AttemptRecord>,
    provider: Option<Arc<str>>,
}

impl Attempts {
    /// Counts one provider request in the metrics, the breaker and the ledger's records.
    fn record(
        &mut self,
        route: &Route,
        result: &Result<Delivered, SendError>,
        latency: Duration,
        metrics: &Metrics,
    ) {
        let provider = &*route.provider_name;
        let result_label = result
            .as_ref()
            .map_or_else(|error| error.class.as_str(), |_| "ok");
        metrics.provider_request(provider, result_label, latency);
        route.record(result, Instant::now(), metrics);
        self.calls.push(match result {
            Ok(delivered) => AttemptRecord::delivered(provider, Some(delivered.status), latency),
            Err(error) => AttemptRecord::failed(provider, error, latency),
        });
    }

    fn finish(self, result: Result<Delivered, SendError>) -> AttemptsOutcome {
        AttemptsOutcome {
            result,
            attempts: self.count,
            calls: self.calls,
            provider: self.provider,
        }
    }
}

/// Picks the provider of the next attempt, logging a failover, or returns the error that
/// ends the attempts when no provider can take it.
fn choose_route<'a>(
    channel: &'a ChannelRoute,
    request: &SendRequest<'_>,
    metrics: &Metrics,
) -> Result<&'a Arc<Route>, SendError> {
    let channel_name = request.notification.kind().as_str();
    match channel.select(request.notification, Instant::now(), metrics) {
        Selection::Send { route, skipped } => {
            if let Some(from) = skipped {
                log_failover(request, from, route, metrics);
            }
            Ok(route)
        }
        Selection::AllOpen { retry_in } => Err(circuit_open(retry_in)),
        Selection::Unsupported => Err(unsupported(channel_name, request.notification)),
    }
}

/// Returns the error that ends attempts for which no provider was chosen. A delivery that
/// reached a provider and failed ends with that failure, so it uses up its round even when
/// the breakers opened meanwhile. Only a delivery that sent nothing is deferred for open
/// breakers.
fn final_error(channel: &str, error: SendError, last_failure: Option<SendError>) -> SendError {
    if error.code.as_deref() != Some(CIRCUIT_OPEN) {
        return error;
    }
    match last_failure {
        Some(failure) => failure,
        None => {
            warn!(
                channel,
                retry_in_ms = error.retry_after.unwrap_or_default().as_millis() as u64,
                "every provider of the channel has an open circuit; deferring the channel"
            );
            error
        }
    }
}

/// Describes a channel deferred because its rate-limit permit was too far away.
fn permit_deferred(channel: &str, provider: &str, deferred: Deferred) -> SendError {
    warn!(
        channel,
        provider,
        wait_ms = deferred.wait.as_millis() as u64,
        "rate-limit permit too far away; deferring the channel"
    );
    SendError::new(
        ErrorClass::RateLimited,
        "rate-limit permit wait exceeds limits.max_permit_wait_secs",
    )
    .with_code(DEFERRED)
    .with_retry_after(Some(deferred.wait))
}

fn log_failover(request: &SendRequest<'_>, from: &Route, to: &Route, metrics: &Metrics) {
    let channel = request.notification.kind().as_str();
    metrics.failover(channel, &from.provider_name, &to.provider_name);
    info!(
        job_id = %request.job_id,
        channel,
        from = &*from.provider_name,
        to = &*to.provider_name,
        "provider circuit open; failing over to the next provider"
    );
}

/// Describes a channel whose every provider has an open breaker.
fn circuit_open(retry_in: Duration) -> SendError {
    SendError::new(
        ErrorClass::RateLimited,
        "every provider of the channel has an open circuit breaker",
    )
    .with_code(CIRCUIT_OPEN)
    .with_retry_after(Some(retry_in))
}

/// Describes a notification that no provider of its channel can send. A push names its
/// platform, the usual cause being a target whose platform has no provider in the channel.
fn unsupported(channel: &str, notification: &Notification) -> SendError {
    match notification {
        Notification::Push(push) => {
            let platform = push.target.platform();
            SendError::permanent(format!(
                "no provider configured for channel {channel} sends to push platform `{platform}`; add a provider of kind `{platform}` to channels.{channel}"
            ))
            .with_code(UNSUPPORTED_PLATFORM)
        }
        _ => SendError::permanent(format!(
            "no provider configured for channel {channel} supports this notification; add one that does to channels.{channel}"
        ))
        .with_code(UNSUPPORTED),
    }
}

/// Returns whether `error` deferred the channel without a provider failing it: the permit
/// was too far away or every breaker was open. Such a delayed retry uses up no round.
pub fn is_deferral(error: &SendError) -> bool {
    matches!(error.code.as_deref(), Some(DEFERRED | CIRCUIT_OPEN))
}

#[cfg(test)]
mod failover_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(30),
            max_permit_wait: Duration::from_secs(10),
            max_pause: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_stays_under_exponential_ceiling() {
        let policy = policy();
        for _ in 0..200 {
            assert!(policy.backoff(1) <= Duration::from_millis(100));
            assert!(policy.backoff(2) <= Duration::from_millis(200));
            assert!(policy.backoff(3) <= Duration::from_millis(400));
            assert!(policy.backoff(10) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let policy = policy();
        let delays: std::collections::HashSet<Duration> =
            (0..50).map(|_| policy.backoff(4)).collect();
        assert!(delays.len() > 1, "50 backoffs gave one value: {delays:?}");
    }

    #[test]
    fn retry_after_hint_is_waited_out() {
        let error = SendError::new(ErrorClass::RateLimited, "slow down")
            .with_retry_after(Some(Duration::from_secs(3)));
        let delay = policy().delay_after(&error, 1).unwrap();
        assert!(delay >= Duration::from_secs(3));
    }

    #[test]
    fn retry_after_beyond_limit_stops_retries() {
        let error = SendError::new(ErrorClass::RateLimited, "slow down")
            .with_retry_after(Some(Duration::from_secs(3600)));
        assert_eq!(policy().delay_after(&error, 1), None);
    }

    #[test]
    fn permanent_error_is_not_retried() {
        let error = SendError::permanent("invalid recipient");
        assert_eq!(policy().delay_after(&error, 1), None);
    }
}
