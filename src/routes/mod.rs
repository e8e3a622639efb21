//! Routes: the providers that send each channel, in order of preference, each with its own
//! adapter, limits and circuit breaker.
//!
//! - `breaker`: one provider's circuit breaker.
//! - `selection`: which of a channel's providers takes an attempt.

mod breaker;
mod selection;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use tokio::time::Instant;
use tracing::{info, warn};

pub use breaker::{Admission, CircuitBreaker, CircuitState, Transition, Verdict};
pub use selection::Selection;

use crate::config::{ConfigError, Settings};
use crate::job::ChannelKind;
use crate::limits::ProviderLimits;
use crate::metrics::Metrics;
use crate::providers::{self, Provider, SendError};

/// A provider ready to send: the adapter, its configured name, its limits and its breaker.
pub struct Route {
    pub provider_name: Arc<str>,
    /// The adapter, replaced when its credentials are reloaded. Each attempt clones the
    /// `Arc`, so a send under way finishes with the adapter it started with.
    adapter: RwLock<Arc<dyn Provider>>,
    pub limits: ProviderLimits,
    pub breaker: CircuitBreaker,
}

impl Route {
    pub fn new(
        provider_name: Arc<str>,
        adapter: Arc<dyn Provider>,
        limits: ProviderLimits,
        breaker: CircuitBreaker,
    ) -> Route {
        Route {
            provider_name,
            adapter: RwLock::new(adapter),
            limits,
            breaker,
        }
    }

