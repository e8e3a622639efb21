//! An independent AWS Signature Version 4 verifier for the SES mock. It follows AWS's
//! published algorithm (canonical request, string to sign, derived signing key), so a
//! signing bug in the adapter, or in the crate it uses, fails a test.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wiremock::Request;

/// How far `x-amz-date` may be from the mock's clock. AWS allows five minutes.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// What the mock expects of every request.
pub(crate) struct Expected<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
}

/// A rejected signature: the AWS error type and message the mock answers with.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub error_type: &'static str,
    pub message: String,
}

fn reject(error_type: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        error_type,
        message: message.into(),
    }
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
struct Authorization<'a> {
    access_key_id: &'a str,
    scope: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for item in rest.split(", ") {
        let (name, value) = item.split_once('=')?;
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => return None,
        }
    }
    let (access_key_id, scope) = credential?.split_once('/')?;
    Some(Authorization {
        access_key_id,
        scope,
        signed_headers: signed_headers?.split(';').collect(),
        signature: signature?,
    })
}

/// Checks a request's signature as AWS does, answering with AWS's error type on failure.
pub(crate) fn verify(
    request: &Request,
    expected: &Expected<'_>,
    now: SystemTime,
) -> Result<(), Rejection> {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let Some(authorization) = header("authorization") else {
        return Err(reject(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let Some(authorization) = parse_authorization(authorization) else {
        return Err(reject(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders'.",
        ));
    };
    if authorization.access_key_id != expected.access_key_id {
        return Err(reject(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }
    if header("x-amz-security-token") != expected.session_token {
        return Err(reject(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ));
    }

    let Some(amz_date) = header("x-amz-date") else {
        return Err(reject(
            "IncompleteSignatureException",
            "Missing X-Amz-Date.",
        ));
    };
    check_clock(amz_date, now)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        &amz_date[..8],
        expected.region,
        expected.service
    );
    if authorization.scope != scope {
        return Err(reject(
            "InvalidSignatureException",
            format!("Credential should be scoped to {scope}."),
        ));
    }
    let mut must_sign = vec!["content-type", "host", "x-amz-date"];
    if expected.session_token.is_some() {
        must_sign.push("x-amz-security-token");
    }
    for name in must_sign {
        if !authorization.signed_headers.contains(&name) {
            return Err(reject(
                "InvalidSignatureException",
                format!("'{name}' must be a signed header."),
            ));
        }
    }

    let mut headers = Vec::new();
    for name in &authorization.signed_headers {
        let Some(value) = header(name) else {
            return Err(reject(
                "InvalidSignatureException",
                format!("Signed header '{name}' is missing from the request."),
            ));
        };
        headers.push((*name, value));
    }
    let canonical = canonical_request(
        request.method.as_str(),
        request.url.path(),
        request.url.query().unwrap_or(""),
        &headers,
        &hex_sha256(&request.body),
    );
    let computed = signature(expected.secret_access_key, amz_date, &scope, &canonical);
    if computed != authorization.signature {
        return Err(reject(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(())
}

fn check_clock(amz_date: &str, now: SystemTime) -> Result<(), Rejection> {
    let parsed = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| reject("IncompleteSignatureException", "X-Amz-Date is malformed."))?;
    let signed_at =
        SystemTime::UNIX_EPOCH + Duration::from_secs(parsed.and_utc().timestamp() as u64);
    let skew = now
        .duration_since(signed_at)
        .unwrap_or_else(|early| early.duration());
    if skew > MAX_CLOCK_SKEW {
        return Err(reject("InvalidSignatureException", "Signature expired."));
    }
    Ok(())
}

/// Builds the canonical request. `headers` are the signed headers, lowercase, in the order
/// of `SignedHeaders` (which is sorted). Paths here need no further encoding.
fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> String {
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| {
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{name}:{value}\n")
        })
        .collect();
    let signed: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
    format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{}\n{payload_hash}",
        signed.join(";")
    )
}

fn signature(secret: &str, amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    );
    let mut parts = scope.split('/');
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        "aws4_request",
    ] {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, string_to_sign.as_bytes()))
}

/// Signs a request with this verifier's own algorithm, for requests a test builds by hand.
/// `headers` are the lowercase headers to sign, sorted by name, `host` included. Returns
/// the `Authorization` value.
pub(crate) fn authorization(
    expected: &Expected<'_>,
    amz_date: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let scope = format!(
        "{}/{}/{}/aws4_request",
        &amz_date[..8],
        expected.region,
        expected.service
    );
    let canonical = canonical_request("POST", path, "", headers, &hex_sha256(body));
    let signed: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={}",
        expected.access_key_id,
        signed.join(";"),
        signature(expected.secret_access_key, amz_date, &scope, &canonical)
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex_sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The verifier itself reproduces AWS's `post-x-www-form-urlencoded` test-suite case
/// (credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1, service `service`).
#[test]
fn verifier_matches_aws_test_suite() {
    let body = b"Param1=value1";
    let payload_hash = hex_sha256(body);
    assert_eq!(
        payload_hash,
        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
    );
    let headers = [
        ("content-length", "13"),
        ("content-type", "application/x-www-form-urlencoded"),
        ("host", "example.amazonaws.com"),
        ("x-amz-content-sha256", payload_hash.as_str()),
        ("x-amz-date", "20150830T123600Z"),
    ];
    let canonical = canonical_request("POST", "/", "", &headers, &payload_hash);

    let computed = signature(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "20150830T123600Z",
        "20150830/us-east-1/service/aws4_request",
        &canonical,
    );

    assert_eq!(
        computed,
        "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"
    );
}
