//! The HTTP client shared by every adapter, and helpers for reading provider replies.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::SendError;
use crate::config::{ConfigError, HttpConfig};

/// Builds the one pooled client most adapters share.
pub fn build_client(config: &HttpConfig) -> reqwest::Result<reqwest::Client> {
    client_builder(config).build()
}

/// Returns a client builder with the `[http]` settings, for adapters that need a client of
/// their own. Redirects are not followed: a provider API that redirects is misconfigured,
/// and following could resend a request elsewhere.
pub fn client_builder(config: &HttpConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.connect_timeout())
        .timeout(config.request_timeout())
        .pool_idle_timeout(config.pool_idle_timeout())
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .redirect(reqwest::redirect::Policy::none())
}

/// Turns a failure to build an adapter's own client into a config error on `key`.
pub fn client_error(key: &str, error: &reqwest::Error) -> ConfigError {
    ConfigError::invalid(key, format!("failed to build the HTTP client: {error}"))
}

/// Joins a provider's configured base URL and an API path. `key` names the config section
/// in the error when the result is not a URL.
pub fn endpoint(key: &str, base_url: &str, path: &str) -> Result<reqwest::Url, ConfigError> {
    let joined = format!(
        "{}/{}",
        base_url.trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    reqwest::Url::parse(&joined).map_err(|error| {
        ConfigError::invalid(
            format!("{key}.base_url"),
            format!("does not form a valid request URL: {error}"),
        )
    })
}

/// Reads a `Retry-After` header in either of its forms: delay seconds or an HTTP date.
/// Returns `None` when the header is absent or unreadable. A date in the past is zero.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_retry_after(value, SystemTime::now())
}

/// Parses a `Retry-After` value relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Classifies a failure to get any reply. Every such failure is transient: a timeout or a
/// reset after the request was written may still have been accepted by the provider.
pub fn transport_error(error: &reqwest::Error) -> SendError {
    let code = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "transport"
    };
    SendError::transient(format!("request failed: {}", without_url(error))).with_code(code)
}

/// Maximum length of a provider error message in a [`SendError`], in characters.
const MAX_PROVIDER_MESSAGE_CHARS: usize = 300;

/// Reads a reply's status, headers and whole body. A body that fails to arrive is a
/// transport failure, like a request that gets no reply.
pub async fn read_reply(response: reqwest::Response) -> Result<Reply, SendError> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|error| transport_error(&error))?
        .to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A provider's reply, read in full.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// Builds a reply with no headers, for classification tests.
    #[cfg(test)]
    pub(crate) fn for_test(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Returns the value of header `name` as text, when present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// Returns the `Retry-After` hint, in either of its forms.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }
}

/// Prepares a message from a provider's error body for a [`SendError`]: each of `sensitive`
/// (a recipient, an account id) is replaced by `<redacted>`, and the text is cut to a few
/// hundred characters. Providers do quote the request back: Twilio's 21211 message names
/// the rejected number.
pub fn provider_message(message: &str, sensitive: &[&str]) -> String {
    let mut message = message.trim().to_owned();
    for value in sensitive.iter().filter(|value| !value.is_empty()) {
        message = message.replace(value, "<redacted>");
    }
    if message.chars().count() > MAX_PROVIDER_MESSAGE_CHARS {
        message = message.chars().take(MAX_PROVIDER_MESSAGE_CHARS).collect();
        message.push('…');
    }
    message
}

/// Renders a reqwest error without its URL, which can carry an account id or a device token.
fn without_url(error: &reqwest::Error) -> String {
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    match error.url() {
        Some(url) => chain.replace(url.as_str(), "<url>"),
        None => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_message_redacts_sensitive_values() {
        let message = "The 'To' number +15555550123 is not a valid phone number.";
        assert_eq!(
            provider_message(message, &["+15555550123", ""]),
            "The 'To' number <redacted> is not a valid phone number."
        );
    }

    #[test]
    fn provider_message_cuts_long_text() {
        let message = "x".repeat(1000);
        let kept = provider_message(&message, &[]);
        assert_eq!(kept.chars().count(), MAX_PROVIDER_MESSAGE_CHARS + 1);
        assert!(kept.ends_with('…'));
    }

    #[test]
    fn retry_after_reads_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_reads_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let later = "Sun, 06 Nov 1994 08:49:40 GMT";
        assert_eq!(parse_retry_after(later, now), Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let earlier = "Sun, 06 Nov 1994 08:00:00 GMT";
        assert_eq!(parse_retry_after(earlier, now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_rejects_garbage() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
