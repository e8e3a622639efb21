//! Twilio Programmable Messaging adapter: create one Message per attempt.
//!
//! The request is a form-encoded `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with HTTP Basic auth. Twilio replies 201 with the Message resource, whose `sid` is the
//! message id, and reports errors as `{"code", "message", "more_info", "status"}`. Its
//! numeric `code` decides the class before the HTTP status does, because some codes share
//! a status with errors of another kind.

use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use serde::Deserialize;

use super::http::{self, Reply};
use super::{Delivered, ErrorClass, Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, Secret, TwilioConfig};
use crate::job::{Notification, SmsMessage};

/// The `To` number is not a valid phone number.
const INVALID_TO: u32 = 21211;
/// The recipient replied STOP to this sender, so Twilio blocks messages until they opt in.
const UNSUBSCRIBED: u32 = 21610;
/// The queue of the `From` number is full. Twilio returns it with HTTP 400, but a later
/// attempt may succeed once the queue drains.
const QUEUE_FULL: u32 = 21611;
/// The `To` number is not a mobile number.
const NOT_MOBILE: u32 = 21614;
/// The credentials were rejected, or the account is suspended.
const AUTHENTICATION_FAILED: u32 = 20003;
/// Too many concurrent requests. Twilio did not process the request.
const TOO_MANY_REQUESTS: u32 = 20429;

pub struct TwilioSender {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The section path, such as `providers.twilio`, for reloading the secret.
    key: String,
    config: TwilioConfig,
    /// The auth token or API key secret, replaced by [`Provider::invalidate_credentials`]
    /// when it is read from a file that has since been rotated.
    auth_token: RwLock<Secret>,
}

impl TwilioSender {
    pub fn new(
        key: &str,
        config: &TwilioConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let path = format!("/2010-04-01/Accounts/{}/Messages.json", config.account_sid);
        Ok(TwilioSender {
            client,
            url: http::endpoint(key, &config.base_url, &path)?,
            key: key.to_owned(),
            config: config.clone(),
            auth_token: RwLock::new(config.auth_token(key)?),
        })
    }

    /// Returns the form fields of the Message to create.
    fn form<'a>(&'a self, sms: &'a SmsMessage) -> [(&'static str, &'a str); 3] {
        let sender = if self.config.from.is_empty() {
            (
                "MessagingServiceSid",
                self.config.messaging_service_sid.as_str(),
            )
        } else {
            ("From", self.config.from.as_str())
        };
        [("To", sms.to.expose()), sender, ("Body", &sms.body)]
    }

    fn auth_token(&self) -> Secret {
        self.auth_token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl Provider for TwilioSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Sms(sms) = request.notification else {
            return Err(SendError::permanent(format!(
                "Twilio sends SMS, not {}",
                request.notification.kind()
            )));
        };

        let auth_token = self.auth_token();
        let response = self
            .client
            .post(self.url.clone())
            .basic_auth(self.config.basic_auth_user(), Some(auth_token.expose()))
            .form(&self.form(sms))
            .send()
            .await
            .map_err(|error| http::transport_error(&error))?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "Twilio replied");

        classify(&reply, &[sms.to.expose(), &self.config.account_sid])
    }

    /// Reads the auth token again, so a token file rotated since start takes effect. An
    /// inline token reads back unchanged.
    fn invalidate_credentials(&self) {
        match self.config.auth_token(&self.key) {
            Ok(token) => {
                *self
                    .auth_token
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = token;
            }
            Err(error) => {
                tracing::warn!(
                    provider = %self.key,
                    error = %error,
                    "failed to reload the Twilio auth token; keeping the current one"
                );
            }
        }
    }
}

#[derive(Deserialize)]
struct MessageBody {
    sid: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<u32>,
    message: Option<String>,
}

