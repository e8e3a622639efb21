//! The webhook provider section: named endpoints with their signing secrets, the URL
//! allowlist for jobs that give their own URL, and the network policy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

use super::ConfigError;
use super::breaker::CircuitBreakerOverride;
use super::providers::RateLimitConfig;
use super::secret::{self, REDACTED, Secret, redact_option};
use super::sections::{names_list, positive};

/// Headers Herald sets on every webhook request, which an endpoint's `headers` cannot replace.
const RESERVED_HEADERS: [&str; 6] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
];

/// Webhooks signed per the Standard Webhooks specification.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Endpoints by the name jobs give in `channels.webhook.endpoint`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, WebhookEndpointConfig>,
    /// URLs that a job's `channels.webhook.url` may point at. An entry matches a URL with
    /// the same scheme, host and port whose path starts with the entry's path.
    #[serde(default, deserialize_with = "names_list")]
    pub url_allowlist: Vec<String>,
    /// Secrets that sign webhooks sent to allowlisted URLs.
    #[serde(default, serialize_with = "redact_option")]
    pub signing_secrets: Option<SecretString>,
    #[serde(default)]
    pub signing_secrets_file: Option<PathBuf>,
    /// Allow sending to private addresses: RFC 1918, unique local (fc00::/7), CGNAT
    /// (100.64.0.0/10) and link-local, cloud metadata addresses included.
    pub allow_private_networks: bool,
    /// Allow sending to loopback addresses (127.0.0.0/8, ::1).
    pub allow_loopback: bool,
    pub request_timeout_ms: u64,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
}

/// One configured endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointConfig {
    /// `herald check-config` prints only its origin, because the path, query or user info
    /// of a webhook URL often carries a credential.
    #[serde(serialize_with = "origin_only")]
    pub url: String,
    /// One or more `whsec_` secrets separated by spaces, commas or line breaks. Every one
    /// signs each request, so a receiver can move to a new secret without downtime.
    #[serde(default, serialize_with = "redact_option")]
    pub signing_secrets: Option<SecretString>,
    #[serde(default)]
    pub signing_secrets_file: Option<PathBuf>,
    /// Extra request headers. `herald check-config` prints their values redacted, because
    /// they may carry credentials.
    #[serde(default, serialize_with = "redact_values")]
    pub headers: BTreeMap<String, String>,
}

impl WebhookConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Loads the secrets that sign webhooks to allowlisted URLs. `key` is the section path.
    pub fn signing_secrets(&self, key: &str) -> Result<Secret, ConfigError> {
        secret::resolve(
            &format!("{key}.signing_secrets"),
            &format!("{key}.signing_secrets_file"),
            self.signing_secrets.as_ref(),
            self.signing_secrets_file.as_ref(),
        )
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        positive(
            &format!("{key}.request_timeout_ms"),
            self.request_timeout_ms,
        )?;
        for entry in &self.url_allowlist {
            parse_allowlist_entry(&format!("{key}.url_allowlist"), entry)?;
        }
        for (name, endpoint) in &self.endpoints {
            endpoint.validate(&format!("{key}.endpoints.{name}"), name)?;
        }
        Ok(())
    }

    /// Loads every signing secret, to report a missing or unreadable one at start.
    pub(super) fn check_secrets(&self, key: &str) -> Result<(), ConfigError> {
        for (name, endpoint) in &self.endpoints {
            endpoint.signing_secrets(&format!("{key}.endpoints.{name}"))?;
        }
        if !self.url_allowlist.is_empty() {
            self.signing_secrets(key)?;
        }
        Ok(())
    }
}

impl WebhookEndpointConfig {
    /// Loads the endpoint's signing secrets. `key` is the endpoint's section path.
    pub fn signing_secrets(&self, key: &str) -> Result<Secret, ConfigError> {
        secret::resolve(
            &format!("{key}.signing_secrets"),
            &format!("{key}.signing_secrets_file"),
            self.signing_secrets.as_ref(),
            self.signing_secrets_file.as_ref(),
        )
    }

    fn validate(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        crate::job::WebhookTarget::endpoint(key, name)
            .map_err(|_| ConfigError::invalid(key, "endpoint names use 1 to 64 of a-z 0-9 _"))?;
        super::providers::check_url(&format!("{key}.url"), &self.url)?;
        for (header, value) in &self.headers {
            let header_key = format!("{key}.headers.{header}");
            let name = HeaderName::try_from(header.as_str())
                .map_err(|_| ConfigError::invalid(&header_key, "is not a valid header name"))?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    &header_key,
                    "is set by Herald itself and cannot be configured",
                ));
            }
            HeaderValue::try_from(value.as_str())
                .map_err(|_| ConfigError::invalid(&header_key, "has an invalid header value"))?;
        }
        Ok(())
    }
}

/// Parses one `url_allowlist` entry: an `http` or `https` URL with a host and without user
/// info, query or fragment.
pub fn parse_allowlist_entry(key: &str, entry: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(entry)
        .map_err(|error| ConfigError::invalid(key, format!("{entry:?} is not a URL: {error}")))?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if !plain {
        return Err(ConfigError::invalid(
            key,
            format!("{entry:?} must be an http or https URL without user info, query or fragment"),
        ));
    }
    Ok(url)
}

/// Serializes a map with every value replaced by [`REDACTED`].
fn origin_only<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    match reqwest::Url::parse(url) {
        Ok(parsed) => serializer.serialize_str(&format!(
            "{}/{REDACTED}",
            parsed.origin().ascii_serialization()
        )),
        Err(_) => serializer.serialize_str(REDACTED),
    }
}

fn redact_values<S: Serializer>(
    map: &BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.keys().map(|key| (key, REDACTED)))
}
