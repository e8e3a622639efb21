//! The Mailgun, SES and Vonage kinds through the real binary: configured only through the
//! environment, routed by `[channels]`, and recorded in the ledger with each provider's
//! message id.

use std::time::Duration;

use wiremock::matchers::{basic_auth, header_regex, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

const MAILGUN_MESSAGE_ID: &str = "<20260101120000.1.0123456789ABCDEF@mg.example.com>";
const SES_MESSAGE_ID: &str = "0102018c5f0a1b2c-3d4e5f60-7182-93a4-b5c6-d7e8f9a0b1c2-000000";
const VONAGE_MESSAGE_ID: &str = "0C000000217B7F02";

/// Returns each channel's provider and provider message id from the ledger.
async fn ledger_rows(topology: &Topology, job_id: &str) -> Vec<(String, String, Option<String>)> {
    let pool = sqlx::PgPool::connect(&format!("{POSTGRES_URL}/{}", topology.database))
        .await
        .expect("the test's ledger database exists");
    let rows = sqlx::query_as(
        "SELECT channel, provider, provider_message_id FROM deliveries WHERE job_id = $1 ORDER BY channel",
    )
    .bind(job_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// Returns the settings of a provider section for `kind`, named like the kind.
fn provider_env(kind: &str, base_url: &str, keys: &[(&str, &str)]) -> Vec<(String, String)> {
    let prefix = format!("HERALD__PROVIDERS__{}", kind.to_uppercase());
    let mut env = vec![
        env_pair(&format!("{prefix}__KIND"), kind),
        env_pair(&format!("{prefix}__BASE_URL"), base_url),
        env_pair(&format!("{prefix}__MAX_IN_FLIGHT"), "4"),
        env_pair(&format!("{prefix}__RATE_LIMIT__PER_SECOND"), "10"),
        env_pair(&format!("{prefix}__RATE_LIMIT__BURST"), "10"),
    ];
    env.extend(
        keys.iter()
            .map(|(key, value)| env_pair(&format!("{prefix}__{key}"), value)),
    );
    env
}

async fn start(fixture: &Fixture, env: Vec<(String, String)>) -> RunningHerald {
    let mut all = fixture.topology.env();
    all.extend(fixture.providers.env());
    all.push(env_pair("HERALD__CHANNELS__PUSH", ""));
    all.extend(env);
    RunningHerald::start(all).await
}

#[tokio::test]
async fn mailgun_and_vonage_deliver_and_record_ids() {
    let fixture = Fixture::new("more-providers-mailgun-vonage").await;
    let mailgun = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/mg.example.com/messages"))
        .and(basic_auth("api", "key-e2e"))
        .and(header_regex(
            "content-type",
            "^multipart/form-data; boundary=",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": MAILGUN_MESSAGE_ID,
            "message": "Queued. Thank you.",
        })))
        .expect(1)
        .mount(&mailgun)
        .await;
    let vonage = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/sms/json"))
        .and(header_regex(
            "content-type",
            "^application/x-www-form-urlencoded$",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "message-count": "1",
            "messages": [{"to": "15555550001", "message-id": VONAGE_MESSAGE_ID, "status": "0"}],
        })))
        .expect(1)
        .mount(&vonage)
        .await;
    let mut env = vec![
        env_pair("HERALD__CHANNELS__EMAIL", "mailgun"),
        env_pair("HERALD__CHANNELS__SMS", "vonage"),
    ];
    env.extend(provider_env(
        "mailgun",
        &mailgun.uri(),
        &[
            ("DOMAIN", "mg.example.com"),
            ("FROM", "n@mg.example.com"),
            ("API_KEY", "key-e2e"),
        ],
    ));
    env.extend(provider_env(
        "vonage",
        &vonage.uri(),
        &[
            ("API_KEY", "a1b2c3d4"),
            ("API_SECRET", "vonage-e2e"),
            ("FROM", "Herald"),
        ],
    ));
    let herald = start(&fixture, env).await;

    fixture
        .topology
        .publish_jobs(&[job("more-1", 1, &["email", "sms"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(herald.stop().await, 0);

    assert!(fixture.providers.email_requests().await.is_empty());
    assert!(fixture.providers.sms_requests().await.is_empty());
    let rows = ledger_rows(&fixture.topology, "more-1").await;
    assert_eq!(
        rows,
        [
            (
                "email".to_owned(),
                "mailgun".to_owned(),
                Some(MAILGUN_MESSAGE_ID.to_owned())
            ),
            (
                "sms".to_owned(),
                "vonage".to_owned(),
                Some(VONAGE_MESSAGE_ID.to_owned())
            ),
        ]
    );
    fixture.topology.delete().await;
}

#[tokio::test]
async fn ses_delivers_signed_request_and_records_id() {
    let fixture = Fixture::new("more-providers-ses").await;
    let ses = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v2/email/outbound-emails"))
        .and(header_regex(
            "authorization",
            r"^AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/\d{8}/eu-west-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=[0-9a-f]{64}$",
        ))
        .and(header_regex("content-type", "^application/json$"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"MessageId": SES_MESSAGE_ID})),
        )
        .expect(1)
        .mount(&ses)
        .await;
    let mut env = vec![env_pair("HERALD__CHANNELS__EMAIL", "ses")];
    env.extend(provider_env(
        "ses",
        &ses.uri(),
        &[
            ("REGION", "eu-west-1"),
            ("ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
            ("SECRET_ACCESS_KEY", "ses-e2e-secret"),
            ("FROM_EMAIL", "n@example.com"),
        ],
    ));
    let herald = start(&fixture, env).await;

    fixture
        .topology
        .publish_jobs(&[job("more-ses-1", 1, &["email"])])
        .await;
    herald
        .wait_for_metric(
            "herald_jobs_completed_total",
            &[("outcome", "delivered")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    assert!(!herald.log_text().contains("ses-e2e-secret"));
    assert_eq!(herald.stop().await, 0);

    let rows = ledger_rows(&fixture.topology, "more-ses-1").await;
    assert_eq!(
        rows,
        [(
            "email".to_owned(),
            "ses".to_owned(),
            Some(SES_MESSAGE_ID.to_owned())
        )]
    );
    fixture.topology.delete().await;
}
