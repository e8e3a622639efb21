//! The SMTP adapter against a scripted SMTP server on 127.0.0.1 (see `smtp_server.rs`).

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use herald::providers::{ErrorClass, Provider, SendResult};
use tempfile::NamedTempFile;

use crate::helpers::{self, JOB_ID};
use crate::smtp_server::{Auth, PASSWORD, Security, SmtpServer, USERNAME};

const RECIPIENT: &str = "bob@example.com";

/// An SMTP provider section pointed at `server`, with extra `overrides` (keys without the
/// `HERALD__PROVIDERS__SMTP__` prefix). The returned file contains the server's CA and must
/// live as long as the provider may reconnect.
struct Relay {
    provider: Arc<dyn Provider>,
    _ca_file: NamedTempFile,
}

fn relay(server: &SmtpServer, tls: &str, overrides: &[(&str, &str)]) -> Relay {
    let mut ca_file = NamedTempFile::new().unwrap();
    ca_file.write_all(server.ca_pem().as_bytes()).unwrap();
    let port = server.port().to_string();
    let ca_path = ca_file.path().to_str().unwrap().to_owned();
    let mut all = vec![
        ("HOST", "127.0.0.1"),
        ("PORT", port.as_str()),
        ("TLS", tls),
        ("EXTRA_CA_FILE", ca_path.as_str()),
        ("TIMEOUT_SECS", "5"),
    ];
    all.extend_from_slice(overrides);
    let keys: Vec<(String, &str)> = all
        .iter()
        .map(|(key, value)| (format!("PROVIDERS__SMTP__{key}"), *value))
        .collect();
    let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    Relay {
        provider: helpers::provider("smtp", &keys),
        _ca_file: ca_file,
    }
}

async fn send_text(relay: &Relay) -> SendResult {
    let email = helpers::email(RECIPIENT, Some("Your parcel is on its way."), None);
    helpers::send(relay.provider.as_ref(), &email).await
}

/// Lets the task that lettre spawns to return a connection to its pool run.
// NOTE: lettre returns a connection from a spawned task and exposes no signal for it.
// Tests run on Tokio's current-thread runtime, where yielding runs that ready task.
async fn let_pool_recycle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn starttls_delivers_message_intact() {
    let server = SmtpServer::start(Security::Starttls, Auth::None).await;
    let relay = relay(&server, "starttls", &[]);
    let email = helpers::email(RECIPIENT, Some("Plain body"), Some("<p>HTML body</p>"));

    let delivered = helpers::send(relay.provider.as_ref(), &email)
        .await
        .expect("message accepted");

    assert_eq!(delivered.status, 250);
    let received = server.received();
    assert_eq!(received.len(), 1);
    let message = &received[0];
    assert_eq!(message.from, "notifications@example.com");
    assert_eq!(message.to, vec![RECIPIENT.to_owned()]);
    let message_id = delivered.message_id.expect("Message-ID reported");
    assert_eq!(message.header("Message-ID"), Some(message_id.as_str()));
    assert!(message_id.ends_with("@example.com>"), "{message_id}");
    assert_eq!(message.header("X-Herald-Job-Id"), Some(JOB_ID));
    assert_eq!(message.header("Subject"), Some("Your order shipped"));
    assert_eq!(
        message.header("From"),
        Some("Herald <notifications@example.com>")
    );
    assert_eq!(message.header("To"), Some(RECIPIENT));
    assert!(
        message
            .header("Content-Type")
            .is_some_and(|value| value.starts_with("multipart/alternative")),
        "{:?}",
        message.header("Content-Type")
    );
    assert!(message.data.contains("Plain body"), "{}", message.data);
    assert!(
        message.data.contains("<p>HTML body</p>"),
        "{}",
        message.data
    );
}

#[tokio::test]
async fn resend_repeats_message_id() {
    let server = SmtpServer::start(Security::Starttls, Auth::None).await;
    let relay = relay(&server, "starttls", &[]);

    let first = send_text(&relay).await.unwrap();
    let second = send_text(&relay).await.unwrap();

    assert_eq!(first.message_id, second.message_id);
    let received = server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].header("Message-ID"),
        received[1].header("Message-ID")
    );
}

