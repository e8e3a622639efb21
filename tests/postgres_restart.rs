//! PostgreSQL stopped for 30 s under load. It stops the server that every other test uses,
//! so it lives in a test binary of its own: cargo runs test binaries one at a time, and this
//! binary has this one test.

#![allow(unreachable_pub, dead_code)]

#[path = "e2e/helpers.rs"]
mod helpers;
#[path = "e2e/ledger_outage.rs"]
mod ledger_outage;

use std::process::Command;

use helpers::*;
use ledger_outage::{LEDGER_TIMEOUTS, pause_and_resume};

/// The Debian cluster listening on port 5432, as `pg_ctlcluster` names it.
#[derive(Clone)]
struct Cluster {
    version: String,
    name: String,
}

impl Cluster {
    fn local() -> Cluster {
        let fields = cluster_fields();
        Cluster {
            version: fields[0].clone(),
            name: fields[1].clone(),
        }
    }

    /// Returns whether the cluster is running, as `pg_lsclusters` reports it.
    fn online(&self) -> bool {
        cluster_fields()[3] == "online"
    }

    /// Runs `pg_ctlcluster ACTION`, which waits until the server has stopped or accepts
    /// connections, and returns whether it succeeded.
    fn control(&self, action: &str) -> bool {
        let mut command = Command::new("pg_ctlcluster");
        command.args([
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
            action,
        ]);
        if action == "stop" {
            command.args(["--mode", "fast"]);
        }
        command
            .status()
            .expect("pg_ctlcluster is installed with PostgreSQL")
            .success()
    }
}

/// Returns the `pg_lsclusters` columns of the cluster on port 5432: version, name, port,
/// status and so on.
fn cluster_fields() -> Vec<String> {
    let listing = Command::new("pg_lsclusters")
        .arg("--no-header")
        .output()
        .expect("pg_lsclusters runs; this test needs PostgreSQL from Debian's packages");
    let text = String::from_utf8_lossy(&listing.stdout);
    text.lines()
        .map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|fields| fields.len() > 3 && fields[2] == "5432")
        .unwrap_or_else(|| panic!("no PostgreSQL cluster on port 5432 in:\n{text}"))
}

/// Starts the cluster again when dropped, so a failed assertion does not leave PostgreSQL
/// stopped for the test binaries that run after this one.
struct StartOnDrop(Cluster);

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        if !self.0.online() && !self.0.control("start") {
            eprintln!("pg_ctlcluster start failed; start PostgreSQL by hand");
        }
    }
}

#[tokio::test]
async fn postgres_stopped_under_load_loses_nothing() {
    let cluster = Cluster::local();
    let fixture = Fixture::new("postgres-stop").await;
    let herald = fixture.start(&LEDGER_TIMEOUTS).await;
    let restart = StartOnDrop(cluster.clone());

    pause_and_resume(
        &fixture,
        herald,
        || assert!(cluster.control("stop"), "pg_ctlcluster stop failed"),
        || assert!(cluster.control("start"), "pg_ctlcluster start failed"),
    )
    .await;
    drop(restart);
    fixture.topology.delete().await;
}
