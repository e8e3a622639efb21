//! APNs against an HTTP/2-only mock that checks what Apple checks: the ES256 provider
//! token (signature, `kid`, `iss`, `iat` age), the `apns-*` headers and the device path.
//! It replies with Apple's statuses and `{"reason": …}` bodies.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::job::{ApnsPushType, ChannelKind, DeviceToken, JobId, Notification, PushTarget};
use herald::providers::{ErrorClass, Provider, dedupe};
use hyper::Version;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde_json::{Value, json};

use crate::h2_server::{H2Server, Recorded, Reply};
use crate::helpers;

const TEAM_ID: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.example.herald";
const DEVICE: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// Apple rejects provider tokens older than this.
const MAX_TOKEN_AGE_SECS: u64 = 3600;

/// The signing key of these tests, made from fixed bytes.
fn signing_key() -> p256::SecretKey {
    p256::SecretKey::from_slice(&[42; 32]).unwrap()
}

pub(crate) fn private_key_pem() -> String {
    signing_key()
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap()
        .to_string()
}

fn public_key_pem(key: &p256::SecretKey) -> String {
    key.public_key().to_public_key_pem(LineEnding::LF).unwrap()
}

/// Replies the mock sends beyond its own checks.
#[derive(Default)]
struct Script {
    /// Provider tokens to reject as `ExpiredProviderToken`, as Apple does once a token is
    /// an hour old by its clock.
    expired: HashSet<String>,
    /// Expire every token on first sight.
    expire_all: bool,
    /// Device tokens that get 410 `Unregistered`.
    unregistered: HashSet<String>,
    /// Device tokens to answer 400 `BadDeviceToken`.
    bad: HashSet<String>,
    /// A fixed reply for every request that passes the checks.
    reply: Option<(u16, Value)>,
}

/// Per-connection state: the tokens seen, in order.
#[derive(Default)]
struct Seen {
    tokens: Vec<String>,
}

struct Apns {
    server: H2Server,
    seen: Arc<Mutex<Seen>>,
    script: Arc<Mutex<Script>>,
}

impl Apns {
    async fn start(script: Script) -> Apns {
        Apns::start_with_key(script, public_key_pem(&signing_key())).await
    }

    /// Starts a mock that verifies tokens with `public_pem`.
    async fn start_with_key(script: Script, public_pem: String) -> Apns {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let decoding = DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap();
        let script = Arc::new(Mutex::new(script));
        let (state, rules) = (seen.clone(), script.clone());
        let server = H2Server::start(move |request| {
            let mut rules = rules.lock().unwrap();
            respond(request, &decoding, &mut rules, &mut state.lock().unwrap())
        })
        .await;
        Apns {
            server,
            seen,
            script,
        }
    }

    fn provider(&self, overrides: &[(&str, &str)]) -> Arc<dyn Provider> {
        let uri = self.server.uri();
        let pem = private_key_pem();
        let mut all = vec![
            ("PROVIDERS__APNS__BASE_URL", uri.as_str()),
            ("PROVIDERS__APNS__TEAM_ID", TEAM_ID),
            ("PROVIDERS__APNS__KEY_ID", KEY_ID),
            ("PROVIDERS__APNS__TOPIC", TOPIC),
            ("PROVIDERS__APNS__PRIVATE_KEY", pem.as_str()),
            ("CHANNELS__PUSH", "apns"),
        ];
        all.extend_from_slice(overrides);
        helpers::provider("apns", &all)
    }

    fn distinct_tokens(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.tokens.iter().collect::<HashSet<_>>().len()
    }
}

fn reason(status: u16, reason: &str) -> Reply {
    Reply::new(status).json(&json!({"reason": reason}))
}