#[tokio::test]
async fn implicit_tls_with_auth_plain() {
    let server = SmtpServer::start(Security::Implicit, Auth::PlainAndLogin).await;
    let relay = relay(
        &server,
        "implicit",
        &[("USERNAME", USERNAME), ("PASSWORD", PASSWORD)],
    );

    let delivered = send_text(&relay).await.expect("message accepted");

    assert_eq!(delivered.status, 250);
    assert_eq!(server.received().len(), 1);
    let auths = server.auths();
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0].mechanism, "PLAIN");
    assert_eq!(auths[0].username, USERNAME);
    assert_eq!(auths[0].password, PASSWORD);
}

#[tokio::test]
async fn starttls_with_auth_login() {
    let server = SmtpServer::start(Security::Starttls, Auth::LoginOnly).await;
    let relay = relay(
        &server,
        "starttls",
        &[("USERNAME", USERNAME), ("PASSWORD", PASSWORD)],
    );

    let delivered = send_text(&relay).await.expect("message accepted");

    assert_eq!(delivered.status, 250);
    assert_eq!(server.received().len(), 1);
    let auths = server.auths();
    assert_eq!(auths.len(), 1);
    assert_eq!(auths[0].mechanism, "LOGIN");
    assert_eq!(auths[0].username, USERNAME);
    assert_eq!(auths[0].password, PASSWORD);
}

#[tokio::test]
async fn tls_fails_without_trusted_ca() {
    let server = SmtpServer::start(Security::Implicit, Auth::None).await;
    let relay = relay(&server, "implicit", &[("EXTRA_CA_FILE", "")]);

    let error = send_text(&relay).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("tls"), "{}", error.message);
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn rejected_auth_reloads_password_file() {
    let server = SmtpServer::start(Security::Starttls, Auth::PlainAndLogin).await;
    let mut password_file = NamedTempFile::new().unwrap();
    password_file.write_all(b"stale-password\n").unwrap();
    let path = password_file.path().to_str().unwrap().to_owned();
    let relay = relay(
        &server,
        "starttls",
        &[("USERNAME", USERNAME), ("PASSWORD_FILE", path.as_str())],
    );

    let error = send_text(&relay).await.unwrap_err();
    assert_eq!(error.class, ErrorClass::Credentials);
    assert_eq!(error.status, Some(535));
    assert_eq!(error.code.as_deref(), Some("5.7.8"));
    assert!(server.received().is_empty());

    std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
    relay.provider.invalidate_credentials();
    let delivered = send_text(&relay).await.expect("accepted after reload");

    assert_eq!(delivered.status, 250);
    let passwords: Vec<String> = server.auths().into_iter().map(|a| a.password).collect();
    assert_eq!(passwords, ["stale-password", PASSWORD]);
}

#[tokio::test]
async fn starttls_missing_sends_no_credentials() {
    let server = SmtpServer::start(Security::Plain, Auth::None).await;
    let relay = relay(
        &server,
        "starttls",
        &[("USERNAME", USERNAME), ("PASSWORD", PASSWORD)],
    );

    let error = send_text(&relay).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code.as_deref(), Some("client"));
    assert!(server.auths().is_empty());
    assert!(server.received().is_empty());
}

