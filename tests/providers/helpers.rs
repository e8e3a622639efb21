//! Builds adapters the way Herald does: from layered settings and the shared HTTP client.

use std::path::PathBuf;
use std::sync::Arc;

use herald::config::Settings;
use herald::job::{
    DeviceToken, EmailAddress, EmailMessage, JobId, Notification, PhoneNumber, PushMessage,
    PushTarget, SmsMessage,
};
use herald::metrics::Metrics;
use herald::providers::{self, Provider, SendRequest, SendResult};

pub(crate) const SENDGRID_API_KEY: &str = "SG.test-key";
pub(crate) const TWILIO_ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const TWILIO_AUTH_TOKEN: &str = "twilio-test-token";
pub(crate) const TWILIO_FROM: &str = "+15005550006";
pub(crate) const JOB_ID: &str = "job-42";

/// Returns the path of a file under `tests/fixtures`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Returns the environment every test starts from: credentials for all three providers,
/// so that settings validation passes whichever one a test exercises.
fn base_env() -> Vec<(String, String)> {
    let account = fixture("fcm-service-account.json");
    [
        ("PROVIDERS__SENDGRID__API_KEY", SENDGRID_API_KEY),
        ("PROVIDERS__TWILIO__ACCOUNT_SID", TWILIO_ACCOUNT_SID),
        ("PROVIDERS__TWILIO__AUTH_TOKEN", TWILIO_AUTH_TOKEN),
        ("PROVIDERS__TWILIO__FROM", TWILIO_FROM),
        (
            "PROVIDERS__FCM__SERVICE_ACCOUNT_FILE",
            account.to_str().unwrap(),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (format!("HERALD__{key}"), value.to_owned()))
    .collect()
}

/// Loads settings with `overrides` (keys without the `HERALD__` prefix) on top of
/// [`base_env`].
pub(crate) fn settings(overrides: &[(&str, &str)]) -> Settings {
    let mut env = base_env();
    env.extend(
        overrides
            .iter()
            .map(|(key, value)| (format!("HERALD__{key}"), (*value).to_owned())),
    );
    Settings::load_with_env(None, env).expect("test settings are valid")
}

/// Builds provider `name` from `settings` with Herald's shared client.
pub(crate) fn build(settings: &Settings, name: &str) -> Arc<dyn Provider> {
    let client = providers::http::build_client(&settings.http).expect("client builds");
    let metrics = Arc::new(Metrics::new());
    providers::build(
        name,
        &settings.providers[name],
        &client,
        &settings.http,
        &metrics,
    )
    .expect("provider builds")
}

/// Builds provider `name` from the base settings with `overrides` applied.
pub(crate) fn provider(name: &str, overrides: &[(&str, &str)]) -> Arc<dyn Provider> {
    build(&settings(overrides), name)
}

/// Sends `notification` once as job [`JOB_ID`].
pub(crate) async fn send(provider: &dyn Provider, notification: &Notification) -> SendResult {
    let job_id = JobId::parse(JOB_ID).unwrap();
    provider
        .send(SendRequest {
            job_id: &job_id,
            notification,
        })
        .await
}

pub(crate) fn email(to: &str, text: Option<&str>, html: Option<&str>) -> Notification {
    Notification::Email(EmailMessage {
        to: EmailAddress::parse("to", to).unwrap(),
        subject: "Your order shipped".to_owned(),
        text: text.map(str::to_owned),
        html: html.map(str::to_owned),
    })
}

pub(crate) fn sms(to: &str, body: &str) -> Notification {
    Notification::Sms(SmsMessage {
        to: PhoneNumber::parse("to", to).unwrap(),
        body: body.to_owned(),
    })
}

pub(crate) fn push(
    token: &str,
    title: Option<&str>,
    body: Option<&str>,
    data: &[(&str, &str)],
) -> Notification {
    let target = PushTarget::Fcm(DeviceToken::parse("token", token).unwrap());
    push_to(target, title, body, data)
}

/// Builds a push to `target` with no TTL and no APNs options.
pub(crate) fn push_to(
    target: PushTarget,
    title: Option<&str>,
    body: Option<&str>,
    data: &[(&str, &str)],
) -> Notification {
    Notification::Push(PushMessage {
        target,
        title: title.map(str::to_owned),
        body: body.map(str::to_owned),
        data: data
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        ttl_secs: None,
        apns: Default::default(),
    })
}

/// Returns an HTTP date `seconds` from now, for `Retry-After`.
pub(crate) fn http_date_in(seconds: u64) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(seconds))
}
