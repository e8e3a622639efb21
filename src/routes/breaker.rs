//! The circuit breaker of one provider: closed, open or half-open.
//!
//! Closed, every attempt is admitted, and `failure_threshold` counted failures within
//! `window` open it. Open, no attempt is admitted until `cool_down` has passed. Then one
//! probe is admitted and the breaker is half-open: the probe's success closes it and its
//! failure opens it again. A probe that reports nothing within `cool_down` (its send was
//! deferred or cancelled) is replaced by the next admitted attempt.
//!
//! The caller passes the time to every method, so tests drive the clock themselves. The
//! state machine is small and written here because Herald reads its state for metrics and
//! readiness and admits exactly one half-open probe.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::CircuitBreakerConfig;
use crate::providers::{ErrorClass, SendError};

/// The state of a breaker, as reported in metrics and readiness details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    pub const ALL: [CircuitState; 3] = [
        CircuitState::Closed,
        CircuitState::HalfOpen,
        CircuitState::Open,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
        }
    }

    /// Returns the value of `herald_provider_circuit_state`: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }

    /// Returns the state of a `herald_provider_circuit_state` value.
    pub fn from_gauge_value(value: i64) -> Option<CircuitState> {
        Self::ALL
            .into_iter()
            .find(|state| state.gauge_value() == value)
    }
}

/// A change of state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
}

/// Whether one attempt may go to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The breaker is open, or half-open with its probe under way. It admits the next
    /// attempt in `retry_in` at the earliest.
    Rejected {
        retry_in: Duration,
    },
}

/// What an attempt's result shows about the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The provider replied in a way that shows it is up, such as a success or a rejection
    /// of this one message.
    Reachable,
    /// A transient failure or timeout, which counts towards opening the breaker.
    Failing,
}

