//! Maps lettre's SMTP errors to [`SendError`]s.
//!
//! RFC 5321 §4.2.1: a 4yz reply means the same command may succeed if repeated, a 5yz reply
//! means it will not. RFC 3463 enhanced status codes (`5.1.1`) at the start of the reply
//! text give the reason, and Herald reports them as the error code.

use std::error::Error as _;

use lettre::transport::smtp::Error as SmtpError;

use crate::providers::http::provider_message;
use crate::providers::{ErrorClass, SendError};

/// The reply to a rejected AUTH (RFC 4954 §6): the credentials are wrong.
const AUTH_FAILED: u16 = 535;

/// Enhanced status codes meaning that the recipient's address cannot receive mail: bad
/// mailbox (5.1.1), bad system (5.1.2), bad address syntax (5.1.3), mailbox moved without a
/// forwarding address (5.1.6), and a domain with a null MX (5.1.10, RFC 7505).
const BAD_RECIPIENT_CODES: [&str; 5] = ["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"];

/// Classifies a failed SMTP exchange. `sensitive` lists values, such as the recipient's
/// address, that are cut from the reply text before it becomes the error message.
pub(super) fn classify(error: &SmtpError, sensitive: &[&str]) -> SendError {
    match error.status() {
        Some(code) => classify_reply(u16::from(code), &reply_text(error), sensitive),
        None => classify_failure(error, sensitive),
    }
}

/// Classifies a negative reply with its code and text.
fn classify_reply(code: u16, text: &str, sensitive: &[&str]) -> SendError {
    let enhanced = enhanced_code(text);
    let message = provider_message(&format!("{code} {text}"), sensitive);
    let error = match code {
        AUTH_FAILED => SendError::new(ErrorClass::Credentials, message),
        400..=499 => SendError::transient(message),
        _ => {
            let error = SendError::permanent(message);
            if enhanced.is_some_and(|code| BAD_RECIPIENT_CODES.contains(&code)) {
                error.recipient_invalid()
            } else {
                error
            }
        }
    };
    let error = error.with_status(code);
    match enhanced {
        Some(enhanced) => error.with_code(enhanced),
        None => error,
    }
}

/// Classifies a failure without a reply. Connection, TLS and protocol failures may not recur,
/// so they are transient. A client error (the relay does not offer STARTTLS or a usable AUTH
/// mechanism, or the message cannot be sent) repeats on every attempt, so it is permanent.
fn classify_failure(error: &SmtpError, sensitive: &[&str]) -> SendError {
    let (class, code) = if error.is_timeout() {
        (ErrorClass::Transient, "timeout")
    } else if is_tls_failure(error) {
        (ErrorClass::Transient, "tls")
    } else if error.is_client() {
        (ErrorClass::Permanent, "client")
    } else if error.is_response() {
        (ErrorClass::Transient, "response")
    } else {
        (ErrorClass::Transient, "connect")
    };
    let message = provider_message(&format!("SMTP exchange failed: {error}"), sensitive);
    SendError::new(class, message).with_code(code)
}

/// Returns whether TLS failed, such as a handshake with a certificate that no trusted CA
/// signed. lettre 0.11 reports a failed handshake as a connection error, with the rustls
/// error inside an I/O error in its source chain.
fn is_tls_failure(error: &SmtpError) -> bool {
    if error.is_tls() {
        return true;
    }
    let mut cause = error.source();
    while let Some(current) = cause {
        let wraps_tls = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if wraps_tls || current.is::<rustls::Error>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// Returns the reply text lettre keeps as the error's source.
fn reply_text(error: &SmtpError) -> String {
    error.source().map(ToString::to_string).unwrap_or_default()
}

/// Returns the RFC 3463 status code at the start of `text`: `class.subject.detail`, the
/// class 2, 4 or 5 and the others 1 to 3 digits.
fn enhanced_code(text: &str) -> Option<&str> {
    let candidate = text.split_whitespace().next()?;
    let mut parts = candidate.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let digits =
        |part: &str| (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
    let valid = matches!(class, "2" | "4" | "5")
        && digits(subject)
        && digits(detail)
        && parts.next().is_none();
    valid.then_some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_code_parsing() {
        assert_eq!(enhanced_code("5.1.1 No such user"), Some("5.1.1"));
        assert_eq!(enhanced_code("4.7.0 Try later"), Some("4.7.0"));
        assert_eq!(enhanced_code("5.1.10 Null MX"), Some("5.1.10"));
        assert_eq!(enhanced_code("Mailbox unavailable"), None);
        assert_eq!(enhanced_code("3.1.1 not a class"), None);
        assert_eq!(enhanced_code("5.1 short"), None);
        assert_eq!(enhanced_code("5.1.1.1 long"), None);
        assert_eq!(enhanced_code(""), None);
    }

    #[test]
    fn transient_replies() {
        for code in [421, 450, 451, 452] {
            let error = classify_reply(code, "4.3.0 Try again later", &[]);
            assert_eq!(error.class, ErrorClass::Transient, "{code}");
            assert_eq!(error.status, Some(code));
            assert_eq!(error.code.as_deref(), Some("4.3.0"));
            assert!(!error.recipient_invalid);
        }
    }

    #[test]
    fn bad_mailbox_is_recipient_invalid() {
        for enhanced in BAD_RECIPIENT_CODES {
            let error = classify_reply(550, &format!("{enhanced} Bad destination"), &[]);
            assert_eq!(error.class, ErrorClass::Permanent, "{enhanced}");
            assert!(error.recipient_invalid, "{enhanced}");
            assert_eq!(error.code.as_deref(), Some(enhanced));
        }
    }

    #[test]
    fn policy_rejection_keeps_recipient() {
        let error = classify_reply(554, "5.7.1 Message rejected as spam", &[]);
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(!error.recipient_invalid);
        let error = classify_reply(550, "Mailbox unavailable", &[]);
        assert_eq!(error.class, ErrorClass::Permanent);
        assert!(!error.recipient_invalid);
        assert_eq!(error.code, None);
    }

    #[test]
    fn auth_failure_is_credentials() {
        let error = classify_reply(535, "5.7.8 Authentication credentials invalid", &[]);
        assert_eq!(error.class, ErrorClass::Credentials);
        assert_eq!(error.status, Some(535));
        assert_eq!(error.code.as_deref(), Some("5.7.8"));
    }

    #[test]
    fn reply_text_redacts_recipient() {
        let error = classify_reply(
            550,
            "5.1.1 <bob@example.com>: Recipient address rejected",
            &["bob@example.com"],
        );
        assert!(
            !error.message.contains("bob@example.com"),
            "{}",
            error.message
        );
        assert!(error.message.starts_with("550 5.1.1"), "{}", error.message);
    }
}
