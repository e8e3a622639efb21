//! FCM HTTP v1 adapter.

use async_trait::async_trait;

use super::{Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, FcmConfig};

pub struct FcmSender {
    _client: reqwest::Client,
}

impl FcmSender {
    pub fn new(
        key: &str,
        config: &FcmConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        config.service_account(key)?;
        Ok(FcmSender { _client: client })
    }
}

#[async_trait]
impl Provider for FcmSender {
    async fn send(&self, _request: SendRequest<'_>) -> SendResult {
        Err(SendError::permanent("not implemented"))
    }
}
