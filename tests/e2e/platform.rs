//! A push whose platform the `push` provider does not serve fails alone, without a request.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn unsupported_platform_fails_push_alone() {
    let fixture = Fixture::new("unsupported-platform").await;
    let (topology, providers) = (&fixture.topology, &fixture.providers);
    let herald = fixture.start(&[]).await;
    let mut apns_job = job("apns-to-fcm", 0, &["email", "push"]);
    apns_job["channels"]["push"] = serde_json::json!({
        "platform": "apns",
        "token": "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        "title": "Order shipped"
    });

    topology.publish_jobs(&[apns_job]).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "partial")],
            1.0,
            Duration::from_secs(20),
        )
        .await;

    assert_eq!(providers.email_requests().await.len(), 1);
    assert!(
        providers.push_requests().await.is_empty(),
        "an APNs token must not reach FCM"
    );
    assert_eq!(herald.stop().await, 0);
    let dead = topology.drain(&topology.dead_letter_queue).await;
    assert_eq!(dead.len(), 1, "the push channel is dead-lettered");
    let headers = &dead[0].headers;
    assert_eq!(headers["x-herald-reason"], "permanent");
    assert_eq!(headers["x-herald-channel"], "push");
    assert_eq!(headers["x-herald-provider"], "fcm");
    assert_eq!(headers["x-herald-error-code"], "unsupported_platform");
    topology.delete().await;
}
