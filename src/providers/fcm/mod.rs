//! FCM HTTP v1 adapter: `POST /v1/projects/{project}/messages:send` with an OAuth2 bearer
//! token minted from a service account (see [`token`]).
//!
//! FCM replies 200 with `{"name": "projects/{project}/messages/{id}"}`. Errors use Google's
//! error model, `{"error": {"code", "message", "status", "details"}}`, where a `details`
//! entry of type `google.firebase.fcm.v1.FcmError` carries FCM's own `errorCode`. That code
//! decides the class when present, because one HTTP status covers both a dead token and a
//! bad message.

mod service_account;
mod token;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use self::service_account::ServiceAccount;
use self::token::TokenSource;
use super::dedupe;
use super::http::{self, Reply};
use super::{Delivered, ErrorClass, Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, FcmConfig};
use crate::job::{
    ChannelKind, DeviceToken, JobId, Notification, PushMessage, PushPlatform, PushTarget,
};

const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

pub struct FcmSender {
    client: reqwest::Client,
    url: reqwest::Url,
    tokens: TokenSource,
}

impl FcmSender {
    pub fn new(
        key: &str,
        config: &FcmConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let account_key = match &config.service_account_file {
            Some(path) if !path.as_os_str().is_empty() => format!("{key}.service_account_file"),
            _ => format!("{key}.service_account_json"),
        };
        let account = ServiceAccount::parse(&account_key, config.service_account(key)?.expose())?;

        let project = if config.project_id.is_empty() {
            account.project_id.as_str()
        } else {
            config.project_id.as_str()
        };
        if project.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.project_id"),
                "is required because the service account has no `project_id`",
            ));
        }
        let path = format!("/v1/projects/{project}/messages:send");
        let url = http::endpoint(key, &config.base_url, &path)?;

        let token_url = if config.token_url.is_empty() {
            &account.token_uri
        } else {
            &config.token_url
        };
        let token_url = reqwest::Url::parse(token_url).map_err(|error| {
            ConfigError::invalid(format!("{key}.token_url"), format!("is not a URL: {error}"))
        })?;

        let tokens = TokenSource::new(
            client.clone(),
            token_url,
            account,
            config.token_refresh_margin(),
        );
        Ok(FcmSender {
            client,
            url,
            tokens,
        })
    }
}

#[async_trait]
impl Provider for FcmSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Push(push) = request.notification else {
            return Err(SendError::permanent(format!(
                "FCM sends push notifications, not {}",
                request.notification.kind()
            )));
        };
        let PushTarget::Fcm(token) = &push.target else {
            return Err(super::unsupported_platform("FCM", push.target.platform()));
        };

        let access_token = self.tokens.access_token().await?;
        let response = self
            .client
            .post(self.url.clone())
            .bearer_auth(access_token.expose())
            .json(&SendBody::new(push, token, request.job_id))
            .send()
            .await
            .map_err(|error| http::transport_error(&error))?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "FCM replied");

        classify(&reply, &[token.expose()])
    }

    fn supports(&self, notification: &Notification) -> bool {
        matches!(notification, Notification::Push(push) if push.target.platform() == PushPlatform::Fcm)
    }

    fn invalidate_credentials(&self) {
        self.tokens.invalidate();
    }
}

/// The `messages:send` request body.
#[derive(Serialize)]
struct SendBody<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<PushNotification<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: &'a BTreeMap<String, String>,
    android: AndroidConfig,
    apns: PlatformHeaders<ApnsHeaders>,
    webpush: PlatformHeaders<WebpushHeaders>,
}

