//! SendGrid v3 Mail Send adapter: `POST /v3/mail/send` with a bearer API key.
//!
//! SendGrid replies 202 with an `X-Message-Id` header when it queues a message, and 200
//! without one in sandbox mode, where it only validates the request. Errors carry
//! `{"errors": [{"message", "field", "help"}]}` and no error code of their own, so the
//! class comes from the HTTP status.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::http::{self, Reply};
use super::{Delivered, ErrorClass, Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, Secret, SendgridConfig};
use crate::job::{EmailMessage, Notification};

pub struct SendgridSender {
    client: reqwest::Client,
    url: reqwest::Url,
    api_key: Secret,
    from_email: String,
    from_name: String,
}

impl SendgridSender {
    pub fn new(
        key: &str,
        config: &SendgridConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        Ok(SendgridSender {
            client,
            url: http::endpoint(key, &config.base_url, "/v3/mail/send")?,
            api_key: config.api_key(key)?,
            from_email: config.from_email.clone(),
            from_name: config.from_name.clone(),
        })
    }

    fn mail<'a>(&'a self, job_id: &'a str, email: &'a EmailMessage) -> Mail<'a> {
        let mut content = Vec::with_capacity(2);
        if let Some(text) = &email.text {
            content.push(Content {
                kind: "text/plain",
                value: text,
            });
        }
        if let Some(html) = &email.html {
            content.push(Content {
                kind: "text/html",
                value: html,
            });
        }
        Mail {
            personalizations: [Personalization {
                to: [Address {
                    email: email.to.expose(),
                    name: None,
                }],
                custom_args: CustomArgs {
                    herald_job_id: job_id,
                },
            }],
            from: Address {
                email: &self.from_email,
                name: Some(self.from_name.as_str()).filter(|name| !name.is_empty()),
            },
            subject: &email.subject,
            content,
        }
    }
}

#[async_trait]
impl Provider for SendgridSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Email(email) = request.notification else {
            return Err(SendError::permanent(format!(
                "SendGrid sends email, not {}",
                request.notification.kind()
            )));
        };

        let response = self
            .client
            .post(self.url.clone())
            .bearer_auth(self.api_key.expose())
            .json(&self.mail(request.job_id.as_str(), email))
            .send()
            .await
            .map_err(|error| http::transport_error(&error))?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "SendGrid replied");

        classify(&reply, SystemTime::now(), &[email.to.expose()])
    }
}

/// The Mail Send request body, reduced to what Herald sends.
#[derive(Serialize)]
struct Mail<'a> {
    personalizations: [Personalization<'a>; 1],
    from: Address<'a>,
    subject: &'a str,
    content: Vec<Content<'a>>,
}

#[derive(Serialize)]
struct Personalization<'a> {
    to: [Address<'a>; 1],
    custom_args: CustomArgs<'a>,
}

/// Custom arguments of the personalization. SendGrid echoes them in its Event Webhook, so
/// delivery events can be matched to Herald's jobs.
#[derive(Serialize)]
struct CustomArgs<'a> {
    herald_job_id: &'a str,
}

#[derive(Serialize)]
struct Address<'a> {
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct Content<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    value: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    field: Option<String>,
}

/// Maps a Mail Send reply to an outcome. `now` is the clock for `X-RateLimit-Reset`, and
/// `sensitive` lists values that must not reach the error message.
fn classify(reply: &Reply, now: SystemTime, sensitive: &[&str]) -> SendResult {
    if reply.is_success() {
        return Ok(Delivered {
            message_id: reply.header("x-message-id").map(str::to_owned),
            status: reply.status,
        });
    }

    let message = error_message(reply, sensitive);
    let error = match reply.status {
        // The key is static, so fetching it again cannot help: the key is wrong, revoked,
        // lacks the mail.send scope, or the account ran out of credits.
        401 => SendError::permanent(message).with_code("unauthorized"),
        429 => SendError::new(ErrorClass::RateLimited, message)
            .with_retry_after(rate_limit_reset(reply, now).or_else(|| reply.retry_after())),
        500..=599 => SendError::transient(message).with_retry_after(reply.retry_after()),
        // 400 (validation), 403 (unverified sender or a blocked key), 404, 406, 413, and
        // anything else SendGrid does not document for this endpoint.
        _ => SendError::permanent(message),
    };
    Err(error.with_status(reply.status))
}

