//! Credential reload: providers' secrets are read again on SIGHUP, and when a secret file's
//! content changes, and the affected adapters are rebuilt without a restart.
//!
//! A rebuilt adapter replaces the old one in its [`crate::routes::Route`] for attempts that start later.
//! Sends under way hold the old adapter through its `Arc` and finish with it, and the
//! provider's limits and breaker state stay as they are. A secret that fails to load keeps
//! the old adapter, logs an error and counts in `herald_credential_reloads_total`.
//!
//! Files are compared by content (a SHA-256 digest) rather than modification time, because
//! Kubernetes updates a mounted Secret by pointing a symlink at a new directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::ProviderConfig;
use crate::metrics::Metrics;
use crate::providers;
use crate::routes::Routes;
use crate::shutdown::Shutdown;

/// The digests of one provider's secret files, `None` for a file that could not be read.
type Fingerprint = Vec<Option<[u8; 32]>>;

/// The cause of a reload, logged in its `trigger` field.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Hangup,
    FileChanged,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Hangup => "sighup",
            Trigger::FileChanged => "file_changed",
        }
    }
}

/// Rebuilds provider adapters when their secrets change.
pub struct CredentialReloader {
    configs: BTreeMap<String, ProviderConfig>,
    client: reqwest::Client,
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    fingerprints: BTreeMap<String, Fingerprint>,
}

impl CredentialReloader {
    /// Records the current content of every routed provider's secret files.
    pub fn new(
        configs: &BTreeMap<String, ProviderConfig>,
        client: reqwest::Client,
        routes: Arc<Routes>,
        metrics: Arc<Metrics>,
    ) -> CredentialReloader {
        let configs: BTreeMap<String, ProviderConfig> = routes
            .providers()
            .keys()
            .filter_map(|name| Some((name.clone(), configs.get(name)?.clone())))
            .collect();
        let fingerprints = configs
            .iter()
            .map(|(name, config)| (name.clone(), fingerprint(config)))
            .collect();
        CredentialReloader {
            configs,
            client,
            routes,
            metrics,
            fingerprints,
        }
    }

    /// Reloads on SIGHUP and, every `poll_interval` when given, for changed secret files,
    /// until shutdown begins.
    pub async fn run(mut self, shutdown: Shutdown, poll_interval: Option<Duration>) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                warn!(error.message = %error, "failed to listen for SIGHUP; secrets reload only when their files change");
                None
            }
        };
        let mut poll = poll_interval.map(|interval| {
            let mut poll = tokio::time::interval(interval);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll
        });

        loop {
            tokio::select! {
                () = shutdown.stopped() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => {
                    info!("SIGHUP received; reloading provider credentials");
                    self.reload_all();
                }
                Some(_) = async { Some(poll.as_mut()?.tick().await) } => self.reload_changed(),
            }
        }
    }

    /// Rebuilds every provider's adapter with its secrets read again.
    pub fn reload_all(&mut self) {
        let names: Vec<String> = self.configs.keys().cloned().collect();
        for name in names {
            self.reload(&name, Trigger::Hangup);
        }
    }

    /// Rebuilds the adapters whose secret files have new content.
    pub fn reload_changed(&mut self) {
        let changed: Vec<String> = self
            .configs
            .iter()
            .filter(|(name, config)| self.fingerprints.get(*name) != Some(&fingerprint(config)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in changed {
            self.reload(&name, Trigger::FileChanged);
        }
    }

    fn reload(&mut self, name: &str, trigger: Trigger) {
        let (Some(config), Some(route)) =
            (self.configs.get(name), self.routes.providers().get(name))
        else {
            return;
        };
        // Recorded before building, so a bad secret is reported once, not at every check.
        self.fingerprints
            .insert(name.to_owned(), fingerprint(config));
        match providers::build(name, config, &self.client) {
            Ok(adapter) => {
                route.replace_provider(adapter);
                self.metrics.credential_reload(name, "ok");
                info!(
                    provider = name,
                    trigger = trigger.as_str(),
                    "provider credentials reloaded"
                );
            }
            Err(reload_error) => {
                self.metrics.credential_reload(name, "failed");
                error!(
                    provider = name,
                    trigger = trigger.as_str(),
                    error.message = %reload_error,
                    "failed to reload provider credentials; keeping the current ones"
                );
            }
        }
    }
}

/// Returns the digests of `config`'s secret files.
fn fingerprint(config: &ProviderConfig) -> Fingerprint {
    config.secret_files().into_iter().map(file_digest).collect()
}

fn file_digest(path: &Path) -> Option<[u8; 32]> {
    let content = std::fs::read(path).ok()?;
    Some(Sha256::digest(content).into())
}
