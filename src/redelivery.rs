//! What happens to a channel that did not succeed in its delivery: a delayed retry through
//! a delay queue, a dead letter, or nothing.
//!
//! Each follow-up carries one channel, so each channel keeps its own attempt count in the
//! `x-herald-attempt` header. A transient failure uses up a delivery round. A rate-limited
//! or deferred one does not, because the provider or the limiter, not the message, was the
//! problem.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;
use crate::fanout::{ChannelOutcome, ChannelReport};
use crate::providers::ErrorClass;

/// Redelivery settings taken from `[retry]`.
#[derive(Debug, Clone)]
pub struct RedeliveryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
    /// Delay tiers in seconds, shortest first.
    pub tiers: Vec<u64>,
}

/// The follow-up action for one channel after its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    /// Publish the channel to the delay queue of `tier_secs`; it comes back as round
    /// `round`.
    Retry { tier_secs: u64, round: u32 },
    /// Publish the channel to the dead-letter exchange with `reason`.
    DeadLetter { reason: &'static str },
}

impl RedeliveryPolicy {
    pub fn new(config: &RetryConfig) -> RedeliveryPolicy {
        RedeliveryPolicy {
            max_attempts: config.max_attempts,
            base_delay: Duration::from_secs(config.redelivery_base_delay_secs),
            max_delay: Duration::from_secs(config.redelivery_max_delay_secs),
            max_retry_after: Duration::from_secs(config.max_redelivery_retry_after_secs),
            tiers: config.delay_tiers(),
        }
    }

    /// Decides the follow-up of `report`, a channel handled in delivery round `round`.
    /// Returns `None` for a channel that needs none: delivered, expired, suppressed, settled
    /// before, or not sent because the ledger was unreachable (the delivery is then requeued whole).
    pub fn follow_up(&self, report: &ChannelReport, round: u32) -> Option<FollowUp> {
        let error = match &report.outcome {
            ChannelOutcome::Delivered(_)
            | ChannelOutcome::Expired
            | ChannelOutcome::AlreadyDelivered
            | ChannelOutcome::AlreadySettled(_)
            | ChannelOutcome::Suppressed
            | ChannelOutcome::LedgerUnavailable(_) => return None,
            // Another worker may be sending it. Look again after the shortest delay: by then
            // that worker has finished, or its claim has gone stale and can be taken over.
            ChannelOutcome::InProgress => {
                return Some(FollowUp::Retry {
                    tier_secs: self.tier_for(self.base_delay),
                    round,
                });
            }
            ChannelOutcome::UnknownChannel => {
                return Some(FollowUp::DeadLetter {
                    reason: "unknown_channel",
                });
            }
            ChannelOutcome::NotConfigured => {
                return Some(FollowUp::DeadLetter {
                    reason: "not_configured",
                });
            }
            ChannelOutcome::Failed(error) => error,
        };
        match error.class {
            ErrorClass::Permanent => Some(FollowUp::DeadLetter {
                reason: "permanent",
            }),
            ErrorClass::Credentials => Some(FollowUp::DeadLetter {
                reason: "credentials",
            }),
            ErrorClass::Transient if round >= self.max_attempts => Some(FollowUp::DeadLetter {
                reason: "exhausted",
            }),
            ErrorClass::Transient => Some(FollowUp::Retry {
                tier_secs: self.tier_for(self.delay(round, error.retry_after)),
                round: round + 1,
            }),
            ErrorClass::RateLimited => Some(FollowUp::Retry {
                tier_secs: self.tier_for(self.delay(round, error.retry_after)),
                round,
            }),
        }
    }

    /// Returns the delay after round `round` failed: a random duration up to
    /// `base_delay * 2^(round - 1)`, capped at `max_delay`, and at least the provider's hint
    /// cut to `max_retry_after`.
    pub fn delay(&self, round: u32, hint: Option<Duration>) -> Duration {
        let exponent = round.saturating_sub(1).min(30);
        let ceiling = self
            .base_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        let jittered = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            rand::rng().random_range(Duration::ZERO..=ceiling)
        };
        let hint = hint.unwrap_or_default().min(self.max_retry_after);
        jittered.max(hint)
    }

    /// Returns the shortest tier at least as long as `delay`, or the longest tier.
    pub fn tier_for(&self, delay: Duration) -> u64 {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        self.tiers
            .iter()
            .copied()
            .find(|tier| *tier >= seconds)
            .or_else(|| self.tiers.last().copied())
            .unwrap_or(1)
    }
}

