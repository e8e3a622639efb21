//! Vonage SMS API adapter: a form-encoded `POST /sms/json` per attempt.
//!
//! The API key and secret travel in the form body. Vonage replies HTTP 200 even when it
//! rejects a message: the body lists one entry per SMS part, each with a `status` code
//! ("0" is success) and, on failure, an `error-text`. The class therefore comes from the
//! first non-zero status, and the HTTP status only matters when it is not 200. The job id
//! travels as `client-ref`, which Vonage echoes in delivery receipts.

use async_trait::async_trait;
use serde::Deserialize;

use super::http::{self, Reply};
use super::reloadable::Reloadable;
use super::{Delivered, ErrorClass, Provider, SendError, SendRequest, SendResult};
use crate::config::{ConfigError, Secret, VonageConfig};
use crate::job::{Notification, SmsMessage};

/// Longest `client-ref` sent, in characters.
// NOTE: 40 is the limit Vonage documents for the client reference of its Messages API. The
// SMS API reference has allowed more in some versions. Longer job ids are cut, which keeps
// the request valid but lets two long ids share a reference.
const MAX_CLIENT_REF_CHARS: usize = 40;

pub struct VonageSender {
    client: reqwest::Client,
    url: reqwest::Url,
    api_key: String,
    api_secret: Reloadable<Secret>,
    from: String,
}

impl VonageSender {
    pub fn new(
        key: &str,
        config: &VonageConfig,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let section = config.clone();
        let section_key = key.to_owned();
        Ok(VonageSender {
            client,
            url: http::endpoint(key, &config.base_url, "/sms/json")?,
            api_key: config.api_key.clone(),
            api_secret: Reloadable::new(key, move || section.api_secret(&section_key))?,
            from: config.from.clone(),
        })
    }

    /// Returns the form fields of one SMS.
    fn form<'a>(
        &'a self,
        api_secret: &'a Secret,
        job_id: &'a str,
        sms: &'a SmsMessage,
    ) -> Vec<(&'static str, &'a str)> {
        let mut form = vec![
            ("api_key", self.api_key.as_str()),
            ("api_secret", api_secret.expose()),
            ("from", self.from.as_str()),
            // Vonage takes the number in international format without the leading `+`.
            ("to", sms.to.expose().trim_start_matches('+')),
            ("text", sms.body.as_str()),
            ("client-ref", client_ref(job_id)),
        ];
        // The default type is GSM-7 text, which garbles other characters. Any non-ASCII
        // character switches to `unicode`, which covers every character at the cost of
        // shorter parts. GSM-7's few non-ASCII letters are sent as unicode too.
        if !sms.body.is_ascii() {
            form.push(("type", "unicode"));
        }
        form
    }
}

fn client_ref(job_id: &str) -> &str {
    match job_id.char_indices().nth(MAX_CLIENT_REF_CHARS) {
        Some((end, _)) => &job_id[..end],
        None => job_id,
    }
}

#[async_trait]
impl Provider for VonageSender {
    async fn send(&self, request: SendRequest<'_>) -> SendResult {
        let Notification::Sms(sms) = request.notification else {
            return Err(SendError::permanent(format!(
                "Vonage sends SMS, not {}",
                request.notification.kind()
            )));
        };

        let api_secret = self.api_secret.get();
        let response = self
            .client
            .post(self.url.clone())
            .form(&self.form(&api_secret, request.job_id.as_str(), sms))
            .send()
            .await
            .map_err(|error| http::transport_error(&error))?;
        let reply = http::read_reply(response).await?;
        tracing::debug!(status = reply.status, "Vonage replied");

        classify(
            &reply,
            &[sms.to.expose().trim_start_matches('+'), &self.api_key],
        )
    }

    /// Reads the API secret again, so a secret file rotated since start takes effect.
    fn invalidate_credentials(&self) {
        self.api_secret.reload();
    }
}

#[derive(Deserialize)]
struct SendBody {
    #[serde(default)]
    messages: Vec<MessagePart>,
}

#[derive(Deserialize)]
struct MessagePart {
    status: Option<String>,
    #[serde(rename = "message-id")]
    message_id: Option<String>,
    #[serde(rename = "error-text")]
    error_text: Option<String>,
}

/// Maps a send reply to an outcome. `sensitive` lists values that must not reach the
/// error message: the recipient and the API key.
fn classify(reply: &Reply, sensitive: &[&str]) -> SendResult {
    if reply.status != 200 {
        return Err(classify_http(reply));
    }
    let Ok(body) = serde_json::from_slice::<SendBody>(&reply.body) else {
        return Err(
            SendError::transient("Vonage returned HTTP 200 with an unreadable body")
                .with_status(reply.status),
        );
    };

    let failed = body
        .messages
        .iter()
        .find(|part| part.status.as_deref() != Some("0"));
    match (failed, body.messages.first()) {
        (None, Some(first)) => Ok(Delivered {
            // A long text is split into parts, each with its own id. The first one is kept.
            message_id: first.message_id.clone(),
            status: reply.status,
        }),
        (None, None) => {
            Err(SendError::transient("Vonage returned no message status").with_status(reply.status))
        }
        // NOTE: when an earlier part was accepted and a later one failed, a retry sends the
        // accepted parts again.
        (Some(part), _) => Err(classify_status(part, sensitive).with_status(reply.status)),
    }
}

