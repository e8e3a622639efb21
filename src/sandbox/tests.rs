use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::record::mask_token;
use super::*;

const DEVICE_TOKEN: &str = "dGVzdC1kZXZpY2UtdG9rZW4tZm9yLXRoZS1zYW5kYm94";

/// A sandbox serving on a loopback port, stopped by `stop`.
struct Running {
    base: String,
    log: RequestLog,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn shutdown(self) -> std::io::Result<()> {
        self.stop.send(()).expect("server task is gone");
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve did not return within 5 s of shutdown")
            .expect("serve task panicked")
    }
}

fn loopback_args() -> SandboxArgs {
    SandboxArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..SandboxArgs::default()
    }
}

async fn start(args: SandboxArgs) -> Running {
    let sandbox = Sandbox::bind(args).await.expect("bind failed");
    let base = format!("http://{}", sandbox.local_addr());
    let log = sandbox.log();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(sandbox.serve(async {
        let _ = stopped.await;
    }));
    Running {
        base,
        log,
        stop,
        task,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn mail() -> Value {
    json!({
        "personalizations": [{
            "to": [{ "email": "alice@example.com" }],
            "custom_args": { "herald_job_id": "job-42" },
        }],
        "from": { "email": "notifications@example.com", "name": "Herald" },
        "subject": "Your code",
        "content": [{ "type": "text/plain", "value": "123456" }],
    })
}

fn sms() -> Vec<(&'static str, &'static str)> {
    vec![
        ("To", "+15555550123"),
        ("From", "+15555550100"),
        ("Body", "Your code is 123456"),
    ]
}

fn encode_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn jwt(claims: &Value) -> String {
    let header = encode_json(&json!({ "alg": "RS256", "typ": "JWT" }));
    let signature = URL_SAFE_NO_PAD.encode(b"not-a-real-signature");
    format!("{header}.{}.{signature}", encode_json(claims))
}

fn valid_claims() -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "herald@demo.iam.gserviceaccount.com",
        "scope": "https://www.googleapis.com/auth/firebase.messaging",
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now,
        "exp": now + 3600,
    })
}

