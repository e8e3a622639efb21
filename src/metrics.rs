//! Prometheus metrics. Names and labels are a contract with dashboards and alerts: add new
//! series freely, but rename only with a compatibility path.
//!
//! Every label value comes from a bounded set (channel, provider name from config, outcome,
//! reason). A job id or a recipient is never a label.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use prometheus::core::Collector;

use crate::routes::CircuitState;

/// Buckets for provider request latency, in seconds: 5 ms to about 20 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
];
/// Buckets for rate-limiter waits, in seconds: none to about a minute.
const WAIT_BUCKETS: &[f64] = &[
    0.0, 0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Values of the `outcome` label of `herald_jobs_completed_total`.
const JOB_OUTCOMES: [&str; 7] = [
    "delivered",
    "retrying",
    "partial",
    "failed",
    "expired",
    "poison",
    "suppressed",
];
/// Values of the `reason` label of `herald_poison_jobs_total`.
const POISON_REASONS: [&str; 3] = ["invalid_json", "invalid_job", "too_large"];
/// Values of the `outcome` label of `herald_channel_sends_total` for a routed channel.
/// Channels that never reach a provider add `expired`, `not_configured` and `unknown_channel`.
const CHANNEL_OUTCOMES: [&str; 6] = [
    "delivered",
    "permanent",
    "transient",
    "rate_limited",
    "credentials",
    "suppressed",
];
/// Values of the `result` label of `herald_provider_requests_total`; all but `ok` are also
/// the `reason` values of `herald_send_retries_total`.
const REQUEST_RESULTS: [&str; 5] = [
    "ok",
    "permanent",
    "transient",
    "rate_limited",
    "credentials",
];

/// Values of the `reason` label of `herald_delayed_retries_total`.
const DELAYED_RETRY_REASONS: [&str; 3] = ["transient", "rate_limited", "deferred"];
/// Values of the `reason` label of `herald_dead_letters_total` for one channel. Whole jobs
/// are dead-lettered with channel `none` and a poison reason or `handler_panic`.
const CHANNEL_DEAD_LETTER_REASONS: [&str; 3] = ["permanent", "credentials", "exhausted"];
/// Values of the `event` label of the event counters.
pub const EVENT_KINDS: [&str; 2] = ["recipient_invalid", "channel_outcome"];

/// Breaker state changes that `herald_provider_circuit_transitions_total` starts at zero.
const CIRCUIT_TRANSITIONS: [(CircuitState, CircuitState); 4] = [
    (CircuitState::Closed, CircuitState::Open),
    (CircuitState::Open, CircuitState::HalfOpen),
    (CircuitState::HalfOpen, CircuitState::Closed),
    (CircuitState::HalfOpen, CircuitState::Open),
];

/// Herald's metrics, registered in their own registry.
pub struct Metrics {
    registry: Registry,
    jobs_received: IntCounter,
    jobs_completed: IntCounterVec,
    poison_jobs: IntCounterVec,
    channel_sends: IntCounterVec,
    provider_requests: IntCounterVec,
    provider_request_duration: HistogramVec,
    send_retries: IntCounterVec,
    delayed_retries: IntCounterVec,
    dead_letters: IntCounterVec,
    possible_duplicates: IntCounterVec,
    suppressions_recorded: IntCounterVec,
    events_published: IntCounterVec,
    event_publish_failures: IntCounterVec,
    rate_limit_wait: HistogramVec,
    provider_in_flight: IntGaugeVec,
    circuit_state: IntGaugeVec,
    circuit_transitions: IntCounterVec,
    failovers: IntCounterVec,
    credential_reloads: IntCounterVec,
    jobs_in_flight: IntGauge,
    broker_connected: IntGauge,
    consuming: IntGauge,
    ledger_available: IntGauge,
    webhook_endpoints_disabled: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            jobs_received: counter(
                "herald_jobs_received_total",
                "Deliveries taken from the work queue.",
            ),
            jobs_completed: counter_vec(
                "herald_jobs_completed_total",
                "Deliveries of jobs settled, by outcome: delivered (every channel delivered), retrying (a channel goes to a delay queue), partial, failed, expired, poison, suppressed (every channel suppressed).",
                &["outcome"],
            ),
            poison_jobs: counter_vec(
                "herald_poison_jobs_total",
                "Job bodies rejected and dead-lettered, by reason: invalid_json, invalid_job, too_large.",
                &["reason"],
            ),
            channel_sends: counter_vec(
                "herald_channel_sends_total",
                "Final outcome of each requested channel, by channel, provider and outcome.",
                &["channel", "provider", "outcome"],
            ),
            provider_requests: counter_vec(
                "herald_provider_requests_total",
                "Provider requests (every attempt), by provider and result: ok, permanent, transient, rate_limited, credentials.",
                &["provider", "result"],
            ),
            provider_request_duration: histogram_vec(
                "herald_provider_request_duration_seconds",
                "Duration of one provider request, from sending to the classified reply.",
                &["provider"],
                REQUEST_BUCKETS,
            ),
            send_retries: counter_vec(
                "herald_send_retries_total",
                "Attempts repeated after a failed one, by channel, provider and the failure's class.",
                &["channel", "provider", "reason"],
            ),
            delayed_retries: counter_vec(
                "herald_delayed_retries_total",
                "Channels published to a delay queue for a later delivery, by channel, provider and reason: transient, rate_limited, deferred.",
                &["channel", "provider", "reason"],
            ),
            dead_letters: counter_vec(
                "herald_dead_letters_total",
                "Messages published to the dead-letter exchange, by channel (none for whole jobs) and reason.",
                &["channel", "reason"],
            ),
            possible_duplicates: counter_vec(
                "herald_possible_duplicates_total",
                "Channels sent again after taking over a claim left in sending, by channel and provider. The earlier worker may have reached the provider, so each may be a duplicate.",
                &["channel", "provider"],
            ),
            suppressions_recorded: counter_vec(
                "herald_suppressions_recorded_total",
                "Recipients recorded in the suppression table because the provider reported them invalid, by channel and provider. A redelivered job counts once.",
                &["channel", "provider"],
            ),
            events_published: counter_vec(
                "herald_events_published_total",
                "Events confirmed by the broker on the events exchange, by event: recipient_invalid, channel_outcome.",
                &["event"],
            ),
            event_publish_failures: counter_vec(
                "herald_event_publish_failures_total",
                "Events the broker did not confirm, by event. The delivery is requeued, so the event is published again.",
                &["event"],
            ),
            rate_limit_wait: histogram_vec(
                "herald_rate_limit_wait_seconds",
                "Time a send waited for its provider's rate-limit permit.",
                &["provider"],
                WAIT_BUCKETS,
            ),
            provider_in_flight: gauge_vec(
                "herald_provider_requests_in_flight",
                "Provider requests under way, by provider.",
                &["provider"],
            ),
            circuit_state: gauge_vec(
                "herald_provider_circuit_state",
                "State of each provider's circuit breaker: 0 closed, 1 half-open, 2 open.",
                &["provider"],
            ),
            circuit_transitions: counter_vec(
                "herald_provider_circuit_transitions_total",
                "Changes of a provider's circuit breaker state, by provider and the states it moved from and to.",
                &["provider", "from", "to"],
            ),
            failovers: counter_vec(
                "herald_failovers_total",
                "Attempts sent through a later provider of the channel because an earlier one's breaker was open, by channel, the skipped provider (from) and the one used (to).",
                &["channel", "from", "to"],
            ),
            credential_reloads: counter_vec(
                "herald_credential_reloads_total",
                "Rebuilds of a provider's adapter with reread secrets, by provider and result: ok, or failed (the old adapter stays).",
                &["provider", "result"],
            ),
            jobs_in_flight: gauge(
                "herald_jobs_in_flight",
                "Jobs taken from the queue and not yet settled.",
            ),
            broker_connected: gauge(
                "herald_broker_connected",
                "1 while the connection to RabbitMQ is open, else 0.",
            ),
            ledger_available: gauge(
                "herald_ledger_available",
                "1 while the PostgreSQL delivery ledger answers, else 0. Consumption pauses while it is 0.",
            ),
            consuming: gauge(
                "herald_consuming",
                "1 while Herald consumes from the work queue, else 0. Readiness follows it.",
            ),
            webhook_endpoints_disabled: gauge_vec(
                "herald_webhook_endpoint_disabled",
                "1 while a configured webhook endpoint is disabled because it replied 410 Gone, else 0, by provider and endpoint name. A restart enables it again.",
                &["provider", "endpoint"],
            ),
            registry,
        };
        metrics.register_all();
        for outcome in JOB_OUTCOMES {
            metrics.jobs_completed.with_label_values(&[outcome]);
        }
        for event in EVENT_KINDS {
            metrics.events_published.with_label_values(&[event]);
            metrics.event_publish_failures.with_label_values(&[event]);
        }
        for reason in POISON_REASONS {
            metrics.poison_jobs.with_label_values(&[reason]);
            metrics.dead_letters.with_label_values(&["none", reason]);
        }
        metrics
    }

    /// Creates the series of one channel's provider at zero, so dashboards and alerts see
    /// every series from the start instead of an absent one.
    pub fn init_route(&self, channel: &str, provider: &str) {
        for outcome in CHANNEL_OUTCOMES {
            self.channel_sends
                .with_label_values(&[channel, provider, outcome]);
        }
        for result in REQUEST_RESULTS {
            self.provider_requests
                .with_label_values(&[provider, result]);
        }
        for reason in &REQUEST_RESULTS[1..] {
            self.send_retries
                .with_label_values(&[channel, provider, reason]);
        }
        for reason in DELAYED_RETRY_REASONS {
            self.delayed_retries
                .with_label_values(&[channel, provider, reason]);
        }
        for reason in CHANNEL_DEAD_LETTER_REASONS {
            self.dead_letters.with_label_values(&[channel, reason]);
        }
        self.possible_duplicates
            .with_label_values(&[channel, provider]);
        self.suppressions_recorded
            .with_label_values(&[channel, provider]);
        self.provider_request_duration
            .with_label_values(&[provider]);
        self.rate_limit_wait.with_label_values(&[provider]);
        self.provider_in_flight.with_label_values(&[provider]);
    }

    /// Creates the breaker series of `provider`, with the state gauge at closed.
    pub fn init_circuit(&self, provider: &str) {
        self.circuit_state
            .with_label_values(&[provider])
            .set(CircuitState::Closed.gauge_value());
        for (from, to) in CIRCUIT_TRANSITIONS {
            self.circuit_transitions
                .with_label_values(&[provider, from.as_str(), to.as_str()]);
        }
    }

    /// Creates the credential reload series of `provider`.
    pub fn init_credential_reloads(&self, provider: &str) {
        for result in ["ok", "failed"] {
            self.credential_reloads
                .with_label_values(&[provider, result]);
        }
    }

    /// Counts a rebuild of `provider`'s adapter; `result` is `ok` or `failed`.
    pub fn credential_reload(&self, provider: &str, result: &str) {
        self.credential_reloads
            .with_label_values(&[provider, result])
            .inc();
    }

    /// Creates the failover series of `channel` from provider `from` to provider `to`.
    pub fn init_failover(&self, channel: &str, from: &str, to: &str) {
        self.failovers.with_label_values(&[channel, from, to]);
    }

    fn register_all(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 24] = [
            Box::new(self.webhook_endpoints_disabled.clone()),
            Box::new(self.credential_reloads.clone()),
            Box::new(self.circuit_state.clone()),
            Box::new(self.circuit_transitions.clone()),
            Box::new(self.failovers.clone()),
            Box::new(self.suppressions_recorded.clone()),
            Box::new(self.events_published.clone()),
            Box::new(self.event_publish_failures.clone()),
            Box::new(self.ledger_available.clone()),
            Box::new(self.possible_duplicates.clone()),
            Box::new(self.delayed_retries.clone()),
            Box::new(self.dead_letters.clone()),
            Box::new(self.jobs_received.clone()),
            Box::new(self.jobs_completed.clone()),
            Box::new(self.poison_jobs.clone()),
            Box::new(self.channel_sends.clone()),
            Box::new(self.provider_requests.clone()),
            Box::new(self.provider_request_duration.clone()),
            Box::new(self.send_retries.clone()),
            Box::new(self.rate_limit_wait.clone()),
            Box::new(self.provider_in_flight.clone()),
            Box::new(self.jobs_in_flight.clone()),
            Box::new(self.broker_connected.clone()),
            Box::new(self.consuming.clone()),
        ];
        for collector in collectors {
            self.registry
                .register(collector)
                .expect("metric names are unique and valid");
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    pub fn job_received(&self) {
        self.jobs_received.inc();
        self.jobs_in_flight.inc();
    }

    /// Counts a settled job. Every `job_received` is followed by exactly one call to this or
    /// to [`Metrics::job_abandoned`].
    pub fn job_completed(&self, outcome: &str) {
        self.jobs_completed.with_label_values(&[outcome]).inc();
        self.jobs_in_flight.dec();
    }

    /// Counts a job left unacknowledged for redelivery (shutdown, lost channel).
    pub fn job_abandoned(&self) {
        self.jobs_in_flight.dec();
    }

    pub fn poison_job(&self, reason: &str) {
        self.poison_jobs.with_label_values(&[reason]).inc();
    }

    pub fn channel_finished(&self, channel: &str, provider: &str, outcome: &str) {
        self.channel_sends
            .with_label_values(&[channel, provider, outcome])
            .inc();
    }

    pub fn provider_request(&self, provider: &str, result: &str, duration: Duration) {
        self.provider_requests
            .with_label_values(&[provider, result])
            .inc();
        self.provider_request_duration
            .with_label_values(&[provider])
            .observe(duration.as_secs_f64());
    }

    pub fn send_retry(&self, channel: &str, provider: &str, reason: &str) {
        self.send_retries
            .with_label_values(&[channel, provider, reason])
            .inc();
    }

    pub fn delayed_retry(&self, channel: &str, provider: &str, reason: &str) {
        self.delayed_retries
            .with_label_values(&[channel, provider, reason])
            .inc();
    }

    pub fn possible_duplicate(&self, channel: &str, provider: &str) {
        self.possible_duplicates
            .with_label_values(&[channel, provider])
            .inc();
    }

    pub fn suppression_recorded(&self, channel: &str, provider: &str) {
        self.suppressions_recorded
            .with_label_values(&[channel, provider])
            .inc();
    }

    /// Counts one event on the events exchange, confirmed or not.
    pub fn event_published(&self, event: &str, confirmed: bool) {
        let counter = match confirmed {
            true => &self.events_published,
            false => &self.event_publish_failures,
        };
        counter.with_label_values(&[event]).inc();
    }

    pub fn dead_lettered(&self, channel: &str, reason: &str) {
        self.dead_letters
            .with_label_values(&[channel, reason])
            .inc();
    }

    pub fn rate_limit_waited(&self, provider: &str, waited: Duration) {
        self.rate_limit_wait
            .with_label_values(&[provider])
            .observe(waited.as_secs_f64());
    }

    /// Returns the in-flight gauge of `provider`, for [`crate::limits`] to raise and lower.
    pub fn provider_in_flight(&self, provider: &str) -> IntGauge {
        self.provider_in_flight.with_label_values(&[provider])
    }

    /// Counts a change of `provider`'s breaker state.
    pub fn circuit_transition(&self, provider: &str, from: CircuitState, to: CircuitState) {
        self.circuit_transitions
            .with_label_values(&[provider, from.as_str(), to.as_str()])
            .inc();
    }

    pub fn set_circuit_state(&self, provider: &str, state: CircuitState) {
        self.circuit_state
            .with_label_values(&[provider])
            .set(state.gauge_value());
    }

    pub fn failover(&self, channel: &str, from: &str, to: &str) {
        self.failovers.with_label_values(&[channel, from, to]).inc();
    }

    /// Returns the breaker state of every provider, ordered by provider name.
    pub fn circuit_states(&self) -> Vec<(String, CircuitState)> {
        let mut states: Vec<(String, CircuitState)> = Collector::collect(&self.circuit_state)
            .iter()
            .flat_map(|family| family.get_metric())
            .filter_map(|metric| {
                let provider = metric.get_label().first()?.value().to_owned();
                let value = metric.get_gauge().get_value() as i64;
                Some((provider, CircuitState::from_gauge_value(value)?))
            })
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }

    pub fn set_broker_connected(&self, connected: bool) {
        self.broker_connected.set(i64::from(connected));
    }

    pub fn set_consuming(&self, consuming: bool) {
        self.consuming.set(i64::from(consuming));
    }

    /// Sets whether a webhook endpoint is disabled. Endpoint names come from the config, so
    /// the label set stays bounded.
    pub fn set_webhook_endpoint_disabled(&self, provider: &str, endpoint: &str, disabled: bool) {
        self.webhook_endpoints_disabled
            .with_label_values(&[provider, endpoint])
            .set(i64::from(disabled));
    }

    pub fn set_ledger_available(&self, available: bool) {
        self.ledger_available.set(i64::from(available));
    }

    pub fn is_consuming(&self) -> bool {
        self.consuming.get() == 1
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric definition")
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition")
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("valid metric definition")
}
