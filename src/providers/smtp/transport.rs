//! Builds lettre's pooled async transport from an `smtp` provider section.

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, Tokio1Executor};

use crate::config::{ConfigError, Secret, SmtpConfig, SmtpTls};

pub(super) type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// Builds a transport with a fresh connection pool. `key` names the section in errors.
/// Must run inside a Tokio runtime, because the pool spawns a task that closes idle
/// connections. That task holds only a weak reference and ends at its first wake-up after
/// the last clone of the transport is dropped.
pub(super) fn build(
    key: &str,
    config: &SmtpConfig,
    password: Option<&Secret>,
    extra_ca: Option<&[u8]>,
) -> Result<Transport, ConfigError> {
    let mut builder = Transport::builder_dangerous(&config.host)
        .port(config.port())
        .tls(tls(key, config, extra_ca)?)
        .timeout(Some(config.connect_timeout()))
        .pool_config(
            PoolConfig::new()
                .max_size(config.pool_max_idle)
                .idle_timeout(config.pool_idle_timeout()),
        );
    if let Some(password) = password {
        builder = builder
            .credentials(Credentials::new(
                config.username.clone(),
                password.expose().to_owned(),
            ))
            .authentication(vec![Mechanism::Plain, Mechanism::Login]);
    }
    if !config.hello_name.is_empty() {
        builder = builder.hello_name(ClientId::Domain(config.hello_name.clone()));
    }
    Ok(builder.build())
}

fn tls(key: &str, config: &SmtpConfig, extra_ca: Option<&[u8]>) -> Result<Tls, ConfigError> {
    if config.tls == SmtpTls::None {
        return Ok(Tls::None);
    }

    let mut parameters = TlsParameters::builder(config.host.clone());
    if let Some(pem) = extra_ca {
        let certificate = Certificate::from_pem(pem).map_err(|error| {
            ConfigError::invalid(
                format!("{key}.extra_ca_file"),
                format!("does not hold PEM certificates: {error}"),
            )
        })?;
        parameters = parameters.add_root_certificate(certificate);
    }
    let parameters = parameters.build().map_err(|error| {
        ConfigError::invalid(
            format!("{key}.tls"),
            format!("failed to set up TLS: {error}"),
        )
    })?;

    Ok(match config.tls {
        SmtpTls::Starttls => Tls::Required(parameters),
        SmtpTls::Implicit => Tls::Wrapper(parameters),
        SmtpTls::None => Tls::None,
    })
}
