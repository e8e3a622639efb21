//! Web Push against a mock push service that acts as both ends of RFC 8030. It checks the
//! headers and the VAPID token as a push service does (RFC 8292). It then decrypts the body
//! with the subscription's private key and authentication secret as the browser would
//! (RFC 8291), so a wrong key, secret or record format fails a test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald::job::{ChannelKind, JobId, Notification, PushSubscription, PushTarget};
use herald::providers::{ErrorClass, Provider, dedupe};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use serde_json::{Value, json};
use web_push_native::Auth;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers;

const SUBJECT: &str = "mailto:push-ops@example.com";
const SUBSCRIPTION_PATH: &str = "/wpush/v2/gAAAAABk-subscription";
/// The longest a VAPID token may be valid (RFC 8292, section 2).
const MAX_VAPID_LIFETIME_SECS: u64 = 24 * 3600;

/// Herald's VAPID key in these tests.
pub(crate) fn vapid_key() -> p256::SecretKey {
    p256::SecretKey::from_slice(&[7; 32]).unwrap()
}

/// The browser's key pair and authentication secret for the test subscription.
fn browser_key() -> p256::SecretKey {
    p256::SecretKey::from_slice(&[5; 32]).unwrap()
}

fn browser_auth() -> [u8; 16] {
    [6; 16]
}

fn public_point(key: &p256::SecretKey) -> Vec<u8> {
    key.public_key().to_encoded_point(false).as_bytes().to_vec()
}

/// The push service: it accepts only requests whose VAPID key is `application_server_key`
/// (the key the subscription was made with), and records each decrypted payload.
struct PushService {
    application_server_key: Vec<u8>,
    origin: String,
    payloads: Arc<Mutex<Vec<Value>>>,
    reply: Option<ResponseTemplate>,
}

impl Respond for PushService {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if let Err((status, reason)) = self.check(request) {
            return ResponseTemplate::new(status).set_body_string(reason);
        }
        let plaintext = match decrypt(&request.body) {
            Ok(plaintext) => plaintext,
            Err(reason) => return ResponseTemplate::new(400).set_body_string(reason),
        };
        let payload: Value = match serde_json::from_slice(&plaintext) {
            Ok(payload) => payload,
            Err(error) => {
                return ResponseTemplate::new(400).set_body_string(format!("not JSON: {error}"));
            }
        };
        self.payloads.lock().unwrap().push(payload);
        match &self.reply {
            Some(reply) => reply.clone(),
            None => ResponseTemplate::new(201)
                .insert_header("location", format!("{}/m/0001", self.origin)),
        }
    }
}

impl PushService {
    /// Checks the headers a push service requires: `TTL`, the content coding, a `Topic` of
    /// at most 32 base64url characters, and a VAPID token signed by the subscription's
    /// application server key for this origin.
    fn check(&self, request: &Request) -> Result<(), (u16, String)> {
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
        let bad = |reason: &str| Err((400, reason.to_owned()));
        if header("ttl")
            .and_then(|ttl| ttl.parse::<u64>().ok())
            .is_none()
        {
            return bad("missing or invalid TTL header");
        }
        if header("content-encoding") != Some("aes128gcm") {
            return bad("unsupported content encoding");
        }
        if let Some(topic) = header("topic")
            && (topic.len() > 32 || URL_SAFE_NO_PAD.decode(topic).is_err())
        {
            return bad("invalid Topic header");
        }
        let Some((token, key)) = header("authorization")
            .and_then(|value| value.strip_prefix("vapid t="))
            .and_then(|rest| rest.split_once(", k="))
        else {
            return Err((401, "missing VAPID authorization".to_owned()));
        };
        let key = URL_SAFE_NO_PAD
            .decode(key)
            .map_err(|_| (401, "k is not base64url".to_owned()))?;
        if key != self.application_server_key {
            return Err((
                403,
                "the VAPID key does not match the subscription".to_owned(),
            ));
        }
        self.check_token(token, &key)
            .map_err(|reason| (401, reason))
    }

