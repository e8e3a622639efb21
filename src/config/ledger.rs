//! The `[ledger]` section: the PostgreSQL delivery ledger.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize, Serializer};

use super::ConfigError;
use super::secret::{self, Secret, redact_option};
use super::sections::{HttpConfig, LimitsConfig, RetryConfig, mask_password, positive};

/// Shortest recipient hash key accepted, in bytes. A short key would let anyone who reads
/// the ledger confirm guessed phone numbers or addresses against their hashes.
pub const MIN_RECIPIENT_HASH_KEY_BYTES: usize = 16;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    #[serde(serialize_with = "serialize_masked_url")]
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    pub statement_timeout_ms: u64,
    pub migrate_on_start: bool,
    pub store_recipients: bool,
    #[serde(default, serialize_with = "redact_option")]
    pub recipient_hash_key: Option<SecretString>,
    #[serde(default)]
    pub recipient_hash_key_file: Option<PathBuf>,
    pub sending_reclaim_secs: u64,
}

impl LedgerConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs)
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }

    pub fn sending_reclaim(&self) -> Duration {
        Duration::from_secs(self.sending_reclaim_secs)
    }

    /// Returns the URL with any password masked, for messages and logs.
    pub fn masked_url(&self) -> String {
        mask_ledger_url(&self.url)
    }

    /// Loads the key that recipients are hashed with, from `recipient_hash_key` or
    /// `recipient_hash_key_file`.
    pub fn recipient_hash_key(&self) -> Result<Secret, ConfigError> {
        let key = secret::resolve(
            "ledger.recipient_hash_key",
            "ledger.recipient_hash_key_file",
            self.recipient_hash_key.as_ref(),
            self.recipient_hash_key_file.as_ref(),
        )?;
        if key.expose().len() < MIN_RECIPIENT_HASH_KEY_BYTES {
            return Err(ConfigError::invalid(
                "ledger.recipient_hash_key",
                format!(
                    "must be at least {MIN_RECIPIENT_HASH_KEY_BYTES} bytes long; generate one with `openssl rand -hex 32`"
                ),
            ));
        }
        Ok(key)
    }

    /// Returns whether a recipient hash key is configured, inline or as a file.
    pub fn has_recipient_hash_key(&self) -> bool {
        use secrecy::ExposeSecret;
        let inline = self
            .recipient_hash_key
            .as_ref()
            .is_some_and(|key| !key.expose_secret().is_empty());
        let file = self
            .recipient_hash_key_file
            .as_ref()
            .is_some_and(|path| !path.as_os_str().is_empty());
        inline || file
    }

    /// Checks the section. A claim must outlive every attempt of one channel send, so
    /// `sending_reclaim_secs` is compared with the retry budget.
    pub(super) fn validate(
        &self,
        http: &HttpConfig,
        retry: &RetryConfig,
        limits: &LimitsConfig,
    ) -> Result<(), ConfigError> {
        if !(self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")) {
            return Err(ConfigError::invalid(
                "ledger.url",
                "must start with postgres:// or postgresql://",
            ));
        }
        if let Err(error) = sqlx::postgres::PgConnectOptions::from_str(&self.url) {
            // The parser may quote the URL, password included.
            let error = error
                .to_string()
                .replace(&self.url, &mask_password(&self.url));
            return Err(ConfigError::invalid(
                "ledger.url",
                format!("is not a valid PostgreSQL URL: {error}"),
            ));
        }
        positive("ledger.max_connections", u64::from(self.max_connections))?;
        positive("ledger.acquire_timeout_secs", self.acquire_timeout_secs)?;
        positive("ledger.statement_timeout_ms", self.statement_timeout_ms)?;
        positive("ledger.sending_reclaim_secs", self.sending_reclaim_secs)?;

        // Each attempt may wait for its permit and then for its request; between attempts
        // comes a backoff or a Retry-After hint waited out in place.
        let attempts = u64::from(retry.in_place_attempts);
        let per_attempt_ms = http
            .request_timeout_ms
            .saturating_add(limits.max_permit_wait_secs.saturating_mul(1000));
        let pause_ms = retry
            .max_delay_ms
            .max(retry.max_retry_after_secs.saturating_mul(1000));
        let send_budget_ms = attempts
            .saturating_mul(per_attempt_ms)
            .saturating_add(attempts.saturating_sub(1).saturating_mul(pause_ms));
        if self.sending_reclaim_secs.saturating_mul(1000) <= send_budget_ms {
            return Err(ConfigError::invalid(
                "ledger.sending_reclaim_secs",
                format!(
                    "must be longer than one channel's attempts can take ({send_budget_ms} ms from retry.in_place_attempts, http.request_timeout_ms, limits.max_permit_wait_secs, retry.max_delay_ms and retry.max_retry_after_secs), or a claim still in use could be taken over"
                ),
            ));
        }
        Ok(())
    }
}