/// `message.android`: the collapse key, so a resent message replaces the first, and the TTL
/// when the job gives one.
#[derive(Serialize)]
struct AndroidConfig {
    collapse_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

#[derive(Serialize)]
struct PlatformHeaders<H> {
    headers: H,
}

/// Headers FCM passes on to APNs for iOS devices.
#[derive(Serialize)]
struct ApnsHeaders {
    #[serde(rename = "apns-collapse-id")]
    collapse_id: String,
}

/// Headers FCM passes on to the browser's push service.
#[derive(Serialize)]
struct WebpushHeaders {
    #[serde(rename = "Topic")]
    topic: String,
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

#[derive(Serialize)]
struct PushNotification<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
}

impl<'a> SendBody<'a> {
    fn new(push: &'a PushMessage, token: &'a DeviceToken, job_id: &JobId) -> SendBody<'a> {
        let title = push.title.as_deref();
        let body = push.body.as_deref();
        let notification =
            (title.is_some() || body.is_some()).then_some(PushNotification { title, body });
        let collapse_key = dedupe::collapse_key(job_id, ChannelKind::Push);
        SendBody {
            message: Message {
                token: token.expose(),
                notification,
                data: &push.data,
                android: AndroidConfig {
                    collapse_key: collapse_key.clone(),
                    ttl: push.ttl_secs.map(|ttl| format!("{ttl}s")),
                },
                apns: PlatformHeaders {
                    headers: ApnsHeaders {
                        collapse_id: collapse_key.clone(),
                    },
                },
                webpush: PlatformHeaders {
                    headers: WebpushHeaders {
                        topic: collapse_key,
                        ttl: push.ttl_secs.map(|ttl| ttl.to_string()),
                    },
                },
            },
        }
    }
}

#[derive(Deserialize)]
struct SendReply {
    name: Option<String>,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    message: Option<String>,
    status: Option<String>,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "@type")]
    kind: String,
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(rename = "fieldViolations", default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize)]
struct FieldViolation {
    field: Option<String>,
}

impl GoogleError {
    /// Returns FCM's own error code from the `FcmError` detail.
    fn fcm_code(&self) -> Option<&str> {
        self.details
            .iter()
            .find(|detail| detail.kind == FCM_ERROR_TYPE)
            .and_then(|detail| detail.error_code.as_deref())
    }

    /// Tells whether an `INVALID_ARGUMENT` error is about the registration token rather
    /// than the message. FCM has no separate code for this: it names the token in the
    /// message, or points a `BadRequest` field violation at `message.token`.
    fn blames_token(&self) -> bool {
        let message_names_token = self
            .message
            .as_deref()
            .is_some_and(|message| message.to_lowercase().contains("registration token"));
        let field_is_token = self
            .details
            .iter()
            .filter(|detail| detail.kind == BAD_REQUEST_TYPE)
            .flat_map(|detail| &detail.field_violations)
            .any(|violation| violation.field.as_deref() == Some("message.token"));
        message_names_token || field_is_token
    }
}

/// Maps a `messages:send` reply to an outcome. `sensitive` lists values that must not
/// reach the error message: the device token.
fn classify(reply: &Reply, sensitive: &[&str]) -> SendResult {
    if reply.is_success() {
        let name = serde_json::from_slice::<SendReply>(&reply.body)
            .ok()
            .and_then(|body| body.name);
        return Ok(Delivered {
            message_id: name,
            status: reply.status,
        });
    }

    let Ok(ErrorReply { error }) = serde_json::from_slice::<ErrorReply>(&reply.body) else {
        let message = format!("FCM returned HTTP {} without an error body", reply.status);
        return Err(class_by_status(reply, message).with_status(reply.status));
    };
    let message = http::provider_message(
        error.message.as_deref().unwrap_or("no error message"),
        sensitive,
    );
    let code = error
        .fcm_code()
        .or(error.status.as_deref())
        .map(str::to_owned);

    let classified = match (error.fcm_code(), reply.status) {
        (Some("UNREGISTERED" | "SENDER_ID_MISMATCH"), _) => {
            SendError::permanent(message).recipient_invalid()
        }
        // The APNs certificate or key, or the web push key, stored in the Firebase project
        // is invalid. A new access token cannot fix that.
        (Some("THIRD_PARTY_AUTH_ERROR"), _) => SendError::permanent(message),
        (Some("QUOTA_EXCEEDED"), _) => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        (Some("UNAVAILABLE" | "INTERNAL"), _) => {
            SendError::transient(message).with_retry_after(reply.retry_after())
        }
        (_, 400) if error.blames_token() => SendError::permanent(message).recipient_invalid(),
        _ => class_by_status(reply, message),
    };
    let classified = classified.with_status(reply.status);
    match code {
        Some(code) => Err(classified.with_code(code)),
        None => Err(classified),
    }
}

