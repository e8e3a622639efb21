//! Provider selection: each attempt goes to the first of the channel's providers, in the
//! configured order, that supports the notification and whose breaker admits traffic.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Admission, ChannelRoute, Route};
use crate::job::Notification;
use crate::metrics::Metrics;

/// The provider chosen for one attempt.
pub enum Selection<'a> {
    /// Send through `route`. `skipped` is the first provider passed over because its
    /// breaker was open, which makes this attempt a failover from it.
    Send {
        route: &'a Arc<Route>,
        skipped: Option<&'a Arc<Route>>,
    },
    /// Every provider that supports the notification has an open breaker. The earliest
    /// admits traffic again in `retry_in`.
    AllOpen { retry_in: Duration },
    /// No provider of the channel supports the notification.
    Unsupported,
}

impl ChannelRoute {
    /// Picks the provider of the next attempt at `now`. A breaker whose cool-down has passed
    /// admits this attempt as its probe.
    pub fn select(
        &self,
        notification: &Notification,
        now: Instant,
        metrics: &Metrics,
    ) -> Selection<'_> {
        let mut skipped = None;
        let mut retry_in: Option<Duration> = None;
        for route in self.routes() {
            if !route.provider().supports(notification) {
                continue;
            }
            match route.admit(now, metrics) {
                Admission::Admitted => return Selection::Send { route, skipped },
                Admission::Rejected { retry_in: wait } => {
                    skipped.get_or_insert(route);
                    retry_in = Some(retry_in.map_or(wait, |earliest| earliest.min(wait)));
                }
            }
        }
        match retry_in {
            Some(retry_in) => Selection::AllOpen { retry_in },
            None => Selection::Unsupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::config::{CircuitBreakerConfig, RateLimitConfig};
    use crate::job::{ChannelKind, ChannelRequest, Job};
    use crate::providers::{Provider, SendRequest, SendResult};
    use crate::routes::{CircuitBreaker, Routes, Verdict};

    const COOL_DOWN: Duration = Duration::from_secs(30);

    /// An adapter that never sends, with a fixed answer to `supports`.
    struct StubProvider {
        supports: bool,
    }

    #[async_trait]
    impl Provider for StubProvider {
        async fn send(&self, _request: SendRequest<'_>) -> SendResult {
            unreachable!("selection never sends")
        }

        fn supports(&self, _notification: &Notification) -> bool {
            self.supports
        }
    }

    fn route(name: &str, supports: bool, metrics: &Arc<Metrics>) -> Route {
        let provider_name: Arc<str> = Arc::from(name);
        let limits = crate::limits::ProviderLimits::new(
            provider_name.clone(),
            RateLimitConfig {
                per_second: 10,
                burst: 10,
            },
            4,
            Duration::ZERO,
            metrics.clone(),
        );
        let breaker = CircuitBreaker::new(&CircuitBreakerConfig {
            enabled: true,
            failure_threshold: 1,
            window_secs: 60,
            cool_down_secs: COOL_DOWN.as_secs(),
        });
        Route::new(
            provider_name,
            Arc::new(StubProvider { supports }),
            limits,
            breaker,
        )
    }

    fn email() -> Notification {
        let body = crate::publish::example_job("job-1", 1, &["email".to_owned()]);
        let job = Job::parse(body.to_string().as_bytes(), 65_536).unwrap();
        match job.channels.into_iter().next() {
            Some(ChannelRequest::Known(notification)) => notification,
            other => panic!("expected an email notification, got {other:?}"),
        }
    }

    fn channel(routes: Vec<Route>) -> Routes {
        Routes::from_routes([(ChannelKind::Email, routes)])
    }

    fn open(route: &Route, now: Instant) {
        route.breaker.record(Verdict::Failing, now);
    }

    fn chosen(selection: Selection<'_>) -> (String, Option<String>) {
        match selection {
            Selection::Send { route, skipped } => (
                route.provider_name.to_string(),
                skipped.map(|route| route.provider_name.to_string()),
            ),
            Selection::AllOpen { retry_in } => panic!("all open, retry in {retry_in:?}"),
            Selection::Unsupported => panic!("unsupported"),
        }
    }

    #[test]
    fn first_provider_is_preferred() {
        let metrics = Arc::new(Metrics::new());
        let routes = channel(vec![
            route("primary", true, &metrics),
            route("secondary", true, &metrics),
        ]);
        let email_routes = routes.get(ChannelKind::Email).unwrap();
        let selection = email_routes.select(&email(), Instant::now(), &metrics);
        assert_eq!(chosen(selection), ("primary".to_owned(), None));
    }

    #[test]
    fn open_breaker_fails_over() {
        let metrics = Arc::new(Metrics::new());
        let routes = channel(vec![
            route("primary", true, &metrics),
            route("secondary", true, &metrics),
        ]);
        let email_routes = routes.get(ChannelKind::Email).unwrap();
        let now = Instant::now();
        open(&email_routes.routes()[0], now);
        let selection = email_routes.select(&email(), now, &metrics);
        assert_eq!(
            chosen(selection),
            ("secondary".to_owned(), Some("primary".to_owned()))
        );
    }

    #[test]
    fn unsupporting_provider_is_passed_over() {
        let metrics = Arc::new(Metrics::new());
        let routes = channel(vec![
            route("primary", false, &metrics),
            route("secondary", true, &metrics),
        ]);
        let email_routes = routes.get(ChannelKind::Email).unwrap();
        let selection = email_routes.select(&email(), Instant::now(), &metrics);
        assert_eq!(chosen(selection), ("secondary".to_owned(), None));
    }

    #[test]
    fn all_open_reports_earliest_retry() {
        let metrics = Arc::new(Metrics::new());
        let routes = channel(vec![
            route("primary", true, &metrics),
            route("secondary", true, &metrics),
        ]);
        let email_routes = routes.get(ChannelKind::Email).unwrap();
        let now = Instant::now();
        open(&email_routes.routes()[0], now);
        open(&email_routes.routes()[1], now + Duration::from_secs(10));
        let later = now + Duration::from_secs(20);
        match email_routes.select(&email(), later, &metrics) {
            Selection::AllOpen { retry_in } => assert_eq!(retry_in, Duration::from_secs(10)),
            _ => panic!("expected every breaker open"),
        }
    }

    #[test]
    fn no_supporting_provider_is_unsupported() {
        let metrics = Arc::new(Metrics::new());
        let routes = channel(vec![route("primary", false, &metrics)]);
        let email_routes = routes.get(ChannelKind::Email).unwrap();
        let selection = email_routes.select(&email(), Instant::now(), &metrics);
        assert!(matches!(selection, Selection::Unsupported));
    }

    #[test]
    fn primary_returns_after_cool_down() {
        let metrics = Arc::new(Metrics::new());
        let routes = channel(vec![
            route("primary", true, &metrics),
            route("secondary", true, &metrics),
        ]);
        let email_routes = routes.get(ChannelKind::Email).unwrap();
        let now = Instant::now();
        open(&email_routes.routes()[0], now);
        let probe = email_routes.select(&email(), now + COOL_DOWN, &metrics);
        assert_eq!(chosen(probe), ("primary".to_owned(), None));
        let during_probe = email_routes.select(&email(), now + COOL_DOWN, &metrics);
        assert_eq!(
            chosen(during_probe),
            ("secondary".to_owned(), Some("primary".to_owned()))
        );
    }
}
