//! Jobs travel from the work queue to every provider in its documented wire format.

use std::time::Duration;

use base64::Engine;

use crate::helpers::*;

#[tokio::test]
async fn jobs_reach_providers_in_wire_format() {
    let fixture = Fixture::new("wire-format").await;
    let (topology, providers) = (&fixture.topology, &fixture.providers);
    let herald = fixture.start(&[]).await;

    let jobs: Vec<_> = (0..3)
        .map(|i| job(&format!("wire-{i}"), i, &["email", "sms", "push"]))
        .collect();
    topology.publish_jobs(&jobs).await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            3.0,
            Duration::from_secs(20),
        )
        .await;

    let emails = providers.email_requests().await;
    assert_eq!(emails.len(), 3, "SendGrid requests");
    for request in &emails {
        assert_eq!(request.method.as_str(), "POST");
        assert_eq!(header(request, "authorization"), "Bearer SG.test-key");
        assert!(header(request, "content-type").starts_with("application/json"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let to = body["personalizations"][0]["to"][0]["email"]
            .as_str()
            .unwrap();
        assert!(
            to.starts_with("user") && to.ends_with("@example.com"),
            "{body}"
        );
        assert_eq!(body["from"]["email"], "notifications@example.com");
        assert_eq!(body["subject"], "Welcome to Herald");
        assert_eq!(body["content"][0]["type"], "text/plain");
        assert_eq!(body["content"][1]["type"], "text/html");
        let job_id = body["personalizations"][0]["custom_args"]["herald_job_id"]
            .as_str()
            .unwrap();
        assert!(job_id.starts_with("wire-"), "{body}");
    }

    let texts = providers.sms_requests().await;
    assert_eq!(texts.len(), 3, "Twilio requests");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:twilio-test-token"));
    for request in &texts {
        assert_eq!(request.method.as_str(), "POST");
        assert_eq!(header(request, "authorization"), format!("Basic {basic}"));
        assert_eq!(
            header(request, "content-type"),
            "application/x-www-form-urlencoded"
        );
        let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
            .into_owned()
            .collect();
        let value = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        assert!(value("To").unwrap().starts_with("+1555555"), "{form:?}");
        assert_eq!(value("From").as_deref(), Some("+15555550100"));
        assert!(
            value("Body").unwrap().starts_with("Your code is"),
            "{form:?}"
        );
    }

    let pushes = providers.push_requests().await;
    assert_eq!(pushes.len(), 3, "FCM requests");
    for request in &pushes {
        assert_eq!(request.method.as_str(), "POST");
        assert_eq!(
            header(request, "authorization"),
            "Bearer ya29.test-access-token"
        );
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert!(
            body["message"]["token"]
                .as_str()
                .unwrap()
                .starts_with("example-device-token-")
        );
        assert_eq!(body["message"]["notification"]["title"], "Welcome");
        assert_eq!(body["message"]["data"]["screen"], "home");
    }
    let token_requests = Providers::requests(&providers.fcm, "/token").await;
    assert_eq!(
        token_requests.len(),
        1,
        "one access token serves every push"
    );
    let grant: Vec<(String, String)> = url::form_urlencoded::parse(&token_requests[0].body)
        .into_owned()
        .collect();
    assert!(grant.contains(&(
        "grant_type".into(),
        "urn:ietf:params:oauth:grant-type:jwt-bearer".into()
    )));

    assert_eq!(herald.stop().await, 0, "herald exit code");
    assert_eq!(
        topology.depth(&topology.queue).await,
        0,
        "work queue after shutdown"
    );
    assert_eq!(
        topology.depth(&topology.dead_letter_queue).await,
        0,
        "dead-letter queue"
    );
    topology.delete().await;
}

fn header(request: &wiremock::Request, name: &str) -> String {
    request
        .headers
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