    /// Returns the current adapter.
    pub fn provider(&self) -> Arc<dyn Provider> {
        self.adapter
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the adapter for the attempts that start from now on. Limits and breaker
    /// state stay as they are.
    pub fn replace_provider(&self, adapter: Arc<dyn Provider>) {
        *self
            .adapter
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = adapter;
    }

    /// Asks the breaker whether an attempt may go to this provider now, and reports a
    /// change of state.
    pub fn admit(&self, now: Instant, metrics: &Metrics) -> Admission {
        let (admission, transition) = self.breaker.admit(now);
        if let Some(transition) = transition {
            self.report(transition, metrics);
        }
        admission
    }

    /// Feeds an attempt's result to the breaker, and reports a change of state.
    pub fn record<T>(&self, result: &Result<T, SendError>, now: Instant, metrics: &Metrics) {
        if let Some(transition) = self.breaker.record(Verdict::of(result), now) {
            self.report(transition, metrics);
        }
    }

    fn report(&self, transition: Transition, metrics: &Metrics) {
        let provider = &*self.provider_name;
        let (from, to) = (transition.from.as_str(), transition.to.as_str());
        metrics.circuit_transition(provider, transition.from, transition.to);
        // The state is read again rather than taken from `transition`: when two changes
        // race, the report that runs last then sets the gauge to the latest state.
        metrics.set_circuit_state(provider, self.breaker.state());
        match transition.to {
            CircuitState::Open => warn!(
                provider,
                from,
                to,
                "provider circuit opened; its attempts go to the channel's next provider, or are deferred when it has none"
            ),
            CircuitState::HalfOpen => {
                info!(
                    provider,
                    from, to, "provider circuit half-open; sending one probe"
                )
            }
            CircuitState::Closed => info!(provider, from, to, "provider circuit closed"),
        }
    }
}

/// The providers of one channel, in order of preference. Never empty.
pub struct ChannelRoute {
    routes: Vec<Arc<Route>>,
}

impl ChannelRoute {
    /// Returns the first provider of the channel, which is claimed in the ledger before the
    /// attempts pick the provider that actually sends.
    pub fn preferred(&self) -> &Arc<Route> {
        &self.routes[0]
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// The routes of every channel that is turned on.
pub struct Routes {
    by_channel: BTreeMap<ChannelKind, ChannelRoute>,
    /// Every provider that a channel names, by its configured name.
    by_name: BTreeMap<String, Arc<Route>>,
}

impl Routes {
    /// Builds an adapter, limits and a breaker for each provider a channel names. A provider
    /// keeps them for every channel and every attempt, failovers included.
    pub fn build(
        settings: &Settings,
        client: &reqwest::Client,
        metrics: &Arc<Metrics>,
    ) -> Result<Routes, ConfigError> {
        Routes::build_with_adapters(settings, client, metrics, &HashMap::new())
    }

    /// Builds routes like [`Routes::build`], taking the adapter of each provider named in
    /// `adapters` from there instead of building it.
    pub fn build_with_adapters(
        settings: &Settings,
        client: &reqwest::Client,
        metrics: &Arc<Metrics>,
        adapters: &HashMap<String, Arc<dyn Provider>>,
    ) -> Result<Routes, ConfigError> {
        let mut built: BTreeMap<String, Arc<Route>> = BTreeMap::new();
        let mut by_channel = BTreeMap::new();
        for kind in ChannelKind::ALL {
            let names = settings.channels.providers(kind);
            let mut routes = Vec::with_capacity(names.len());
            for name in names {
                let route = match built.get(name) {
                    Some(route) => route.clone(),
                    None => {
                        let adapter = adapters.get(name.as_str()).cloned();
                        let route =
                            Arc::new(build_route(settings, kind, name, adapter, client, metrics)?);
                        built.insert(name.clone(), route.clone());
                        route
                    }
                };
                metrics.init_route(kind.as_str(), name);
                routes.push(route);
            }
            init_failovers(metrics, kind, &routes);
            if !routes.is_empty() {
                by_channel.insert(kind, ChannelRoute { routes });
            }
        }
        Ok(Routes {
            by_channel,
            by_name: built,
        })
    }

    /// Builds routes from ready-made adapters, for tests and embedding. A channel given no
    /// routes stays off.
    pub fn from_routes(routes: impl IntoIterator<Item = (ChannelKind, Vec<Route>)>) -> Routes {
        let mut by_channel = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for (kind, routes) in routes {
            let routes: Vec<Arc<Route>> = routes.into_iter().map(Arc::new).collect();
            for route in &routes {
                by_name.insert(route.provider_name.to_string(), route.clone());
            }
            if !routes.is_empty() {
                by_channel.insert(kind, ChannelRoute { routes });
            }
        }
        Routes {
            by_channel,
            by_name,
        }
    }

    pub fn get(&self, kind: ChannelKind) -> Option<&ChannelRoute> {
        self.by_channel.get(&kind)
    }

    /// Returns every provider that a channel names, by configured name.
    pub fn providers(&self) -> &BTreeMap<String, Arc<Route>> {
        &self.by_name
    }
}

fn build_route(
    settings: &Settings,
    kind: ChannelKind,
    name: &str,
    adapter: Option<Arc<dyn Provider>>,
    client: &reqwest::Client,
    metrics: &Arc<Metrics>,
) -> Result<Route, ConfigError> {
    let config = settings.providers.get(name).ok_or_else(|| {
        ConfigError::invalid(
            format!("channels.{kind}"),
            format!("names unknown provider `{name}`"),
        )
    })?;
    let provider_name: Arc<str> = Arc::from(name);
    metrics.init_circuit(name);
    metrics.init_credential_reloads(name);
    let limits = ProviderLimits::new(
        provider_name.clone(),
        config.rate_limit(),
        config.max_in_flight(),
        settings.limits.jitter(),
        metrics.clone(),
    );
    Ok(Route::new(
        provider_name,
        match adapter {
            Some(adapter) => adapter,
            None => providers::build(name, config, client, &settings.http, metrics)?,
        },
        limits,
        CircuitBreaker::new(
            &settings
                .circuit_breaker
                .with_override(config.circuit_breaker_override()),
        ),
    ))
}

/// Creates the failover series of every pair of a channel's providers that a failover can
/// move between: from an earlier provider to a later one.
fn init_failovers(metrics: &Metrics, kind: ChannelKind, routes: &[Arc<Route>]) {
    for (index, from) in routes.iter().enumerate() {
        for to in &routes[index + 1..] {
            metrics.init_failover(kind.as_str(), &from.provider_name, &to.provider_name);
        }
    }
}
