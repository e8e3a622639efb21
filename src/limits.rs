//! Per-provider rate limits and in-flight caps.
//!
//! Each provider has a token bucket (governor's GCRA: a sustained rate and a burst) and a
//! cap on requests under way. A send first takes an in-flight slot, then waits for a rate
//! permit, so requests leave at the configured rate even when a slow provider frees many
//! slots at once. When the provider returns 429 with a `Retry-After`, the whole provider
//! pauses for that long, for every worker.
//!
//! Waiting is bounded: a send that would wait longer than `limits.max_permit_wait_secs` is
//! deferred instead, so the caller can move it to a delay queue rather than hold its
//! delivery unacknowledged.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus::IntGauge;
use rand::Rng;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::RateLimitConfig;
use crate::metrics::Metrics;

/// The limits of one provider, shared by every worker that sends through it.
pub struct ProviderLimits {
    provider: Arc<str>,
    rate: DefaultDirectRateLimiter,
    clock: DefaultClock,
    slots: Semaphore,
    paused_until: Mutex<Option<Instant>>,
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

/// A send that would have waited longer than allowed for its permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    /// The estimated wait at the moment of deferral.
    pub wait: Duration,
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
            clock: DefaultClock::default(),
            slots: Semaphore::new(max_in_flight.max(1)),
            paused_until: Mutex::new(None),
            jitter,
            metrics,
        }
    }

    /// Waits for an in-flight slot and a rate permit, or returns [`Deferred`] as soon as the
    /// total wait would exceed `max_wait`. Every attempt, retries included, calls this once.
    pub async fn acquire(&self, max_wait: Duration) -> Result<SendPermit<'_>, Deferred> {
        let started = Instant::now();
        let deadline = started + max_wait;
        let slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(slot) => slot.expect("the semaphore is never closed"),
            Err(_) => return Err(Deferred { wait: max_wait }),
        };

        let result = self.wait_for_permit(deadline).await;
        self.metrics
            .rate_limit_waited(&self.provider, started.elapsed());
        result?;

        self.in_flight.inc();
        Ok(SendPermit {
            _slot: slot,
            in_flight: &self.in_flight,
        })
    }

    async fn wait_for_permit(&self, deadline: Instant) -> Result<(), Deferred> {
        loop {
            let now = Instant::now();
            if let Some(until) = self.paused_until().filter(|until| *until > now) {
                if until > deadline {
                    return Err(Deferred { wait: until - now });
                }
                tokio::time::sleep_until(until).await;
                continue;
            }

            let wait = match self.rate.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => not_until.wait_time_from(self.clock.now()),
            };
            if now + wait > deadline {
                return Err(Deferred { wait });
            }
            tokio::time::sleep(wait + self.random_jitter()).await;
        }
    }

    /// Stops every send through this provider for `duration`, as a 429 with `Retry-After`
    /// requests. A pause never shortens one already in force.
    pub fn pause(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut paused = self.paused_until.lock().expect("pause lock poisoned");
        if paused.is_none_or(|current| current < until) {
            *paused = Some(until);
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        *self.paused_until.lock().expect("pause lock poisoned")
    }

    fn random_jitter(&self) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        rand::rng().random_range(Duration::ZERO..=self.jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32, max_in_flight: usize) -> ProviderLimits {
        ProviderLimits::new(
            Arc::from("test"),
            RateLimitConfig { per_second, burst },
            max_in_flight,
            Duration::ZERO,
            Arc::new(Metrics::new()),
        )
    }

    #[tokio::test]
    async fn burst_is_granted_at_once() {
        let limits = limits(1, 3, 10);
        let started = Instant::now();
        for _ in 0..3 {
            drop(limits.acquire(Duration::from_secs(5)).await.unwrap());
        }
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[tokio::test]
    async fn wait_beyond_bound_is_deferred() {
        let limits = limits(1, 1, 10);
        drop(limits.acquire(Duration::from_secs(5)).await.unwrap());
        let deferred = limits.acquire(Duration::from_millis(100)).await.err();
        let wait = deferred.expect("the second permit is a second away").wait;
        assert!(wait > Duration::from_millis(500), "{wait:?}");
    }

    #[tokio::test]
    async fn pause_blocks_every_sender() {
        let limits = limits(1000, 1000, 10);
        limits.pause(Duration::from_millis(300));
        let started = Instant::now();
        drop(limits.acquire(Duration::from_secs(5)).await.unwrap());
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn pause_longer_than_bound_is_deferred() {
        let limits = limits(1000, 1000, 10);
        limits.pause(Duration::from_secs(60));
        let deferred = limits.acquire(Duration::from_secs(1)).await.err().unwrap();
        assert!(deferred.wait > Duration::from_secs(50), "{deferred:?}");
    }

    #[tokio::test]
    async fn shorter_pause_keeps_longer_one() {
        let limits = limits(1000, 1000, 10);
        limits.pause(Duration::from_secs(60));
        limits.pause(Duration::from_secs(1));
        let remaining = limits.paused_until().unwrap() - Instant::now();
        assert!(remaining > Duration::from_secs(50), "{remaining:?}");
    }

    #[tokio::test]
    async fn in_flight_cap_bounds_permits() {
        let limits = limits(1000, 1000, 1);
        let held = limits.acquire(Duration::from_secs(5)).await.unwrap();
        assert!(limits.acquire(Duration::from_millis(50)).await.is_err());
        drop(held);
        assert!(limits.acquire(Duration::from_millis(50)).await.is_ok());
    }
}
