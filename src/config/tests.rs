use super::*;

fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Settings::load_with_env(None, env)
}

fn invalid_key(result: Result<Settings, ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        Err(other) => panic!("expected an invalid key, got {other}"),
        Ok(_) => panic!("expected an error"),
    }
}

#[test]
fn defaults_load() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.broker.prefetch, 256);
    assert_eq!(settings.pool.workers, 256);
    for name in [
        "sendgrid", "twilio", "fcm", "apns", "webpush", "smtp", "webhook",
    ] {
        assert_eq!(
            settings.providers[name].kind(),
            name,
            "built-in provider {name}"
        );
    }
    let smtp = smtp_of(&settings);
    assert_eq!(smtp.tls, SmtpTls::Starttls);
    assert_eq!(smtp.port(), 587);
    let sendgrid = &settings.providers["sendgrid"];
    assert_eq!(sendgrid.rate_limit().per_second, 20);
    assert_eq!(sendgrid.rate_limit().burst, 40);
    assert_eq!(settings.providers["twilio"].rate_limit().per_second, 5);
    assert_eq!(settings.providers["fcm"].rate_limit().burst, 200);
    assert!(
        settings.channels.webhook.is_empty(),
        "webhooks are off by default"
    );
    let ProviderConfig::Webhook(webhook) = &settings.providers["webhook"] else {
        panic!("providers.webhook is not of kind webhook");
    };
    assert!(!webhook.allow_loopback);
    assert!(!webhook.allow_private_networks);
    assert!(webhook.url_allowlist.is_empty());
    assert!(webhook.endpoints.is_empty());
}

#[test]
fn apns_token_refresh_outside_apple_limits_is_rejected() {
    for seconds in ["1199", "3601"] {
        let key = invalid_key(load(&[
            ("HERALD__CHANNELS__PUSH", "apns"),
            ("HERALD__PROVIDERS__APNS__TEAM_ID", "TEAM123456"),
            ("HERALD__PROVIDERS__APNS__KEY_ID", "KEY1234567"),
            ("HERALD__PROVIDERS__APNS__TOPIC", "com.example.app"),
            ("HERALD__PROVIDERS__APNS__TOKEN_REFRESH_SECS", seconds),
        ]));
        assert_eq!(key, "providers.apns.token_refresh_secs", "{seconds}");
    }
}

#[test]
fn webpush_needs_a_contact_subject() {
    let key = invalid_key(load(&[("HERALD__CHANNELS__PUSH", "webpush")]));
    assert_eq!(key, "providers.webpush.subject");

    let key = invalid_key(load(&[
        ("HERALD__CHANNELS__PUSH", "webpush"),
        ("HERALD__PROVIDERS__WEBPUSH__SUBJECT", "ops@example.com"),
    ]));
    assert_eq!(key, "providers.webpush.subject");
}

#[test]
fn environment_overrides_nested_keys() {
    let settings = load(&[
        ("HERALD__BROKER__PREFETCH", "32"),
        ("HERALD__PROVIDERS__TWILIO__RATE_LIMIT__PER_SECOND", "1"),
        ("HERALD__PROVIDERS__TWILIO__FROM", "+15555550100"),
        ("HERALD__CHANNELS__PUSH", ""),
    ])
    .unwrap();
    assert_eq!(settings.broker.prefetch, 32);
    assert_eq!(settings.providers["twilio"].rate_limit().per_second, 1);
    assert!(settings.channels.push.is_empty());
    let ProviderConfig::Twilio(twilio) = &settings.providers["twilio"] else {
        panic!("twilio is not a twilio provider");
    };
    assert_eq!(twilio.from, "+15555550100");
}

#[test]
fn file_layer_overrides_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "[pool]\nworkers = 7\n").unwrap();
    let settings = Settings::load_with_env(Some(&path), Vec::new()).unwrap();
    assert_eq!(settings.pool.workers, 7);
}

#[test]
fn unknown_key_is_rejected() {
    let error = load(&[("HERALD__BROKER__PREFETC", "3")]).unwrap_err();
    assert!(error.to_string().contains("prefetc"), "{error}");
}

#[test]
fn bad_number_names_key() {
    let error = load(&[("HERALD__BROKER__PREFETCH", "lots")]).unwrap_err();
    assert!(error.to_string().contains("broker.prefetch"), "{error}");
}

