//! Poison jobs go to the dead-letter queue with their reason, once, while Herald keeps
//! consuming.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn poison_jobs_are_dead_lettered() {
    let fixture = Fixture::new("poison").await;
    let (topology, providers) = (&fixture.topology, &fixture.providers);
    let herald = fixture.start(&[]).await;

    let ten_megabytes = {
        let padding = "x".repeat(10 * 1024 * 1024);
        serde_json::json!({"id": "huge-1", "channels": {"sms": {"to": "+15555550123", "body": "hi"}}, "padding": padding})
            .to_string()
            .into_bytes()
    };
    let poison: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "invalid_json"),
        (
            br#"{"id": "bad-phone-1", "channels": {"sms": {"to": "555", "body": "hi"}}}"#.to_vec(),
            "invalid_job",
        ),
        (
            br#"{"channels": {"sms": {"to": "+15555550123", "body": "hi"}}}"#.to_vec(),
            "invalid_job",
        ),
        (ten_megabytes, "too_large"),
    ];
    let bodies: Vec<Vec<u8>> = poison.iter().map(|(body, _)| body.clone()).collect();
    topology.publish(&bodies).await;
    topology
        .publish_jobs(&[job("after-poison-1", 1, &["email"])])
        .await;

    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "poison")],
            4.0,
            Duration::from_secs(30),
        )
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        providers.email_requests().await.len(),
        1,
        "the valid job after the poison ones was sent"
    );
    assert!(
        providers.sms_requests().await.is_empty(),
        "no poison job reached a provider"
    );

    let metrics = herald.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            "herald_poison_jobs_total",
            &[("reason", "invalid_json")]
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "herald_poison_jobs_total",
            &[("reason", "invalid_job")]
        ),
        2.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "herald_poison_jobs_total",
            &[("reason", "too_large")]
        ),
        1.0
    );
    let warnings: Vec<_> = herald
        .logs()
        .into_iter()
        .filter(|line| message(line) == "poison job; dead-lettering it")
        .collect();
    assert_eq!(warnings.len(), 4, "one warning per poison job");
    assert!(warnings.iter().all(|line| line["level"] == "WARN"));

    assert_eq!(herald.stop().await, 0);
    // Workers dead-letter concurrently, so the queue's order is not the publishing order.
    let dead = topology.drain(&topology.dead_letter_queue).await;
    assert_eq!(dead.len(), 4, "dead-lettered messages");
    let dead_letter_of = |body: &[u8]| {
        dead.iter()
            .find(|message| message.body == body)
            .expect("every poison body is in the dead-letter queue, unchanged")
    };
    for (body, reason) in &poison {
        let message = dead_letter_of(body);
        assert_eq!(
            message.headers.get("x-herald-reason").map(String::as_str),
            Some(*reason)
        );
        assert!(!message.headers["x-herald-error"].is_empty());
        assert_eq!(message.headers["x-herald-source-queue"], topology.queue);
    }
    let bad_phone = dead_letter_of(&poison[1].0);
    assert_eq!(
        bad_phone.headers.get("x-herald-job-id").map(String::as_str),
        Some("bad-phone-1")
    );
    assert!(
        bad_phone.headers["x-herald-error"].contains("channels.sms.to"),
        "{:?}",
        bad_phone.headers
    );
    let missing_id = dead_letter_of(&poison[2].0);
    assert!(
        missing_id.headers["x-herald-error"].contains("`id`"),
        "{:?}",
        missing_id.headers
    );
    assert_eq!(topology.depth(&topology.queue).await, 0, "nothing requeued");
    topology.delete().await;
}