/// A negative reply at one stage of the exchange, and what the adapter must make of it.
struct ReplyCase {
    stage: &'static str,
    reply: (u16, &'static str),
    class: ErrorClass,
    code: Option<&'static str>,
    recipient_invalid: bool,
}

#[tokio::test]
async fn replies_are_classified() {
    use ErrorClass::{Permanent, Transient};
    let cases = [
        ReplyCase {
            stage: "greeting",
            reply: (421, "4.3.2 Service shutting down"),
            class: Transient,
            code: Some("4.3.2"),
            recipient_invalid: false,
        },
        ReplyCase {
            stage: "rcpt",
            reply: (450, "4.2.1 Mailbox busy"),
            class: Transient,
            code: Some("4.2.1"),
            recipient_invalid: false,
        },
        ReplyCase {
            stage: "mail",
            reply: (451, "4.3.0 Local error in processing"),
            class: Transient,
            code: Some("4.3.0"),
            recipient_invalid: false,
        },
        ReplyCase {
            stage: "data_end",
            reply: (452, "4.3.1 Insufficient system storage"),
            class: Transient,
            code: Some("4.3.1"),
            recipient_invalid: false,
        },
        ReplyCase {
            stage: "rcpt",
            reply: (550, "5.1.1 <bob@example.com>: Recipient address rejected"),
            class: Permanent,
            code: Some("5.1.1"),
            recipient_invalid: true,
        },
        ReplyCase {
            stage: "rcpt",
            reply: (550, "5.1.10 Recipient address has null MX"),
            class: Permanent,
            code: Some("5.1.10"),
            recipient_invalid: true,
        },
        ReplyCase {
            stage: "data_end",
            reply: (554, "5.7.1 Message rejected as spam"),
            class: Permanent,
            code: Some("5.7.1"),
            recipient_invalid: false,
        },
        ReplyCase {
            stage: "data_end",
            reply: (554, "Transaction failed"),
            class: Permanent,
            code: None,
            recipient_invalid: false,
        },
    ];

    for case in cases {
        let label = format!("{} {} at {}", case.reply.0, case.reply.1, case.stage);
        let server = SmtpServer::start(Security::Plain, Auth::None).await;
        server.script(|script| {
            let queue = match case.stage {
                "greeting" => &mut script.greeting,
                "mail" => &mut script.mail,
                "rcpt" => &mut script.rcpt,
                _ => &mut script.data_end,
            };
            queue.push_back(case.reply);
        });
        let relay = relay(&server, "none", &[]);

        let error = send_text(&relay).await.unwrap_err();

        assert_eq!(error.class, case.class, "{label}");
        assert_eq!(error.status, Some(case.reply.0), "{label}: {error}");
        assert_eq!(error.code.as_deref(), case.code, "{label}");
        assert_eq!(error.recipient_invalid, case.recipient_invalid, "{label}");
        assert!(
            !error.message.contains(RECIPIENT),
            "{label}: {}",
            error.message
        );
        assert!(server.received().is_empty(), "{label}");
    }
}

#[tokio::test]
async fn transient_reply_then_success() {
    let server = SmtpServer::start(Security::Plain, Auth::None).await;
    server.script(|script| script.data_end.push_back((451, "4.3.0 Try again later")));
    let relay = relay(&server, "none", &[]);

    let error = send_text(&relay).await.unwrap_err();
    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.status, Some(451));
    let delivered = send_text(&relay).await.expect("second attempt accepted");

    assert_eq!(delivered.status, 250);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn stalled_server_times_out() {
    let server = SmtpServer::start(Security::Plain, Auth::None).await;
    server.script(|script| script.stall_after_data = true);
    let relay = relay(&server, "none", &[("TIMEOUT_SECS", "1")]);

    let started = tokio::time::Instant::now();
    let error = send_text(&relay).await.unwrap_err();

    assert_eq!(error.class, ErrorClass::Transient);
    assert_eq!(error.code.as_deref(), Some("timeout"));
    assert_eq!(error.status, None);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");

    // The stalled connection is abandoned: the next attempt opens a new one and succeeds.
    server.script(|script| script.stall_after_data = false);
    let delivered = send_text(&relay).await.expect("accepted after the stall");
    assert_eq!(delivered.status, 250);
    assert_eq!(server.connections(), 2);
    assert_eq!(server.received().len(), 1);
}

#[tokio::test]
async fn pooled_connection_is_reused() {
    let server = SmtpServer::start(Security::Starttls, Auth::PlainAndLogin).await;
    let relay = relay(
        &server,
        "starttls",
        &[("USERNAME", USERNAME), ("PASSWORD", PASSWORD)],
    );

    for attempt in 0..3 {
        send_text(&relay)
            .await
            .unwrap_or_else(|error| panic!("attempt {attempt}: {error}"));
        let_pool_recycle().await;
    }

    assert_eq!(server.received().len(), 3);
    assert_eq!(server.connections(), 1);
    assert_eq!(server.auths().len(), 1);
}

#[tokio::test]
async fn pool_disabled_opens_connection_per_send() {
    let server = SmtpServer::start(Security::Plain, Auth::None).await;
    let relay = relay(&server, "none", &[("POOL_MAX_IDLE", "0")]);

    for _ in 0..2 {
        send_text(&relay).await.unwrap();
        let_pool_recycle().await;
    }

    assert_eq!(server.received().len(), 2);
    assert_eq!(server.connections(), 2);
}
