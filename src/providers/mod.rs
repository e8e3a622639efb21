//! Provider adapters: one module per provider API, all behind the [`Provider`] trait.
//!
//! An adapter makes exactly one request per [`Provider::send`] call and turns the reply into
//! a [`SendResult`]. Retrying, rate limiting and in-flight caps belong to the caller (see
//! `crate::retry` and `crate::limits`), so that every attempt, retries included, passes
//! through them.

pub mod address;
pub mod apns;
pub mod dedupe;
mod error;
pub mod fcm;
pub mod http;
pub mod mailgun;
mod reloadable;
pub mod sendgrid;
pub mod ses;
pub mod smtp;
pub mod twilio;
pub mod vonage;
pub mod webhook;
pub mod webpush;

use std::sync::Arc;

use async_trait::async_trait;

pub use error::{ErrorClass, SendError};

use crate::config::{ConfigError, HttpConfig, ProviderConfig};
use crate::job::{JobId, Notification, PushPlatform};
use crate::metrics::Metrics;

/// The message and job id of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct SendRequest<'a> {
    pub job_id: &'a JobId,
    pub notification: &'a Notification,
}

/// A provider's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The provider's id for the accepted message, when its reply carries one.
    pub message_id: Option<String>,
    /// The HTTP status of the reply, or the SMTP reply code.
    pub status: u16,
}

/// The outcome of one attempt.
pub type SendResult = Result<Delivered, SendError>;

/// One provider API. Implementations are shared across all workers.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Sends one attempt. Never retries and never waits for a rate limit.
    async fn send(&self, request: SendRequest<'_>) -> SendResult;

    /// Drops cached credentials, so the next attempt fetches or reloads them. Called after a
    /// reply classified as [`ErrorClass::Credentials`].
    fn invalidate_credentials(&self) {}

    /// Whether this adapter can send `notification`.
    fn supports(&self, notification: &Notification) -> bool {
        let _ = notification;
        true
    }
}

/// Error code of a push whose target platform no provider of the channel serves.
pub const UNSUPPORTED_PLATFORM: &str = "unsupported_platform";

/// Returns the permanent failure of a push to `platform` handed to `provider`, which
/// cannot send to it.
pub fn unsupported_platform(provider: &str, platform: PushPlatform) -> SendError {
    SendError::permanent(format!(
        "{provider} cannot send to push platform `{platform}`; route it to a provider of kind `{platform}`"
    ))
    .with_code(UNSUPPORTED_PLATFORM)
}

/// Builds the adapter for one configured provider. `name` is its key under `[providers]`.
/// HTTP adapters share `client`. APNs, Web Push and webhook providers build their own from
/// `http`: APNs speaks HTTP/2 only, and the other two check the addresses they connect to.
/// An SMTP provider opens its own connections.
pub fn build(
    name: &str,
    config: &ProviderConfig,
    client: &reqwest::Client,
    http: &HttpConfig,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let key = format!("providers.{name}");
    Ok(match config {
        ProviderConfig::Sendgrid(config) => {
            Arc::new(sendgrid::SendgridSender::new(&key, config, client.clone())?)
        }
        ProviderConfig::Twilio(config) => {
            Arc::new(twilio::TwilioSender::new(&key, config, client.clone())?)
        }
        ProviderConfig::Fcm(config) => Arc::new(fcm::FcmSender::new(&key, config, client.clone())?),
        ProviderConfig::Smtp(config) => Arc::new(smtp::SmtpSender::new(&key, config)?),
        ProviderConfig::Webhook(config) => Arc::new(webhook::WebhookSender::new(
            name,
            config,
            http,
            metrics.clone(),
        )?),
        ProviderConfig::Mailgun(config) => {
            Arc::new(mailgun::MailgunSender::new(&key, config, client.clone())?)
        }
        ProviderConfig::Ses(config) => Arc::new(ses::SesSender::new(&key, config, client.clone())?),
        ProviderConfig::Vonage(config) => {
            Arc::new(vonage::VonageSender::new(&key, config, client.clone())?)
        }
        ProviderConfig::Apns(config) => Arc::new(apns::ApnsSender::new(&key, config, http)?),
        ProviderConfig::Webpush(config) => {
            Arc::new(webpush::WebPushSender::new(&key, config, http)?)
        }
    })
}
