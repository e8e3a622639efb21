//! Credential reload: on SIGHUP, or when a secret file's content changes, providers'
//! secrets are read again and the affected adapters rebuilt without a restart.
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

use crate::config::{HttpConfig, ProviderConfig};
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
    http: HttpConfig,
    routes: Arc<Routes>,
    metrics: Arc<Metrics>,
    fingerprints: BTreeMap<String, Fingerprint>,
}

impl CredentialReloader {
    /// Records the current content of every routed provider's secret files.
    pub fn new(
        configs: &BTreeMap<String, ProviderConfig>,
        client: reqwest::Client,
        http: HttpConfig,
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
            http,
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
        match providers::build(name, config, &self.client, &self.http, &self.metrics) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::providers::http::build_client;

    /// A temporary SendGrid key file, removed on drop.
    struct KeyFile(std::path::PathBuf);

    impl KeyFile {
        fn create(test: &str, key: &str) -> KeyFile {
            let path =
                std::env::temp_dir().join(format!("herald-reload-{test}-{}", std::process::id()));
            std::fs::write(&path, key).unwrap();
            KeyFile(path)
        }
    }

    impl Drop for KeyFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn reloader(key_file: &KeyFile) -> (CredentialReloader, Arc<Routes>, Arc<Metrics>) {
        let env = [
            (
                "HERALD__PROVIDERS__SENDGRID__API_KEY_FILE",
                key_file.0.to_str().unwrap(),
            ),
            ("HERALD__CHANNELS__SMS", ""),
            ("HERALD__CHANNELS__PUSH", ""),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned()));
        let settings = Settings::load_with_env(None, env).unwrap();
        let metrics = Arc::new(Metrics::new());
        let client = build_client(&settings.http).unwrap();
        let routes = Arc::new(Routes::build(&settings, &client, &metrics).unwrap());
        let reloader = CredentialReloader::new(
            &settings.providers,
            client,
            settings.http.clone(),
            routes.clone(),
            metrics.clone(),
        );
        (reloader, routes, metrics)
    }

    fn reloads(metrics: &Metrics, result: &str) -> bool {
        let series = format!(
            "herald_credential_reloads_total{{provider=\"sendgrid\",result=\"{result}\"}} 1"
        );
        metrics.render().contains(&series)
    }

    #[test]
    fn unchanged_file_keeps_adapter() {
        let key_file = KeyFile::create("unchanged", "SG.first-key");
        let (mut reloader, routes, _metrics) = reloader(&key_file);
        let before = routes.providers()["sendgrid"].provider();

        reloader.reload_changed();

        let after = routes.providers()["sendgrid"].provider();
        assert!(Arc::ptr_eq(&before, &after));
    }

    #[test]
    fn changed_file_rebuilds_adapter() {
        let key_file = KeyFile::create("changed", "SG.first-key");
        let (mut reloader, routes, metrics) = reloader(&key_file);
        let before = routes.providers()["sendgrid"].provider();

        std::fs::write(&key_file.0, "SG.second-key").unwrap();
        reloader.reload_changed();

        let after = routes.providers()["sendgrid"].provider();
        assert!(!Arc::ptr_eq(&before, &after));
        assert!(reloads(&metrics, "ok"));
    }

    #[test]
    fn empty_file_keeps_adapter() {
        let key_file = KeyFile::create("empty", "SG.first-key");
        let (mut reloader, routes, metrics) = reloader(&key_file);
        let before = routes.providers()["sendgrid"].provider();

        std::fs::write(&key_file.0, "").unwrap();
        reloader.reload_changed();
        reloader.reload_changed();

        let after = routes.providers()["sendgrid"].provider();
        assert!(Arc::ptr_eq(&before, &after));
        assert!(reloads(&metrics, "failed"), "a bad secret is counted once");
    }
}