/// Answers one request as APNs would.
fn respond(
    request: &Recorded,
    decoding: &DecodingKey,
    script: &mut Script,
    seen: &mut Seen,
) -> Reply {
    let Some(device) = request.path.strip_prefix("/3/device/") else {
        return reason(404, "BadPath");
    };
    if request.method != "POST" {
        return reason(405, "MethodNotAllowed");
    }
    if request.header("apns-topic") != Some(TOPIC) {
        return reason(400, "MissingTopic");
    }
    if !matches!(
        request.header("apns-push-type"),
        Some("alert" | "background")
    ) {
        return reason(400, "InvalidPushType");
    }
    if !matches!(request.header("apns-priority"), Some("10" | "5" | "1")) {
        return reason(400, "BadPriority");
    }
    let Some(apns_id) = request.header("apns-id").filter(|id| is_lowercase_uuid(id)) else {
        return reason(400, "BadMessageId");
    };
    if request
        .header("apns-collapse-id")
        .is_some_and(|id| id.len() > 64)
    {
        return reason(400, "BadCollapseId");
    }
    let Some(token) = request
        .header("authorization")
        .and_then(|value| value.strip_prefix("bearer "))
    else {
        return reason(403, "MissingProviderToken");
    };
    let previous = seen.tokens.last().cloned();
    seen.tokens.push(token.to_owned());
    if script.expire_all {
        script.expired.insert(token.to_owned());
    }
    if let Err(rejection) = check_token(token, decoding, script) {
        return reason(403, rejection);
    }
    // Apple throttles a team that replaces a token it still accepts within 20 minutes.
    if let Some(previous) = previous
        && previous != token
        && !script.expired.contains(&previous)
    {
        return reason(429, "TooManyProviderTokenUpdates");
    }

    if script.bad.contains(device) {
        return reason(400, "BadDeviceToken");
    }
    if script.unregistered.contains(device) {
        return Reply::new(410)
            .json(&json!({"reason": "Unregistered", "timestamp": 1_700_000_000_000u64}));
    }
    if let Some((status, body)) = &script.reply {
        return Reply::new(*status).json(body);
    }
    Reply::new(200).header("apns-id", apns_id)
}

/// Verifies the provider token: ES256 with the team's key, `kid`, `iss` and an `iat` no
/// older than an hour. Returns Apple's reason on failure.
fn check_token(token: &str, decoding: &DecodingKey, script: &Script) -> Result<(), &'static str> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "InvalidProviderToken")?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(KEY_ID) {
        return Err("InvalidProviderToken");
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<Value>(token, decoding, &validation)
        .map_err(|_| "InvalidProviderToken")?
        .claims;
    if claims["iss"] != TEAM_ID {
        return Err("InvalidProviderToken");
    }
    let issued_at = claims["iat"].as_u64().ok_or("InvalidProviderToken")?;
    let now = unix_now();
    if issued_at > now + 60 {
        return Err("InvalidProviderToken");
    }
    if now - issued_at.min(now) > MAX_TOKEN_AGE_SECS || script.expired.contains(token) {
        return Err("ExpiredProviderToken");
    }
    Ok(())
}

fn is_lowercase_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|group| group.len()).collect();
    lengths == [8, 4, 4, 4, 12]
        && text
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Reads a token's `iat` without verifying it (the mock verified it when it arrived).
fn iat_of(token: &str) -> u64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["iat"].as_u64().unwrap()
}

pub(crate) fn apns_push(device: &str) -> Notification {
    helpers::push_to(
        PushTarget::Apns(DeviceToken::parse("token", device).unwrap()),
        Some("Order shipped"),
        Some("It arrives Tuesday."),
        &[("order_id", "42")],
    )
}

fn job_id() -> JobId {
    JobId::parse(helpers::JOB_ID).unwrap()
}

#[tokio::test]
async fn sent_alert_passes_apple_checks() {
    let apns = Apns::start(Script::default()).await;
    let provider = apns.provider(&[]);

    let delivered = helpers::send(provider.as_ref(), &apns_push(DEVICE))
        .await
        .unwrap();

    let expected_id = dedupe::message_uuid(&job_id(), ChannelKind::Push).to_string();
    assert_eq!(delivered.status, 200);
    assert_eq!(delivered.message_id.as_deref(), Some(expected_id.as_str()));
    let requests = apns.server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.version, Version::HTTP_2);
    assert_eq!(request.path, format!("/3/device/{DEVICE}"));
    assert_eq!(request.header("apns-push-type"), Some("alert"));
    assert_eq!(request.header("apns-priority"), Some("10"));
    let collapse_key = dedupe::collapse_key(&job_id(), ChannelKind::Push);
    assert_eq!(
        request.header("apns-collapse-id"),
        Some(collapse_key.as_str())
    );
    assert_eq!(request.header("apns-expiration"), None);
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "aps": {"alert": {"title": "Order shipped", "body": "It arrives Tuesday."}},
            "order_id": "42",
        })
    );
}

