//! Amazon SES API v2 adapter: `SendEmail`, a JSON `POST /v2/email/outbound-emails` signed
//! with AWS Signature Version 4.
//!
//! SES replies 200 with `{"MessageId": "…"}` once it accepts a message, and names each
//! error by its type in the `x-amzn-ErrorType` header (and in the body's `__type` or
//! `code`), which decides the class (see [`reply`]). The job id travels as the message
//! tag `herald_job_id`, which SES echoes in its event publishing. `SendEmail` has no
//! idempotency token.

mod reply;
mod signing;

use std::time::SystemTime;

use async_trait::async_trait;
use serde::Serialize;

use super::http;
use super::reloadable::Reloadable;
use super::{Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, SesConfig, SesCredentials};
use crate::job::{EmailMessage, Notification};

/// The name of the message tag that carries the job id.
const JOB_ID_TAG: &str = "herald_job_id";
const CONTENT_TYPE: &str = "application/json";
const CHARSET: &str = "UTF-8";

pub struct SesSender {
    client: reqwest::Client,
    url: reqwest::Url,
    region: String,
    credentials: Reloadable<SesCredentials>,
    from: String,
    configuration_set: Option<String>,
}

impl SesSender {
    pub fn new(
        key: &str,
        config: &SesConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let section = config.clone();
        let section_key = key.to_owned();
        let from = if config.from_name.is_empty() {
            config.from_email.clone()
        } else {
            // A quoted display name may contain commas and other special characters.
            let name = config.from_name.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{name}\" <{}>", config.from_email)
        };
        Ok(SesSender {
            client,
            url: http::endpoint(key, &config.base_url(), "/v2/email/outbound-emails")?,
            region: config.region.clone(),
            credentials: Reloadable::new(key, move || section.credentials(&section_key))?,
            from,
            configuration_set: Some(config.configuration_set.clone())
                .filter(|name| !name.is_empty()),
        })
    }

    fn body(&self, job_id: &str, email: &EmailMessage) -> Result<Vec<u8>, SendError> {
        let request = SendEmailRequest {
            from_email_address: &self.from,
            destination: Destination {
                to_addresses: [email.to.expose()],
            },
            content: Content {
                simple: Simple {
                    subject: Text::new(&email.subject),
                    body: Body {
                        text: email.text.as_deref().map(Text::new),
                        html: email.html.as_deref().map(Text::new),
                    },
                },
            },
            email_tags: [Tag {
                name: JOB_ID_TAG,
                value: tag_value(job_id),
            }],
            configuration_set_name: self.configuration_set.as_deref(),
        };
        serde_json::to_vec(&request)
            .map_err(|error| SendError::permanent(format!("failed to encode the request: {error}")))
    }
}

/// Returns the job id as a message tag value. SES allows only ASCII letters, digits, `_`
/// and `-` there, so each `.` and `:` of the job id becomes `_`.
// NOTE: the replacement can make two job ids share a tag value (`a.b` and `a_b`).
fn tag_value(job_id: &str) -> String {
    job_id.replace(['.', ':'], "_")
}

#[async_trait]
impl Provider for SesSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Email(email) = request.notification else {
            return Err(SendError::permanent(format!(
                "SES sends email, not {}",
                request.notification.kind()
            )));
        };

        let body = self.body(request.job_id.as_str(), email)?;
        let signature = signing::signature_headers(
            &self.credentials.get(),
            &self.region,
            self.url.as_str(),
            &[("content-type", CONTENT_TYPE)],
            &body,
            SystemTime::now(),
        )
        .map_err(|error| SendError::permanent(error.to_string()).with_code("signing"))?;

        let mut builder = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE);
        for (name, value) in signature {
            builder = builder.header(name, value);
        }
        let response = builder
            .body(body)
            .send()
            .await
            .map_err(|error| http::transport_error(&error))?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "SES replied");

        reply::classify(&reply, &[email.to.expose(), &self.from])
    }

    /// Reads the credentials again, so rotated secret or session token files take effect.
    fn invalidate_credentials(&self) {
        self.credentials.reload();
    }
}

/// The `SendEmail` request body, reduced to what Herald sends.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendEmailRequest<'a> {
    from_email_address: &'a str,
    destination: Destination<'a>,
    content: Content<'a>,
    email_tags: [Tag; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration_set_name: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Destination<'a> {
    to_addresses: [&'a str; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Content<'a> {
    simple: Simple<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Simple<'a> {
    subject: Text<'a>,
    body: Body<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<Text<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Text<'a> {
    data: &'a str,
    charset: &'static str,
}

impl<'a> Text<'a> {
    fn new(data: &'a str) -> Text<'a> {
        Text {
            data,
            charset: CHARSET,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    name: &'static str,
    value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_value_keeps_allowed_characters() {
        assert_eq!(tag_value("order-42_b"), "order-42_b");
        assert_eq!(tag_value("order.42:retry"), "order_42_retry");
    }
}