#[test]
fn zero_values_are_rejected() {
    assert_eq!(
        invalid_key(load(&[("HERALD__POOL__WORKERS", "0")])),
        "pool.workers"
    );
    assert_eq!(
        invalid_key(load(&[("HERALD__BROKER__PREFETCH", "0")])),
        "broker.prefetch"
    );
    assert_eq!(
        invalid_key(load(&[(
            "HERALD__PROVIDERS__SENDGRID__RATE_LIMIT__PER_SECOND",
            "0"
        )])),
        "providers.sendgrid.rate_limit.per_second"
    );
}

#[test]
fn channel_must_name_configured_provider() {
    assert_eq!(
        invalid_key(load(&[("HERALD__CHANNELS__EMAIL", "mailgun")])),
        "channels.email"
    );
}

#[test]
fn channel_must_name_provider_of_its_kind() {
    assert_eq!(
        invalid_key(load(&[("HERALD__CHANNELS__EMAIL", "twilio")])),
        "channels.email"
    );
}

/// Settings of a second SendGrid account named `backup`.
const BACKUP_SENDGRID: [(&str, &str); 6] = [
    ("HERALD__PROVIDERS__BACKUP__KIND", "sendgrid"),
    (
        "HERALD__PROVIDERS__BACKUP__BASE_URL",
        "https://api.sendgrid.com",
    ),
    (
        "HERALD__PROVIDERS__BACKUP__FROM_EMAIL",
        "backup@example.com",
    ),
    ("HERALD__PROVIDERS__BACKUP__MAX_IN_FLIGHT", "4"),
    ("HERALD__PROVIDERS__BACKUP__RATE_LIMIT__PER_SECOND", "5"),
    ("HERALD__PROVIDERS__BACKUP__RATE_LIMIT__BURST", "5"),
];

#[test]
fn channel_lists_providers_in_order() {
    let mut env = BACKUP_SENDGRID.to_vec();
    env.push(("HERALD__CHANNELS__EMAIL", "sendgrid, backup"));
    let settings = load(&env).unwrap();
    assert_eq!(settings.channels.email, ["sendgrid", "backup"]);
}

#[test]
fn later_provider_must_be_of_channel_kind() {
    let mut env = BACKUP_SENDGRID.to_vec();
    env.push(("HERALD__CHANNELS__SMS", "twilio,backup"));
    env.push(("HERALD__PROVIDERS__TWILIO__FROM", "+15555550100"));
    assert_eq!(invalid_key(load(&env)), "channels.sms");
}

#[test]
fn provider_listed_twice_is_rejected() {
    let env = [("HERALD__CHANNELS__EMAIL", "sendgrid,sendgrid")];
    assert_eq!(invalid_key(load(&env)), "channels.email");
}

#[test]
fn circuit_breaker_threshold_must_be_positive() {
    let env = [("HERALD__CIRCUIT_BREAKER__FAILURE_THRESHOLD", "0")];
    assert_eq!(invalid_key(load(&env)), "circuit_breaker.failure_threshold");
}

#[test]
fn provider_overrides_circuit_breaker_keys() {
    let settings = load(&[(
        "HERALD__PROVIDERS__SENDGRID__CIRCUIT_BREAKER__COOL_DOWN_SECS",
        "90",
    )])
    .unwrap();
    let sendgrid = settings
        .circuit_breaker
        .with_override(settings.providers["sendgrid"].circuit_breaker_override());
    assert_eq!(sendgrid.cool_down_secs, 90);
    assert_eq!(
        sendgrid.failure_threshold,
        settings.circuit_breaker.failure_threshold
    );
    let twilio = settings
        .circuit_breaker
        .with_override(settings.providers["twilio"].circuit_breaker_override());
    assert_eq!(
        twilio.cool_down_secs,
        settings.circuit_breaker.cool_down_secs
    );
}

#[test]
fn provider_circuit_breaker_override_is_checked() {
    let env = [(
        "HERALD__PROVIDERS__SENDGRID__CIRCUIT_BREAKER__WINDOW_SECS",
        "0",
    )];
    assert_eq!(
        invalid_key(load(&env)),
        "providers.sendgrid.circuit_breaker.window_secs"
    );
}