/// Classifies a part's non-zero `status` by Vonage's SMS API error table.
fn classify_status(part: &MessagePart, sensitive: &[&str]) -> SendError {
    let code = part.status.clone().unwrap_or_default();
    let message = match &part.error_text {
        Some(text) => http::provider_message(text, sensitive),
        None => format!("Vonage rejected the message with status {code}"),
    };
    let error = match code.as_str() {
        // 1 Throttled: faster than the account's throughput limit. 10 Too Many Existing
        // Binds: more simultaneous connections than the account allows.
        "1" | "10" => SendError::new(ErrorClass::RateLimited, message),
        // 4 Invalid Credentials, 14 Invalid Signature.
        "4" | "14" => SendError::new(ErrorClass::Credentials, message),
        // 5 Internal Error. 9 Partner Quota Violation: the account is out of credit, and
        // Vonage advises to top up and retry.
        "5" | "9" => SendError::transient(message),
        // 7 Number Barred, 33 Number De-activated: the recipient may not receive messages.
        "7" | "33" => SendError::permanent(message).recipient_invalid(),
        // Permanent: 2 Missing Parameters, 3 Invalid Parameters, 6 Invalid Message (such
        // as an unrecognised number prefix) and 8 Partner Account Barred (suspended). Also
        // 11 Account Not Enabled For HTTP, 12 Message Too Long, 15 Invalid Sender Address,
        // 22 Invalid Network Code, 23 Invalid Callback URL, 29 Non-Whitelisted Destination
        // (trial accounts), 32 Signature And API Secret Disallowed, and any code not listed.
        _ => SendError::permanent(message),
    };
    error.with_code(code)
}

/// Classifies a reply whose HTTP status is not 200, which the SMS API does not document
/// for rejected messages, by its status alone.
fn classify_http(reply: &Reply) -> SendError {
    let message = format!("Vonage returned HTTP {}", reply.status);
    let error = match reply.status {
        401 | 403 => SendError::new(ErrorClass::Credentials, message),
        429 => {
            SendError::new(ErrorClass::RateLimited, message).with_retry_after(reply.retry_after())
        }
        500..=599 => SendError::transient(message).with_retry_after(reply.retry_after()),
        _ => SendError::permanent(message),
    };
    error.with_status(reply.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_with_status(status: &str, error_text: &str) -> Reply {
        let body = serde_json::json!({
            "message-count": "1",
            "messages": [{"status": status, "error-text": error_text}],
        });
        Reply::for_test(200, &body.to_string())
    }

    fn error_of(reply: &Reply) -> SendError {
        classify(reply, &["15558675310", "abcd1234"]).unwrap_err()
    }

    #[test]
    fn accepted_message_keeps_first_id() {
        let body = r#"{"message-count":"2","messages":[
            {"to":"447700900000","message-id":"0C000000217B7F02","status":"0","remaining-balance":"15.53","message-price":"0.03","network":"23410"},
            {"to":"447700900000","message-id":"0C000000217B7F03","status":"0","remaining-balance":"15.50","message-price":"0.03","network":"23410"}]}"#;
        let delivered = classify(&Reply::for_test(200, body), &[]).unwrap();
        assert_eq!(delivered.message_id.as_deref(), Some("0C000000217B7F02"));
        assert_eq!(delivered.status, 200);
    }

    #[test]
    fn status_codes_map_to_classes() {
        let cases = [
            ("1", ErrorClass::RateLimited, false),
            ("2", ErrorClass::Permanent, false),
            ("3", ErrorClass::Permanent, false),
            ("4", ErrorClass::Credentials, false),
            ("5", ErrorClass::Transient, false),
            ("6", ErrorClass::Permanent, false),
            ("7", ErrorClass::Permanent, true),
            ("8", ErrorClass::Permanent, false),
            ("9", ErrorClass::Transient, false),
            ("10", ErrorClass::RateLimited, false),
            ("14", ErrorClass::Credentials, false),
            ("15", ErrorClass::Permanent, false),
            ("29", ErrorClass::Permanent, false),
            ("33", ErrorClass::Permanent, true),
            ("99", ErrorClass::Permanent, false),
        ];
        for (status, class, recipient_invalid) in cases {
            let error = error_of(&reply_with_status(status, "rejected"));
            assert_eq!(error.class, class, "status {status}");
            assert_eq!(
                error.recipient_invalid, recipient_invalid,
                "status {status}"
            );
            assert_eq!(error.code.as_deref(), Some(status), "status {status}");
            assert_eq!(error.status, Some(200), "status {status}");
        }
    }

    #[test]
    fn failed_second_part_fails_the_message() {
        let body = r#"{"message-count":"2","messages":[
            {"message-id":"0C01","status":"0"},
            {"status":"1","error-text":"Throttled"}]}"#;
        let error = error_of(&Reply::for_test(200, body));
        assert_eq!(error.class, ErrorClass::RateLimited);
        assert_eq!(error.code.as_deref(), Some("1"));
    }

    #[test]
    fn error_text_is_redacted() {
        let error = error_of(&reply_with_status("7", "Number 15558675310 is barred"));
        assert_eq!(error.message, "Number <redacted> is barred");
    }

    #[test]
    fn unreadable_body_is_transient() {
        let error = error_of(&Reply::for_test(200, "<html>"));
        assert_eq!(error.class, ErrorClass::Transient);
    }

    #[test]
    fn http_errors_map_by_status() {
        assert_eq!(
            error_of(&Reply::for_test(401, "")).class,
            ErrorClass::Credentials
        );
        assert_eq!(
            error_of(&Reply::for_test(429, "")).class,
            ErrorClass::RateLimited
        );
        assert_eq!(
            error_of(&Reply::for_test(503, "")).class,
            ErrorClass::Transient
        );
        assert_eq!(
            error_of(&Reply::for_test(404, "")).class,
            ErrorClass::Permanent
        );
    }

    #[test]
    fn client_ref_is_cut_to_vonage_limit() {
        let long = "j".repeat(128);
        assert_eq!(client_ref(&long).len(), MAX_CLIENT_REF_CHARS);
        assert_eq!(client_ref("job-42"), "job-42");
    }
}