impl Verdict {
    /// Classifies an attempt's result. Only transient failures count against a provider.
    /// A permanent or recipient-invalid reply concerns the message, and the limiter handles
    /// a rate-limited one. A credentials reply concerns Herald's configuration, which
    /// another provider cannot fix.
    pub fn of<T>(result: &Result<T, SendError>) -> Verdict {
        match result {
            Err(error) if error.class == ErrorClass::Transient && !error.recipient_invalid => {
                Verdict::Failing
            }
            _ => Verdict::Reachable,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probe_sent: Instant },
}

impl State {
    fn public(self) -> CircuitState {
        match self {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Times of the counted failures within the window, oldest first. Used only while
    /// closed.
    failures: VecDeque<Instant>,
}

/// One provider's breaker, shared by every worker.
#[derive(Debug)]
pub struct CircuitBreaker {
    enabled: bool,
    failure_threshold: usize,
    window: Duration,
    cool_down: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    pub fn new(config: &CircuitBreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            enabled: config.enabled,
            failure_threshold: config.failure_threshold.max(1) as usize,
            window: config.window(),
            cool_down: config.cool_down(),
            inner: Mutex::new(Inner {
                state: State::Closed,
                failures: VecDeque::new(),
            }),
        }
    }

    pub fn state(&self) -> CircuitState {
        self.lock().state.public()
    }

    /// Decides whether an attempt may go to the provider at `now`. An open breaker whose
    /// cool-down has passed admits this attempt as its probe and turns half-open.
    pub fn admit(&self, now: Instant) -> (Admission, Option<Transition>) {
        if !self.enabled {
            return (Admission::Admitted, None);
        }
        let mut inner = self.lock();
        match inner.state {
            State::Closed => (Admission::Admitted, None),
            State::Open { until } if now < until => (Self::rejected(until, now), None),
            State::Open { .. } => {
                let transition = inner.move_to(State::HalfOpen { probe_sent: now });
                (Admission::Admitted, transition)
            }
            State::HalfOpen { probe_sent } if now < probe_sent + self.cool_down => {
                (Self::rejected(probe_sent + self.cool_down, now), None)
            }
            State::HalfOpen { .. } => {
                inner.state = State::HalfOpen { probe_sent: now };
                (Admission::Admitted, None)
            }
        }
    }

    /// Records the result of an attempt that was admitted.
    pub fn record(&self, verdict: Verdict, now: Instant) -> Option<Transition> {
        if !self.enabled {
            return None;
        }
        let mut inner = self.lock();
        match (inner.state, verdict) {
            (State::HalfOpen { .. }, Verdict::Reachable) => inner.move_to(State::Closed),
            (State::HalfOpen { .. }, Verdict::Failing) => inner.move_to(State::Open {
                until: now + self.cool_down,
            }),
            (State::Closed, Verdict::Failing) => {
                inner.failures.push_back(now);
                while let Some(oldest) = inner.failures.front() {
                    if now.duration_since(*oldest) < self.window {
                        break;
                    }
                    inner.failures.pop_front();
                }
                if inner.failures.len() < self.failure_threshold {
                    return None;
                }
                inner.move_to(State::Open {
                    until: now + self.cool_down,
                })
            }
            // An attempt admitted before the breaker opened changes nothing.
            (State::Closed, Verdict::Reachable) | (State::Open { .. }, _) => None,
        }
    }

    fn rejected(until: Instant, now: Instant) -> Admission {
        Admission::Rejected {
            retry_in: until.saturating_duration_since(now),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state stays consistent even if a holder panicked, because every update is a
        // single assignment.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn move_to(&mut self, state: State) -> Option<Transition> {
        let from = self.state.public();
        self.state = state;
        self.failures.clear();
        Some(Transition {
            from,
            to: state.public(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);
    const COOL_DOWN: Duration = Duration::from_secs(30);

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(&CircuitBreakerConfig {
            enabled: true,
            failure_threshold: 3,
            window_secs: WINDOW.as_secs(),
            cool_down_secs: COOL_DOWN.as_secs(),
        })
    }

    /// Opens `breaker` with three failures at `start` and returns the transition.
    fn open(breaker: &CircuitBreaker, start: Instant) -> Option<Transition> {
        breaker.record(Verdict::Failing, start);
        breaker.record(Verdict::Failing, start);
        breaker.record(Verdict::Failing, start)
    }

    fn transition(from: CircuitState, to: CircuitState) -> Option<Transition> {
        Some(Transition { from, to })
    }

    #[test]
    fn threshold_within_window_opens() {
        let breaker = breaker();
        let start = Instant::now();
        assert_eq!(breaker.record(Verdict::Failing, start), None);
        assert_eq!(breaker.record(Verdict::Failing, start), None);
        assert_eq!(
            breaker.record(Verdict::Failing, start + Duration::from_secs(9)),
            transition(CircuitState::Closed, CircuitState::Open)
        );
        assert_eq!(breaker.state(), CircuitState::Open);
    }

    #[test]
    fn failures_outside_window_expire() {
        let breaker = breaker();
        let start = Instant::now();
        breaker.record(Verdict::Failing, start);
        breaker.record(Verdict::Failing, start);
        assert_eq!(breaker.record(Verdict::Failing, start + WINDOW), None);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn successes_do_not_hide_failures() {
        let breaker = breaker();
        let start = Instant::now();
        breaker.record(Verdict::Failing, start);
        breaker.record(Verdict::Reachable, start);
        breaker.record(Verdict::Failing, start);
        breaker.record(Verdict::Reachable, start);
        assert!(breaker.record(Verdict::Failing, start).is_some());
    }

    #[test]
    fn open_rejects_until_cool_down() {
        let breaker = breaker();
        let start = Instant::now();
        open(&breaker, start);
        let (admission, change) = breaker.admit(start + Duration::from_secs(10));
        assert_eq!(
            admission,
            Admission::Rejected {
                retry_in: Duration::from_secs(20)
            }
        );
        assert_eq!(change, None);
    }

    #[test]
    fn cool_down_admits_one_probe() {
        let breaker = breaker();
        let start = Instant::now();
        open(&breaker, start);
        let probe_time = start + COOL_DOWN;
        assert_eq!(
            breaker.admit(probe_time),
            (
                Admission::Admitted,
                transition(CircuitState::Open, CircuitState::HalfOpen)
            )
        );
        let (second, change) = breaker.admit(probe_time + Duration::from_secs(1));
        assert!(matches!(second, Admission::Rejected { .. }), "{second:?}");
        assert_eq!(change, None);
    }

    #[test]
    fn probe_success_closes() {
        let breaker = breaker();
        let start = Instant::now();
        open(&breaker, start);
        breaker.admit(start + COOL_DOWN);
        assert_eq!(
            breaker.record(Verdict::Reachable, start + COOL_DOWN),
            transition(CircuitState::HalfOpen, CircuitState::Closed)
        );
        assert_eq!(breaker.admit(start + COOL_DOWN).0, Admission::Admitted);
    }

    #[test]
    fn closing_forgets_old_failures() {
        let breaker = breaker();
        let start = Instant::now();
        open(&breaker, start);
        breaker.admit(start + COOL_DOWN);
        breaker.record(Verdict::Reachable, start + COOL_DOWN);
        let later = start + COOL_DOWN;
        assert_eq!(breaker.record(Verdict::Failing, later), None);
        assert_eq!(breaker.record(Verdict::Failing, later), None);
        assert_eq!(breaker.state(), CircuitState::Closed);
    }

    #[test]
    fn probe_failure_reopens_for_another_cool_down() {
        let breaker = breaker();
        let start = Instant::now();
        open(&breaker, start);
        let probe_time = start + COOL_DOWN;
        breaker.admit(probe_time);
        assert_eq!(
            breaker.record(Verdict::Failing, probe_time),
            transition(CircuitState::HalfOpen, CircuitState::Open)
        );
        let (admission, _) = breaker.admit(probe_time + Duration::from_secs(1));
        assert_eq!(
            admission,
            Admission::Rejected {
                retry_in: COOL_DOWN - Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn lost_probe_is_replaced() {
        let breaker = breaker();
        let start = Instant::now();
        open(&breaker, start);
        breaker.admit(start + COOL_DOWN);
        let (admission, change) = breaker.admit(start + COOL_DOWN * 2);
        assert_eq!(admission, Admission::Admitted);
        assert_eq!(change, None);
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
    }

    #[test]
    fn disabled_breaker_never_opens() {
        let breaker = CircuitBreaker::new(&CircuitBreakerConfig {
            enabled: false,
            failure_threshold: 1,
            window_secs: 10,
            cool_down_secs: 10,
        });
        let now = Instant::now();
        assert_eq!(breaker.record(Verdict::Failing, now), None);
        assert_eq!(breaker.admit(now), (Admission::Admitted, None));
    }

    #[test]
    fn only_transient_failures_count() {
        let transient = SendError::transient("upstream returned 503").with_status(503);
        assert_eq!(Verdict::of::<()>(&Err(transient)), Verdict::Failing);
        let rejected = [
            SendError::permanent("invalid request").with_status(400),
            SendError::new(ErrorClass::RateLimited, "too many requests"),
            SendError::new(ErrorClass::Credentials, "invalid API key"),
            SendError::transient("recipient unreachable").recipient_invalid(),
        ];
        for error in rejected {
            assert_eq!(
                Verdict::of::<()>(&Err(error.clone())),
                Verdict::Reachable,
                "{error}"
            );
        }
        assert_eq!(Verdict::of::<u8>(&Ok(1)), Verdict::Reachable);
    }
}