/// Returns the time until `X-RateLimit-Reset`, which SendGrid gives in Unix epoch seconds.
fn rate_limit_reset(reply: &Reply, now: SystemTime) -> Option<Duration> {
    let reset = reply
        .header("x-ratelimit-reset")?
        .trim()
        .parse::<u64>()
        .ok()?;
    let reset = UNIX_EPOCH + Duration::from_secs(reset);
    Some(reset.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Takes the first entry of SendGrid's `errors` array as `field: message`, or describes the
/// status when the body has none.
fn error_message(reply: &Reply, sensitive: &[&str]) -> String {
    let first = serde_json::from_slice::<ErrorBody>(&reply.body)
        .ok()
        .and_then(|body| body.errors.into_iter().next());
    let text = match first {
        Some(ErrorItem {
            message: Some(message),
            field: Some(field),
        }) if !field.is_empty() => format!("{field}: {message}"),
        Some(ErrorItem {
            message: Some(message),
            ..
        }) => message,
        _ => format!(
            "SendGrid returned HTTP {} without an error message",
            reply.status
        ),
    };
    http::provider_message(&text, sensitive)
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Reply {
            status,
            headers: map,
            body: body.as_bytes().to_vec(),
        }
    }

    fn error_of(reply: &Reply) -> SendError {
        classify(reply, SystemTime::now(), &[]).unwrap_err()
    }

    #[test]
    fn accepted_keeps_message_id() {
        let delivered = classify(
            &reply(202, &[("X-Message-Id", "abc123")], ""),
            SystemTime::now(),
            &[],
        )
        .unwrap();
        assert_eq!(delivered.message_id.as_deref(), Some("abc123"));
        assert_eq!(delivered.status, 202);
    }

    #[test]
    fn sandbox_ok_has_no_message_id() {
        let delivered = classify(&reply(200, &[], ""), SystemTime::now(), &[]).unwrap();
        assert_eq!(delivered.message_id, None);
        assert_eq!(delivered.status, 200);
    }

    #[test]
    fn validation_error_is_permanent_with_field() {
        let body = r#"{"errors":[{"message":"The personalizations field is required.","field":"personalizations","help":null}]}"#;
        let error = error_of(&reply(400, &[], body));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.status, Some(400));
        assert_eq!(
            error.message,
            "personalizations: The personalizations field is required."
        );
        assert!(!error.recipient_invalid);
    }

    #[test]
    fn client_errors_are_permanent() {
        for status in [403, 404, 406, 413] {
            let body = r#"{"errors":[{"message":"rejected","field":null}]}"#;
            let error = error_of(&reply(status, &[], body));
            assert_eq!(error.class, ErrorClass::Permanent, "HTTP {status}");
            assert_eq!(error.message, "rejected", "HTTP {status}");
        }
    }

    #[test]
    fn unauthorized_is_permanent() {
        let body = r#"{"errors":[{"message":"The provided authorization grant is invalid, expired, or revoked","field":null}]}"#;
        let error = error_of(&reply(401, &[], body));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.code.as_deref(), Some("unauthorized"));
    }

    #[test]
    fn rate_limit_reads_reset_header() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers = [("X-RateLimit-Reset", "1700000007"), ("Retry-After", "60")];
        let error = classify(&reply(429, &headers, ""), now, &[]).unwrap_err();
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn rate_limit_falls_back_to_retry_after() {
        let error = error_of(&reply(429, &[("Retry-After", "4")], ""));
        assert_eq!(error.retry_after, Some(Duration::from_secs(4)));
    }

    #[test]
    fn rate_limit_without_hint() {
        let body = r#"{"errors":[{"field":null,"message":"too many requests"}]}"#;
        let error = error_of(&reply(429, &[], body));
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.retry_after, None);
        assert_eq!(error.message, "too many requests");
    }

    #[test]
    fn server_error_is_transient() {
        let error = error_of(&reply(503, &[("Retry-After", "2")], "unavailable"));
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(
            error.message,
            "SendGrid returned HTTP 503 without an error message"
        );
    }

    #[test]
    fn error_message_redacts_recipient() {
        let body = r#"{"errors":[{"message":"Does not contain a valid address: bob@example.com","field":"personalizations.0.to.0.email"}]}"#;
        let error = classify(
            &reply(400, &[], body),
            SystemTime::now(),
            &["bob@example.com"],
        )
        .unwrap_err();
        assert!(!error.message.contains("bob@example.com"));
    }
}
