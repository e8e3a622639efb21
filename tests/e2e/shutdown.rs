//! SIGTERM under load: consumption stops, jobs under way finish and are acknowledged, and
//! every other job stays in the queue untouched.

use std::collections::HashSet;
use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const JOBS: u64 = 300;

#[tokio::test]
async fn sigterm_under_load_loses_nothing() {
    let topology = Topology::new("sigterm");
    let providers = Providers::start().await;
    let latency = Duration::from_millis(300);
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(
            ResponseTemplate::new(202)
                .insert_header("X-Message-Id", "slow")
                .set_delay(latency),
        )
        .mount(&providers.sendgrid)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
        )))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(serde_json::json!({"sid": "SM1", "status": "queued"}))
                .set_delay(latency),
        )
        .mount(&providers.twilio)
        .await;
    providers.accept_all().await;
    let mut env = topology.env();
    env.extend(providers.env());
    env.push(env_pair("HERALD__BROKER__PREFETCH", "50"));
    env.push(env_pair("HERALD__POOL__WORKERS", "50"));
    env.push(env_pair("HERALD__SHUTDOWN__GRACE_PERIOD_SECS", "20"));
    for provider in ["SENDGRID", "TWILIO", "FCM"] {
        env.push(env_pair(
            &format!("HERALD__PROVIDERS__{provider}__RATE_LIMIT__PER_SECOND"),
            "10000",
        ));
        env.push(env_pair(
            &format!("HERALD__PROVIDERS__{provider}__RATE_LIMIT__BURST"),
            "10000",
        ));
    }
    let mut herald = RunningHerald::start(env).await;

    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("term-{i}"), i, &["email", "sms", "push"]))
        .collect();
    topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            50.0,
            Duration::from_secs(30),
        )
        .await;

    herald.terminate();
    let code = herald.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "exit code after SIGTERM");
    let logs = herald.logs();
    assert!(log_position(&logs, "shutdown requested", &[("signal", "SIGTERM")]).is_some());
    assert!(log_position(&logs, "herald stopped", &[]).is_some());

    let settled: HashSet<String> = logs
        .iter()
        .filter(|line| message(line) == "job settled")
        .filter_map(|line| field(line, "job_id")?.as_str().map(str::to_owned))
        .collect();
    let queued: HashSet<String> = topology
        .drain(&topology.queue)
        .await
        .iter()
        .map(|message| {
            let job: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
            job["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        settled.len() < JOBS as usize,
        "shutdown came after all jobs; the test proves nothing"
    );
    assert!(
        settled.is_disjoint(&queued),
        "a settled job is still queued"
    );
    assert_eq!(
        settled.len() + queued.len(),
        JOBS as usize,
        "a job was lost"
    );

    let emailed: HashSet<String> = providers
        .email_requests()
        .await
        .iter()
        .map(|request| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            body["personalizations"][0]["custom_args"]["herald_job_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(emailed, settled, "exactly the settled jobs were sent");
    assert_eq!(providers.sms_requests().await.len(), settled.len());
    assert_eq!(providers.push_requests().await.len(), settled.len());
    topology.delete().await;
}

#[tokio::test]
async fn grace_expiry_leaves_jobs_for_redelivery() {
    let topology = Topology::new("grace-expiry");
    let providers = Providers::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mail/send"))
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(8)))
        .mount(&providers.sendgrid)
        .await;
    let mut env = topology.env();
    env.extend(providers.env());
    env.push(env_pair("HERALD__SHUTDOWN__GRACE_PERIOD_SECS", "1"));
    env.push(env_pair("HERALD__HTTP__REQUEST_TIMEOUT_MS", "30000"));
    let mut herald = RunningHerald::start(env).await;

    let jobs: Vec<_> = (0..5)
        .map(|i| job(&format!("stuck-{i}"), i, &["email"]))
        .collect();
    topology.publish_jobs(&jobs).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while providers.email_requests().await.len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sends never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    herald.terminate();
    let started = tokio::time::Instant::now();
    assert_eq!(herald.wait_exit(Duration::from_secs(20)).await, 0);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "shutdown waited for the slow sends"
    );
    let logs = herald.logs();
    assert!(
        log_position(
            &logs,
            "grace period ended; unfinished jobs stay unacknowledged for redelivery",
            &[]
        )
        .is_some()
    );
    assert!(log_position(&logs, "job settled", &[]).is_none());

    let queued = topology.drain(&topology.queue).await;
    assert_eq!(queued.len(), 5, "unfinished jobs are back in the queue");
    topology.delete().await;
}
