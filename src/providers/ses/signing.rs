//! AWS Signature Version 4 for SES requests, through the `aws-sigv4` crate.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

use crate::config::SesCredentials;

/// The service name SES signs requests under.
const SIGNING_NAME: &str = "ses";

/// A failure to compute a signature. It names no credential.
#[derive(Debug, thiserror::Error)]
#[error("failed to sign the SES request: {0}")]
pub(super) struct SigningError(String);

/// Returns the headers that sign one request: `authorization`, `x-amz-date`, and
/// `x-amz-security-token` with temporary credentials. `headers` are the request's own
/// headers to sign besides `host`, which is taken from `url`.
pub(super) fn signature_headers(
    credentials: &SesCredentials,
    region: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, SigningError> {
    let identity = Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.expose(),
        credentials
            .session_token
            .as_ref()
            .map(|token| token.expose().to_owned()),
        None,
        "herald-config",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|error| SigningError(error.to_string()))?
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|error| SigningError(error.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|error| SigningError(error.to_string()))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;

    /// The example credentials of AWS's Signature Version 4 test suite.
    fn example_credentials(session_token: Option<&str>) -> SesCredentials {
        SesCredentials {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: session_token.map(Secret::new),
        }
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's test suite.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    #[test]
    fn authorization_names_scope_and_signed_headers() {
        let headers = signature_headers(
            &example_credentials(None),
            "eu-west-1",
            "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails",
            &[("content-type", "application/json")],
            b"{}",
            suite_time(),
        )
        .unwrap();

        assert_eq!(header(&headers, "x-amz-date"), Some("20150830T123600Z"));
        let authorization = header(&headers, "authorization").unwrap();
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/ses/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature="
            ),
            "{authorization}"
        );
        assert_eq!(header(&headers, "x-amz-security-token"), None);
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let headers = signature_headers(
            &example_credentials(Some("session-token")),
            "us-east-1",
            "https://email.us-east-1.amazonaws.com/v2/email/outbound-emails",
            &[("content-type", "application/json")],
            b"{}",
            suite_time(),
        )
        .unwrap();

        assert_eq!(
            header(&headers, "x-amz-security-token"),
            Some("session-token")
        );
        let authorization = header(&headers, "authorization").unwrap();
        assert!(
            authorization
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"),
            "{authorization}"
        );
    }
}
