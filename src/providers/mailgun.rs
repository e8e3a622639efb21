//! Mailgun Messages API adapter: `POST /v3/{domain}/messages` with HTTP Basic auth.
//!
//! The body is `multipart/form-data`, the encoding Mailgun documents for this endpoint.
//! Mailgun replies 200 with `{"id": "<…@domain>", "message": "Queued. Thank you."}` and
//! reports errors as `{"message": "…"}` without an error code, so the class comes from
//! the HTTP status. The job id travels as the custom variable `v:herald_job_id`, which
//! Mailgun echoes in its events and webhooks. Mailgun documents no way to set the
//! `Message-Id` header, so none is set.

use async_trait::async_trait;
use reqwest::multipart::Form;
use serde::Deserialize;

use super::http::{self, Reply};
use super::reloadable::Reloadable;
use super::{Delivered, ErrorClass, Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, MailgunConfig, Secret};
use crate::job::{EmailMessage, Notification};

/// The HTTP Basic user of every Mailgun API key.
const BASIC_AUTH_USER: &str = "api";

pub struct MailgunSender {
    client: reqwest::Client,
    url: reqwest::Url,
    api_key: Reloadable<Secret>,
    from: String,
    test_mode: bool,
}

impl MailgunSender {
    pub fn new(
        key: &str,
        config: &MailgunConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let path = format!("/v3/{}/messages", config.domain);
        let section = config.clone();
        let section_key = key.to_owned();
        Ok(MailgunSender {
            client,
            url: http::endpoint(key, &config.base_url, &path)?,
            api_key: Reloadable::new(key, move || section.api_key(&section_key))?,
            from: config.from.clone(),
            test_mode: config.test_mode,
        })
    }

    fn form(&self, job_id: &str, email: &EmailMessage) -> Form {
        let mut form = Form::new()
            .text("from", self.from.clone())
            .text("to", email.to.expose().to_owned())
            .text("subject", email.subject.clone());
        if let Some(text) = &email.text {
            form = form.text("text", text.clone());
        }
        if let Some(html) = &email.html {
            form = form.text("html", html.clone());
        }
        form = form.text("v:herald_job_id", job_id.to_owned());
        if self.test_mode {
            form = form.text("o:testmode", "yes");
        }
        form
    }
}

#[async_trait]
impl Provider for MailgunSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Email(email) = request.notification else {
            return Err(SendError::permanent(format!(
                "Mailgun sends email, not {}",
                request.notification.kind()
            )));
        };

        let api_key = self.api_key.get();
        let response = self
            .client
            .post(self.url.clone())
            .basic_auth(BASIC_AUTH_USER, Some(api_key.expose()))
            .multipart(self.form(request.job_id.as_str(), email))
            .send()
            .await
            .map_err(|error| http::transport_error(&error))?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "Mailgun replied");

        classify(&reply, &[email.to.expose()])
    }

    /// Reads the API key again, so a key file rotated since start takes effect.
    fn invalidate_credentials(&self) {
        self.api_key.reload();
    }
}

#[derive(Deserialize)]
struct QueuedBody {
    id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

/// Maps a Messages reply to an outcome. `sensitive` lists values that must not reach the
/// error message.
fn classify(reply: &Reply, sensitive: &[&str]) -> SendResult {
    if reply.is_success() {
        let id = serde_json::from_slice::<QueuedBody>(&reply.body)
            .ok()
            .and_then(|body| body.id);
        return Ok(Delivered {
            message_id: id,
            status: reply.status,
        });
    }

    let body = serde_json::from_slice::<ErrorBody>(&reply.body).ok();
    let is_json = body.is_some();
    let message = match body.and_then(|body| body.message) {
        Some(message) => http::provider_message(&message, sensitive),
        None => {
            // A rejected key gets a plain-text `Forbidden` rather than JSON.
            let text = String::from_utf8_lossy(&reply.body);
            let text = text.trim();
            if text.is_empty() || text.len() > 100 {
                format!(
                    "Mailgun returned HTTP {} without an error message",
                    reply.status
                )
            } else {
                http::provider_message(text, sensitive)
            }
        }
    };

    let error = match reply.status {
        // 401: the key is wrong or missing. 403: the key is valid but lacks access.
        401 | 403 => SendError::new(ErrorClass::Credentials, message),
        429 => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        // Mailgun's store is eventually consistent, so a JSON 404 (such as a domain added
        // moments ago) may pass on a later attempt. A 404 without JSON is a wrong path.
        404 if is_json => SendError::transient(message).with_code("not_found"),
        500..=599 => SendError::transient(message).with_retry_after(reply.retry_after()),
        // 400 (a missing or invalid parameter, including an invalid `to` address), 404
        // without JSON, 413 and anything else Mailgun does not document for this endpoint.
        _ => SendError::permanent(message),
    };
    Err(error.with_status(reply.status))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    fn error_of(reply: &Reply) -> SendError {
        classify(reply, &["bob@example.com"]).unwrap_err()
    }

    #[test]
    fn queued_message_keeps_id() {
        let body = r#"{"id":"<20260101.1@mg.example.com>","message":"Queued. Thank you."}"#;
        let delivered = classify(&Reply::for_test(200, body), &[]).unwrap();
        assert_eq!(
            delivered.message_id.as_deref(),
            Some("<20260101.1@mg.example.com>")
        );
        assert_eq!(delivered.status, 200);
    }

    #[test]
    fn bad_request_is_permanent_and_redacted() {
        let body = r#"{"message":"'to' parameter is not a valid address: bob@example.com"}"#;
        let error = error_of(&Reply::for_test(400, body));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.status, Some(400));
        assert!(!error.recipient_invalid);
        assert_eq!(
            error.message,
            "'to' parameter is not a valid address: <redacted>"
        );
    }

    #[test]
    fn wrong_key_is_credentials() {
        for status in [401, 403] {
            let error = error_of(&Reply::for_test(status, "Forbidden"));
            assert_eq!(error.class, ErrorClass::Credentials, "HTTP {status}");
            assert_eq!(error.message, "Forbidden", "HTTP {status}");
        }
    }

    #[test]
    fn rate_limit_keeps_retry_after() {
        let mut reply = Reply::for_test(429, r#"{"message":"Too many requests"}"#);
        reply
            .headers
            .insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let error = error_of(&reply);
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn json_not_found_is_transient() {
        let error = error_of(&Reply::for_test(
            404,
            r#"{"message":"Domain not found: mg.example.com"}"#,
        ));
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.code.as_deref(), Some("not_found"));
    }

    #[test]
    fn plain_not_found_is_permanent() {
        let error = error_of(&Reply::for_test(404, "404 page not found"));
        assert_eq!(error.class, ErrorClass::Permanent);
    }

    #[test]
    fn server_error_is_transient() {
        let error = error_of(&Reply::for_test(500, ""));
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(
            error.message,
            "Mailgun returned HTTP 500 without an error message"
        );
    }
}
