//! Webhook adapter: one signed `POST` per attempt, per the Standard Webhooks specification.
//!
//! The body is `{"type", "timestamp", "data"}`. The headers `webhook-id` (the same for every
//! attempt and redelivery of a job's channel), `webhook-timestamp` (unix seconds of this
//! attempt) and `webhook-signature` (one `v1,` signature per configured secret) let the
//! receiver check where the request came from and drop repeats.
//!
//! The adapter has its own HTTP client. Its DNS resolver drops addresses the provider's
//! network policy blocks, literal IP URLs are checked before sending, no proxy is used and
//! redirects are not followed, so a job cannot steer a request into Herald's own network.
//! A reply 410 Gone disables a configured endpoint in memory until Herald restarts.

mod allowlist;
mod reply;
mod resolver;
mod signature;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect;
use serde_json::json;
use tracing::warn;

pub use super::address::{AddressClass, AddressPolicy};
pub use allowlist::UrlAllowlist;
pub use reply::{ENDPOINT_GONE, REDIRECT};
pub use resolver::{AddressBlocked, GuardedResolver};
pub use signature::{SigningKeys, webhook_id};

use super::http;
use super::{Delivered, Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, HttpConfig, WebhookConfig};
use crate::job::{ChannelKind, Notification, WebhookMessage, WebhookTarget};
use crate::metrics::Metrics;

/// Error code of a job naming an endpoint that is not configured.
pub const UNKNOWN_ENDPOINT: &str = "unknown_endpoint";
/// Error code of a job naming an endpoint disabled by an earlier 410 Gone.
pub const ENDPOINT_DISABLED: &str = "endpoint_disabled";
/// Error code of a job URL that matches no allowlist entry.
pub const URL_NOT_ALLOWED: &str = "url_not_allowed";
/// Error code of a request blocked because of the address it would connect to.
pub const ADDRESS_BLOCKED: &str = "address_blocked";

/// The source of the current time, which tests replace to control `webhook-timestamp`.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct WebhookSender {
    /// The provider's name under `[providers]`, for logs and metric labels.
    provider: String,
    client: reqwest::Client,
    endpoints: BTreeMap<String, Endpoint>,
    allowlist: UrlAllowlist,
    /// The secrets that sign webhooks to allowlisted URLs; `None` when the allowlist is
    /// empty.
    url_keys: Option<SigningKeys>,
    policy: AddressPolicy,
    timeout: Duration,
    /// Endpoints that replied 410 Gone since start.
    disabled: Mutex<BTreeSet<String>>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

/// A configured endpoint, ready to send to.
struct Endpoint {
    url: reqwest::Url,
    keys: SigningKeys,
    headers: HeaderMap,
}

/// The URL, secrets and headers of one attempt.
struct Destination<'a> {
    url: &'a reqwest::Url,
    keys: &'a SigningKeys,
    headers: Option<&'a HeaderMap>,
    /// The endpoint's name, for targets that name one.
    endpoint: Option<&'a str>,
}

impl WebhookSender {
    /// Builds the adapter for provider `name`, loading and decoding every signing secret.
    pub fn new(
        name: &str,
        config: &WebhookConfig,
        http: &HttpConfig,
        metrics: Arc<Metrics>,
    ) -> Result<WebhookSender, ConfigError> {
        let key = format!("providers.{name}");
        let policy = AddressPolicy {
            allow_private_networks: config.allow_private_networks,
            allow_loopback: config.allow_loopback,
        };
        let client = build_client(policy, http).map_err(|error| {
            ConfigError::invalid(&key, format!("failed to build the HTTP client: {error}"))
        })?;

        let endpoints = load_endpoints(name, config, &metrics)?;
        let allowlist =
            UrlAllowlist::parse(&format!("{key}.url_allowlist"), &config.url_allowlist)?;
        let url_keys = if allowlist.is_empty() {
            None
        } else {
            let secrets = config.signing_secrets(&key)?;
            let keys = SigningKeys::parse(&format!("{key}.signing_secrets"), &secrets)?;
            Some(keys)
        };

        Ok(WebhookSender {
            provider: name.to_owned(),
            client,
            endpoints,
            allowlist,
            url_keys,
            policy,
            timeout: config.request_timeout(),
            disabled: Mutex::new(BTreeSet::new()),
            metrics,
            clock: Arc::new(Utc::now),
        })
    }

    /// Replaces the clock that stamps each attempt.
    pub fn with_clock(mut self, clock: Clock) -> WebhookSender {
        self.clock = clock;
        self
    }

    /// Returns where `target` goes, or the permanent failure that keeps it from being sent.
    fn destination<'a>(&'a self, target: &'a WebhookTarget) -> Result<Destination<'a>, SendError> {
        match target {
            WebhookTarget::Endpoint(name) => {
                let endpoint = self.endpoints.get(name).ok_or_else(|| {
                    SendError::permanent(format!(
                        "endpoint `{name}` is not configured under providers.{}.endpoints",
                        self.provider
                    ))
                    .with_code(UNKNOWN_ENDPOINT)
                })?;
                if self.is_disabled(name) {
                    return Err(SendError::permanent(format!(
                        "endpoint `{name}` replied 410 Gone earlier and is disabled until Herald restarts"
                    ))
                    .with_code(ENDPOINT_DISABLED)
                    .recipient_invalid());
                }
                Ok(Destination {
                    url: &endpoint.url,
                    keys: &endpoint.keys,
                    headers: Some(&endpoint.headers),
                    endpoint: Some(name),
                })
            }
            WebhookTarget::Url(url) => match &self.url_keys {
                Some(keys) if self.allowlist.allows(url) => Ok(Destination {
                    url,
                    keys,
                    headers: None,
                    endpoint: None,
                }),
                _ => Err(SendError::permanent(format!(
                    "the job's webhook URL matches no entry of providers.{}.url_allowlist",
                    self.provider
                ))
                .with_code(URL_NOT_ALLOWED)),
            },
        }
    }

