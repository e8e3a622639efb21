//! Delivery events on the events exchange (`broker.events_exchange`), for producers that
//! act on outcomes: `recipient.invalid.<channel>` when a provider reports a recipient
//! invalid, and optionally `<channel>.<outcome>` for every channel of every delivery.
//!
//! Events are published with publisher confirms before the delivery is acknowledged and
//! before the ledger records the channel's final state. An event that is not confirmed
//! requeues the delivery, so a settled ledger row means its events were confirmed, and a
//! redelivery that finds the row settled has lost nothing. The price is that an event may
//! arrive more than once. `docs/events.md` describes the schema.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use tracing::{debug, warn};

use crate::broker::{PublishError, Publisher};
use crate::config::{BrokerConfig, EventsConfig};
use crate::fanout::{ChannelOutcome, ChannelReport};
use crate::job::Job;
use crate::metrics::Metrics;
use crate::redelivery::FollowUp;
use crate::suppression::InvalidChannel;

/// `event` label and `type` field of a recipient-invalid event.
const RECIPIENT_INVALID: (&str, &str) = ("recipient_invalid", "recipient.invalid");
/// `event` label and `type` field of a channel-outcome event.
const CHANNEL_OUTCOME: (&str, &str) = ("channel_outcome", "channel.outcome");

/// The event published when a provider reports a channel's recipient as invalid. It
/// includes the recipient because the producer that sent it needs it to stop using it.
#[derive(Debug, Serialize)]
struct RecipientInvalidEvent<'a> {
    #[serde(rename = "type")]
    event_type: &'static str,
    job_id: &'a str,
    channel: &'a str,
    provider: &'a str,
    provider_code: Option<&'a str>,
    http_status: Option<u16>,
    reason: &'a str,
    recipient: &'a str,
    occurred_at: &'a str,
}

/// The outcome of one channel in one delivery. It carries no recipient.
#[derive(Debug, Serialize)]
struct ChannelOutcomeEvent<'a> {
    #[serde(rename = "type")]
    event_type: &'static str,
    job_id: &'a str,
    channel: &'a str,
    provider: Option<&'a str>,
    outcome: &'static str,
    /// Provider requests made for the channel in this delivery.
    attempts: u32,
    /// The delivery round, 1 for the first delivery of the channel.
    delivery_attempt: u32,
    follow_up: Option<&'static str>,
    provider_message_id: Option<&'a str>,
    provider_code: Option<&'a str>,
    http_status: Option<u16>,
    reason: Option<&'a str>,
    occurred_at: &'a str,
}

/// The publisher of delivery events, shared by all workers of a broker session.
pub struct EventPublisher {
    publisher: Publisher,
    exchange: String,
    recipient_invalid: bool,
    outcomes: bool,
    metrics: Arc<Metrics>,
}

impl EventPublisher {
    pub fn new(
        publisher: Publisher,
        broker: &BrokerConfig,
        config: &EventsConfig,
        metrics: Arc<Metrics>,
    ) -> EventPublisher {
        let enabled = !broker.events_exchange.is_empty();
        EventPublisher {
            publisher,
            exchange: broker.events_exchange.clone(),
            recipient_invalid: enabled && config.recipient_invalid,
            outcomes: enabled && config.publish_outcomes,
            metrics,
        }
    }