/// Maps a create-Message reply to an outcome. `sensitive` lists values that must not reach
/// the error message: the recipient and the account SID.
fn classify(reply: &Reply, sensitive: &[&str]) -> SendResult {
    if reply.is_success() {
        let sid = serde_json::from_slice::<MessageBody>(&reply.body)
            .ok()
            .and_then(|body| body.sid);
        return Ok(Delivered {
            message_id: sid,
            status: reply.status,
        });
    }

    let body = serde_json::from_slice::<ErrorBody>(&reply.body).ok();
    let code = body.as_ref().and_then(|body| body.code);
    let message = match body.and_then(|body| body.message) {
        Some(message) => http::provider_message(&message, sensitive),
        None => format!(
            "Twilio returned HTTP {} without an error message",
            reply.status
        ),
    };

    let error = match (code, reply.status) {
        (Some(INVALID_TO | UNSUBSCRIBED | NOT_MOBILE), _) => {
            SendError::permanent(message).recipient_invalid()
        }
        (Some(QUEUE_FULL | TOO_MANY_REQUESTS), _) | (_, 429) => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        (Some(AUTHENTICATION_FAILED), _) | (_, 401) => {
            SendError::new(ErrorClass::Credentials, message)
        }
        (_, 500..=599) => SendError::transient(message).with_retry_after(reply.retry_after()),
        _ => SendError::permanent(message),
    };
    let error = error.with_status(reply.status);
    match code {
        Some(code) => Err(error.with_code(code.to_string())),
        None => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply::for_test(status, body)
    }

    fn twilio_error(status: u16, code: u32, message: &str) -> Reply {
        let body = serde_json::json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        });
        reply(status, &body.to_string())
    }

    fn error_of(reply: &Reply) -> SendError {
        classify(reply, &["+15555550123", "AC123"]).unwrap_err()
    }

    #[test]
    fn created_message_keeps_sid() {
        let body = r#"{"sid":"SM0123","status":"queued","error_code":null}"#;
        let delivered = classify(&reply(201, body), &[]).unwrap();
        assert_eq!(delivered.message_id.as_deref(), Some("SM0123"));
        assert_eq!(delivered.status, 201);
    }

    #[test]
    fn recipient_errors_mark_recipient_invalid() {
        for code in [INVALID_TO, UNSUBSCRIBED, NOT_MOBILE] {
            let error = error_of(&twilio_error(400, code, "rejected"));
            assert_eq!(error.class, ErrorClass::Permanent, "code {code}");
            assert!(error.recipient_invalid, "code {code}");
            assert_eq!(error.code, Some(code.to_string()));
            assert_eq!(error.status, Some(400));
        }
    }

    #[test]
    fn invalid_to_message_is_redacted() {
        let message = "The 'To' number +15555550123 is not a valid phone number.";
        let error = error_of(&twilio_error(400, INVALID_TO, message));
        assert_eq!(
            error.message,
            "The 'To' number <redacted> is not a valid phone number."
        );
    }

    #[test]
    fn queue_full_is_rate_limited_despite_400() {
        let error = error_of(&twilio_error(400, QUEUE_FULL, "queue full"));
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert!(!error.recipient_invalid);
        assert_eq!(error.code.as_deref(), Some("21611"));
    }

    #[test]
    fn too_many_requests_is_rate_limited() {
        let mut reply = twilio_error(429, TOO_MANY_REQUESTS, "Too Many Requests");
        reply
            .headers
            .insert(RETRY_AFTER, HeaderValue::from_static("3"));
        let error = error_of(&reply);
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn authentication_failure_is_credentials() {
        let error = error_of(&twilio_error(401, AUTHENTICATION_FAILED, "Authenticate"));
        assert_eq!(error.class, ErrorClass::Credentials);
        assert_eq!(error.code.as_deref(), Some("20003"));
    }

    #[test]
    fn unauthorized_without_body_is_credentials() {
        let error = error_of(&reply(401, ""));
        assert_eq!(error.class, ErrorClass::Credentials);
        assert_eq!(error.code, None);
    }

    #[test]
    fn other_client_errors_are_permanent() {
        let not_found = error_of(&twilio_error(
            404,
            20404,
            "The requested resource /2010-04-01/Accounts/AC123/Messages.json was not found",
        ));
        assert_eq!(not_found.class, ErrorClass::Permanent);
        assert!(!not_found.recipient_invalid);
        assert!(!not_found.message.contains("AC123"));

        let geo = error_of(&twilio_error(
            400,
            21408,
            "Permission to send an SMS has not been enabled for the region",
        ));
        assert_eq!(geo.class, ErrorClass::Permanent);
        assert!(!geo.recipient_invalid);
    }

    #[test]
    fn server_error_is_transient() {
        let error = error_of(&reply(502, "<html>Bad Gateway</html>"));
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.status, Some(502));
        assert_eq!(error.code, None);
    }
}