#[tokio::test]
async fn background_push_uses_priority_five() {
    let apns = Apns::start(Script::default()).await;
    let provider = apns.provider(&[]);
    let Notification::Push(mut push) = apns_push(DEVICE) else {
        unreachable!()
    };
    push.title = None;
    push.body = None;
    push.apns.push_type = ApnsPushType::Background;
    push.ttl_secs = Some(600);

    helpers::send(provider.as_ref(), &Notification::Push(push))
        .await
        .unwrap();

    let request = &apns.server.requests()[0];
    assert_eq!(request.header("apns-push-type"), Some("background"));
    assert_eq!(request.header("apns-priority"), Some("5"));
    let expiration: u64 = request.header("apns-expiration").unwrap().parse().unwrap();
    let expected = unix_now() + 600;
    assert!(
        expiration.abs_diff(expected) <= 2,
        "{expiration} vs {expected}"
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({"aps": {"content-available": 1}, "order_id": "42"})
    );
}

#[tokio::test]
async fn provider_token_is_reused_across_sends() {
    let apns = Apns::start(Script::default()).await;
    let provider = apns.provider(&[]);

    for _ in 0..5 {
        helpers::send(provider.as_ref(), &apns_push(DEVICE))
            .await
            .unwrap();
    }

    assert_eq!(apns.server.requests().len(), 5);
    assert_eq!(apns.distinct_tokens(), 1);
}

#[tokio::test]
async fn expired_provider_token_is_reminted_once() {
    let apns = Apns::start(Script::default()).await;
    let provider = apns.provider(&[]);
    helpers::send(provider.as_ref(), &apns_push(DEVICE))
        .await
        .unwrap();
    let first = apns.seen.lock().unwrap().tokens[0].clone();
    // Apple's clock now holds the cached token for older than an hour.
    apns.expire(&first);

    let expired = helpers::send(provider.as_ref(), &apns_push(DEVICE))
        .await
        .unwrap_err();
    provider.invalidate_credentials();
    let resent = helpers::send(provider.as_ref(), &apns_push(DEVICE)).await;

    assert_eq!(expired.class, ErrorClass::Credentials);
    assert_eq!(expired.status, Some(403));
    assert_eq!(expired.code.as_deref(), Some("ExpiredProviderToken"));
    assert_eq!(resent.unwrap().status, 200);
    let tokens = apns.seen.lock().unwrap().tokens.clone();
    assert_eq!(tokens.len(), 3);
    assert_eq!(apns.distinct_tokens(), 2);
    assert!(iat_of(&tokens[2]) > iat_of(&first));
}

#[tokio::test]
async fn retry_loop_remints_exactly_once() {
    let apns = Apns::start(Script {
        expire_all: true,
        ..Script::default()
    })
    .await;
    let settings = apns_settings(&apns);
    let provider = helpers::build(&settings, "apns");
    let metrics = Arc::new(herald::metrics::Metrics::new());
    let route = herald::routes::Route::new(
        Arc::from("apns"),
        provider,
        herald::limits::ProviderLimits::new(
            Arc::from("apns"),
            settings.providers["apns"].rate_limit(),
            4,
            Duration::ZERO,
            metrics.clone(),
        ),
        herald::routes::CircuitBreaker::new(&settings.circuit_breaker),
    );
    let routes =
        herald::routes::Routes::from_routes([(herald::job::ChannelKind::Push, vec![route])]);
    let route = routes.get(herald::job::ChannelKind::Push).unwrap();
    let policy = herald::retry::RetryPolicy::new(&settings.retry, &settings.limits);
    let push = apns_push(DEVICE);
    let job_id = job_id();

    let outcome = herald::retry::send_with_retries(
        route,
        &policy,
        herald::providers::SendRequest {
            job_id: &job_id,
            notification: &push,
        },
        &metrics,
    )
    .await;

    let error = outcome.result.unwrap_err();
    assert_eq!(error.class, ErrorClass::Credentials);
    assert_eq!(error.code.as_deref(), Some("ExpiredProviderToken"));
    assert_eq!(apns.server.requests().len(), 2);
    assert_eq!(apns.distinct_tokens(), 2);
}

fn apns_settings(apns: &Apns) -> herald::config::Settings {
    let uri = apns.server.uri();
    let pem = private_key_pem();
    helpers::settings(&[
        ("PROVIDERS__APNS__BASE_URL", uri.as_str()),
        ("PROVIDERS__APNS__TEAM_ID", TEAM_ID),
        ("PROVIDERS__APNS__KEY_ID", KEY_ID),
        ("PROVIDERS__APNS__TOPIC", TOPIC),
        ("PROVIDERS__APNS__PRIVATE_KEY", pem.as_str()),
        ("CHANNELS__PUSH", "apns"),
    ])
}

