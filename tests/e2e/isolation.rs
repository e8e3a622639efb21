//! A failing channel never cancels or delays the job's other channels.

use std::time::Duration;

use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

const JOBS: u64 = 5;

#[tokio::test]
async fn permanent_failure_spares_siblings() {
    let fixture = Fixture::new("permanent-failure").await;
    let (topology, providers) = (&fixture.topology, &fixture.providers);
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
        )))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21211,
            "message": "The 'To' number is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400
        })))
        .mount(&providers.twilio)
        .await;
    let herald = fixture.start(&[]).await;

    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("permanent-{i}"), i, &["email", "sms", "push"]))
        .collect();
    topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "partial")],
            JOBS as f64,
            Duration::from_secs(20),
        )
        .await;

    assert_eq!(providers.email_requests().await.len(), JOBS as usize);
    assert_eq!(providers.push_requests().await.len(), JOBS as usize);
    assert_eq!(
        providers.sms_requests().await.len(),
        JOBS as usize,
        "a permanent failure is not retried"
    );

    let metrics = herald.metrics().await;
    let sends = |channel, outcome| {
        metric_value(
            &metrics,
            "herald_channel_sends_total",
            &[("channel", channel), ("outcome", outcome)],
        )
    };
    assert_eq!(sends("sms", "permanent"), JOBS as f64);
    assert_eq!(sends("email", "delivered"), JOBS as f64);
    assert_eq!(sends("push", "delivered"), JOBS as f64);

    let logs = herald.logs();
    let failure = log_position(
        &logs,
        "channel failed",
        &[("channel", "sms"), ("job_id", "permanent-0")],
    )
    .unwrap_or_else(|| {
        panic!(
            "the SMS failure is not logged with its job id:\n{}",
            herald.log_text()
        )
    });
    assert_eq!(
        field(&logs[failure], "error.code").and_then(|v| v.as_str()),
        Some("21211")
    );
    assert_eq!(logs[failure]["recipient_invalid"], true);
    let recipient = field(&logs[failure], "recipient")
        .and_then(|v| v.as_str())
        .unwrap();
    assert_eq!(recipient, "***00", "recipients are masked in logs");

    assert_eq!(herald.stop().await, 0);
    assert_eq!(topology.depth(&topology.queue).await, 0);
    let dead = topology.drain(&topology.dead_letter_queue).await;
    assert_eq!(
        dead.len(),
        JOBS as usize,
        "each failed SMS is dead-lettered"
    );
    for message in &dead {
        assert_eq!(message.headers["x-herald-reason"], "permanent");
        assert_eq!(message.headers["x-herald-channel"], "sms");
        assert_eq!(message.headers["x-herald-provider"], "twilio");
        assert_eq!(message.headers["x-herald-error-code"], "21211");
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        let channels: Vec<&String> = body["channels"].as_object().unwrap().keys().collect();
        assert_eq!(
            channels,
            ["sms"],
            "the dead letter carries the failed channel alone"
        );
    }
    topology.delete().await;
}

#[tokio::test]
async fn timeout_spares_siblings() {
    let fixture = Fixture::new("timeout").await;
    let (topology, providers) = (&fixture.topology, &fixture.providers);
    Mock::given(method("POST"))
        .and(path(format!("/v1/projects/{FCM_PROJECT}/messages:send")))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&providers.fcm)
        .await;
    let herald = fixture
        .start(&[
            ("HERALD__HTTP__REQUEST_TIMEOUT_MS", "600"),
            ("HERALD__RETRY__IN_PLACE_ATTEMPTS", "2"),
            ("HERALD__RETRY__BASE_DELAY_MS", "50"),
            // Every push times out, which would open FCM's breaker and defer the later
            // pushes; this test counts each push's two attempts instead.
            ("HERALD__CIRCUIT_BREAKER__ENABLED", "false"),
        ])
        .await;

    let jobs: Vec<_> = (0..JOBS)
        .map(|i| job(&format!("timeout-{i}"), i, &["email", "sms", "push"]))
        .collect();
    topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "retrying")],
            JOBS as f64,
            Duration::from_secs(30),
        )
        .await;

    assert_eq!(providers.email_requests().await.len(), JOBS as usize);
    assert_eq!(providers.sms_requests().await.len(), JOBS as usize);
    assert_eq!(
        providers.push_requests().await.len(),
        2 * JOBS as usize,
        "each push tried twice"
    );

    let logs = herald.logs();
    for i in 0..JOBS {
        let job_id = format!("timeout-{i}");
        let email = log_position(
            &logs,
            "channel delivered",
            &[("channel", "email"), ("job_id", &job_id)],
        );
        let sms = log_position(
            &logs,
            "channel delivered",
            &[("channel", "sms"), ("job_id", &job_id)],
        );
        let push = log_position(
            &logs,
            "channel failed",
            &[("channel", "push"), ("job_id", &job_id)],
        );
        let push = push.expect("the push timeout is logged");
        assert!(
            email.expect("email delivered") < push,
            "email waited for the push timeout"
        );
        assert!(
            sms.expect("sms delivered") < push,
            "sms waited for the push timeout"
        );
        assert_eq!(
            field(&logs[push], "error.code").and_then(|v| v.as_str()),
            Some("timeout")
        );
    }

    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_channel_sends_total",
            &[("channel", "push"), ("outcome", "transient")]
        ),
        JOBS as f64
    );
    assert_eq!(
        metric_value(
            &metrics,
            "herald_send_retries_total",
            &[("channel", "push"), ("reason", "transient")]
        ),
        JOBS as f64
    );
    assert_eq!(
        metric_value(
            &metrics,
            "herald_channel_sends_total",
            &[("channel", "email"), ("outcome", "delivered")]
        ),
        JOBS as f64
    );

    assert_eq!(
        metric_value(
            &metrics,
            "herald_delayed_retries_total",
            &[("channel", "push"), ("reason", "transient")]
        ),
        JOBS as f64,
        "each timed-out push is retried later through a delay queue"
    );

    assert_eq!(herald.stop().await, 0);
    assert_eventually_waiting(topology, JOBS as u32).await;
    topology.delete().await;
}