#[test]
fn unknown_provider_kind_is_rejected() {
    let key = invalid_key(load(&[("HERALD__PROVIDERS__PIGEON__KIND", "pigeon")]));
    assert_eq!(key, "providers.pigeon.kind");
}

#[test]
fn broker_url_must_be_amqp() {
    assert_eq!(
        invalid_key(load(&[("HERALD__BROKER__URL", "http://x")])),
        "broker.url"
    );
}

#[test]
fn missing_secret_names_env_variable() {
    let settings = load(&[]).unwrap();
    let error = settings.check_secrets().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("HERALD__LEDGER__RECIPIENT_HASH_KEY"),
        "{error}"
    );

    let key = "unit-test-recipient-hash-key-0123";
    let settings = load(&[("HERALD__LEDGER__RECIPIENT_HASH_KEY", key)]).unwrap();
    let error = settings.check_secrets().unwrap_err();
    assert!(error.to_string().contains("HERALD__PROVIDERS__"), "{error}");
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, "SG.secret-value\n").unwrap();
    let settings = load(&[(
        "HERALD__PROVIDERS__SENDGRID__API_KEY_FILE",
        path.to_str().unwrap(),
    )])
    .unwrap();
    let ProviderConfig::Sendgrid(sendgrid) = &settings.providers["sendgrid"] else {
        panic!("sendgrid is not a sendgrid provider");
    };
    assert_eq!(
        sendgrid.api_key("providers.sendgrid").unwrap().expose(),
        "SG.secret-value"
    );
}

#[test]
fn secret_inline_and_file_conflict() {
    let settings = load(&[
        ("HERALD__PROVIDERS__SENDGRID__API_KEY", "SG.a"),
        ("HERALD__PROVIDERS__SENDGRID__API_KEY_FILE", "/nonexistent"),
    ])
    .unwrap();
    let ProviderConfig::Sendgrid(sendgrid) = &settings.providers["sendgrid"] else {
        panic!("sendgrid is not a sendgrid provider");
    };
    assert!(sendgrid.api_key("providers.sendgrid").is_err());
}

#[test]
fn redacted_toml_hides_secrets() {
    let settings = load(&[
        ("HERALD__PROVIDERS__SENDGRID__API_KEY", "SG.very-secret"),
        ("HERALD__BROKER__URL", "amqp://user:hunter2@rabbit:5672/%2f"),
    ])
    .unwrap();
    let rendered = settings.to_redacted_toml();
    assert!(!rendered.contains("SG.very-secret"), "{rendered}");
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(rendered.contains(REDACTED), "{rendered}");
    assert!(
        rendered.contains("amqp://user:***@rabbit:5672/%2f"),
        "{rendered}"
    );
}

#[test]
fn mask_password_hides_unencoded_slash_and_query() {
    assert_eq!(
        mask_password("amqp://guest:S3cret/Pw@127.0.0.1:5672/%2f"),
        "amqp://guest:***@127.0.0.1:5672/%2f"
    );
    assert_eq!(
        mask_password("postgres://herald:p@ss@db:5432/herald?sslmode=require&sslpassword=k3y"),
        "postgres://herald:***@db:5432/herald?sslmode=require&sslpassword=***"
    );
}

#[test]
fn redacted_toml_shows_only_webhook_origins() {
    let url = (
        "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__URL",
        "https://user:S3cretPw@hooks.example.com/services/T0/B0/S3cretPath?token=S3cretTok",
    );
    let rendered = load_webhook(&[url]).unwrap().to_redacted_toml();
    assert!(!rendered.contains("S3cret"), "{rendered}");
    assert!(
        rendered.contains(&format!("url = \"https://hooks.example.com/{REDACTED}\"")),
        "{rendered}"
    );
}

#[test]
fn mask_password_leaves_passwordless_urls() {
    assert_eq!(mask_password("amqp://rabbit/%2f"), "amqp://rabbit/%2f");
    assert_eq!(
        mask_password("amqp://guest@rabbit/"),
        "amqp://guest@rabbit/"
    );
}

fn smtp_of(settings: &Settings) -> &SmtpConfig {
    match &settings.providers["smtp"] {
        ProviderConfig::Smtp(smtp) => smtp,
        other => panic!("provider smtp is of kind {}", other.kind()),
    }
}

