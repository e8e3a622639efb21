//! Per-provider rate limits and in-flight caps.
//!
//! Each provider has a token bucket (governor's GCRA: a sustained rate and a burst) and a
//! cap on requests under way. A send first takes an in-flight slot, then waits for a rate
//! permit, so requests leave at the configured rate even when a slow provider frees many
//! slots at once. Waiting never fails: a send waits for its permit, with jitter.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Jitter, Quota, RateLimiter};
use prometheus::IntGauge;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::RateLimitConfig;
use crate::metrics::Metrics;

/// The limits of one provider, shared by every worker that sends through it.
pub struct ProviderLimits {
    provider: Arc<str>,
    rate: DefaultDirectRateLimiter,
    slots: Semaphore,
    jitter: Duration,
    in_flight: IntGauge,
    metrics: Arc<Metrics>,
}

/// Permission to make one request. Dropping it frees the in-flight slot.
pub struct SendPermit<'a> {
    _slot: SemaphorePermit<'a>,
    in_flight: &'a IntGauge,
}

impl Drop for SendPermit<'_> {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl ProviderLimits {
    pub fn new(
        provider: Arc<str>,
        rate_limit: RateLimitConfig,
        max_in_flight: usize,
        jitter: Duration,
        metrics: Arc<Metrics>,
    ) -> ProviderLimits {
        let per_second = NonZeroU32::new(rate_limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(rate_limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        ProviderLimits {
            in_flight: metrics.provider_in_flight(&provider),
            provider,
            rate: RateLimiter::direct(quota),
            slots: Semaphore::new(max_in_flight.max(1)),
            jitter,
            metrics,
        }
    }

    /// Waits for an in-flight slot and a rate permit. Every attempt, retries included, calls
    /// this once.
    pub async fn acquire(&self) -> SendPermit<'_> {
        let slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");

        let started = Instant::now();
        self.rate
            .until_ready_with_jitter(Jitter::up_to(self.jitter))
            .await;
        self.metrics
            .rate_limit_waited(&self.provider, started.elapsed());

        self.in_flight.inc();
        SendPermit {
            _slot: slot,
            in_flight: &self.in_flight,
        }
    }
}
