//! Classification of `SendEmail` replies by SES's error type.
//!
//! SES (a rest-json AWS API) names the error type in the `x-amzn-ErrorType` header, as
//! `Type` or `Type:namespace-url`, and usually also in the body as `__type` (possibly
//! `namespace#Type`) or `code`, beside a `message`.

use serde::Deserialize;

use crate::providers::http::{self, Reply};
use crate::providers::{Delivered, ErrorClass, SendError, SendResult};

#[derive(Deserialize)]
struct SentBody {
    #[serde(rename = "MessageId")]
    message_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type", alias = "code", alias = "Code")]
    error_type: Option<String>,
    #[serde(alias = "Message")]
    message: Option<String>,
}

/// Maps a `SendEmail` reply to an outcome. `sensitive` lists values that must not reach
/// the error message: SES quotes unverified addresses back.
pub(super) fn classify(reply: &Reply, sensitive: &[&str]) -> SendResult {
    if reply.is_success() {
        let id = serde_json::from_slice::<SentBody>(&reply.body)
            .ok()
            .and_then(|body| body.message_id);
        return Ok(Delivered {
            message_id: id,
            status: reply.status,
        });
    }

    let body = serde_json::from_slice::<ErrorBody>(&reply.body).ok();
    let error_type = reply
        .header("x-amzn-errortype")
        .map(str::to_owned)
        .or_else(|| body.as_ref().and_then(|body| body.error_type.clone()))
        .map(|raw| short_type(&raw).to_owned());
    let message = match body.and_then(|body| body.message) {
        Some(message) => http::provider_message(&message, sensitive),
        None => format!(
            "SES returned HTTP {} without an error message",
            reply.status
        ),
    };

    let error = class_of(error_type.as_deref(), reply.status, message, reply);
    let error = error.with_status(reply.status);
    Err(match error_type {
        Some(error_type) => error.with_code(error_type),
        None => error,
    })
}

/// Strips the namespace from an error type: `MessageRejected:http://…` and
/// `com.amazonaws.sesv2#MessageRejected` both become `MessageRejected`.
fn short_type(raw: &str) -> &str {
    let raw = raw.split(':').next().unwrap_or(raw);
    raw.rsplit('#').next().unwrap_or(raw).trim()
}

fn class_of(error_type: Option<&str>, status: u16, message: String, reply: &Reply) -> SendError {
    match (error_type, status) {
        // TooManyRequestsException (429), and ThrottlingException, which AWS's SES guide
        // names for the account's sending quotas ("Maximum sending rate exceeded", "Daily
        // message quota exceeded") and advises retrying within 10 minutes. The SendEmail
        // reference also lists LimitExceededException without saying which limit, so it is
        // retried later the same way.
        (
            Some(
                "TooManyRequestsException"
                | "LimitExceededException"
                | "ThrottlingException"
                | "Throttling",
            ),
            _,
        )
        | (_, 429) => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        // The whole account cannot send until someone acts, so every message fails alike.
        (Some(kind @ ("AccountSuspendedException" | "SendingPausedException")), _) => {
            tracing::error!(
                error.code = kind,
                "SES refuses to send from this account; sending stays stopped until it is resumed in AWS"
            );
            SendError::permanent(message)
        }
        // Signature and credential errors (InvalidSignatureException,
        // UnrecognizedClientException, ExpiredTokenException, IncompleteSignatureException,
        // AccessDeniedException, …) come with 403. Reloading rotated credential files may
        // fix them.
        (_, 401 | 403) => SendError::new(ErrorClass::Credentials, message),
        (_, 500..=599) => SendError::transient(message).with_retry_after(reply.retry_after()),
        // MessageRejected, MailFromDomainNotVerifiedException, BadRequestException,
        // NotFoundException (404) and any other client error.
        _ => SendError::permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn ses_error(status: u16, error_type: &str, message: &str) -> Reply {
        let mut reply =
            Reply::for_test(status, &serde_json::json!({"message": message}).to_string());
        reply.headers.insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_str(&format!(
                "{error_type}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"
            ))
            .unwrap(),
        );
        reply
    }

    fn error_of(reply: &Reply) -> SendError {
        classify(reply, &["bob@example.com"]).unwrap_err()
    }

    #[test]
    fn sent_message_keeps_id() {
        let reply = Reply::for_test(
            200,
            r#"{"MessageId":"0100018c-abcd-ef01-2345-6789abcdef01-000000"}"#,
        );
        let delivered = classify(&reply, &[]).unwrap();
        assert_eq!(
            delivered.message_id.as_deref(),
            Some("0100018c-abcd-ef01-2345-6789abcdef01-000000")
        );
    }

    #[test]
    fn error_types_map_to_classes() {
        let cases = [
            (400, "MessageRejected", ErrorClass::Permanent),
            (
                400,
                "MailFromDomainNotVerifiedException",
                ErrorClass::Permanent,
            ),
            (400, "AccountSuspendedException", ErrorClass::Permanent),
            (400, "SendingPausedException", ErrorClass::Permanent),
            (400, "BadRequestException", ErrorClass::Permanent),
            (404, "NotFoundException", ErrorClass::Permanent),
            (429, "TooManyRequestsException", ErrorClass::RateLimited),
            (400, "LimitExceededException", ErrorClass::RateLimited),
            (400, "ThrottlingException", ErrorClass::RateLimited),
            (403, "InvalidSignatureException", ErrorClass::Credentials),
            (403, "UnrecognizedClientException", ErrorClass::Credentials),
            (403, "ExpiredTokenException", ErrorClass::Credentials),
            (500, "InternalFailure", ErrorClass::Transient),
            (503, "ServiceUnavailable", ErrorClass::Transient),
        ];
        for (status, error_type, class) in cases {
            let error = error_of(&ses_error(status, error_type, "failed"));
            assert_eq!(error.class, class, "{error_type}");
            assert_eq!(error.code.as_deref(), Some(error_type));
            assert_eq!(error.status, Some(status));
            assert!(!error.recipient_invalid, "{error_type}");
        }
    }

    #[test]
    fn body_type_is_used_without_header() {
        let body = r#"{"__type":"com.amazonaws.sesv2#MessageRejected","message":"Email address is not verified."}"#;
        let error = error_of(&Reply::for_test(400, body));
        assert_eq!(error.code.as_deref(), Some("MessageRejected"));
        assert_eq!(error.message, "Email address is not verified.");
    }

    #[test]
    fn rejected_message_is_redacted() {
        let error = error_of(&ses_error(
            400,
            "MessageRejected",
            "Email address is not verified. The following identities failed the check in region EU-WEST-1: bob@example.com",
        ));
        assert!(
            !error.message.contains("bob@example.com"),
            "{}",
            error.message
        );
    }

    #[test]
    fn throttling_keeps_retry_after() {
        let mut reply = ses_error(429, "TooManyRequestsException", "Too many requests");
        reply
            .headers
            .insert(reqwest::header::RETRY_AFTER, HeaderValue::from_static("2"));
        let error = error_of(&reply);
        assert_eq!(error.retry_after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn bare_server_error_is_transient() {
        let error = error_of(&Reply::for_test(502, ""));
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.code, None);
    }
}
