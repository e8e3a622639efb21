//! Classification of a webhook receiver's reply.

use super::super::http::Reply;
use super::super::{Delivered, ErrorClass, SendError, SendResult};

/// Error code of a reply 410 Gone, after which the endpoint is disabled.
pub const ENDPOINT_GONE: &str = "endpoint_gone";
/// Error code of a 3xx reply. Redirects are not followed.
pub const REDIRECT: &str = "redirect";

/// Maps a receiver's reply to an outcome: 2xx delivered; 410 permanent with the recipient
/// invalid; 429 rate limited; 408 and 5xx transient; 3xx and other statuses permanent.
pub(super) fn classify(reply: &Reply) -> SendResult {
    let status = reply.status;
    if reply.is_success() {
        return Ok(Delivered {
            message_id: None,
            status,
        });
    }
    let message = format!("the webhook receiver replied HTTP {status}");
    let error = match status {
        410 => SendError::permanent(format!("{message} Gone; the endpoint is disabled"))
            .with_code(ENDPOINT_GONE)
            .recipient_invalid(),
        429 => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        408 | 500..=599 => SendError::transient(message).with_retry_after(reply.retry_after()),
        300..=399 => SendError::permanent(format!("{message}, a redirect, which is not followed"))
            .with_code(REDIRECT),
        _ => SendError::permanent(message),
    };
    Err(error.with_status(status))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    fn error_of(status: u16) -> SendError {
        classify(&Reply::for_test(status, "")).unwrap_err()
    }

    #[test]
    fn success_statuses_deliver() {
        for status in [200, 202, 204] {
            let delivered = classify(&Reply::for_test(status, "")).unwrap();
            assert_eq!(delivered.status, status);
        }
    }

    #[test]
    fn gone_marks_recipient_invalid() {
        let error = error_of(410);
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(error.recipient_invalid);
        assert_eq!(error.code.as_deref(), Some(ENDPOINT_GONE));
    }

    #[test]
    fn too_many_requests_keeps_retry_after() {
        let mut reply = Reply::for_test(429, "");
        reply
            .headers
            .insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let error = classify(&reply).unwrap_err();
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn timeouts_and_server_errors_are_transient() {
        for status in [408, 500, 502, 503, 504] {
            assert_eq!(error_of(status).class, ErrorClass::Transient, "{status}");
        }
    }

    #[test]
    fn redirects_are_permanent() {
        for status in [301, 302, 307, 308] {
            let error = error_of(status);
            assert_eq!(error.class, ErrorClass::Permanent, "{status}");
            assert_eq!(error.code.as_deref(), Some(REDIRECT));
            assert!(error.message.contains(&status.to_string()));
        }
    }

    #[test]
    fn other_client_errors_are_permanent() {
        for status in [400, 401, 403, 404, 413, 422] {
            let error = error_of(status);
            assert_eq!(error.class, ErrorClass::Permanent, "{status}");
            assert!(!error.recipient_invalid, "{status}");
        }
    }
}