    /// Publishes the events of one settled delivery and waits for every confirm. Returns
    /// the first failure, after every publish has finished.
    pub async fn publish(
        &self,
        job: &Job,
        round: u32,
        reports: &[ChannelReport],
        follow_ups: &[Option<FollowUp>],
        invalid: &[InvalidChannel<'_>],
    ) -> Result<(), PublishError> {
        let now = Utc::now().to_rfc3339();
        let mut events: Vec<(&str, String, Vec<u8>)> = Vec::new();
        if self.recipient_invalid {
            events.extend(
                invalid
                    .iter()
                    .map(|channel| recipient_invalid(job, channel, &now)),
            );
        }
        if self.outcomes {
            events.extend(
                reports
                    .iter()
                    .zip(follow_ups)
                    .filter(|(report, _)| {
                        !matches!(report.outcome, ChannelOutcome::LedgerUnavailable(_))
                    })
                    .map(|(report, follow_up)| {
                        channel_outcome(job, round, report, follow_up.as_ref(), &now)
                    }),
            );
        }
        if events.is_empty() {
            return Ok(());
        }

        let publishes = events
            .iter()
            .map(|(label, routing_key, body)| self.publish_one(label, routing_key, body));
        futures::future::join_all(publishes)
            .await
            .into_iter()
            .collect()
    }

    async fn publish_one(
        &self,
        label: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let result = self
            .publisher
            .publish_unrouted_ok(&self.exchange, routing_key, body, "application/json")
            .await;
        self.metrics.event_published(label, result.is_ok());
        match &result {
            Ok(()) => debug!(routing_key, "event published"),
            Err(error) => {
                warn!(routing_key, error.message = %error, "event not confirmed by the broker")
            }
        }
        result
    }
}

fn recipient_invalid(
    job: &Job,
    channel: &InvalidChannel<'_>,
    now: &str,
) -> (&'static str, String, Vec<u8>) {
    let (label, event_type) = RECIPIENT_INVALID;
    let event = RecipientInvalidEvent {
        event_type,
        job_id: job.id.as_str(),
        channel: &channel.report.channel,
        provider: channel.provider(),
        provider_code: channel.error.code.as_deref(),
        http_status: channel.error.status,
        reason: &channel.error.message,
        recipient: &channel.recipient().expose(),
        occurred_at: now,
    };
    let routing_key = format!("{event_type}.{}", channel.report.channel);
    (label, routing_key, to_json(&event))
}

fn channel_outcome(
    job: &Job,
    round: u32,
    report: &ChannelReport,
    follow_up: Option<&FollowUp>,
    now: &str,
) -> (&'static str, String, Vec<u8>) {
    let (label, event_type) = CHANNEL_OUTCOME;
    let error = match &report.outcome {
        ChannelOutcome::Failed(error) => Some(error),
        _ => None,
    };
    let provider_message_id = match &report.outcome {
        ChannelOutcome::Delivered(delivered) => delivered.message_id.as_deref(),
        _ => None,
    };
    let outcome = report.outcome.label();
    let event = ChannelOutcomeEvent {
        event_type,
        job_id: job.id.as_str(),
        channel: &report.channel,
        provider: report.provider.as_deref(),
        outcome,
        attempts: report.attempts,
        delivery_attempt: round,
        follow_up: follow_up.map(|follow_up| match follow_up {
            FollowUp::Retry { .. } => "delayed_retry",
            FollowUp::DeadLetter { .. } => "dead_letter",
        }),
        provider_message_id,
        provider_code: error.and_then(|error| error.code.as_deref()),
        http_status: error.and_then(|error| error.status),
        reason: error.map(|error| error.message.as_str()),
        occurred_at: now,
    };
    // An unknown channel's name is the producer's own text, so its routing key uses the
    // bounded name that the metrics use.
    let channel = match report.outcome {
        ChannelOutcome::UnknownChannel => "unknown",
        _ => report.channel.as_str(),
    };
    (label, format!("{channel}.{outcome}"), to_json(&event))
}

fn to_json(event: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(event).expect("events serialize to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Delivered, SendError};
    use crate::suppression::invalid_channels;

    const NOW: &str = "2026-01-02T03:04:05+00:00";

    fn job() -> Job {
        let body = serde_json::json!({
            "id": "job-7",
            "channels": {
                "sms": {"to": "+15555550123", "body": "Your code is 123456"},
                "email": {"to": "ada@example.com", "subject": "Hi", "text": "Hello"},
            }
        });
        Job::parse(body.to_string().as_bytes(), 1 << 20).unwrap()
    }

    fn report(channel: &str, provider: &str, outcome: ChannelOutcome) -> ChannelReport {
        ChannelReport {
            channel: channel.to_owned(),
            provider: Some(provider.to_owned()),
            attempts: 1,
            outcome,
            claim: None,
        }
    }

    fn invalid_number() -> SendError {
        SendError::permanent("The 'To' number is not a valid phone number.")
            .with_status(400)
            .with_code("21211")
            .recipient_invalid()
    }

    /// Parses an event and checks it against `docs/events.schema.json`.
    fn parse(body: &[u8]) -> serde_json::Value {
        let text = include_str!("../docs/events.schema.json");
        let schema: serde_json::Value = serde_json::from_str(text).unwrap();
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("the events schema compiles");
        let event: serde_json::Value = serde_json::from_slice(body).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&event)
            .map(|error| error.to_string())
            .collect();
        assert!(errors.is_empty(), "{event} breaks the schema: {errors:?}");
        event
    }

    #[test]
    fn recipient_invalid_event_carries_recipient() {
        let job = job();
        let reports = [report(
            "sms",
            "twilio",
            ChannelOutcome::Failed(invalid_number()),
        )];
        let follow_ups = [Some(FollowUp::DeadLetter {
            reason: "permanent",
        })];
        let invalid = invalid_channels(&job, &reports, &follow_ups);
        assert_eq!(invalid.len(), 1);

        let (label, routing_key, body) = recipient_invalid(&job, &invalid[0], NOW);
        assert_eq!(label, "recipient_invalid");
        assert_eq!(routing_key, "recipient.invalid.sms");
        let event = parse(&body);
        assert_eq!(event["type"], "recipient.invalid");
        assert_eq!(event["job_id"], "job-7");
        assert_eq!(event["provider"], "twilio");
        assert_eq!(event["provider_code"], "21211");
        assert_eq!(event["http_status"], 400);
        assert_eq!(event["recipient"], "+15555550123");
        assert_eq!(event["occurred_at"], NOW);
    }

    #[test]
    fn retrying_failure_is_not_invalid_yet() {
        let job = job();
        let reports = [report(
            "sms",
            "twilio",
            ChannelOutcome::Failed(invalid_number()),
        )];
        let follow_ups = [Some(FollowUp::Retry {
            tier_secs: 5,
            round: 2,
        })];
        assert!(invalid_channels(&job, &reports, &follow_ups).is_empty());
    }

    #[test]
    fn other_failures_are_not_invalid() {
        let job = job();
        let reports = [report(
            "sms",
            "twilio",
            ChannelOutcome::Failed(SendError::permanent("geo permission")),
        )];
        let follow_ups = [Some(FollowUp::DeadLetter {
            reason: "permanent",
        })];
        assert!(invalid_channels(&job, &reports, &follow_ups).is_empty());
    }

    #[test]
    fn outcome_event_has_channel_and_outcome_key() {
        let job = job();
        let delivered = report(
            "email",
            "sendgrid",
            ChannelOutcome::Delivered(Delivered {
                message_id: Some("sg-1".to_owned()),
                status: 202,
            }),
        );
        let (label, routing_key, body) = channel_outcome(&job, 1, &delivered, None, NOW);
        assert_eq!(label, "channel_outcome");
        assert_eq!(routing_key, "email.delivered");
        let event = parse(&body);
        assert_eq!(event["type"], "channel.outcome");
        assert_eq!(event["outcome"], "delivered");
        assert_eq!(event["provider_message_id"], "sg-1");
        assert_eq!(event["follow_up"], serde_json::Value::Null);
        assert!(event.get("recipient").is_none());
    }

    #[test]
    fn outcome_event_names_follow_up() {
        let job = job();
        let failed = report("sms", "twilio", ChannelOutcome::Failed(invalid_number()));
        let dead_letter = FollowUp::DeadLetter {
            reason: "permanent",
        };
        let (_, routing_key, body) = channel_outcome(&job, 2, &failed, Some(&dead_letter), NOW);
        assert_eq!(routing_key, "sms.permanent");
        let event = parse(&body);
        assert_eq!(event["follow_up"], "dead_letter");
        assert_eq!(event["delivery_attempt"], 2);
        assert_eq!(event["provider_code"], "21211");
    }

    #[test]
    fn unknown_channel_key_is_bounded() {
        let job = job();
        let mut unknown = report("fax.v2", "none", ChannelOutcome::UnknownChannel);
        unknown.provider = None;
        let (_, routing_key, body) = channel_outcome(&job, 1, &unknown, None, NOW);
        assert_eq!(routing_key, "unknown.unknown_channel");
        assert_eq!(parse(&body)["channel"], "fax.v2");
    }
}
