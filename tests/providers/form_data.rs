//! Strict readers for the request bodies provider mocks accept.

use std::collections::HashMap;

use wiremock::Request;

/// Parses a `multipart/form-data` body into its fields, or returns `None` when the request
/// has another content type or a part is malformed. Repeated names keep the last value.
pub(crate) fn multipart_fields(request: &Request) -> Option<HashMap<String, String>> {
    let content_type = request.headers.get("content-type")?.to_str().ok()?;
    let boundary = content_type
        .strip_prefix("multipart/form-data; boundary=")?
        .trim_matches('"');
    let body = std::str::from_utf8(&request.body).ok()?;
    let delimiter = format!("--{boundary}");

    let mut parts = body.split(delimiter.as_str());
    if !parts.next()?.is_empty() {
        return None;
    }
    let mut fields = HashMap::new();
    for part in parts {
        if part.starts_with("--") {
            return Some(fields);
        }
        let part = part.strip_prefix("\r\n")?.strip_suffix("\r\n")?;
        let (headers, value) = part.split_once("\r\n\r\n")?;
        let name = headers
            .lines()
            .find_map(|line| line.strip_prefix("Content-Disposition: form-data; name=\""))?
            .strip_suffix('"')?;
        fields.insert(name.to_owned(), value.to_owned());
    }
    // A body without the closing delimiter is truncated.
    None
}

/// Parses an `application/x-www-form-urlencoded` body, or returns `None` when the request
/// has another content type.
pub(crate) fn urlencoded_fields(request: &Request) -> Option<HashMap<String, String>> {
    let content_type = request.headers.get("content-type")?.to_str().ok()?;
    if content_type != "application/x-www-form-urlencoded" {
        return None;
    }
    serde_urlencoded::from_bytes(&request.body).ok()
}

/// Returns whether the request carries HTTP Basic credentials `user:password`.
pub(crate) fn has_basic_auth(request: &Request, user: &str, password: &str) -> bool {
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    request
        .headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(format!("Basic {expected}").as_str())
}