async fn request_token(base: &str, assertion: &str) -> reqwest::Response {
    client()
        .post(format!("{base}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .unwrap()
}

async fn access_token(base: &str) -> String {
    let reply: Value = request_token(base, &jwt(&valid_claims()))
        .await
        .json()
        .await
        .unwrap();
    reply["access_token"].as_str().unwrap().to_owned()
}

fn push() -> Value {
    json!({
        "message": {
            "token": DEVICE_TOKEN,
            "notification": { "title": "Hello", "body": "World" },
            "data": { "herald_job_id": "job-7" },
        }
    })
}

async fn send_mail(base: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/v3/mail/send"))
        .bearer_auth("SG.test-key")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn send_sms(base: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{base}/2010-04-01/Accounts/AC123/Messages.json"))
        .basic_auth("AC123", Some("secret"))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn send_push(base: &str, token: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/projects/demo/messages:send"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

// === CLI ===

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: SandboxArgs,
}

#[test]
fn cli_defaults_match_default() {
    let cli = Cli::try_parse_from(["sandbox"]).unwrap();
    assert_eq!(cli.args, SandboxArgs::default());
}

#[test]
fn cli_parses_fault_flags() {
    let cli = Cli::try_parse_from([
        "sandbox",
        "--error-rate",
        "0.25",
        "--error-status",
        "429",
        "--retry-after",
        "3",
        "--fail-provider",
        "fcm",
        "--latency-ms",
        "15",
    ])
    .unwrap();
    assert_eq!(cli.args.error_rate, 0.25);
    assert_eq!(cli.args.error_status, ErrorStatus::TooManyRequests);
    assert_eq!(cli.args.retry_after, Some(3));
    assert_eq!(cli.args.fail_provider, FaultTarget::Fcm);
    assert_eq!(cli.args.latency_ms, 15);
}

#[test]
fn cli_rejects_bad_fault_flags() {
    assert!(Cli::try_parse_from(["sandbox", "--error-rate", "1.5"]).is_err());
    assert!(Cli::try_parse_from(["sandbox", "--error-rate", "-0.1"]).is_err());
    assert!(Cli::try_parse_from(["sandbox", "--error-status", "404"]).is_err());
    assert!(Cli::try_parse_from(["sandbox", "--fail-provider", "apns"]).is_err());
}

#[tokio::test]
async fn bind_rejects_bad_error_rate() {
    let args = SandboxArgs {
        error_rate: 2.0,
        ..loopback_args()
    };
    let error = Sandbox::bind(args).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

// === SendGrid ===

#[tokio::test]
async fn sendgrid_accepts_valid_mail() {
    let server = start(loopback_args()).await;

    let reply = send_mail(&server.base, &mail()).await;

    assert_eq!(reply.status(), 202);
    let message_id = reply.headers()["x-message-id"].to_str().unwrap().to_owned();
    assert_eq!(message_id.len(), 22);
    assert_eq!(reply.text().await.unwrap(), "");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sendgrid_rejects_missing_key() {
    let server = start(loopback_args()).await;

    let reply = client()
        .post(format!("{}/v3/mail/send", server.base))
        .json(&mail())
        .send()
        .await
        .unwrap();

    assert_eq!(reply.status(), 401);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], Value::Null);
    assert!(body["errors"][0]["message"].is_string());
    server.shutdown().await.unwrap();
}

/// A change that breaks one field of a valid mail.
type MailEdit = fn(&mut Value);

#[tokio::test]
async fn sendgrid_names_invalid_field() {
    let server = start(loopback_args()).await;
    let cases: Vec<(&str, MailEdit)> = vec![
        ("personalizations", |m| {
            m.as_object_mut().unwrap().remove("personalizations");
        }),
        ("personalizations.0.to", |m| {
            m["personalizations"][0]["to"] = json!([]);
        }),
        ("personalizations.0.to.0.email", |m| {
            m["personalizations"][0]["to"][0]["email"] = json!("not-an-address");
        }),
        ("from.email", |m| {
            m.as_object_mut().unwrap().remove("from");
        }),
        ("subject", |m| {
            m.as_object_mut().unwrap().remove("subject");
        }),
        ("content", |m| {
            m["content"] = json!([]);
        }),
        ("content.0.value", |m| {
            m["content"][0]["value"] = json!("");
        }),
    ];

    for (field, break_mail) in cases {
        let mut body = mail();
        break_mail(&mut body);
        let reply = send_mail(&server.base, &body).await;
        assert_eq!(reply.status(), 400, "field {field}");
        let errors: Value = reply.json().await.unwrap();
        assert_eq!(errors["errors"][0]["field"], field);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sendgrid_accepts_personalization_subject() {
    let server = start(loopback_args()).await;
    let mut body = mail();
    body.as_object_mut().unwrap().remove("subject");
    body["personalizations"][0]["subject"] = json!("Per-recipient subject");

    let reply = send_mail(&server.base, &body).await;

    assert_eq!(reply.status(), 202);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn sendgrid_sandbox_mode_answers_200() {
    let server = start(loopback_args()).await;
    let mut body = mail();
    body["mail_settings"] = json!({ "sandbox_mode": { "enable": true } });

    let reply = send_mail(&server.base, &body).await;

    assert_eq!(reply.status(), 200);
    server.shutdown().await.unwrap();
}

// === Twilio ===

#[tokio::test]
async fn twilio_creates_message() {
    let server = start(loopback_args()).await;

    let reply = send_sms(&server.base, &sms()).await;

    assert_eq!(reply.status(), 201);
    let message: Value = reply.json().await.unwrap();
    let sid = message["sid"].as_str().unwrap();
    assert!(sid.starts_with("SM"), "sid {sid}");
    assert_eq!(sid.len(), 34);
    assert!(sid[2..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(message["status"], "queued");
    assert_eq!(message["to"], "+15555550123");
    assert_eq!(message["from"], "+15555550100");
    assert_eq!(message["body"], "Your code is 123456");
    assert_eq!(message["num_segments"], "1");
    assert_eq!(message["error_code"], Value::Null);
    let created = message["date_created"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc2822(created).is_ok());
    assert_eq!(
        message["uri"],
        format!("/2010-04-01/Accounts/AC123/Messages/{sid}.json")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn twilio_messaging_service_is_accepted() {
    let server = start(loopback_args()).await;
    let form = [
        ("To", "+15555550123"),
        ("MessagingServiceSid", "MG00000000000000000000000000000000"),
        ("Body", "hi"),
    ];

    let reply = send_sms(&server.base, &form).await;

    assert_eq!(reply.status(), 201);
    let message: Value = reply.json().await.unwrap();
    assert_eq!(message["status"], "accepted");
    assert_eq!(message["from"], Value::Null);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn twilio_rejects_missing_auth() {
    let server = start(loopback_args()).await;

    let reply = client()
        .post(format!(
            "{}/2010-04-01/Accounts/AC123/Messages.json",
            server.base
        ))
        .form(&sms())
        .send()
        .await
        .unwrap();

    assert_eq!(reply.status(), 401);
    assert!(reply.headers().contains_key("www-authenticate"));
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["code"], 20003);
    assert_eq!(body["status"], 401);
    assert_eq!(
        body["more_info"],
        "https://www.twilio.com/docs/errors/20003"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn twilio_rejects_json_body() {
    let server = start(loopback_args()).await;

    let reply = client()
        .post(format!(
            "{}/2010-04-01/Accounts/AC123/Messages.json",
            server.base
        ))
        .basic_auth("AC123", Some("secret"))
        .json(&json!({ "To": "+15555550123", "From": "+15555550100", "Body": "hi" }))
        .send()
        .await
        .unwrap();

    assert_eq!(reply.status(), 400);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["code"], 21604);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn twilio_checks_required_fields() {
    let server = start(loopback_args()).await;
    let cases: [(&[(&str, &str)], u32); 4] = [
        (
            &[("To", "+1555"), ("From", "+15555550100"), ("Body", "hi")],
            21211,
        ),
        (&[("From", "+15555550100"), ("Body", "hi")], 21604),
        (&[("To", "+15555550123"), ("Body", "hi")], 21603),
        (&[("To", "+15555550123"), ("From", "+15555550100")], 21602),
    ];

    for (form, code) in cases {
        let reply = send_sms(&server.base, form).await;
        assert_eq!(reply.status(), 400, "code {code}");
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["code"], code);
    }
    server.shutdown().await.unwrap();
}

#[test]
fn sms_segments_follow_encoding() {
    assert_eq!(twilio::count_segments(&"a".repeat(160)), 1);
    assert_eq!(twilio::count_segments(&"a".repeat(161)), 2);
    assert_eq!(twilio::count_segments(&"a".repeat(306)), 2);
    assert_eq!(twilio::count_segments(&"a".repeat(307)), 3);
    // Extension characters take two septets.
    assert_eq!(twilio::count_segments(&"€".repeat(80)), 1);
    assert_eq!(twilio::count_segments(&"€".repeat(81)), 2);
    // A character outside GSM-7 switches the whole body to UCS-2.
    assert_eq!(twilio::count_segments(&"ł".repeat(70)), 1);
    assert_eq!(twilio::count_segments(&"ł".repeat(71)), 2);
}

// === FCM and its token endpoint ===

#[tokio::test]
async fn token_endpoint_issues_bearer_token() {
    let server = start(loopback_args()).await;

    let reply = request_token(&server.base, &jwt(&valid_claims())).await;

    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    assert!(!body["access_token"].as_str().unwrap().is_empty());
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(server.log.stats().tokens_issued, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_endpoint_rejects_bad_assertion() {
    let server = start(loopback_args()).await;
    let mut without_scope = valid_claims();
    without_scope.as_object_mut().unwrap().remove("scope");
    let assertions = ["only.two", "a.b.c", &jwt(&without_scope)];

    for assertion in assertions {
        let reply = request_token(&server.base, assertion).await;
        assert_eq!(reply.status(), 400, "assertion {assertion}");
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["error"], "invalid_grant");
        assert!(body["error_description"].is_string());
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_endpoint_rejects_other_grant() {
    let server = start(loopback_args()).await;

    let reply = client()
        .post(format!("{}/token", server.base))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();

    assert_eq!(reply.status(), 400);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
    server.shutdown().await.unwrap();
}

#[test]
fn assertion_lifetime_is_checked() {
    let now = 1_700_000_000;
    let with_times = |iat: i64, exp: i64| {
        let mut claims = valid_claims();
        claims["iat"] = json!(iat);
        claims["exp"] = json!(exp);
        fcm::check_assertion(&jwt(&claims), now)
    };
    assert!(with_times(now, now + 3600).is_ok());
    assert!(with_times(now, now + 3601).is_err());
    assert!(with_times(now - 7200, now - 3600).is_err());
    assert!(with_times(now + 3600, now + 3000).is_err());
    assert!(with_times(now + 1000, now + 2000).is_err());
}

#[tokio::test]
async fn fcm_send_with_issued_token() {
    let server = start(loopback_args()).await;
    let token = access_token(&server.base).await;

    let reply = send_push(&server.base, &token, &push()).await;

    assert_eq!(reply.status(), 200);
    let body: Value = reply.json().await.unwrap();
    let name = body["name"].as_str().unwrap();
    assert!(name.starts_with("projects/demo/messages/"), "name {name}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fcm_rejects_unknown_token() {
    let server = start(loopback_args()).await;

    let reply = send_push(&server.base, "ya29.never-issued", &push()).await;

    assert_eq!(reply.status(), 401);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert!(body["error"]["message"].is_string());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fcm_requires_message_token() {
    let server = start(loopback_args()).await;
    let token = access_token(&server.base).await;
    let body = json!({ "message": { "notification": { "title": "no target" } } });

    let reply = send_push(&server.base, &token, &body).await;

    assert_eq!(reply.status(), 400);
    let error: Value = reply.json().await.unwrap();
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
    let violation = &error["error"]["details"][1]["fieldViolations"][0];
    assert_eq!(violation["field"], "message.token");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fcm_rejects_non_string_data() {
    let server = start(loopback_args()).await;
    let token = access_token(&server.base).await;
    let mut body = push();
    body["message"]["data"] = json!({ "count": 3 });

    let reply = send_push(&server.base, &token, &body).await;

    assert_eq!(reply.status(), 400);
    let error: Value = reply.json().await.unwrap();
    let violation = &error["error"]["details"][1]["fieldViolations"][0];
    assert_eq!(violation["field"], "message.data[0].value");
    server.shutdown().await.unwrap();
}

// === Faults ===

#[tokio::test]
async fn injected_429_uses_provider_shapes() {
    let server = start(SandboxArgs {
        error_rate: 1.0,
        error_status: ErrorStatus::TooManyRequests,
        retry_after: Some(7),
        ..loopback_args()
    })
    .await;
    let token = access_token(&server.base).await;

    let reply = send_mail(&server.base, &mail()).await;
    assert_eq!(reply.status(), 429);
    assert_eq!(reply.headers()["retry-after"], "7");
    assert!(reply.headers().contains_key("x-ratelimit-reset"));
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["errors"][0]["message"], "too many requests");

    let reply = send_sms(&server.base, &sms()).await;
    assert_eq!(reply.status(), 429);
    assert_eq!(reply.headers()["retry-after"], "7");
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["code"], 20429);

    let reply = send_push(&server.base, &token, &push()).await;
    assert_eq!(reply.status(), 429);
    assert_eq!(reply.headers()["retry-after"], "7");
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(body["error"]["details"][0]["errorCode"], "QUOTA_EXCEEDED");

    let stats = server.log.stats();
    assert_eq!(stats.injected, 3);
    assert_eq!(stats.total, 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_503_targets_one_provider() {
    let server = start(SandboxArgs {
        error_rate: 1.0,
        fail_provider: FaultTarget::Fcm,
        ..loopback_args()
    })
    .await;
    let token = access_token(&server.base).await;

    assert_eq!(send_mail(&server.base, &mail()).await.status(), 202);
    assert_eq!(send_sms(&server.base, &sms()).await.status(), 201);
    let reply = send_push(&server.base, &token, &push()).await;
    assert_eq!(reply.status(), 503);
    assert!(!reply.headers().contains_key("retry-after"));
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn injected_500_omits_retry_after() {
    let server = start(SandboxArgs {
        error_rate: 1.0,
        error_status: ErrorStatus::InternalServerError,
        retry_after: Some(5),
        ..loopback_args()
    })
    .await;

    let reply = send_sms(&server.base, &sms()).await;

    assert_eq!(reply.status(), 500);
    assert!(!reply.headers().contains_key("retry-after"));
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["code"], 20500);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn zero_error_rate_injects_nothing() {
    let server = start(loopback_args()).await;

    for _ in 0..20 {
        assert_eq!(send_mail(&server.base, &mail()).await.status(), 202);
    }

    assert_eq!(server.log.stats().injected, 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn latency_delays_provider_replies() {
    let server = start(SandboxArgs {
        latency_ms: 200,
        ..loopback_args()
    })
    .await;

    let started = std::time::Instant::now();
    let reply = send_mail(&server.base, &mail()).await;

    assert_eq!(reply.status(), 202);
    assert!(started.elapsed() >= Duration::from_millis(200));
    server.shutdown().await.unwrap();
}

// === Record and admin endpoints ===

#[tokio::test]
async fn record_masks_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("received.jsonl");
    let server = start(SandboxArgs {
        record: Some(path.clone()),
        ..loopback_args()
    })
    .await;
    let token = access_token(&server.base).await;

    send_mail(&server.base, &mail()).await;
    send_sms(&server.base, &sms()).await;
    send_push(&server.base, &token, &push()).await;

    let listed: Vec<ReceivedRequest> = client()
        .get(format!("{}/sandbox/requests", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].provider, ProviderKind::Sendgrid);
    assert_eq!(listed[0].recipient.as_deref(), Some("a***@example.com"));
    assert_eq!(listed[0].job_id.as_deref(), Some("job-42"));
    assert_eq!(listed[0].status, 202);
    assert!(listed[0].message_id.is_some());
    assert_eq!(listed[1].provider, ProviderKind::Twilio);
    assert_eq!(listed[1].recipient.as_deref(), Some("***23"));
    assert_eq!(listed[1].status, 201);
    assert_eq!(listed[2].provider, ProviderKind::Fcm);
    let masked_token = mask_token(DEVICE_TOKEN);
    assert_eq!(listed[2].recipient.as_deref(), Some(masked_token.as_str()));
    assert_eq!(listed[2].job_id.as_deref(), Some("job-7"));

    server.shutdown().await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<ReceivedRequest> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, listed);
    assert!(!text.contains("alice@example.com"));
    assert!(!text.contains("5555550123"));
    assert!(!text.contains(DEVICE_TOKEN));
}

#[tokio::test]
async fn stats_count_and_reset() {
    let server = start(loopback_args()).await;
    send_mail(&server.base, &mail()).await;
    send_mail(&server.base, &json!({})).await;
    send_sms(&server.base, &sms()).await;

    let stats: Stats = client()
        .get(format!("{}/sandbox/stats", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.total, 3);
    assert_eq!(stats.by_provider[&ProviderKind::Sendgrid][&202], 1);
    assert_eq!(stats.by_provider[&ProviderKind::Sendgrid][&400], 1);
    assert_eq!(stats.by_provider[&ProviderKind::Twilio][&201], 1);

    let reply = client()
        .post(format!("{}/sandbox/reset", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 204);
    assert_eq!(server.log.stats(), Stats::default());
    assert!(server.log.received().is_empty());
    server.shutdown().await.unwrap();
}

#[test]
fn masks_hide_recipients() {
    assert_eq!(record::mask_email("alice@example.com"), "a***@example.com");
    assert_eq!(record::mask_email("no-at-sign"), "***");
    assert_eq!(record::mask_phone("+15555550123"), "***23");
    let masked = mask_token(DEVICE_TOKEN);
    assert!(masked.starts_with("tok:"));
    assert_eq!(masked.len(), 12);
    assert_eq!(masked, mask_token(DEVICE_TOKEN));
}

// === Shutdown ===

#[tokio::test]
async fn serve_stops_on_shutdown() {
    let server = start(loopback_args()).await;
    let base = server.base.clone();
    assert_eq!(send_mail(&base, &mail()).await.status(), 202);

    server.shutdown().await.unwrap();

    let after = client().post(format!("{base}/v3/mail/send")).send().await;
    assert!(after.is_err(), "the port still answers after shutdown");
}

#[tokio::test]
async fn shutdown_lets_open_request_finish() {
    let server = start(SandboxArgs {
        latency_ms: 300,
        ..loopback_args()
    })
    .await;
    let base = server.base.clone();
    let in_flight = tokio::spawn(async move { send_mail(&base, &mail()).await.status() });
    // Shuts down only once the request waits inside the server, in its injected latency.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.log.stats().arrived == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request did not reach the sandbox within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    server.shutdown().await.unwrap();

    assert_eq!(in_flight.await.unwrap(), 202);
}
