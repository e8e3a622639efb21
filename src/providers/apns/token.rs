//! APNs provider tokens: ES256 JWTs signed with the team's `.p8` key, reused for a
//! configured interval and replaced after it.
//!
//! Apple rejects a token older than one hour (403 `ExpiredProviderToken`) and throttles a
//! team that replaces its token more often than every 20 minutes (429
//! `TooManyProviderTokenUpdates`), so one token is shared by every send until it is due.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{ConfigError, Secret};
use crate::providers::SendError;

/// Signs, caches and replaces the provider token.
pub(super) struct ProviderTokens {
    team_id: String,
    key_id: String,
    key: EncodingKey,
    refresh: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: Option<CachedToken>,
    /// The `iat` of the last token signed, so a replacement never repeats it. ES256 signing
    /// is deterministic here, and a token with the same claims would be the same token.
    last_issued_at: u64,
}

struct CachedToken {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl ProviderTokens {
    /// Reads the PEM signing key and signs one token to reject a broken key at start.
    /// `key_field` names the config key in errors, which never quote the key.
    pub(super) fn new(
        key_field: &str,
        team_id: &str,
        key_id: &str,
        pem: &Secret,
        refresh: Duration,
    ) -> Result<ProviderTokens, ConfigError> {
        let invalid = || {
            ConfigError::invalid(
                key_field,
                "is not a P-256 private key in PEM form (the .p8 file from Apple)",
            )
        };
        let key = EncodingKey::from_ec_pem(pem.expose().as_bytes()).map_err(|_| invalid())?;
        let tokens = ProviderTokens {
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            key,
            refresh,
            state: Mutex::default(),
        };
        tokens.sign(0).map_err(|_| invalid())?;
        Ok(tokens)
    }

    /// Returns the current token, signing a new one when none is cached or the cached one
    /// is due for replacement.
    pub(super) fn current(&self) -> Result<Secret, SendError> {
        self.current_at(Instant::now())
    }

    fn current_at(&self, now: Instant) -> Result<Secret, SendError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = state
            .current
            .as_ref()
            .filter(|token| now < token.refresh_at)
        {
            return Ok(token.value.clone());
        }

        let issued_at = unix_now().max(state.last_issued_at + 1);
        let value = self.sign(issued_at).map_err(|error| {
            SendError::permanent(format!("failed to sign the APNs provider token: {error}"))
                .with_code("token_signing")
        })?;
        tracing::debug!(issued_at, "signed a new APNs provider token");
        let value = Secret::new(value);
        state.last_issued_at = issued_at;
        state.current = Some(CachedToken {
            value: value.clone(),
            refresh_at: now + self.refresh,
        });
        Ok(value)
    }

    /// Drops the cached token, so the next send signs a new one.
    pub(super) fn invalidate(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.current = None;
    }

    fn sign(&self, issued_at: u64) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let claims = Claims {
            iss: &self.team_id,
            iat: issued_at,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key made for these tests only (PKCS #8 PEM, as Apple's `.p8` files are).
    fn test_key() -> Secret {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let key = p256::SecretKey::from_slice(&[7; 32]).unwrap();
        Secret::new(key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string())
    }

    fn tokens(refresh_secs: u64) -> ProviderTokens {
        let refresh = Duration::from_secs(refresh_secs);
        ProviderTokens::new("k", "TEAM123456", "KEY1234567", &test_key(), refresh).unwrap()
    }

    #[test]
    fn token_is_reused_until_refresh() {
        let tokens = tokens(1800);
        let start = Instant::now();
        let first = tokens.current_at(start).unwrap();

        let reused = tokens
            .current_at(start + Duration::from_secs(1799))
            .unwrap();
        let replaced = tokens
            .current_at(start + Duration::from_secs(1800))
            .unwrap();

        assert_eq!(first.expose(), reused.expose());
        assert_ne!(first.expose(), replaced.expose());
    }

    #[test]
    fn invalidated_token_is_replaced_at_once() {
        let tokens = tokens(3600);
        let first = tokens.current().unwrap();

        tokens.invalidate();
        let second = tokens.current().unwrap();

        assert_ne!(first.expose(), second.expose());
    }

    #[test]
    fn non_key_pem_is_rejected_without_quoting_it() {
        let pem = Secret::new("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let result = ProviderTokens::new(
            "providers.apns.private_key",
            "TEAM123456",
            "KEY1234567",
            &pem,
            Duration::from_secs(3000),
        );
        let Err(error) = result else {
            panic!("a broken key was accepted");
        };
        let message = error.to_string();
        assert!(message.contains("providers.apns.private_key"), "{message}");
        assert!(!message.contains("AAAA"), "{message}");
    }
}