/// Environment that turns on the built-in `smtp` provider for email.
const SMTP_ON: [(&str, &str); 2] = [
    ("HERALD__CHANNELS__EMAIL", "smtp"),
    ("HERALD__PROVIDERS__SMTP__HOST", "smtp.example.com"),
];

#[test]
fn smtp_provider_validates() {
    let settings = load(&SMTP_ON).unwrap();
    assert_eq!(settings.channels.providers(ChannelKind::Email), ["smtp"]);
    let smtp = smtp_of(&settings);
    assert_eq!(smtp.host, "smtp.example.com");
    assert!(smtp.password("providers.smtp").unwrap().is_none());
}

#[test]
fn smtp_port_follows_tls_mode() {
    let mut env = SMTP_ON.to_vec();
    env.push(("HERALD__PROVIDERS__SMTP__TLS", "implicit"));
    let settings = load(&env).unwrap();
    let smtp = smtp_of(&settings);
    assert_eq!(smtp.port(), 465);
}

#[test]
fn smtp_host_is_required_when_used() {
    assert_eq!(
        invalid_key(load(&[("HERALD__CHANNELS__EMAIL", "smtp")])),
        "providers.smtp.host"
    );
}

#[test]
fn smtp_without_tls_only_on_loopback() {
    let mut env = SMTP_ON.to_vec();
    env.push(("HERALD__PROVIDERS__SMTP__TLS", "none"));
    assert_eq!(invalid_key(load(&env)), "providers.smtp.tls");

    env.push(("HERALD__PROVIDERS__SMTP__HOST", "127.0.0.1"));
    assert!(load(&env).is_ok());
}

#[test]
fn smtp_password_needs_username() {
    let key = "providers.smtp";
    let mut env = SMTP_ON.to_vec();
    env.push(("HERALD__PROVIDERS__SMTP__PASSWORD", "secret"));
    let settings = load(&env).unwrap();
    let smtp = smtp_of(&settings);
    let error = smtp.password(key).unwrap_err();
    assert!(error.to_string().contains("username"), "{error}");

    env.push(("HERALD__PROVIDERS__SMTP__USERNAME", "herald"));
    let settings = load(&env).unwrap();
    let smtp = smtp_of(&settings);
    assert_eq!(smtp.password(key).unwrap().unwrap().expose(), "secret");
}

#[test]
fn smtp_username_needs_password() {
    let mut env = SMTP_ON.to_vec();
    env.push(("HERALD__PROVIDERS__SMTP__USERNAME", "herald"));
    let settings = load(&env).unwrap();
    let smtp = smtp_of(&settings);
    let error = smtp.password("providers.smtp").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("HERALD__PROVIDERS__SMTP__PASSWORD"),
        "{error}"
    );
}

/// Environment for a provider `name` of `kind`, with the keys every kind requires.
fn provider_env(name: &str, kind: &str, keys: &[(&str, &str)]) -> Vec<(String, String)> {
    let prefix = format!("HERALD__PROVIDERS__{}", name.to_uppercase());
    let mut env = vec![
        (format!("{prefix}__KIND"), kind.to_owned()),
        (format!("{prefix}__MAX_IN_FLIGHT"), "4".to_owned()),
        (format!("{prefix}__RATE_LIMIT__PER_SECOND"), "2".to_owned()),
        (format!("{prefix}__RATE_LIMIT__BURST"), "4".to_owned()),
    ];
    env.extend(
        keys.iter()
            .map(|(key, value)| (format!("{prefix}__{key}"), (*value).to_owned())),
    );
    env
}

fn load_owned(env: Vec<(String, String)>) -> Result<Settings, ConfigError> {
    Settings::load_with_env(None, env)
}

#[test]
fn mailgun_section_loads_with_defaults() {
    let mut env = provider_env(
        "mailgun",
        "mailgun",
        &[
            ("DOMAIN", "mg.example.com"),
            ("FROM", "Herald <n@mg.example.com>"),
        ],
    );
    env.push(("HERALD__CHANNELS__EMAIL".to_owned(), "mailgun".to_owned()));
    let settings = load_owned(env).unwrap();
    let provider = &settings.providers["mailgun"];
    assert_eq!(provider.kind(), "mailgun");
    assert_eq!(provider.channel(), ChannelKind::Email);
    assert_eq!(
        provider.base_url().as_deref(),
        Some("https://api.mailgun.net")
    );
    assert_eq!(provider.max_in_flight(), 4);
}

