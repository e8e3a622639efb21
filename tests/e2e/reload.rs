//! Credential reload: a rotated SendGrid key file is used from the next request on, without
//! a restart and without losing a job, and a bad new key keeps the old one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::*;

/// A Kubernetes-style Secret volume: `api-key` is a symlink into `..data`, itself a symlink
/// to a versioned directory that each update replaces in one rename.
struct SecretVolume {
    root: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn create(test: &str, key: &str) -> SecretVolume {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let root = std::env::temp_dir().join(format!("herald-{test}-{nanos}"));
        std::fs::create_dir_all(&root).unwrap();
        let mut volume = SecretVolume { root, version: 0 };
        volume.write(key);
        std::os::unix::fs::symlink("..data/api-key", volume.key_file()).unwrap();
        volume
    }

    fn key_file(&self) -> PathBuf {
        self.root.join("api-key")
    }

    /// Writes `key` into a new versioned directory and swaps `..data` to it atomically.
    fn write(&mut self, key: &str) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.root.join(&version)).unwrap();
        std::fs::write(self.root.join(&version).join("api-key"), key).unwrap();
        let staged = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).unwrap();
        std::fs::rename(&staged, self.root.join("..data")).unwrap();
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Starts Herald with SendGrid's key read from `key_file`, polled every second.
async fn start_with_key_file(fixture: &Fixture, key_file: &Path) -> RunningHerald {
    let mut env = fixture.topology.env();
    env.extend(
        fixture
            .providers
            .env()
            .into_iter()
            .filter(|(key, _)| key != "HERALD__PROVIDERS__SENDGRID__API_KEY"),
    );
    env.push(env_pair(
        "HERALD__PROVIDERS__SENDGRID__API_KEY_FILE",
        key_file.to_str().unwrap(),
    ));
    env.push(env_pair("HERALD__RELOAD__SECRET_POLL_INTERVAL_SECS", "1"));
    RunningHerald::start(env).await
}

/// Publishes one email job and waits until `delivered` emails in all were delivered.
async fn send_email(fixture: &Fixture, herald: &RunningHerald, id: &str, delivered: f64) {
    fixture
        .topology
        .publish_jobs(&[job(id, delivered as u64, &["email"])])
        .await;
    herald
        .wait_for_metric(
            "herald_channel_sends_total",
            &[("channel", "email"), ("outcome", "delivered")],
            delivered,
            Duration::from_secs(20),
        )
        .await;
}

/// Returns the `Authorization` header of the latest SendGrid request.
async fn last_authorization(fixture: &Fixture) -> String {
    let requests = fixture.providers.email_requests().await;
    let last = requests.last().expect("SendGrid received a request");
    last.headers["authorization"].to_str().unwrap().to_owned()
}

/// Waits until SendGrid's adapter was rebuilt `count` times with `result`.
async fn wait_for_reloads(herald: &RunningHerald, result: &str, count: f64) {
    herald
        .wait_for_metric(
            "herald_credential_reloads_total",
            &[("provider", "sendgrid"), ("result", result)],
            count,
            Duration::from_secs(10),
        )
        .await;
}

fn reloads(metrics: &str, result: &str) -> f64 {
    metric_value(
        metrics,
        "herald_credential_reloads_total",
        &[("provider", "sendgrid"), ("result", result)],
    )
}

#[tokio::test]
async fn rotated_key_file_is_used_next() {
    let fixture = Fixture::new("key-rotation").await;
    let mut volume = SecretVolume::create("key-rotation", "SG.first-key");
    let herald = start_with_key_file(&fixture, &volume.key_file()).await;

    send_email(&fixture, &herald, "rotation-1", 1.0).await;
    assert_eq!(last_authorization(&fixture).await, "Bearer SG.first-key");

    // The kubelet's way: a new directory, then one symlink swap.
    volume.write("SG.second-key");
    wait_for_reloads(&herald, "ok", 1.0).await;
    send_email(&fixture, &herald, "rotation-2", 2.0).await;
    assert_eq!(last_authorization(&fixture).await, "Bearer SG.second-key");

    // An empty key cannot be loaded, so the second key stays in use.
    volume.write("");
    wait_for_reloads(&herald, "failed", 1.0).await;
    herald
        .wait_for_log(Duration::from_secs(5), |line| {
            message(line) == "failed to reload provider credentials; keeping the current ones"
        })
        .await;
    send_email(&fixture, &herald, "rotation-3", 3.0).await;
    assert_eq!(last_authorization(&fixture).await, "Bearer SG.second-key");

    // SIGHUP rereads the file at once. The poll may see the new content first, and either
    // way the next request carries the new key.
    volume.write("SG.third-key");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &herald.pid().to_string()])
        .status()
        .expect("failed to run kill");
    assert!(status.success());
    herald
        .wait_for_log(Duration::from_secs(5), |line| {
            message(line) == "SIGHUP received; reloading provider credentials"
        })
        .await;
    wait_for_reloads(&herald, "ok", 2.0).await;
    send_email(&fixture, &herald, "rotation-4", 4.0).await;
    assert_eq!(last_authorization(&fixture).await, "Bearer SG.third-key");

    let metrics = herald.metrics().await;
    assert!(reloads(&metrics, "ok") >= 2.0, "{metrics}");
    assert_eq!(reloads(&metrics, "failed"), 1.0, "{metrics}");
    assert_eq!(fixture.providers.email_requests().await.len(), 4);
    let logs = herald.log_text();
    for key in ["SG.first-key", "SG.second-key", "SG.third-key"] {
        assert!(!logs.contains(key), "the log contains the key {key}");
    }

    assert_eq!(herald.stop().await, 0);
    fixture.topology.delete().await;
}
