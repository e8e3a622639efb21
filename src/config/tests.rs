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
    assert_eq!(settings.providers.len(), 3);
    let sendgrid = &settings.providers["sendgrid"];
    assert_eq!(sendgrid.rate_limit().per_second, 20);
    assert_eq!(sendgrid.rate_limit().burst, 40);
    assert_eq!(settings.providers["twilio"].rate_limit().per_second, 5);
    assert_eq!(settings.providers["fcm"].rate_limit().burst, 200);
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
fn mask_password_leaves_passwordless_urls() {
    assert_eq!(mask_password("amqp://rabbit/%2f"), "amqp://rabbit/%2f");
    assert_eq!(
        mask_password("amqp://guest@rabbit/"),
        "amqp://guest@rabbit/"
    );
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