#[test]
fn mailgun_domain_is_required_when_used() {
    let mut env = provider_env(
        "mailgun",
        "mailgun",
        &[("DOMAIN", ""), ("FROM", "n@x.test")],
    );
    env.push(("HERALD__CHANNELS__EMAIL".to_owned(), "mailgun".to_owned()));
    assert_eq!(invalid_key(load_owned(env)), "providers.mailgun.domain");

    let mut env = provider_env(
        "mailgun",
        "mailgun",
        &[("DOMAIN", "mg.example.com/v3"), ("FROM", "n@x.test")],
    );
    env.push(("HERALD__CHANNELS__EMAIL".to_owned(), "mailgun".to_owned()));
    assert_eq!(invalid_key(load_owned(env)), "providers.mailgun.domain");
}

#[test]
fn new_kind_rejects_unknown_key() {
    let env = provider_env("mailgun", "mailgun", &[("DOMIAN", "mg.example.com")]);
    let error = load_owned(env).unwrap_err();
    assert!(error.to_string().contains("domian"), "{error}");
    assert!(error.to_string().contains("providers.mailgun"), "{error}");
}

#[test]
fn ses_base_url_follows_region() {
    let mut env = provider_env(
        "ses",
        "ses",
        &[("REGION", "eu-west-1"), ("FROM_EMAIL", "n@example.com")],
    );
    env.push(("HERALD__CHANNELS__EMAIL".to_owned(), "ses".to_owned()));
    let settings = load_owned(env).unwrap();
    assert_eq!(
        settings.providers["ses"].base_url().as_deref(),
        Some("https://email.eu-west-1.amazonaws.com")
    );
}

#[test]
fn ses_region_must_be_a_region_name() {
    let mut env = provider_env(
        "ses",
        "ses",
        &[("REGION", "eu west 1"), ("FROM_EMAIL", "n@example.com")],
    );
    env.push(("HERALD__CHANNELS__EMAIL".to_owned(), "ses".to_owned()));
    assert_eq!(invalid_key(load_owned(env)), "providers.ses.region");
}