    /// Rejects a URL whose host is an IP address the policy blocks. Host names are checked
    /// by the client's resolver instead, when they are resolved.
    fn check_literal_address(&self, url: &reqwest::Url) -> Result<(), SendError> {
        let host = url.host_str().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(address) = literal.parse::<IpAddr>() else {
            return Ok(());
        };
        match self.policy.blocked_class(address) {
            None => Ok(()),
            Some(class) => Err(blocked(&AddressBlocked { address, class })),
        }
    }

    fn is_disabled(&self, endpoint: &str) -> bool {
        self.disabled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(endpoint)
    }

    fn disable(&self, endpoint: &str) {
        let newly = self
            .disabled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(endpoint.to_owned());
        if newly {
            warn!(
                provider = %self.provider,
                endpoint,
                "webhook endpoint replied 410 Gone; disabled until Herald restarts"
            );
            self.metrics
                .set_webhook_endpoint_disabled(&self.provider, endpoint, true);
        }
    }

    /// Builds the signed request of one attempt.
    fn request(
        &self,
        destination: &Destination<'_>,
        webhook_id: &str,
        message: &WebhookMessage,
    ) -> reqwest::RequestBuilder {
        let now = (self.clock)();
        let body = event_body(message, now);
        let timestamp = now.timestamp();
        let signature = destination
            .keys
            .signature_header(webhook_id, timestamp, &body);

        let mut request = self
            .client
            .post(destination.url.clone())
            .timeout(self.timeout);
        if let Some(headers) = destination.headers {
            request = request.headers(headers.clone());
        }
        request
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
    }
}

#[async_trait]
impl Provider for WebhookSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Webhook(message) = request.notification else {
            return Err(SendError::permanent(format!(
                "the webhook provider sends webhooks, not {}",
                request.notification.kind()
            )));
        };
        let destination = self.destination(&message.target)?;
        self.check_literal_address(destination.url)?;

        let webhook_id = webhook_id(request.job_id, ChannelKind::Webhook);
        let response = self
            .request(&destination, &webhook_id, message)
            .send()
            .await
            .map_err(|error| request_error(&error))?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "webhook receiver replied");

        let result = reply::classify(&reply);
        if reply.status == 410
            && let Some(endpoint) = destination.endpoint
        {
            self.disable(endpoint);
        }
        result.map(|delivered| Delivered {
            message_id: Some(webhook_id),
            ..delivered
        })
    }
}

/// Loads the endpoints of provider `name` with their secrets and headers, and creates their
/// disabled-endpoint series at zero.
fn load_endpoints(
    name: &str,
    config: &WebhookConfig,
    metrics: &Metrics,
) -> Result<BTreeMap<String, Endpoint>, ConfigError> {
    let mut endpoints = BTreeMap::new();
    for (endpoint_name, endpoint) in &config.endpoints {
        let key = format!("providers.{name}.endpoints.{endpoint_name}");
        let secrets = endpoint.signing_secrets(&key)?;
        let ready = Endpoint {
            url: parse_url(&format!("{key}.url"), &endpoint.url)?,
            keys: SigningKeys::parse(&format!("{key}.signing_secrets"), &secrets)?,
            headers: header_map(&key, &endpoint.headers)?,
        };
        metrics.set_webhook_endpoint_disabled(name, endpoint_name, false);
        endpoints.insert(endpoint_name.clone(), ready);
    }
    Ok(endpoints)
}

/// Builds the client of one webhook provider: the policy's resolver, no proxy, no
/// redirects, and the shared connection settings.
fn build_client(policy: AddressPolicy, http: &HttpConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(http.connect_timeout())
        .pool_idle_timeout(http.pool_idle_timeout())
        .pool_max_idle_per_host(http.pool_max_idle_per_host)
        .redirect(redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .build()
}

/// Serializes the body: the event's type, when it happened (the attempt's time when the
/// job gives none), and the job's payload as `data`.
fn event_body(message: &WebhookMessage, now: DateTime<Utc>) -> Vec<u8> {
    let timestamp = message.occurred_at.unwrap_or(now);
    let body = json!({
        "type": message.event_type,
        "timestamp": timestamp.to_rfc3339_opts(SecondsFormat::Micros, true),
        "data": message.payload,
    });
    serde_json::to_vec(&body).expect("a JSON value always serializes")
}

/// Classifies a request that got no reply: blocked by the resolver, or a transport failure.
fn request_error(error: &reqwest::Error) -> SendError {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(blocked_address) = cause.downcast_ref::<AddressBlocked>() {
            return blocked(blocked_address);
        }
        source = cause.source();
    }
    http::transport_error(error)
}

fn blocked(blocked_address: &AddressBlocked) -> SendError {
    SendError::permanent(format!("request not sent: {blocked_address}")).with_code(ADDRESS_BLOCKED)
}

fn parse_url(key: &str, text: &str) -> Result<reqwest::Url, ConfigError> {
    reqwest::Url::parse(text)
        .map_err(|error| ConfigError::invalid(key, format!("is not a URL: {error}")))
}

fn header_map(key: &str, headers: &BTreeMap<String, String>) -> Result<HeaderMap, ConfigError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let invalid =
            || ConfigError::invalid(format!("{key}.headers.{name}"), "is not a valid header");
        let name = HeaderName::try_from(name.as_str()).map_err(|_| invalid())?;
        let mut value = HeaderValue::try_from(value.as_str()).map_err(|_| invalid())?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}
