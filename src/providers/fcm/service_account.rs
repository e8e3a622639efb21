//! The Google service-account key that FCM access tokens are minted from.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The OAuth2 scope that allows sending through FCM HTTP v1.
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Lifetime requested for each signed assertion, in seconds. Google accepts at most one hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// The fields of a service-account key file that Herald uses. The type implements neither
/// `Debug` nor `Serialize`, so the private key cannot reach a log line.
pub(super) struct ServiceAccount {
    pub(super) client_email: String,
    pub(super) token_uri: String,
    pub(super) project_id: String,
    key_id: Option<String>,
    signing_key: EncodingKey,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    token_uri: Option<String>,
}

/// The claims of the JWT-bearer assertion sent to the token endpoint.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

impl ServiceAccount {
    /// Parses a key file's JSON. `key` names the config key in errors, which never quote
    /// the JSON itself.
    pub(super) fn parse(key: &str, json: &str) -> Result<ServiceAccount, ConfigError> {
        let invalid = |reason: String| ConfigError::invalid(key, reason);
        let file: KeyFile = serde_json::from_str(json)
            .map_err(|error| invalid(format!("is not a service-account key JSON: {error}")))?;
        if let Some(kind) = file
            .kind
            .as_deref()
            .filter(|kind| *kind != "service_account")
        {
            return Err(invalid(format!(
                "has type `{kind}`; expected a `service_account` key"
            )));
        }
        let required = |value: Option<String>, field: &str| {
            value
                .filter(|value| !value.trim().is_empty())
                .ok_or_else(|| invalid(format!("is missing `{field}`")))
        };
        let client_email = required(file.client_email, "client_email")?;
        let token_uri = required(file.token_uri, "token_uri")?;
        let private_key = required(file.private_key, "private_key")?;
        reqwest::Url::parse(&token_uri)
            .map_err(|error| invalid(format!("has a `token_uri` that is not a URL: {error}")))?;
        let signing_key = EncodingKey::from_rsa_pem(private_key.as_bytes()).map_err(|_| {
            invalid("has a `private_key` that is not an RSA key in PEM form".into())
        })?;

        let account = ServiceAccount {
            client_email,
            token_uri,
            project_id: file.project_id.unwrap_or_default(),
            key_id: file.private_key_id.filter(|id| !id.is_empty()),
            signing_key,
        };
        // The PEM decoder accepts any well-formed block, and the key itself is only parsed
        // when signing, so sign once now to reject a broken key at start.
        account
            .sign_assertion(0)
            .map_err(|_| invalid("has a `private_key` that cannot sign RS256 tokens".into()))?;
        Ok(account)
    }

    /// Signs the RS256 assertion for a token request issued at `issued_at` (Unix seconds).
    /// Its audience is the key file's `token_uri`, even when requests go to another URL.
    pub(super) fn sign_assertion(
        &self,
        issued_at: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        let claims = Claims {
            iss: &self.client_email,
            scope: FCM_SCOPE,
            aud: &self.token_uri,
            iat: issued_at,
            exp: issued_at + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.signing_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_FILE: &str = include_str!("../../../tests/fixtures/fcm-service-account.json");

    fn key_file_without(field: &str) -> String {
        let mut json: serde_json::Value = serde_json::from_str(KEY_FILE).unwrap();
        json.as_object_mut().unwrap().remove(field);
        json.to_string()
    }

    fn parse_error(json: &str) -> String {
        match ServiceAccount::parse("providers.fcm.service_account_json", json) {
            Ok(_) => panic!("the key file was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn fixture_parses() {
        let account = ServiceAccount::parse("k", KEY_FILE).unwrap();
        assert_eq!(
            account.client_email,
            "herald-test@herald-test.iam.gserviceaccount.com"
        );
        assert_eq!(account.project_id, "herald-test");
        assert_eq!(account.token_uri, "https://oauth2.googleapis.com/token");
    }

    #[test]
    fn missing_fields_are_rejected() {
        for field in ["client_email", "private_key", "token_uri"] {
            let message = parse_error(&key_file_without(field));
            assert!(message.contains(field), "{message}");
        }
    }

    #[test]
    fn invalid_json_is_rejected() {
        let message = parse_error("{not json");
        assert!(
            message.contains("not a service-account key JSON"),
            "{message}"
        );
    }

    #[test]
    fn other_key_type_is_rejected() {
        let mut json: serde_json::Value = serde_json::from_str(KEY_FILE).unwrap();
        json["type"] = "authorized_user".into();
        let message = parse_error(&json.to_string());
        assert!(message.contains("authorized_user"), "{message}");
    }

    #[test]
    fn broken_private_key_is_rejected() {
        let mut json: serde_json::Value = serde_json::from_str(KEY_FILE).unwrap();
        let broken = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        json["private_key"] = broken.into();
        let message = parse_error(&json.to_string());
        assert!(message.contains("private_key"), "{message}");
        assert!(!message.contains("AAAA"), "{message}");
    }
}