#[test]
fn ses_credentials_need_key_id_and_secret() {
    let hash_key = "unit-test-recipient-hash-key-0123";
    let base = |keys: &[(&str, &str)]| {
        let mut all = vec![("REGION", "us-east-1"), ("FROM_EMAIL", "n@example.com")];
        all.extend_from_slice(keys);
        let mut env = provider_env("ses", "ses", &all);
        env.push(("HERALD__CHANNELS__EMAIL".to_owned(), "ses".to_owned()));
        env.push(("HERALD__CHANNELS__SMS".to_owned(), String::new()));
        env.push(("HERALD__CHANNELS__PUSH".to_owned(), String::new()));
        env.push((
            "HERALD__LEDGER__RECIPIENT_HASH_KEY".to_owned(),
            hash_key.to_owned(),
        ));
        load_owned(env).unwrap()
    };

    let missing_id = base(&[("SECRET_ACCESS_KEY", "secret")]).check_secrets();
    assert_eq!(
        invalid_key(missing_id.map(|()| load(&[]).unwrap())),
        "providers.ses.access_key_id"
    );

    let missing_secret = base(&[("ACCESS_KEY_ID", "AKIDEXAMPLE")]).check_secrets();
    assert_eq!(
        invalid_key(missing_secret.map(|()| load(&[]).unwrap())),
        "providers.ses.secret_access_key"
    );

    let settings = base(&[
        ("ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("SECRET_ACCESS_KEY", "secret"),
    ]);
    settings.check_secrets().unwrap();
    let ProviderConfig::Ses(ses) = &settings.providers["ses"] else {
        panic!("ses is not an ses provider");
    };
    let credentials = ses.credentials("providers.ses").unwrap();
    assert!(credentials.session_token.is_none());
}

#[test]
fn vonage_needs_api_key_and_secret() {
    let mut env = provider_env("vonage", "vonage", &[("FROM", "Herald")]);
    env.push(("HERALD__CHANNELS__SMS".to_owned(), "vonage".to_owned()));
    let settings = load_owned(env).unwrap();
    assert_eq!(settings.providers["vonage"].channel(), ChannelKind::Sms);
    let ProviderConfig::Vonage(vonage) = &settings.providers["vonage"] else {
        panic!("vonage is not a vonage provider");
    };
    let error = vonage.api_secret("providers.vonage").unwrap_err();
    assert!(
        error.to_string().contains("providers.vonage.api_key"),
        "{error}"
    );
}

#[test]
fn new_kinds_redact_secrets() {
    let mut env = provider_env(
        "ses",
        "ses",
        &[
            ("REGION", "us-east-1"),
            ("FROM_EMAIL", "n@example.com"),
            ("SECRET_ACCESS_KEY", "aws-very-secret"),
            ("SESSION_TOKEN", "aws-session-secret"),
        ],
    );
    env.extend(provider_env(
        "vonage",
        "vonage",
        &[("FROM", "Herald"), ("API_SECRET", "vonage-very-secret")],
    ));
    env.extend(provider_env(
        "mailgun",
        "mailgun",
        &[
            ("DOMAIN", "mg.example.com"),
            ("FROM", "n@x.test"),
            ("API_KEY", "mailgun-very-secret"),
        ],
    ));
    let rendered = load_owned(env).unwrap().to_redacted_toml();
    for secret in [
        "aws-very-secret",
        "aws-session-secret",
        "vonage-very-secret",
        "mailgun-very-secret",
    ] {
        assert!(!rendered.contains(secret), "{rendered}");
    }
}

/// The provider examples in docs/configuration.md load as they are, commented keys aside.
#[test]
fn documented_provider_examples_load() {
    let doc = include_str!("../../docs/configuration.md");
    let section = doc
        .split("## More providers")
        .nth(1)
        .expect("docs/configuration.md has a More providers section");
    // The section ends where the next one begins.
    let section = section.split("\n## ").next().unwrap();
    let examples: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert_eq!(examples.len(), 3);

    let dir = tempfile::tempdir().unwrap();
    for (index, example) in examples.iter().enumerate() {
        let path = dir.path().join(format!("example-{index}.toml"));
        std::fs::write(&path, example).unwrap();
        let settings = Settings::load_with_env(Some(&path), Vec::new())
            .unwrap_or_else(|error| panic!("example {index} does not load: {error}\n{example}"));
        let kind = if example.contains("kind = \"vonage\"") {
            ChannelKind::Sms
        } else {
            ChannelKind::Email
        };
        let name = settings.channels.providers(kind)[0].clone();
        assert_eq!(settings.providers[&name].kind(), name, "example {index}");
    }
}

/// config/sandbox.toml defines a usable provider of each kind the sandbox serves.
#[test]
fn sandbox_config_defines_more_providers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sandbox.toml");
    for (channel, name) in [("EMAIL", "mailgun"), ("EMAIL", "ses"), ("SMS", "vonage")] {
        let env = vec![(format!("HERALD__CHANNELS__{channel}"), name.to_owned())];
        let settings = Settings::load_with_env(Some(&path), env).unwrap();
        let provider = &settings.providers[name];
        assert_eq!(provider.kind(), name);
        assert_eq!(
            provider.base_url().as_deref(),
            Some("http://127.0.0.1:8025")
        );
        provider
            .check_secrets(&format!("providers.{name}"))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
    }
}

#[test]
fn feedback_defaults() {
    let settings = load(&[]).unwrap();
    assert_eq!(settings.broker.events_exchange, "herald.events");
    assert!(!settings.suppression.skip);
    assert!(settings.events.recipient_invalid);
    assert!(!settings.events.publish_outcomes);
}

#[test]
fn feedback_keys_load_from_environment() {
    let settings = load(&[
        ("HERALD__SUPPRESSION__SKIP", "true"),
        ("HERALD__EVENTS__PUBLISH_OUTCOMES", "true"),
        ("HERALD__BROKER__EVENTS_EXCHANGE", ""),
    ])
    .unwrap();
    assert!(settings.suppression.skip);
    assert!(settings.events.publish_outcomes);
    assert!(settings.broker.events_exchange.is_empty());
}

