//! The published JSON Schema and Herald's own validation agree on a table of jobs, so the
//! schema producers validate against cannot drift from what Herald accepts.

use herald::job::{DEFAULT_MAX_JOB_BYTES, Job};
use serde_json::{Value, json};

fn schema() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/job.schema.json"))
            .expect("docs/job.schema.json is readable");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema compiles")
}

fn base() -> Value {
    json!({
        "id": "welcome-42",
        "expires_at": "2026-12-31T23:59:59Z",
        "channels": {
            "email": {"to": "ada@example.com", "subject": "Welcome", "text": "Hi Ada", "html": "<p>Hi Ada</p>"},
            "sms": {"to": "+15555550123", "body": "Your code is 1234"},
            "push": {"token": "device-token", "title": "Welcome", "body": "Hi Ada", "data": {"screen": "home"}}
        }
    })
}

fn with(pointer: &str, value: Value) -> Value {
    let mut job = base();
    *job.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer}")) = value;
    job
}

fn without(parent: &str, key: &str) -> Value {
    let mut job = base();
    job.pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
    job
}

/// A browser's push subscription, as `PushSubscription.toJSON()` gives it.
fn subscription() -> Value {
    json!({
        "endpoint": "https://push.example.net/send/abc123",
        "keys": {
            "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "auth": "BTBZMqHH6r4Tts7J_aSIgg"
        }
    })
}

fn subscription_with(pointer: &str, value: Value) -> Value {
    let mut subscription = subscription();
    *subscription.pointer_mut(pointer).unwrap() = value;
    with(
        "/channels/push",
        json!({"platform": "webpush", "subscription": subscription, "title": "Hi"}),
    )
}

fn accepted_by_herald(job: &Value) -> bool {
    Job::parse(job.to_string().as_bytes(), DEFAULT_MAX_JOB_BYTES).is_ok()
}

#[test]
fn schema_accepts_valid_jobs() {
    let schema = schema();
    let valid = [
        base(),
        without("", "expires_at"),
        with(
            "/channels",
            json!({"sms": {"to": "+15555550123", "body": "hi"}}),
        ),
        with(
            "/channels/email",
            json!({"to": "ada@example.com", "subject": "Hi", "html": "<b>x</b>"}),
        ),
        with("/channels/push", json!({"token": "t", "data": {"k": "v"}})),
        with(
            "/channels/push",
            json!({"platform": "fcm", "token": "t", "title": "Hi", "ttl_secs": 0}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "a1B2", "title": "Hi", "data": {"from": "x"},
                   "apns": {"priority": 5, "collapse_id": "c", "sound": "default", "badge": 0}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "ab", "data": {"k": "v"},
                   "apns": {"push_type": "background", "priority": 1}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "webpush", "subscription": subscription(), "data": {"from": "x"}, "ttl_secs": 60}),
        ),
        subscription_with("/keys/auth", json!("BTBZMqHH6r4Tts7J_aSIgg==")),
        with("/id", json!("A-z.0_9:x")),
        with(
            "/channels",
            json!({"webhook": {"endpoint": "billing", "payload": {}}}),
        ),
        with(
            "/channels",
            json!({"webhook": {
                "url": "https://hooks.example.com/herald?tenant=7",
                "event_type": "invoice.paid",
                "occurred_at": "2026-01-02T03:04:05Z",
                "payload": {"invoice": {"id": 7}}
            }}),
        ),
        {
            let mut job = base();
            job["channels"]["carrier_pigeon"] = json!({"to": "roof"});
            job
        },
        {
            let mut job = base();
            job["producer_note"] = json!({"anything": [1, 2]});
            job
        },
    ];
    for job in &valid {
        assert!(schema.is_valid(job), "schema rejected {job}");
        assert!(accepted_by_herald(job), "Herald rejected {job}");
    }
}