#[tokio::test]
async fn bad_device_token_is_dead() {
    let apns = Apns::start(Script {
        bad: HashSet::from([DEVICE.to_owned()]),
        ..Script::default()
    })
    .await;
    let provider = apns.provider(&[]);

    let error = helpers::send(provider.as_ref(), &apns_push(DEVICE))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.status, Some(400));
    assert_eq!(error.code.as_deref(), Some("BadDeviceToken"));
    assert!(!error.message.contains(DEVICE), "{}", error.message);
}

#[tokio::test]
async fn unregistered_token_is_dead() {
    let apns = Apns::start(Script {
        unregistered: HashSet::from([DEVICE.to_owned()]),
        ..Script::default()
    })
    .await;
    let provider = apns.provider(&[]);

    let error = helpers::send(provider.as_ref(), &apns_push(DEVICE))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(error.recipient_invalid);
    assert_eq!(error.status, Some(410));
    assert_eq!(error.code.as_deref(), Some("Unregistered"));
}

#[tokio::test]
async fn token_from_another_key_is_permanent() {
    let other_key = p256::SecretKey::from_slice(&[43; 32]).unwrap();
    let apns = Apns::start_with_key(Script::default(), public_key_pem(&other_key)).await;
    let provider = apns.provider(&[]);

    let error = helpers::send(provider.as_ref(), &apns_push(DEVICE))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert!(!error.recipient_invalid);
    assert_eq!(error.status, Some(403));
    assert_eq!(error.code.as_deref(), Some("InvalidProviderToken"));
}

#[tokio::test]
async fn scripted_replies_are_classified() {
    let cases = [
        (429, "TooManyRequests", ErrorClass::RateLimited),
        (413, "PayloadTooLarge", ErrorClass::Permanent),
        (400, "BadCollapseId", ErrorClass::Permanent),
        (500, "InternalServerError", ErrorClass::Transient),
        (503, "ServiceUnavailable", ErrorClass::Transient),
    ];
    for (status, name, class) in cases {
        let apns = Apns::start(Script {
            reply: Some((status, json!({"reason": name}))),
            ..Script::default()
        })
        .await;
        let provider = apns.provider(&[]);

        let error = helpers::send(provider.as_ref(), &apns_push(DEVICE))
            .await
            .unwrap_err();

        assert_eq!(error.class, class, "{status} {name}");
        assert_eq!(error.status, Some(status), "{name}");
        assert_eq!(error.code.as_deref(), Some(name));
        assert!(!error.recipient_invalid, "{name}");
    }
}

#[tokio::test]
async fn fcm_target_is_not_sent() {
    let apns = Apns::start(Script::default()).await;
    let provider = apns.provider(&[]);
    let fcm_push = helpers::push("fcm-token", Some("Hi"), None, &[]);

    assert!(!provider.supports(&fcm_push));
    let error = helpers::send(provider.as_ref(), &fcm_push)
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some("unsupported_platform"));
    assert!(apns.server.requests().is_empty());
    assert!(provider.supports(&apns_push(DEVICE)));
}

impl Apns {
    /// Makes the mock treat `token` as older than an hour from now on.
    fn expire(&self, token: &str) {
        self.script.lock().unwrap().expired.insert(token.to_owned());
    }
}

#[tokio::test]
async fn silent_server_times_out_as_transient() {
    // Accepts connections and never answers, not even the HTTP/2 preface.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let pem = private_key_pem();
    let provider = helpers::provider(
        "apns",
        &[
            ("PROVIDERS__APNS__BASE_URL", uri.as_str()),
            ("PROVIDERS__APNS__TEAM_ID", TEAM_ID),
            ("PROVIDERS__APNS__KEY_ID", KEY_ID),
            ("PROVIDERS__APNS__TOPIC", TOPIC),
            ("PROVIDERS__APNS__PRIVATE_KEY", pem.as_str()),
            ("CHANNELS__PUSH", "apns"),
            ("HTTP__REQUEST_TIMEOUT_MS", "300"),
        ],
    );

    let error = helpers::send(provider.as_ref(), &apns_push(DEVICE))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
    held.abort();
}
