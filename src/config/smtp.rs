//! The `kind = "smtp"` provider section: an SMTP relay reached through lettre.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::breaker::CircuitBreakerOverride;
use super::providers::{RateLimitConfig, required};
use super::secret::{self, Secret, redact_option};
use super::sections::positive;

/// The TLS mode of the connection to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed before credentials or
    /// mail are sent. Default port 587.
    Starttls,
    /// TLS from the first byte (SMTPS). Default port 465.
    Implicit,
    /// No encryption at all: mail and credentials cross the network in clear text. Accepted
    /// only for a loopback host. Default port 25.
    None,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        }
    }
}

/// An SMTP relay (RFC 5321) with optional AUTH PLAIN or LOGIN.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// The relay's port; 0 selects the default of the TLS mode.
    #[serde(default)]
    pub port: u16,
    pub tls: SmtpTls,
    /// PEM file of CA certificates trusted in addition to the system's roots, for a private
    /// relay or a test server.
    #[serde(default)]
    pub extra_ca_file: Option<PathBuf>,
    /// The AUTH user. Empty means the relay is used without authentication.
    #[serde(default)]
    pub username: String,
    #[serde(default, serialize_with = "redact_option")]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    pub from_email: String,
    #[serde(default)]
    pub from_name: String,
    /// The domain of the `Message-ID` Herald sets. Empty means the domain of `from_email`.
    #[serde(default)]
    pub message_id_domain: String,
    /// The name sent in EHLO. Empty means the machine's host name.
    #[serde(default)]
    pub hello_name: String,
    pub connect_timeout_secs: u64,
    /// Limit on one whole attempt: connect, TLS, AUTH, envelope and DATA.
    pub timeout_secs: u64,
    /// Idle connections kept open for later sends.
    pub pool_max_idle: u32,
    pub pool_idle_timeout_secs: u64,
    pub max_in_flight: usize,
    pub rate_limit: RateLimitConfig,
    /// Keys that replace `[circuit_breaker]` for this provider.
    #[serde(default, skip_serializing_if = "CircuitBreakerOverride::is_empty")]
    pub circuit_breaker: CircuitBreakerOverride,
}

impl SmtpConfig {
    /// Returns the configured port, or the TLS mode's default when it is 0.
    pub fn port(&self) -> u16 {
        if self.port == 0 {
            self.tls.default_port()
        } else {
            self.port
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    pub fn pool_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.pool_idle_timeout_secs)
    }

    /// Loads the AUTH password, or returns `None` when no `username` is set.
    pub fn password(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        let password_key = format!("{key}.password");
        if self.username.is_empty() {
            if self.password.is_some() || self.password_file.is_some() {
                return Err(ConfigError::invalid(
                    password_key,
                    format!("is set but `{key}.username` is empty; set both or neither"),
                ));
            }
            return Ok(None);
        }
        secret::resolve(
            &password_key,
            &format!("{key}.password_file"),
            self.password.as_ref(),
            self.password_file.as_ref(),
        )
        .map(Some)
    }

    /// Reads `extra_ca_file`, when set.
    pub fn extra_ca(&self, key: &str) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = self
            .extra_ca_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        else {
            return Ok(None);
        };
        std::fs::read(path).map(Some).map_err(|error| {
            ConfigError::invalid(
                format!("{key}.extra_ca_file"),
                format!("failed to read {}: {error}", path.display()),
            )
        })
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        required(format!("{key}.host"), &self.host)?;
        required(format!("{key}.from_email"), &self.from_email)?;
        positive(&format!("{key}.timeout_secs"), self.timeout_secs)?;
        positive(
            &format!("{key}.connect_timeout_secs"),
            self.connect_timeout_secs,
        )?;
        positive(
            &format!("{key}.pool_idle_timeout_secs"),
            self.pool_idle_timeout_secs,
        )?;
        if !is_domain(&self.message_id_domain) {
            return Err(ConfigError::invalid(
                format!("{key}.message_id_domain"),
                format!(
                    "`{}` is not a domain name; use letters, digits, `-` and `.` only, or leave \
                     it empty for the domain of `from_email`",
                    self.message_id_domain
                ),
            ));
        }
        if self.tls == SmtpTls::None && !is_loopback(&self.host) {
            return Err(ConfigError::invalid(
                format!("{key}.tls"),
                format!(
                    "is `none`, which sends mail and credentials unencrypted, but host `{}` is \
                     not a loopback address; use `starttls` or `implicit`",
                    self.host
                ),
            ));
        }
        Ok(())
    }

    /// Loads the password and the extra CA file, which only sending needs.
    pub(super) fn check_secrets(&self, key: &str) -> Result<(), ConfigError> {
        self.password(key)?;
        self.extra_ca(key).map(drop)
    }
}

/// Returns whether `text` is empty or fits the right side of a `Message-ID`, kept to the
/// characters of a DNS name.
fn is_domain(text: &str) -> bool {
    text.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }) || text.is_empty()
}

/// Returns whether `host` names this machine: `localhost` or a loopback IP address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_domains() {
        for domain in ["", "example.com", "mail-1.example.com", "localhost"] {
            assert!(is_domain(domain), "{domain:?}");
        }
        for domain in ["exa mple.com", "example..com", ".example.com", "a@b", "<x>"] {
            assert!(!is_domain(domain), "{domain:?}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["smtp.example.com", "10.0.0.1", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
