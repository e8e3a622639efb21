use serde_json::json;

use super::*;

const LIMIT: usize = DEFAULT_MAX_JOB_BYTES;

fn parse(value: serde_json::Value) -> Result<Job, JobError> {
    Job::parse(value.to_string().as_bytes(), LIMIT)
}

fn valid_job() -> serde_json::Value {
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

fn invalid_field(result: Result<Job, JobError>) -> String {
    match result {
        Err(JobError::InvalidField { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn parses_documented_example() {
    let job = parse(valid_job()).unwrap();
    assert_eq!(job.id.as_str(), "welcome-42");
    assert!(job.expires_at.is_some());
    let names: Vec<&str> = job.channels.iter().map(ChannelRequest::name).collect();
    assert_eq!(names, ["email", "push", "sms"]);
}

#[test]
fn ignores_unknown_top_level_fields() {
    let mut value = valid_job();
    value["priority"] = json!("high");
    value["tenant"] = json!({"id": 7});
    assert!(parse(value).is_ok());
}

#[test]
fn unknown_channel_fails_alone() {
    let mut value = valid_job();
    value["channels"]["carrier_pigeon"] = json!({"to": "roof"});
    let job = parse(value).unwrap();
    let unknown: Vec<&ChannelRequest> = job
        .channels
        .iter()
        .filter(|c| matches!(c, ChannelRequest::Unknown { .. }))
        .collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].name(), "carrier_pigeon");
    assert_eq!(job.channels.len(), 4);
}

#[test]
fn id_is_required() {
    let mut value = valid_job();
    value.as_object_mut().unwrap().remove("id");
    assert_eq!(invalid_field(parse(value)), "id");
}

#[test]
fn id_rejects_bad_characters_and_lengths() {
    for id in ["", "has space", "slash/id", "ü", &"x".repeat(129)] {
        let mut value = valid_job();
        value["id"] = json!(id);
        assert_eq!(invalid_field(parse(value)), "id", "id {id:?}");
    }
    let mut value = valid_job();
    value["id"] = json!("A-z.0_9:x");
    assert!(parse(value).is_ok());
    let mut value = valid_job();
    value["id"] = json!("x".repeat(128));
    assert!(parse(value).is_ok());
}

#[test]
fn id_must_be_string() {
    let mut value = valid_job();
    value["id"] = json!(42);
    assert_eq!(invalid_field(parse(value)), "id");
}

#[test]
fn channels_must_not_be_empty() {
    let mut value = valid_job();
    value["channels"] = json!({});
    assert_eq!(invalid_field(parse(value)), "channels");
}

#[test]
fn rejects_non_json_and_non_object() {
    assert!(matches!(
        Job::parse(b"not json", LIMIT),
        Err(JobError::InvalidJson(_))
    ));
    assert_eq!(invalid_field(Job::parse(b"[1,2]", LIMIT)), "$");
    let positional = json!(["array-1", null, {"sms": {"to": "+15555550123", "body": "hi"}}]);
    assert_eq!(invalid_field(parse(positional)), "$");
}

#[test]
fn mistyped_recipient_is_named_not_shown() {
    let number =
        json!({"id": "typed-1", "channels": {"sms": {"to": 15555550123_u64, "body": "x"}}});
    let address = json!({"id": "typed-2", "channels": {"email": {"to": ["ada@example.com"], "subject": "s", "text": "t"}}});
    let token = json!({"id": "typed-3", "channels": {"push": {"token": "device-token", "title": "x", "ttl_secs": "ada@example.com"}}});
    for (job, field, secret) in [
        (number, "channels.sms.to", "15555550123"),
        (address, "channels.email.to", "ada@example.com"),
        (token, "channels.push.ttl_secs", "ada@example.com"),
    ] {
        let Err(JobError::InvalidField {
            field: named,
            reason,
        }) = parse(job)
        else {
            panic!("{field}: expected an invalid field");
        };
        assert_eq!(named, field);
        assert!(!reason.contains(secret), "{field}: {reason}");
        assert!(reason.contains("invalid type"), "{field}: {reason}");
    }
}

#[test]
fn rejects_too_large_body() {
    let body = vec![b' '; LIMIT + 1];
    assert_eq!(
        Job::parse(&body, LIMIT),
        Err(JobError::TooLarge {
            size: LIMIT + 1,
            limit: LIMIT
        })
    );
}

#[test]
fn rejects_bad_email_addresses() {
    for to in [
        "",
        "no-at-sign",
        "@example.com",
        "ada@",
        "ada@localhost",
        "a da@example.com",
        "ada@-x.com",
    ] {
        let mut value = valid_job();
        value["channels"]["email"]["to"] = json!(to);
        assert_eq!(
            invalid_field(parse(value)),
            "channels.email.to",
            "address {to:?}"
        );
    }
}

#[test]
fn email_needs_a_body_and_subject() {
    let mut value = valid_job();
    value["channels"]["email"] = json!({"to": "ada@example.com", "subject": "Hi"});
    assert_eq!(invalid_field(parse(value)), "channels.email");

    let mut value = valid_job();
    value["channels"]["email"]["subject"] = json!("  ");
    assert_eq!(invalid_field(parse(value)), "channels.email.subject");

    let mut value = valid_job();
    value["channels"]["email"]["subject"] = json!("Line\r\nBcc: evil@example.com");
    assert_eq!(invalid_field(parse(value)), "channels.email.subject");
}

#[test]
fn rejects_non_e164_numbers() {
    for to in [
        "5555550123",
        "+0123456",
        "+1",
        "+1555abc0123",
        "+1234567890123456",
    ] {
        let mut value = valid_job();
        value["channels"]["sms"]["to"] = json!(to);
        assert_eq!(
            invalid_field(parse(value)),
            "channels.sms.to",
            "number {to:?}"
        );
    }
}

#[test]
fn sms_body_limited_to_1600_characters() {
    let mut value = valid_job();
    value["channels"]["sms"]["body"] = json!("é".repeat(1600));
    assert!(parse(value).is_ok());
    let mut value = valid_job();
    value["channels"]["sms"]["body"] = json!("é".repeat(1601));
    assert_eq!(invalid_field(parse(value)), "channels.sms.body");
}

#[test]
fn push_rejects_reserved_data_keys() {
    for key in [
        "from",
        "google.sent_time",
        "gcm.notification",
        "message_type",
    ] {
        let mut value = valid_job();
        value["channels"]["push"]["data"] = json!({ key: "x" });
        assert_eq!(
            invalid_field(parse(value)),
            "channels.push.data",
            "key {key:?}"
        );
    }
}

#[test]
fn push_rejects_non_string_data() {
    let mut value = valid_job();
    value["channels"]["push"]["data"] = json!({"count": 3});
    assert_eq!(invalid_field(parse(value)), "channels.push.data.count");
}

#[test]
fn push_payload_limited_to_4096_bytes() {
    let mut value = valid_job();
    value["channels"]["push"]["data"] = json!({"blob": "x".repeat(4096)});
    assert_eq!(invalid_field(parse(value)), "channels.push");
}

#[test]
fn push_needs_token_and_content() {
    let mut value = valid_job();
    value["channels"]["push"]["token"] = json!("");
    assert_eq!(invalid_field(parse(value)), "channels.push.token");

    let mut value = valid_job();
    value["channels"]["push"] = json!({"token": "t"});
    assert_eq!(invalid_field(parse(value)), "channels.push");
}

#[test]
fn expiry_must_be_rfc3339() {
    let mut value = valid_job();
    value["expires_at"] = json!("tomorrow");
    assert_eq!(invalid_field(parse(value)), "expires_at");
}

#[test]
fn expiry_is_compared_to_now() {
    let job = parse(valid_job()).unwrap();
    let before = "2026-12-31T23:59:58Z".parse().unwrap();
    let after = "2027-01-01T00:00:00Z".parse().unwrap();
    assert!(!job.is_expired(before));
    assert!(job.is_expired(after));
}

#[test]
fn recipients_print_masked() {
    let job = parse(valid_job()).unwrap();
    let printed = format!("{job:?}");
    assert!(!printed.contains("ada@example.com"), "{printed}");
    assert!(!printed.contains("+15555550123"), "{printed}");
    assert!(!printed.contains("device-token"), "{printed}");
    assert!(printed.contains("a***@example.com"), "{printed}");
    assert!(printed.contains("***23"), "{printed}");
}

#[test]
fn device_token_mask_is_stable() {
    let first = DeviceToken::parse("t", "abc").unwrap().to_string();
    let second = DeviceToken::parse("t", "abc").unwrap().to_string();
    let other = DeviceToken::parse("t", "abd").unwrap().to_string();
    assert_eq!(first, second);
    assert_ne!(first, other);
    assert!(first.starts_with("tok:"), "{first}");
    assert_eq!(first.len(), 12, "{first}");
}

#[test]
fn salvage_id_reads_id_from_invalid_job() {
    let body = br#"{"id": "order-7", "channels": {}}"#;
    assert!(Job::parse(body, LIMIT).is_err());
    assert_eq!(salvage_id(body).unwrap().as_str(), "order-7");
    assert_eq!(salvage_id(b"garbage"), None);
}

#[test]
fn duplicate_id_is_named() {
    let body =
        br#"{"id": "a", "id": "b", "channels": {"sms": {"to": "+15555550123", "body": "x"}}}"#;
    let error = Job::parse(body, LIMIT).unwrap_err();
    assert!(
        error.to_string().contains("duplicate field `id`"),
        "{error}"
    );
}

/// A Web Push subscription as a browser returns it: a P-256 public key and a 16-byte
/// authentication secret, both base64url without padding.
fn subscription() -> serde_json::Value {
    json!({
        "endpoint": "https://push.example.net/send/abc123",
        "keys": {
            "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "auth": "BTBZMqHH6r4Tts7J_aSIgg"
        }
    })
}

fn push_of(job: &Job) -> &PushMessage {
    job.channels
        .iter()
        .find_map(|channel| match channel {
            ChannelRequest::Known(Notification::Push(push)) => Some(push),
            _ => None,
        })
        .expect("the job has a push channel")
}

fn with_push(push: serde_json::Value) -> serde_json::Value {
    let mut value = valid_job();
    value["channels"]["push"] = push;
    value
}

fn invalid_push(push: serde_json::Value) -> (String, String) {
    match parse(with_push(push)) {
        Err(JobError::InvalidField { field, reason }) => (field, reason),
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn push_without_platform_is_fcm() {
    let job = parse(valid_job()).unwrap();
    let push = push_of(&job);
    assert_eq!(push.target.platform(), PushPlatform::Fcm);
    assert_eq!(push.target.expose(), "device-token");
    assert_eq!(push.ttl_secs, None);
}

#[test]
fn push_reads_apns_target_and_options() {
    let job = parse(with_push(json!({
        "platform": "apns",
        "token": "a1b2c3d4e5f6",
        "title": "Shipped",
        "ttl_secs": 3600,
        "apns": {"priority": 5, "collapse_id": "order-7", "sound": "default", "badge": 2}
    })))
    .unwrap();
    let push = push_of(&job);
    assert_eq!(push.target.platform(), PushPlatform::Apns);
    assert_eq!(push.ttl_secs, Some(3600));
    assert_eq!(push.apns.push_type, ApnsPushType::Alert);
    assert_eq!(push.apns.priority, Some(5));
    assert_eq!(push.apns.collapse_id.as_deref(), Some("order-7"));
    assert_eq!(push.apns.sound.as_deref(), Some("default"));
    assert_eq!(push.apns.badge, Some(2));
}

#[test]
fn apns_data_only_push_is_background() {
    let job = parse(with_push(
        json!({"platform": "apns", "token": "ab12", "data": {"sync": "1"}}),
    ))
    .unwrap();
    assert_eq!(push_of(&job).apns.push_type, ApnsPushType::Background);
}

#[test]
fn push_reads_webpush_subscription() {
    let job = parse(with_push(json!({
        "platform": "webpush",
        "subscription": subscription(),
        "title": "Shipped"
    })))
    .unwrap();
    let PushTarget::WebPush(subscription) = &push_of(&job).target else {
        panic!("not a Web Push target");
    };
    assert_eq!(
        subscription.endpoint().as_str(),
        "https://push.example.net/send/abc123"
    );
    assert_eq!(subscription.p256dh().len(), 65);
    assert_eq!(subscription.auth().len(), 16);
}

#[test]
fn push_errors_name_the_field() {
    let mut missing_auth = subscription();
    missing_auth["keys"]["auth"] = json!("c2hvcnQ");
    let mut compressed_key = subscription();
    compressed_key["keys"]["p256dh"] = json!(format!("A{}", &"A".repeat(86)));
    let mut ftp = subscription();
    ftp["endpoint"] = json!("ftp://push.example.net/x");
    let cases = [
        (
            json!({"platform": "hms", "token": "t", "title": "x"}),
            "channels.push.platform",
        ),
        (
            json!({"platform": "apns", "title": "x"}),
            "channels.push.token",
        ),
        (
            json!({"platform": "apns", "token": "not/hex", "title": "x"}),
            "channels.push.token",
        ),
        (
            json!({"platform": "webpush", "title": "x"}),
            "channels.push.subscription",
        ),
        (
            json!({"platform": "webpush", "token": "t", "subscription": subscription(), "title": "x"}),
            "channels.push.token",
        ),
        (
            json!({"token": "t", "subscription": subscription(), "title": "x"}),
            "channels.push.subscription",
        ),
        (
            json!({"platform": "webpush", "subscription": missing_auth, "title": "x"}),
            "channels.push.subscription.keys.auth",
        ),
        (
            json!({"platform": "webpush", "subscription": compressed_key, "title": "x"}),
            "channels.push.subscription.keys.p256dh",
        ),
        (
            json!({"platform": "webpush", "subscription": ftp, "title": "x"}),
            "channels.push.subscription.endpoint",
        ),
        (
            json!({"token": "t", "title": "x", "ttl_secs": 2_419_201}),
            "channels.push.ttl_secs",
        ),
        (
            json!({"token": "t", "title": "x", "apns": {}}),
            "channels.push.apns",
        ),
        (
            json!({"platform": "apns", "token": "ab", "title": "x", "apns": {"priority": 7}}),
            "channels.push.apns.priority",
        ),
        (
            json!({"platform": "apns", "token": "ab", "title": "x", "apns": {"push_type": "voip"}}),
            "channels.push.apns.push_type",
        ),
        (
            json!({"platform": "apns", "token": "ab", "title": "x", "apns": {"collapse_id": "x".repeat(65)}}),
            "channels.push.apns.collapse_id",
        ),
        (
            json!({"platform": "apns", "token": "ab", "title": "x", "apns": {"push_type": "background"}}),
            "channels.push.apns",
        ),
        (
            json!({"platform": "apns", "token": "ab", "data": {"aps": "x"}}),
            "channels.push.data",
        ),
    ];
    for (push, field) in cases {
        let (named, reason) = invalid_push(push.clone());
        assert_eq!(named, field, "{push}: {reason}");
    }
}

#[test]
fn webpush_subscription_prints_masked() {
    let job = parse(with_push(json!({
        "platform": "webpush",
        "subscription": subscription(),
        "title": "Shipped"
    })))
    .unwrap();
    let printed = format!("{job:?}");
    assert!(!printed.contains("push.example.net"), "{printed}");
    assert!(!printed.contains("BTBZMqHH6r4Tts7J_aSIgg"), "{printed}");
    let masked = push_of(&job).target.to_string();
    assert!(masked.starts_with("sub:"), "{masked}");
    assert_eq!(masked.len(), 12, "{masked}");
}
