//! The HTTP client shared by every adapter, and helpers for reading provider replies.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::SendError;
use crate::config::HttpConfig;

/// Builds the one pooled client all adapters share. Redirects are not followed: a provider
/// API that redirects is misconfigured, and following could resend a request elsewhere.
pub fn build_client(config: &HttpConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.connect_timeout())
        .timeout(config.request_timeout())
        .pool_idle_timeout(config.pool_idle_timeout())
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .redirect(reqwest::redirect::Policy::none())
        .build()
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
