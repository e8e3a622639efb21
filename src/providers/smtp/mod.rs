//! SMTP adapter: one message per attempt through a pooled lettre transport.
//!
//! Each attempt takes a connection from the pool (opening one when none is idle), sends
//! MAIL FROM, RCPT TO and DATA, and returns the connection for the next attempt. SMTP has no
//! idempotency key, so every message carries a `Message-ID` derived from the job id and
//! channel, and an `X-Herald-Job-Id` header: a resend after an attempt whose outcome is
//! unknown repeats both, so the copies can be recognised downstream.

mod classify;
mod message;
mod transport;

use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use lettre::AsyncTransport;
use lettre::message::Mailbox;

use super::{Delivered, Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, SmtpConfig};
use crate::job::Notification;
use transport::Transport;

/// Sends email through one SMTP relay over a pool of connections.
pub struct SmtpSender {
    /// The section path, such as `providers.smtp`, for reloading the password.
    key: String,
    config: SmtpConfig,
    extra_ca: Option<Vec<u8>>,
    from: Mailbox,
    message_id_domain: String,
    timeout: Duration,
    /// Replaced by a transport with a new pool after a timed-out attempt or a credentials
    /// reload. Sends already under way keep the transport they cloned.
    transport: RwLock<Transport>,
}

impl SmtpSender {
    /// Builds the adapter. Must run inside a Tokio runtime, which the connection pool needs.
    pub fn new(key: &str, config: &SmtpConfig) -> Result<Self, ConfigError> {
        let from_key = format!("{key}.from_email");
        let address: lettre::Address = config.from_email.parse().map_err(|error| {
            ConfigError::invalid(&from_key, format!("is not an email address: {error}"))
        })?;
        let name = Some(config.from_name.clone()).filter(|name| !name.is_empty());
        let message_id_domain = if config.message_id_domain.is_empty() {
            address.domain().to_owned()
        } else {
            config.message_id_domain.clone()
        };

        let password = config.password(key)?;
        let extra_ca = config.extra_ca(key)?;
        let transport = transport::build(key, config, password.as_ref(), extra_ca.as_deref())?;
        Ok(SmtpSender {
            key: key.to_owned(),
            config: config.clone(),
            extra_ca,
            from: Mailbox::new(name, address),
            message_id_domain,
            timeout: config.timeout(),
            transport: RwLock::new(transport),
        })
    }

    fn transport(&self) -> Transport {
        self.transport
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Builds a transport with a new pool and the current password, and uses it for later
    /// attempts. Keeps the old one when the password cannot be read.
    fn replace_transport(&self) {
        let rebuilt = self.config.password(&self.key).and_then(|password| {
            transport::build(
                &self.key,
                &self.config,
                password.as_ref(),
                self.extra_ca.as_deref(),
            )
        });
        match rebuilt {
            Ok(transport) => {
                *self
                    .transport
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = transport;
            }
            Err(error) => tracing::warn!(
                provider = %self.key,
                error = %error,
                "failed to rebuild the SMTP transport; keeping the current one"
            ),
        }
    }
}

#[async_trait]
impl Provider for SmtpSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Email(email) = request.notification else {
            return Err(SendError::permanent(format!(
                "SMTP sends email, not {}",
                request.notification.kind()
            )));
        };
        let channel = request.notification.kind().as_str();
        let message_id = message::message_id(request.job_id, channel, &self.message_id_domain);
        let message = message::build(&self.from, &message_id, request.job_id, email)?;

        let transport = self.transport();
        let reply = match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(reply) => reply,
            Err(_elapsed) => {
                // The abandoned exchange may have left its connection in the middle of a
                // transaction, and lettre would return that connection to the pool. A new
                // pool keeps later attempts off it.
                tracing::debug!("replacing the SMTP connection pool after a timed-out attempt");
                self.replace_transport();
                return Err(SendError::transient(format!(
                    "SMTP exchange timed out after {} s",
                    self.timeout.as_secs()
                ))
                .with_code("timeout"));
            }
        };

        match reply {
            Ok(response) => {
                let status = u16::from(response.code());
                tracing::debug!(status, "SMTP relay accepted the message");
                Ok(Delivered {
                    message_id: Some(message_id),
                    status,
                })
            }
            Err(error) => Err(classify::classify(&error, &[email.to.expose()])),
        }
    }

    /// Reads the password again and opens new connections with it, so a rotated password
    /// file takes effect without a restart. An inline password reads back unchanged.
    fn invalidate_credentials(&self) {
        self.replace_transport();
    }
}
