//! Secrets given inline or as a path to a file, never printed.

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, Serializer};

use super::ConfigError;

/// The text `herald check-config` prints in place of a secret.
pub const REDACTED: &str = "[redacted]";

/// A loaded secret. `Debug` and `Serialize` print only [`REDACTED`].
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Resolves a secret from its inline value (config key `key`) or its file (config key
/// `file_key`). Exactly one of the two must be set. Surrounding whitespace in a file is
/// trimmed, so a trailing newline does not become part of a key.
pub(crate) fn resolve(
    key: &str,
    file_key: &str,
    inline: Option<&SecretString>,
    file: Option<&PathBuf>,
) -> Result<Secret, ConfigError> {
    let inline = inline.filter(|value| !value.expose_secret().is_empty());
    let file = file.filter(|path| !path.as_os_str().is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            format!("is set both inline and as `{file_key}`; set only one"),
        )),
        (Some(value), None) => Ok(Secret(value.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigError::invalid(
                    file_key,
                    format!("failed to read {}: {error}", path.display()),
                )
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(ConfigError::invalid(
                    file_key,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Secret::new(text))
        }
        (None, None) => Err(ConfigError::invalid(
            key,
            format!(
                "is missing: set it through the environment ({}) or give `{file_key}`",
                env_name(key)
            ),
        )),
    }
}

/// Returns the environment variable that sets `key`: `providers.x.api_key` becomes
/// `HERALD__PROVIDERS__X__API_KEY`.
pub(crate) fn env_name(key: &str) -> String {
    format!(
        "{}__{}",
        super::ENV_PREFIX,
        key.replace('.', "__").to_uppercase()
    )
}

/// Serializes an optional inline secret as [`REDACTED`] when set.
pub(crate) fn redact_option<S: Serializer>(
    value: &Option<SecretString>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(secret) if !secret.expose_secret().is_empty() => serializer.serialize_str(REDACTED),
        _ => serializer.serialize_none(),
    }
}