/// Returns `body` with its `channels` object cut to `channel` alone. Every other field of
/// the producer's job is kept as it was.
pub fn single_channel_body(body: &serde_json::Value, channel: &str) -> Vec<u8> {
    let mut job = body.clone();
    let only = body
        .get("channels")
        .and_then(|channels| channels.get(channel))
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    job["channels"] = serde_json::json!({ channel: only });
    job.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Delivered, SendError};

    fn policy() -> RedeliveryPolicy {
        RedeliveryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(600),
            max_retry_after: Duration::from_secs(3600),
            tiers: vec![5, 30, 120, 600],
        }
    }

    fn report(outcome: ChannelOutcome) -> ChannelReport {
        ChannelReport {
            channel: "sms".into(),
            provider: Some("twilio".into()),
            attempts: 1,
            outcome,
            claim: None,
        }
    }

    fn failed(class: ErrorClass, retry_after: Option<Duration>) -> ChannelReport {
        report(ChannelOutcome::Failed(
            SendError::new(class, "failed").with_retry_after(retry_after),
        ))
    }

    #[test]
    fn delivered_and_expired_need_nothing() {
        let delivered = report(ChannelOutcome::Delivered(Delivered {
            message_id: None,
            status: 201,
        }));
        assert_eq!(policy().follow_up(&delivered, 1), None);
        assert_eq!(
            policy().follow_up(&report(ChannelOutcome::Expired), 1),
            None
        );
    }

    #[test]
    fn suppressed_needs_nothing() {
        let suppressed = report(ChannelOutcome::Suppressed);
        assert_eq!(policy().follow_up(&suppressed, 1), None);
    }

    #[test]
    fn permanent_failure_is_dead_lettered() {
        let follow_up = policy().follow_up(&failed(ErrorClass::Permanent, None), 1);
        assert_eq!(
            follow_up,
            Some(FollowUp::DeadLetter {
                reason: "permanent"
            })
        );
    }

    #[test]
    fn transient_failure_uses_a_round() {
        let follow_up = policy().follow_up(&failed(ErrorClass::Transient, None), 1);
        assert!(
            matches!(follow_up, Some(FollowUp::Retry { round: 2, .. })),
            "{follow_up:?}"
        );
    }

    #[test]
    fn transient_failure_in_last_round_is_exhausted() {
        let follow_up = policy().follow_up(&failed(ErrorClass::Transient, None), 3);
        assert_eq!(
            follow_up,
            Some(FollowUp::DeadLetter {
                reason: "exhausted"
            })
        );
    }

    #[test]
    fn rate_limit_keeps_the_round() {
        let follow_up = policy().follow_up(&failed(ErrorClass::RateLimited, None), 3);
        assert!(
            matches!(follow_up, Some(FollowUp::Retry { round: 3, .. })),
            "{follow_up:?}"
        );
    }

    #[test]
    fn hint_picks_a_long_enough_tier() {
        let hint = Some(Duration::from_secs(45));
        let follow_up = policy().follow_up(&failed(ErrorClass::RateLimited, hint), 1);
        assert_eq!(
            follow_up,
            Some(FollowUp::Retry {
                tier_secs: 120,
                round: 1
            })
        );
    }

    #[test]
    fn huge_hint_is_clamped_to_longest_tier() {
        let hint = Some(Duration::from_secs(86_400));
        let follow_up = policy().follow_up(&failed(ErrorClass::RateLimited, hint), 1);
        assert_eq!(
            follow_up,
            Some(FollowUp::Retry {
                tier_secs: 600,
                round: 1
            })
        );
    }

    #[test]
    fn delay_stays_under_its_ceiling() {
        let policy = policy();
        for _ in 0..100 {
            assert!(policy.delay(1, None) <= Duration::from_secs(5));
            assert!(policy.delay(3, None) <= Duration::from_secs(20));
            assert!(policy.delay(20, None) <= Duration::from_secs(600));
        }
    }

    #[test]
    fn tiers_round_up() {
        let policy = policy();
        assert_eq!(policy.tier_for(Duration::ZERO), 5);
        assert_eq!(policy.tier_for(Duration::from_millis(5001)), 30);
        assert_eq!(policy.tier_for(Duration::from_secs(30)), 30);
    }

    #[test]
    fn single_channel_body_keeps_other_fields() {
        let body = serde_json::json!({
            "id": "j", "tenant": 7,
            "channels": {"sms": {"to": "+15555550123", "body": "x"}, "email": {"to": "a@b.co"}}
        });
        let cut: serde_json::Value =
            serde_json::from_slice(&single_channel_body(&body, "sms")).unwrap();
        assert_eq!(cut["tenant"], 7);
        assert_eq!(cut["channels"].as_object().unwrap().len(), 1);
        assert_eq!(cut["channels"]["sms"]["body"], "x");
    }
}
