//! VAPID (RFC 8292): the ES256 JWT and public key that identify Herald to push services.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde::Serialize;

use crate::config::{ConfigError, Secret};
use crate::providers::SendError;

/// Lifetime of a VAPID token. RFC 8292 allows at most 24 hours; half leaves room for clock
/// skew at the push service.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The application server's VAPID identity.
pub(super) struct Vapid {
    signing_key: EncodingKey,
    /// The public key in uncompressed form, base64url, as the `k` parameter.
    public_key: String,
    subject: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl Vapid {
    /// Reads the private key: PEM (PKCS #8 or SEC 1) or the base64url of its 32 bytes, as
    /// most VAPID key generators print it. `key_field` names the config key in errors.
    pub(super) fn new(
        key_field: &str,
        secret: &Secret,
        subject: &str,
    ) -> Result<Vapid, ConfigError> {
        let secret_key = parse_private_key(secret.expose().trim()).ok_or_else(|| {
            ConfigError::invalid(
                key_field,
                "is not a P-256 private key: give PEM or the base64url of its 32 bytes",
            )
        })?;
        let der = secret_key
            .to_pkcs8_der()
            .map_err(|_| ConfigError::invalid(key_field, "cannot be encoded as PKCS #8"))?;
        let public_point = secret_key.public_key().to_encoded_point(false);
        Ok(Vapid {
            signing_key: EncodingKey::from_ec_der(der.as_bytes()),
            public_key: URL_SAFE_NO_PAD.encode(public_point.as_bytes()),
            subject: subject.to_owned(),
        })
    }

    /// Returns the `Authorization` header value for a request to `audience`, the origin of
    /// the push endpoint: `vapid t=<JWT>, k=<public key>`.
    pub(super) fn authorization(&self, audience: &str) -> Result<String, SendError> {
        let expires = SystemTime::now() + TOKEN_LIFETIME;
        let claims = Claims {
            aud: audience,
            exp: expires
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            sub: &self.subject,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.signing_key)
                .map_err(|error| {
                    SendError::permanent(format!("failed to sign the VAPID token: {error}"))
                        .with_code("token_signing")
                })?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }
}

fn parse_private_key(text: &str) -> Option<p256::SecretKey> {
    if text.starts_with("-----BEGIN") {
        return p256::SecretKey::from_pkcs8_pem(text)
            .or_else(|_| p256::SecretKey::from_sec1_pem(text))
            .ok();
    }
    let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
    p256::SecretKey::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};
    use p256::pkcs8::LineEnding;

    use super::*;

    fn secret_key() -> p256::SecretKey {
        p256::SecretKey::from_slice(&[9; 32]).unwrap()
    }

    #[test]
    fn raw_and_pem_keys_match() {
        let key = secret_key();
        let raw = Secret::new(URL_SAFE_NO_PAD.encode(key.to_bytes()));
        let pem = Secret::new(key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string());

        let from_raw = Vapid::new("k", &raw, "mailto:ops@example.com").unwrap();
        let from_pem = Vapid::new("k", &pem, "mailto:ops@example.com").unwrap();

        assert_eq!(from_raw.public_key, from_pem.public_key);
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&from_raw.public_key).unwrap().len(),
            65
        );
    }

    #[test]
    fn token_verifies_with_public_key() {
        let key = secret_key();
        let raw = Secret::new(URL_SAFE_NO_PAD.encode(key.to_bytes()));
        let vapid = Vapid::new("k", &raw, "mailto:ops@example.com").unwrap();

        let header = vapid.authorization("https://push.example.net").unwrap();

        let (token, public_key) = header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        let point = URL_SAFE_NO_PAD.decode(public_key).unwrap();
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        let decoding = DecodingKey::from_ec_components(&x, &y).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://push.example.net"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "mailto:ops@example.com");
    }

    #[test]
    fn garbage_key_is_rejected_without_quoting_it() {
        let Err(error) = Vapid::new(
            "providers.webpush.vapid_private_key",
            &Secret::new("not-a-key"),
            "mailto:x@y.z",
        ) else {
            panic!("garbage was accepted as a key");
        };
        let message = error.to_string();
        assert!(message.contains("vapid_private_key"), "{message}");
        assert!(!message.contains("not-a-key"), "{message}");
    }
}
