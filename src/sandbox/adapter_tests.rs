//! The sandbox's Mailgun, SES and Vonage endpoints against Herald's own adapters, so the
//! two sides of the quick start agree on the wire format.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::oneshot;

use super::*;
use crate::config::{MailgunConfig, RateLimitConfig, SesConfig, VonageConfig};
use crate::job::{EmailAddress, EmailMessage, JobId, Notification, PhoneNumber, SmsMessage};
use crate::providers::{ErrorClass, Provider, SendRequest, SendResult};

const JOB_ID: &str = "sandbox-job-7";

/// Starts a sandbox with `args` on a loopback port. The returned sender stops it.
async fn start(args: SandboxArgs) -> (String, RequestLog, oneshot::Sender<()>) {
    let sandbox = Sandbox::bind(SandboxArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..args
    })
    .await
    .expect("bind failed");
    let base = format!("http://{}", sandbox.local_addr());
    let log = sandbox.log();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(sandbox.serve(async {
        let _ = stopped.await;
    }));
    (base, log, stop)
}

fn failing(status: ErrorStatus) -> SandboxArgs {
    SandboxArgs {
        error_rate: 1.0,
        error_status: status,
        retry_after: Some(2),
        ..SandboxArgs::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn rate_limit() -> RateLimitConfig {
    RateLimitConfig {
        per_second: 10,
        burst: 10,
    }
}

fn mailgun(base: &str) -> Arc<dyn Provider> {
    let config = MailgunConfig {
        base_url: base.to_owned(),
        domain: "mg.example.com".to_owned(),
        api_key: Some(SecretString::from("key-sandbox")),
        api_key_file: None,
        from: "Herald <n@mg.example.com>".to_owned(),
        test_mode: false,
        max_in_flight: 4,
        rate_limit: rate_limit(),
        circuit_breaker: Default::default(),
    };
    let sender =
        crate::providers::mailgun::MailgunSender::new("providers.mailgun", &config, client());
    Arc::new(sender.unwrap())
}

fn ses(base: &str) -> Arc<dyn Provider> {
    let config = SesConfig {
        base_url: base.to_owned(),
        region: "us-east-1".to_owned(),
        access_key_id: "AKIDEXAMPLE".to_owned(),
        secret_access_key: Some(SecretString::from("sandbox-secret")),
        secret_access_key_file: None,
        session_token: None,
        session_token_file: None,
        from_email: "n@example.com".to_owned(),
        from_name: String::new(),
        configuration_set: String::new(),
        max_in_flight: 4,
        rate_limit: rate_limit(),
        circuit_breaker: Default::default(),
    };
    Arc::new(crate::providers::ses::SesSender::new("providers.ses", &config, client()).unwrap())
}

fn vonage(base: &str) -> Arc<dyn Provider> {
    let config = VonageConfig {
        base_url: base.to_owned(),
        api_key: "a1b2c3d4".to_owned(),
        api_secret: Some(SecretString::from("sandbox-secret")),
        api_secret_file: None,
        from: "Herald".to_owned(),
        max_in_flight: 4,
        rate_limit: rate_limit(),
        circuit_breaker: Default::default(),
    };
    let sender = crate::providers::vonage::VonageSender::new("providers.vonage", &config, client());
    Arc::new(sender.unwrap())
}

fn email() -> Notification {
    Notification::Email(EmailMessage {
        to: EmailAddress::parse("to", "alice@example.com").unwrap(),
        subject: "Your code".to_owned(),
        text: Some("123456".to_owned()),
        html: None,
    })
}

fn sms() -> Notification {
    Notification::Sms(SmsMessage {
        to: PhoneNumber::parse("to", "+15555550123").unwrap(),
        body: "Your code is 123456".to_owned(),
    })
}

async fn send(provider: &dyn Provider, notification: &Notification) -> SendResult {
    let job_id = JobId::parse(JOB_ID).unwrap();
    provider
        .send(SendRequest {
            job_id: &job_id,
            notification,
        })
        .await
}

#[tokio::test]
async fn adapters_deliver_and_are_recorded() {
    let (base, log, stop) = start(SandboxArgs::default()).await;
    let cases = [
        (
            mailgun(&base),
            email(),
            ProviderKind::Mailgun,
            "a***@example.com",
        ),
        (ses(&base), email(), ProviderKind::Ses, "a***@example.com"),
        (vonage(&base), sms(), ProviderKind::Vonage, "***23"),
    ];

    for (provider, notification, kind, recipient) in cases {
        let delivered = send(provider.as_ref(), &notification).await.unwrap();

        let recorded = log.received().pop().unwrap();
        assert_eq!(recorded.provider, kind);
        assert_eq!(recorded.status, 200, "{kind:?}");
        assert_eq!(recorded.job_id.as_deref(), Some(JOB_ID), "{kind:?}");
        assert_eq!(recorded.recipient.as_deref(), Some(recipient), "{kind:?}");
        assert!(delivered.message_id.is_some(), "{kind:?}");
        assert_eq!(delivered.message_id, recorded.message_id, "{kind:?}");
    }
    stop.send(()).unwrap();
}

#[tokio::test]
async fn injected_429_is_rate_limited_for_each_kind() {
    let (base, log, stop) = start(failing(ErrorStatus::TooManyRequests)).await;

    let mailgun = send(mailgun(&base).as_ref(), &email()).await.unwrap_err();
    let ses = send(ses(&base).as_ref(), &email()).await.unwrap_err();
    let vonage = send(vonage(&base).as_ref(), &sms()).await.unwrap_err();

    assert_eq!(mailgun.class, ErrorClass::RateLimited);
    assert_eq!(mailgun.retry_after, Some(Duration::from_secs(2)));
    assert_eq!(ses.class, ErrorClass::RateLimited);
    assert_eq!(ses.code.as_deref(), Some("TooManyRequestsException"));
    assert_eq!(vonage.class, ErrorClass::RateLimited);
    assert_eq!(vonage.code.as_deref(), Some("1"));
    assert_eq!(log.stats().injected, 3);
    stop.send(()).unwrap();
}

#[tokio::test]
async fn injected_500_is_transient_for_each_kind() {
    let (base, _log, stop) = start(failing(ErrorStatus::InternalServerError)).await;

    let mailgun = send(mailgun(&base).as_ref(), &email()).await.unwrap_err();
    let ses = send(ses(&base).as_ref(), &email()).await.unwrap_err();
    let vonage = send(vonage(&base).as_ref(), &sms()).await.unwrap_err();

    assert_eq!(mailgun.class, ErrorClass::Transient);
    assert_eq!(ses.class, ErrorClass::Transient);
    assert_eq!(vonage.class, ErrorClass::Transient);
    assert_eq!(vonage.code.as_deref(), Some("5"));
    stop.send(()).unwrap();
}

#[tokio::test]
async fn unsigned_and_unauthenticated_requests_are_rejected() {
    let (base, _log, stop) = start(SandboxArgs::default()).await;

    let mailgun = client()
        .post(format!("{base}/v3/mg.example.com/messages"))
        .send()
        .await
        .unwrap();
    let ses = client()
        .post(format!("{base}/v2/email/outbound-emails"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let vonage: serde_json::Value = client()
        .post(format!("{base}/sms/json"))
        .json(&serde_json::json!({"api_key": "a", "api_secret": "b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(mailgun.status(), 401);
    assert_eq!(ses.status(), 403);
    assert_eq!(
        ses.headers()["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );
    assert_eq!(
        vonage["messages"][0]["status"], "2",
        "a JSON body is not read"
    );
    stop.send(()).unwrap();
}