#[test]
fn long_events_exchange_is_rejected() {
    let name = "e".repeat(256);
    let key = invalid_key(load(&[("HERALD__BROKER__EVENTS_EXCHANGE", name.as_str())]));
    assert_eq!(key, "broker.events_exchange");
}

/// Environment that turns the webhook channel on with one endpoint, `billing`.
const WEBHOOK_ENV: [(&str, &str); 3] = [
    ("HERALD__CHANNELS__WEBHOOK", "webhook"),
    (
        "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__URL",
        "https://billing.example.com/hooks",
    ),
    (
        "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__SIGNING_SECRETS",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ),
];

fn load_webhook(extra: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let mut env = WEBHOOK_ENV.to_vec();
    env.extend_from_slice(extra);
    load(&env)
}

#[test]
fn webhook_endpoint_loads_from_environment() {
    let settings = load_webhook(&[]).unwrap();
    assert_eq!(settings.channels.webhook, ["webhook"]);
    let ProviderConfig::Webhook(webhook) = &settings.providers["webhook"] else {
        panic!("providers.webhook is not of kind webhook");
    };
    assert_eq!(
        webhook.endpoints["billing"].url,
        "https://billing.example.com/hooks"
    );
}

#[test]
fn webhook_reserved_header_is_rejected() {
    let header = (
        "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__HEADERS__WEBHOOK-ID",
        "x",
    );
    assert_eq!(
        invalid_key(load_webhook(&[header])),
        "providers.webhook.endpoints.billing.headers.webhook-id"
    );
}

#[test]
fn webhook_allowlist_entry_must_be_plain_url() {
    let entry = (
        "HERALD__PROVIDERS__WEBHOOK__URL_ALLOWLIST",
        "https://h.example/?token=1",
    );
    assert_eq!(
        invalid_key(load_webhook(&[entry])),
        "providers.webhook.url_allowlist"
    );
}

#[test]
fn webhook_allowlist_needs_signing_secrets() {
    let key = (
        "HERALD__LEDGER__RECIPIENT_HASH_KEY",
        "unit-test-recipient-hash-key-0123",
    );
    let entry = (
        "HERALD__PROVIDERS__WEBHOOK__URL_ALLOWLIST",
        "https://h.example/",
    );
    let others_off = [
        ("HERALD__CHANNELS__EMAIL", ""),
        ("HERALD__CHANNELS__SMS", ""),
        ("HERALD__CHANNELS__PUSH", ""),
    ];
    let mut env = vec![key, entry];
    env.extend(others_off);
    let error = load_webhook(&env).unwrap().check_secrets().unwrap_err();
    assert!(
        error
            .to_string()
            .contains("providers.webhook.signing_secrets"),
        "{error}"
    );
}

#[test]
fn redacted_toml_hides_webhook_secrets_and_headers() {
    let header = (
        "HERALD__PROVIDERS__WEBHOOK__ENDPOINTS__BILLING__HEADERS__AUTHORIZATION",
        "Bearer hunter2",
    );
    let rendered = load_webhook(&[header]).unwrap().to_redacted_toml();
    assert!(
        rendered.contains("[providers.webhook.endpoints.billing]"),
        "{rendered}"
    );
    assert!(
        rendered.contains(&format!("authorization = \"{REDACTED}\"")),
        "{rendered}"
    );
    assert!(!rendered.contains("hunter2"), "{rendered}");
    assert!(!rendered.contains("MfKQ9r8G"), "{rendered}");
}

#[test]
fn unusable_urls_are_rejected_masked() {
    let broker = load(&[(
        "HERALD__BROKER__URL",
        "amqp://guest:S3cret@127.0.0.1:notaport/%2f",
    )]);
    let message = broker.as_ref().unwrap_err().to_string();
    assert_eq!(invalid_key(broker), "broker.url");
    assert!(!message.contains("S3cret"), "{message}");

    let ledger = load(&[(
        "HERALD__LEDGER__URL",
        "postgres://herald:S3cret@127.0.0.1:abc/db",
    )]);
    let message = ledger.as_ref().unwrap_err().to_string();
    assert_eq!(invalid_key(ledger), "ledger.url");
    assert!(!message.contains("S3cret"), "{message}");
}
