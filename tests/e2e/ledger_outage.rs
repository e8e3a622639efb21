//! The ledger outage scenario: with PostgreSQL unavailable under load, no provider is
//! called without a claim, consumption pauses with readiness false, nothing is lost, and
//! consumption resumes. `e2e` runs it through a proxy that cuts connections, and
//! `tests/postgres_restart.rs` by stopping the server itself.

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::*;

const BEFORE: u64 = 20;
const DURING: u64 = 30;
const OUTAGE: Duration = Duration::from_secs(30);

/// Settings that make a ledger outage show within seconds.
pub const LEDGER_TIMEOUTS: [(&str, &str); 2] = [
    ("HERALD__LEDGER__ACQUIRE_TIMEOUT_SECS", "1"),
    ("HERALD__LEDGER__STATEMENT_TIMEOUT_MS", "1000"),
];

/// Runs the scenario on a started `herald`: jobs before the outage, `cut`, jobs during it,
/// `OUTAGE` of waiting, `restore`, then every job sent and Herald stopped.
pub async fn pause_and_resume(
    fixture: &Fixture,
    herald: RunningHerald,
    cut: impl FnOnce(),
    restore: impl FnOnce(),
) {
    let jobs: Vec<_> = (0..BEFORE + DURING)
        .map(|i| job(&format!("outage-{i}"), i, &["email"]))
        .collect();
    fixture
        .topology
        .publish_jobs(&jobs[..BEFORE as usize])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            BEFORE as f64,
            Duration::from_secs(20),
        )
        .await;
    wait_ready(&herald, 200, Duration::from_secs(15)).await;

    cut();
    fixture
        .topology
        .publish_jobs(&jobs[BEFORE as usize..])
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while ready(&herald).await != 503 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readiness stayed true without the ledger"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent_when_paused = fixture.providers.email_requests().await.len();
    tokio::time::sleep(OUTAGE).await;
    assert_eq!(
        ready(&herald).await,
        503,
        "still paused while the ledger is down"
    );
    assert_eq!(
        fixture.providers.email_requests().await.len(),
        sent_when_paused,
        "a provider was called while no claim could be made"
    );

    restore();
    herald
        .wait_for_log(Duration::from_secs(20), |line| {
            message(line) == "ledger reachable again; resuming consumption"
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut per_job: HashMap<String, usize> = HashMap::new();
    while per_job.len() < (BEFORE + DURING) as usize {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} jobs were sent after the outage",
            per_job.len(),
            BEFORE + DURING
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        per_job = email_job_ids(&fixture.providers).await;
    }
    wait_ready(&herald, 200, Duration::from_secs(15)).await;

    let metrics = herald.metrics().await;
    let repeated: usize = per_job.values().map(|count| count - 1).sum();
    let possible = metric_value(&metrics, "herald_possible_duplicates_total", &[]) as usize;
    assert!(
        repeated <= possible,
        "{repeated} repeated sends, {possible} counted as possible duplicates"
    );
    assert_eq!(herald.stop().await, 0);
    assert_eventually_waiting(&fixture.topology, 0).await;
}

/// Returns the number of email requests per job id.
pub(crate) async fn email_job_ids(providers: &Providers) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in providers.email_requests().await {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let id = body["personalizations"][0]["custom_args"]["herald_job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Waits until `/health/ready` returns `status`. Under the load of the whole suite the
/// ledger can time out for a moment, so readiness is polled rather than read once.
async fn wait_ready(herald: &RunningHerald, status: u16, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while ready(herald).await != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health/ready did not answer {status} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ready(herald: &RunningHerald) -> u16 {
    reqwest::get(format!("http://{}/health/ready", herald.admin))
        .await
        .unwrap()
        .status()
        .as_u16()
}