    fn check_token(&self, token: &str, key: &[u8]) -> Result<(), String> {
        let x = URL_SAFE_NO_PAD.encode(&key[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&key[33..65]);
        let decoding = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[&self.origin]);
        validation.set_required_spec_claims(&["aud", "exp", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(token, &decoding, &validation)
            .map_err(|error| format!("invalid VAPID token: {error}"))?
            .claims;
        let expires = claims["exp"].as_u64().unwrap_or(0);
        if expires > unix_now() + MAX_VAPID_LIFETIME_SECS {
            return Err("VAPID token expires more than 24 hours ahead".to_owned());
        }
        if claims["sub"] != SUBJECT {
            return Err(format!("unexpected sub {}", claims["sub"]));
        }
        Ok(())
    }
}

/// Decrypts an `aes128gcm` body as the browser does.
fn decrypt(body: &[u8]) -> Result<Vec<u8>, String> {
    let auth = Auth::clone_from_slice(&browser_auth());
    web_push_native::decrypt(body.to_vec(), &browser_key(), &auth)
        .map_err(|error| format!("cannot decrypt: {error}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct PushMock {
    server: MockServer,
    payloads: Arc<Mutex<Vec<Value>>>,
}

impl PushMock {
    async fn start(reply: Option<ResponseTemplate>) -> PushMock {
        PushMock::start_for_key(reply, public_point(&vapid_key())).await
    }

    async fn start_for_key(
        reply: Option<ResponseTemplate>,
        application_server_key: Vec<u8>,
    ) -> PushMock {
        let server = MockServer::start().await;
        let payloads = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("POST"))
            .respond_with(PushService {
                application_server_key,
                origin: server.uri(),
                payloads: payloads.clone(),
                reply,
            })
            .mount(&server)
            .await;
        PushMock { server, payloads }
    }

    fn endpoint(&self) -> String {
        format!("{}{SUBSCRIPTION_PATH}", self.server.uri())
    }

    async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap()
    }
}

fn provider(overrides: &[(&str, &str)]) -> Arc<dyn Provider> {
    let vapid = URL_SAFE_NO_PAD.encode(vapid_key().to_bytes());
    let mut all = vec![
        ("PROVIDERS__WEBPUSH__SUBJECT", SUBJECT),
        ("PROVIDERS__WEBPUSH__VAPID_PRIVATE_KEY", vapid.as_str()),
        ("PROVIDERS__WEBPUSH__ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("CHANNELS__PUSH", "webpush"),
    ];
    all.extend_from_slice(overrides);
    helpers::provider("webpush", &all)
}

fn subscription(endpoint: &str) -> PushTarget {
    let p256dh = URL_SAFE_NO_PAD.encode(public_point(&browser_key()));
    let auth = URL_SAFE_NO_PAD.encode(browser_auth());
    let subscription = PushSubscription::parse("subscription", endpoint, &p256dh, &auth).unwrap();
    PushTarget::WebPush(Box::new(subscription))
}

pub(crate) fn web_push(endpoint: &str) -> Notification {
    helpers::push_to(
        subscription(endpoint),
        Some("Order shipped"),
        Some("It arrives Tuesday."),
        &[("order_id", "42")],
    )
}

#[test]
fn mock_decrypts_rfc_8291_example() {
    // The example of RFC 8291, appendix A: a message encrypted for a browser whose private
    // key and authentication secret are given there.
    let ciphertext = URL_SAFE_NO_PAD.decode("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN").unwrap();
    let private = URL_SAFE_NO_PAD
        .decode("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")
        .unwrap();
    let auth = URL_SAFE_NO_PAD.decode("BTBZMqHH6r4Tts7J_aSIgg").unwrap();

    let plaintext = web_push_native::decrypt(
        ciphertext,
        &p256::SecretKey::from_slice(&private).unwrap(),
        &Auth::clone_from_slice(&auth),
    )
    .unwrap();

    assert_eq!(plaintext, b"When I grow up, I want to be a watermelon");
}

#[tokio::test]
async fn sent_message_decrypts_for_the_browser() {
    let mock = PushMock::start(None).await;
    let provider = provider(&[]);

    let delivered = helpers::send(provider.as_ref(), &web_push(&mock.endpoint()))
        .await
        .unwrap();

    assert_eq!(delivered.status, 201);
    let location = format!("{}/m/0001", mock.server.uri());
    assert_eq!(delivered.message_id.as_deref(), Some(location.as_str()));
    let payloads = mock.payloads.lock().unwrap().clone();
    assert_eq!(
        payloads,
        [
            json!({"title": "Order shipped", "body": "It arrives Tuesday.", "data": {"order_id": "42"}})
        ]
    );
    let requests = mock.requests().await;
    assert_eq!(requests.len(), 1);
    let headers = &requests[0].headers;
    assert_eq!(requests[0].url.path(), SUBSCRIPTION_PATH);
    assert_eq!(headers["ttl"], "86400");
    let job_id = JobId::parse(helpers::JOB_ID).unwrap();
    let topic = dedupe::collapse_key(&job_id, ChannelKind::Push);
    assert_eq!(headers["topic"], topic.as_str());
    assert!(headers.get("urgency").is_none());
}

#[tokio::test]
async fn job_ttl_and_configured_urgency_are_sent() {
    let mock = PushMock::start(None).await;
    let provider = provider(&[("PROVIDERS__WEBPUSH__URGENCY", "high")]);
    let Notification::Push(mut push) = web_push(&mock.endpoint()) else {
        unreachable!()
    };
    push.ttl_secs = Some(0);

    helpers::send(provider.as_ref(), &Notification::Push(push))
        .await
        .unwrap();

    let requests = mock.requests().await;
    assert_eq!(requests[0].headers["ttl"], "0");
    assert_eq!(requests[0].headers["urgency"], "high");
}

#[tokio::test]
async fn gone_subscription_is_dead() {
    for status in [404, 410] {
        let mock = PushMock::start(Some(ResponseTemplate::new(status))).await;
        let provider = provider(&[]);
        let endpoint = mock.endpoint();

        let error = helpers::send(provider.as_ref(), &web_push(&endpoint))
            .await
            .unwrap_err();

        assert_eq!(error.class, ErrorClass::Permanent, "{status}");
        assert!(error.recipient_invalid, "{status}");
        assert_eq!(error.status, Some(status));
        assert!(!error.message.contains(&endpoint), "{}", error.message);
    }
}

#[tokio::test]
async fn other_replies_are_classified() {
    let cases = [
        (400, ErrorClass::Permanent),
        (413, ErrorClass::Permanent),
        (500, ErrorClass::Transient),
        (503, ErrorClass::Transient),
    ];
    for (status, class) in cases {
        let mock = PushMock::start(Some(ResponseTemplate::new(status))).await;
        let provider = provider(&[]);

        let error = helpers::send(provider.as_ref(), &web_push(&mock.endpoint()))
            .await
            .unwrap_err();

        assert_eq!(error.class, class, "{status}");
        assert_eq!(error.status, Some(status));
        assert!(!error.recipient_invalid, "{status}");
    }
}

#[tokio::test]
async fn too_many_requests_keeps_retry_after() {
    let reply = ResponseTemplate::new(429).insert_header("retry-after", "30");
    let mock = PushMock::start(Some(reply)).await;
    let provider = provider(&[]);

    let error = helpers::send(provider.as_ref(), &web_push(&mock.endpoint()))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::RateLimited);
    assert_eq!(error.retry_after, Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn other_application_server_key_is_forbidden() {
    let other = p256::SecretKey::from_slice(&[8; 32]).unwrap();
    let mock = PushMock::start_for_key(None, public_point(&other)).await;
    let provider = provider(&[]);

    let error = helpers::send(provider.as_ref(), &web_push(&mock.endpoint()))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.status, Some(403));
    assert_eq!(error.code.as_deref(), Some("vapid_forbidden"));
    assert!(!error.recipient_invalid);
    assert!(mock.payloads.lock().unwrap().is_empty());
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let mock = PushMock::start(None).await;
    let redirect = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", mock.endpoint()))
        .mount(&redirect)
        .await;
    let provider = provider(&[]);
    let endpoint = format!("{}{SUBSCRIPTION_PATH}", redirect.uri());

    let error = helpers::send(provider.as_ref(), &web_push(&endpoint))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.status, Some(307));
    assert!(mock.requests().await.is_empty());
}

#[tokio::test]
async fn private_endpoints_are_rejected_by_default() {
    let mock = PushMock::start(None).await;
    let provider = provider(&[("PROVIDERS__WEBPUSH__ALLOW_PRIVATE_ENDPOINTS", "false")]);
    let port = mock.server.address().port();
    let endpoints = [
        mock.endpoint(),
        format!("https://127.0.0.1:{port}{SUBSCRIPTION_PATH}"),
        format!("https://localhost:{port}{SUBSCRIPTION_PATH}"),
        format!("https://[::1]:{port}{SUBSCRIPTION_PATH}"),
        format!("https://169.254.169.254{SUBSCRIPTION_PATH}"),
    ];

    for endpoint in endpoints {
        let error = helpers::send(provider.as_ref(), &web_push(&endpoint))
            .await
            .unwrap_err();

        assert_eq!(error.class, ErrorClass::Permanent, "{endpoint}");
        assert_eq!(
            error.code.as_deref(),
            Some("endpoint_rejected"),
            "{endpoint}: {error}"
        );
    }
    assert!(mock.requests().await.is_empty());
}

#[tokio::test]
async fn oversized_payload_is_not_sent() {
    let mock = PushMock::start(None).await;
    let provider = provider(&[]);
    let long = "x".repeat(4000);
    let push = helpers::push_to(subscription(&mock.endpoint()), Some(&long), None, &[]);

    let error = helpers::send(provider.as_ref(), &push).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some("payload_too_large"));
    assert!(mock.requests().await.is_empty());
}

#[tokio::test]
async fn fcm_target_is_not_sent() {
    let provider = provider(&[]);
    let fcm_push = helpers::push("fcm-token", Some("Hi"), None, &[]);

    assert!(!provider.supports(&fcm_push));
    let error = helpers::send(provider.as_ref(), &fcm_push)
        .await
        .unwrap_err();

    assert_eq!(error.code.as_deref(), Some("unsupported_platform"));
    assert!(provider.supports(&web_push("https://push.example.net/x")));
}

#[tokio::test]
async fn slow_push_service_times_out_as_transient() {
    let slow = ResponseTemplate::new(201).set_delay(Duration::from_secs(2));
    let mock = PushMock::start(Some(slow)).await;
    let provider = provider(&[("HTTP__REQUEST_TIMEOUT_MS", "200")]);

    let error = helpers::send(provider.as_ref(), &web_push(&mock.endpoint()))
        .await
        .unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
    assert!(!error.recipient_invalid);
}