#[test]
fn schema_rejects_what_herald_rejects() {
    let schema = schema();
    let invalid = [
        without("", "id"),
        without("", "channels"),
        with("/id", json!("")),
        with("/id", json!("has space")),
        with("/id", json!("x".repeat(129))),
        with("/id", json!(42)),
        with("/expires_at", json!("tomorrow")),
        with("/channels", json!({})),
        with("/channels/email/to", json!("no-at-sign")),
        with("/channels/email/to", json!("ada@localhost")),
        with("/channels/email/subject", json!("  ")),
        with("/channels/email/subject", json!("a\nb")),
        with(
            "/channels/email",
            json!({"to": "ada@example.com", "subject": "Hi"}),
        ),
        with("/channels/sms/to", json!("5555550123")),
        with("/channels/sms/to", json!("+0123")),
        with("/channels/sms/body", json!("")),
        with("/channels/sms/body", json!("x".repeat(1601))),
        with("/channels/push/token", json!("")),
        with("/channels/push/token", json!("has space")),
        with("/channels/push", json!({"token": "t"})),
        with("/channels/push/data", json!({"count": 3})),
        with("/channels/push/data", json!({"from": "x"})),
        with("/channels/push/data", json!({"google.x": "y"})),
        with("/channels", json!({"webhook": {"payload": {}}})),
        with(
            "/channels",
            json!({"webhook": {"endpoint": "a", "url": "https://h.example", "payload": {}}}),
        ),
        with("/channels", json!({"webhook": {"endpoint": "a"}})),
        with(
            "/channels",
            json!({"webhook": {"endpoint": "a", "payload": [1]}}),
        ),
        with(
            "/channels",
            json!({"webhook": {"endpoint": "Billing", "payload": {}}}),
        ),
        with(
            "/channels",
            json!({"webhook": {"url": "ftp://h.example/x", "payload": {}}}),
        ),
        with(
            "/channels",
            json!({"webhook": {"url": "https://u:p@h.example/x", "payload": {}}}),
        ),
        with(
            "/channels",
            json!({"webhook": {"endpoint": "a", "event_type": "a b", "payload": {}}}),
        ),
        with(
            "/channels",
            json!({"webhook": {"endpoint": "a", "occurred_at": "soon", "payload": {}}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "hms", "token": "t", "title": "Hi"}),
        ),
        with(
            "/channels/push",
            json!({"token": "t", "title": "Hi", "ttl_secs": 2_419_201}),
        ),
        with(
            "/channels/push",
            json!({"token": "t", "title": "Hi", "ttl_secs": -1}),
        ),
        with(
            "/channels/push",
            json!({"token": "t", "title": "Hi", "apns": {"priority": 10}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "not-hex", "title": "Hi"}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "ab", "data": {"aps": "x"}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "ab", "title": "Hi", "apns": {"priority": 7}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "ab", "title": "Hi", "apns": {"push_type": "voip"}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "ab", "title": "Hi", "apns": {"push_type": "background"}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "ab", "data": {"k": "v"},
                   "apns": {"push_type": "background", "priority": 10}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "apns", "token": "ab", "title": "Hi", "apns": {"collapse_id": "x".repeat(65)}}),
        ),
        with(
            "/channels/push",
            json!({"platform": "webpush", "title": "Hi"}),
        ),
        with(
            "/channels/push",
            json!({"platform": "webpush", "token": "t", "subscription": subscription(), "title": "Hi"}),
        ),
        with(
            "/channels/push",
            json!({"token": "t", "subscription": subscription(), "title": "Hi"}),
        ),
        subscription_with("/endpoint", json!("ftp://push.example.net/x")),
        subscription_with("/endpoint", json!("not a url")),
        subscription_with("/keys/auth", json!("c2hvcnQ")),
        subscription_with("/keys/p256dh", json!(format!("A{}", "A".repeat(86)))),
        subscription_with("/keys/p256dh", json!("B+/")),
    ];
    for job in &invalid {
        assert!(!accepted_by_herald(job), "Herald accepted {job}");
        assert!(!schema.is_valid(job), "schema accepted {job}");
    }
}