/// Classifies a reply by HTTP status alone, for errors without an FCM error code.
fn class_by_status(reply: &Reply, message: String) -> SendError {
    match reply.status {
        401 => SendError::new(ErrorClass::Credentials, message),
        429 => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        500..=599 => SendError::transient(message).with_retry_after(reply.retry_after()),
        _ => SendError::permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
    use serde_json::{Value, json};

    use super::*;

    fn reply(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: body.to_string().into_bytes(),
        }
    }

    fn google_error(status: u16, name: &str, message: &str, details: Value) -> Reply {
        reply(
            status,
            &json!({"error": {"code": status, "message": message, "status": name, "details": details}}),
        )
    }

    fn fcm_error(status: u16, name: &str, error_code: &str, message: &str) -> Reply {
        let details = json!([{"@type": FCM_ERROR_TYPE, "errorCode": error_code}]);
        google_error(status, name, message, details)
    }

    fn error_of(reply: &Reply) -> SendError {
        classify(reply, &["device-token-1"]).unwrap_err()
    }

    #[test]
    fn sent_message_keeps_name() {
        let body =
            json!({"name": "projects/herald-test/messages/0:1500415314455276%31bd1c9631bd1c96"});
        let delivered = classify(&reply(200, &body), &[]).unwrap();
        assert_eq!(
            delivered.message_id.as_deref(),
            Some("projects/herald-test/messages/0:1500415314455276%31bd1c9631bd1c96")
        );
    }

    #[test]
    fn unregistered_marks_token_invalid() {
        let error = error_of(&fcm_error(
            404,
            "NOT_FOUND",
            "UNREGISTERED",
            "Requested entity was not found.",
        ));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(error.recipient_invalid);
        assert_eq!(error.code.as_deref(), Some("UNREGISTERED"));
        assert_eq!(error.status, Some(404));
    }

    #[test]
    fn invalid_registration_token_marks_token_invalid() {
        let message = "The registration token is not a valid FCM registration token";
        let error = error_of(&fcm_error(
            400,
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            message,
        ));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(error.recipient_invalid);
        assert_eq!(error.code.as_deref(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn bad_data_value_keeps_token() {
        let message = "Invalid value at 'message.data[0].value' (TYPE_STRING), 12";
        let details = json!([{
            "@type": BAD_REQUEST_TYPE,
            "fieldViolations": [{"field": "message.data[0].value", "description": message}],
        }]);
        let error = error_of(&google_error(400, "INVALID_ARGUMENT", message, details));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(!error.recipient_invalid);
        assert_eq!(error.code.as_deref(), Some("INVALID_ARGUMENT"));
    }

    #[test]
    fn token_field_violation_marks_token_invalid() {
        let details = json!([{
            "@type": BAD_REQUEST_TYPE,
            "fieldViolations": [{"field": "message.token", "description": "Invalid token"}],
        }]);
        let error = error_of(&google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid token",
            details,
        ));
        assert!(error.recipient_invalid);
    }

    #[test]
    fn sender_mismatch_marks_token_invalid() {
        let error = error_of(&fcm_error(
            403,
            "PERMISSION_DENIED",
            "SENDER_ID_MISMATCH",
            "SenderId mismatch",
        ));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(error.recipient_invalid);
        assert_eq!(error.code.as_deref(), Some("SENDER_ID_MISMATCH"));
    }

    #[test]
    fn permission_denied_keeps_token() {
        let message = "Permission 'cloudmessaging.messages.create' denied";
        let error = error_of(&google_error(403, "PERMISSION_DENIED", message, json!([])));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(!error.recipient_invalid);
        assert_eq!(error.code.as_deref(), Some("PERMISSION_DENIED"));
    }

    #[test]
    fn third_party_auth_error_is_permanent() {
        let error = error_of(&fcm_error(
            401,
            "UNAUTHENTICATED",
            "THIRD_PARTY_AUTH_ERROR",
            "Auth error from APNS or Web Push Service",
        ));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(!error.recipient_invalid);
        assert_eq!(error.code.as_deref(), Some("THIRD_PARTY_AUTH_ERROR"));
    }

    #[test]
    fn unauthenticated_is_credentials() {
        let message = "Request had invalid authentication credentials.";
        let error = error_of(&google_error(401, "UNAUTHENTICATED", message, json!([])));
        assert_eq!(error.class, ErrorClass::Credentials);
        assert_eq!(error.code.as_deref(), Some("UNAUTHENTICATED"));
    }

    #[test]
    fn quota_exceeded_is_rate_limited() {
        let mut reply = fcm_error(
            429,
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
            "Quota exceeded",
        );
        reply
            .headers
            .insert(RETRY_AFTER, HeaderValue::from_static("60"));
        let error = error_of(&reply);
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.retry_after, Some(Duration::from_secs(60)));
        assert_eq!(error.code.as_deref(), Some("QUOTA_EXCEEDED"));
    }

    #[test]
    fn unavailable_is_transient() {
        let error = error_of(&fcm_error(
            503,
            "UNAVAILABLE",
            "UNAVAILABLE",
            "The service is currently unavailable.",
        ));
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.retry_after, None);
    }

    #[test]
    fn server_error_without_body_is_transient() {
        let error = error_of(&Reply {
            status: 500,
            headers: HeaderMap::new(),
            body: b"<html>oops</html>".to_vec(),
        });
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.code, None);
    }

    #[test]
    fn error_message_redacts_device_token() {
        let message = "Invalid registration token device-token-1";
        let error = error_of(&fcm_error(
            400,
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            message,
        ));
        assert!(
            !error.message.contains("device-token-1"),
            "{}",
            error.message
        );
    }

    #[test]
    fn notification_is_omitted_without_title_or_body() {
        let token = DeviceToken::parse("token", "device-token-1").unwrap();
        let push = PushMessage {
            target: PushTarget::Fcm(token.clone()),
            title: None,
            body: None,
            data: BTreeMap::from([("order".to_owned(), "42".to_owned())]),
            ttl_secs: None,
            apns: Default::default(),
        };
        let job_id = JobId::parse("order-42").unwrap();
        let body = serde_json::to_value(SendBody::new(&push, &token, &job_id)).unwrap();
        let message = &body["message"];
        assert_eq!(message["token"], "device-token-1");
        assert_eq!(message["data"], json!({"order": "42"}));
        assert!(message.get("notification").is_none(), "{body}");
    }

    #[test]
    fn collapse_keys_derive_from_job_and_channel() {
        let token = DeviceToken::parse("token", "device-token-1").unwrap();
        let push = PushMessage {
            target: PushTarget::Fcm(token.clone()),
            title: Some("Shipped".to_owned()),
            body: None,
            data: BTreeMap::new(),
            ttl_secs: Some(600),
            apns: Default::default(),
        };
        let job_id = JobId::parse("order-42").unwrap();
        let key = dedupe::collapse_key(&job_id, ChannelKind::Push);

        let body = serde_json::to_value(SendBody::new(&push, &token, &job_id)).unwrap();

        let message = &body["message"];
        assert_eq!(
            message["android"],
            json!({"collapse_key": key, "ttl": "600s"})
        );
        assert_eq!(message["apns"]["headers"]["apns-collapse-id"], key.as_str());
        assert_eq!(
            message["webpush"]["headers"],
            json!({"Topic": key, "TTL": "600"})
        );
    }
}
