//! Routes: the provider that sends each channel, with that provider's limits.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ConfigError, Settings};
use crate::job::ChannelKind;
use crate::limits::ProviderLimits;
use crate::metrics::Metrics;
use crate::providers::{self, Provider};

/// A provider ready to send: the adapter, its configured name and its limits.
pub struct Route {
    pub provider_name: Arc<str>,
    pub provider: Arc<dyn Provider>,
    pub limits: ProviderLimits,
}

/// The route of every channel that is turned on.
pub struct Routes {
    by_channel: BTreeMap<ChannelKind, Arc<Route>>,
}

impl Routes {
    /// Builds an adapter and limits for each provider a channel names.
    pub fn build(
        settings: &Settings,
        client: &reqwest::Client,
        metrics: &Arc<Metrics>,
    ) -> Result<Routes, ConfigError> {
        let mut by_channel = BTreeMap::new();
        for kind in ChannelKind::ALL {
            let Some(name) = settings.channels.provider_for(kind)? else {
                continue;
            };
            let config = settings.providers.get(name).ok_or_else(|| {
                ConfigError::invalid(
                    format!("channels.{kind}"),
                    format!("names unknown provider `{name}`"),
                )
            })?;
            let provider_name: Arc<str> = Arc::from(name);
            metrics.init_route(kind.as_str(), name);
            let limits = ProviderLimits::new(
                provider_name.clone(),
                config.rate_limit(),
                config.max_in_flight(),
                settings.limits.jitter(),
                metrics.clone(),
            );
            let route = Route {
                provider: providers::build(name, config, client, &settings.http)?,
                provider_name,
                limits,
            };
            by_channel.insert(kind, Arc::new(route));
        }
        Ok(Routes { by_channel })
    }

    /// Builds routes from ready-made adapters, for tests and embedding.
    pub fn from_routes(routes: impl IntoIterator<Item = (ChannelKind, Route)>) -> Routes {
        Routes {
            by_channel: routes
                .into_iter()
                .map(|(kind, route)| (kind, Arc::new(route)))
                .collect(),
        }
    }

    pub fn get(&self, kind: ChannelKind) -> Option<&Arc<Route>> {
        self.by_channel.get(&kind)
    }
}
