//! OAuth2 access tokens for FCM, minted from the service account and cached.
//!
//! A token is minted with the JWT-bearer grant: an RS256 assertion signed with the
//! service-account key is posted to the token endpoint, which replies with
//! `{"access_token", "expires_in", "token_type"}`. The cached token is replaced a margin
//! before it expires, and concurrent sends that find no usable token wait for one mint.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::time::Instant;

use super::service_account::ServiceAccount;
use crate::config::Secret;
use crate::providers::http::{self, Reply};
use crate::providers::{ErrorClass, SendError};

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Token lifetime assumed when the reply omits `expires_in`. Google's tokens last one hour.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Mints, caches and drops FCM access tokens.
pub(super) struct TokenSource {
    client: reqwest::Client,
    token_url: reqwest::Url,
    account: ServiceAccount,
    refresh_margin: Duration,
    cached: Mutex<Option<AccessToken>>,
    /// Held while minting, so that one request reaches the token endpoint at a time.
    minting: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct AccessToken {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenError {
    error: Option<String>,
    error_description: Option<String>,
}

impl TokenSource {
    pub(super) fn new(
        client: reqwest::Client,
        token_url: reqwest::Url,
        account: ServiceAccount,
        refresh_margin: Duration,
    ) -> TokenSource {
        TokenSource {
            client,
            token_url,
            account,
            refresh_margin,
            cached: Mutex::new(None),
            minting: tokio::sync::Mutex::new(()),
        }
    }

    /// Returns a usable access token, minting one when none is cached or the cached one is
    /// due for refresh.
    pub(super) async fn access_token(&self) -> Result<Secret, SendError> {
        if let Some(token) = self.fresh_token() {
            return Ok(token);
        }
        let _minting = self.minting.lock().await;
        // Another send may have minted while this one waited for the lock.
        if let Some(token) = self.fresh_token() {
            return Ok(token);
        }

        // NOTE: a failed mint is not shared. Sends queued behind it each try their own mint
        // in turn, so an unreachable token endpoint sees one request per waiting send.
        let token = self.mint().await?;
        let value = token.value.clone();
        *self.lock_cache() = Some(token);
        Ok(value)
    }

    /// Drops the cached token, so the next send mints a new one.
    pub(super) fn invalidate(&self) {
        self.lock_cache().take();
    }

    fn fresh_token(&self) -> Option<Secret> {
        let cached = self.lock_cache();
        let token = cached.as_ref()?;
        (Instant::now() < token.refresh_at).then(|| token.value.clone())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<AccessToken>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn mint(&self) -> Result<AccessToken, SendError> {
        let issued_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let assertion = self.account.sign_assertion(issued_at).map_err(|error| {
            SendError::permanent(format!("failed to sign the OAuth2 assertion: {error}"))
                .with_code("token_signing")
        })?;

        let started = Instant::now();
        let response = self
            .client
            .post(self.token_url.clone())
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|error| token_transport_error(&error))?;
        let reply = http::read_reply(response).await.map_err(in_token_request)?;
        tracing::debug!(status = reply.status, "OAuth2 token endpoint replied");

        let (value, lifetime) = parse_token_reply(&reply)?;
        Ok(AccessToken {
            value,
            refresh_at: started + refresh_after(lifetime, self.refresh_margin),
        })
    }
}

/// Returns how long after the request a token of `lifetime` should be replaced: `margin`
/// before it expires, but never sooner than half its lifetime, so a margin as long as the
/// lifetime does not mint a token for every send.
fn refresh_after(lifetime: Duration, margin: Duration) -> Duration {
    lifetime - margin.min(lifetime / 2)
}

/// Reads the access token and its lifetime from a token endpoint reply, or classifies the
/// failure. Rejections of the grant are permanent because the same assertion from the
/// same key will be rejected again.
fn parse_token_reply(reply: &Reply) -> Result<(Secret, Duration), SendError> {
    if reply.is_success() {
        let token: TokenReply = serde_json::from_slice(&reply.body).map_err(|_| {
            SendError::transient("the OAuth2 token endpoint returned a reply without a token")
                .with_status(reply.status)
                .with_code("token_invalid_reply")
        })?;
        let lifetime = token
            .expires_in
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        return Ok((Secret::new(token.access_token), lifetime));
    }

    let body = serde_json::from_slice::<TokenError>(&reply.body).ok();
    let error = body.as_ref().and_then(|body| body.error.clone());
    let description = body.and_then(|body| body.error_description);
    let message = format!(
        "the OAuth2 token endpoint rejected the token request: {}",
        http::provider_message(
            description
                .as_deref()
                .or(error.as_deref())
                .unwrap_or("no description"),
            &[],
        )
    );
    let code = format!(
        "token_{}",
        error.unwrap_or_else(|| format!("http_{}", reply.status))
    );

    let error = match reply.status {
        429 => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        500..=599 => SendError::transient(message).with_retry_after(reply.retry_after()),
        _ => SendError::permanent(message),
    };
    Err(error.with_status(reply.status).with_code(code))
}

fn token_transport_error(error: &reqwest::Error) -> SendError {
    in_token_request(http::transport_error(error))
}

/// Marks an error as a failure of the token request rather than of the send.
fn in_token_request(mut error: SendError) -> SendError {
    error.message = format!("OAuth2 token {}", error.message);
    error
}

#[cfg(test)]
mod tests {

    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply::for_test(status, body)
    }

    #[test]
    fn token_reply_gives_token_and_lifetime() {
        let body = r#"{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}"#;
        let (token, lifetime) = parse_token_reply(&reply(200, body)).unwrap();
        assert_eq!(token.expose(), "ya29.abc");
        assert_eq!(lifetime, Duration::from_secs(3599));
    }

    #[test]
    fn invalid_grant_is_permanent() {
        let body = r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#;
        let error = parse_token_reply(&reply(400, body)).unwrap_err();
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.code.as_deref(), Some("token_invalid_grant"));
        assert!(
            error.message.ends_with("Invalid JWT Signature."),
            "{}",
            error.message
        );
    }

    #[test]
    fn invalid_client_is_permanent() {
        let body =
            r#"{"error":"invalid_client","error_description":"The OAuth client was not found."}"#;
        let error = parse_token_reply(&reply(401, body)).unwrap_err();
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.code.as_deref(), Some("token_invalid_client"));
    }

    #[test]
    fn server_error_is_transient() {
        let error = parse_token_reply(&reply(503, "")).unwrap_err();
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.code.as_deref(), Some("token_http_503"));
    }

    #[test]
    fn reply_without_token_is_transient() {
        let error = parse_token_reply(&reply(200, "{}")).unwrap_err();
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.code.as_deref(), Some("token_invalid_reply"));
    }

    #[test]
    fn refresh_comes_margin_before_expiry() {
        let hour = Duration::from_secs(3600);
        let five_minutes = Duration::from_secs(300);
        assert_eq!(refresh_after(hour, five_minutes), Duration::from_secs(3300));
    }

    #[test]
    fn refresh_waits_at_least_half_the_lifetime() {
        let lifetime = Duration::from_secs(60);
        let margin = Duration::from_secs(300);
        assert_eq!(refresh_after(lifetime, margin), Duration::from_secs(30));
    }
}
