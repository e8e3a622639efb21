//! Twilio Messages API adapter.

use async_trait::async_trait;

use super::{Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, TwilioConfig};

pub struct TwilioSender {
    _client: reqwest::Client,
}

impl TwilioSender {
    pub fn new(
        key: &str,
        config: &TwilioConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        config.auth_token(key)?;
        Ok(TwilioSender { _client: client })
    }
}

#[async_trait]
impl Provider for TwilioSender {
    async fn send(&self, _request: SendRequest<'_>) -> SendResult {
        Err(SendError::permanent("not implemented"))
    }
}