fn serialize_masked_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&mask_ledger_url(url))
}

/// Returns a PostgreSQL URL with the password masked, both in the user-info part and in a
/// `password=` query parameter, which libpq-style URLs also accept.
pub fn mask_ledger_url(url: &str) -> String {
    let masked = mask_password(url);
    let Some((base, query)) = masked.split_once('?') else {
        return masked;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_with_env(None, env)
    }

    fn invalid_key(result: Result<Settings, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            Err(other) => panic!("expected an invalid key, got {other}"),
            Ok(_) => panic!("expected an error"),
        }
    }

    #[test]
    fn defaults_load() {
        let ledger = load(&[]).unwrap().ledger;
        assert_eq!(ledger.url, "postgres://postgres@127.0.0.1:5432/herald");
        assert!(!ledger.store_recipients);
        assert!(!ledger.has_recipient_hash_key());
        assert_eq!(ledger.sending_reclaim(), Duration::from_secs(300));
    }

    #[test]
    fn environment_sets_booleans_and_key() {
        let ledger = load(&[
            ("HERALD__LEDGER__STORE_RECIPIENTS", "true"),
            ("HERALD__LEDGER__RECIPIENT_HASH_KEY", "0123456789abcdef"),
        ])
        .unwrap()
        .ledger;
        assert!(ledger.store_recipients);
        assert_eq!(
            ledger.recipient_hash_key().unwrap().expose(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn short_hash_key_is_rejected() {
        let ledger = load(&[("HERALD__LEDGER__RECIPIENT_HASH_KEY", "short")])
            .unwrap()
            .ledger;
        let error = ledger.recipient_hash_key().unwrap_err();
        assert!(error.to_string().contains("at least 16 bytes"), "{error}");
    }

    #[test]
    fn missing_hash_key_names_variable() {
        let error = load(&[]).unwrap().ledger.recipient_hash_key().unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("HERALD__LEDGER__RECIPIENT_HASH_KEY"),
            "{message}"
        );
    }

    #[test]
    fn reclaim_within_send_budget_is_rejected() {
        assert_eq!(
            invalid_key(load(&[("HERALD__LEDGER__SENDING_RECLAIM_SECS", "30")])),
            "ledger.sending_reclaim_secs"
        );
    }

    #[test]
    fn non_postgres_url_is_rejected() {
        assert_eq!(
            invalid_key(load(&[("HERALD__LEDGER__URL", "mysql://db/herald")])),
            "ledger.url"
        );
    }

    #[test]
    fn zero_values_are_rejected() {
        for key in [
            "MAX_CONNECTIONS",
            "ACQUIRE_TIMEOUT_SECS",
            "STATEMENT_TIMEOUT_MS",
        ] {
            let variable = format!("HERALD__LEDGER__{key}");
            let expected = format!("ledger.{}", key.to_lowercase());
            assert_eq!(invalid_key(load(&[(&variable, "0")])), expected);
        }
    }

    #[test]
    fn check_config_masks_url_password() {
        let settings = load(&[(
            "HERALD__LEDGER__URL",
            "postgres://herald:hunter2@db:5432/herald",
        )])
        .unwrap();
        let rendered = settings.to_redacted_toml();
        assert!(!rendered.contains("hunter2"), "{rendered}");
        assert!(rendered.contains("postgres://herald:***@db:5432/herald"));
    }

    #[test]
    fn masks_user_info_password() {
        assert_eq!(
            mask_ledger_url("postgres://herald:hunter2@db:5432/herald"),
            "postgres://herald:***@db:5432/herald"
        );
    }

    #[test]
    fn masks_query_password() {
        assert_eq!(
            mask_ledger_url("postgres://db/herald?user=herald&password=hunter2&sslmode=disable"),
            "postgres://db/herald?user=herald&password=***&sslmode=disable"
        );
    }

    #[test]
    fn leaves_url_without_password() {
        let url = "postgres://postgres@127.0.0.1:5432/herald";
        assert_eq!(mask_ledger_url(url), url);
    }
}
