//! SendGrid v3 Mail Send adapter.

use async_trait::async_trait;

use super::{Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, SendgridConfig};

pub struct SendgridSender {
    _client: reqwest::Client,
}

impl SendgridSender {
    pub fn new(
        key: &str,
        config: &SendgridConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        config.api_key(key)?;
        Ok(SendgridSender { _client: client })
    }
}

#[async_trait]
impl Provider for SendgridSender {
    async fn send(&self, _request: SendRequest<'_>) -> SendResult {
        Err(SendError::permanent("not implemented"))
    }
}
