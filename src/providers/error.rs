//! The failure of one provider attempt, classified by what the caller should do next.

use std::time::Duration;

/// The class of a failed attempt, which decides what the next one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Sending the same message again cannot succeed.
    Permanent,
    /// A later attempt may succeed: server errors, timeouts, connection failures.
    Transient,
    /// The provider throttled the request. Retry no sooner than `retry_after`, when given.
    RateLimited,
    /// The credentials were rejected in a way that fresh credentials may fix.
    Credentials,
}

impl ErrorClass {
    /// Returns the label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Permanent => "permanent",
            ErrorClass::Transient => "transient",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Credentials => "credentials",
        }
    }
}

/// A classified failure of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} failure{}{}: {message}", class.as_str(), status.map(|s| format!(", status {s}")).unwrap_or_default(), code.as_ref().map(|c| format!(", code {c}")).unwrap_or_default())]
pub struct SendError {
    pub class: ErrorClass,
    /// The HTTP status or SMTP reply code, when a reply arrived.
    pub status: Option<u16>,
    /// The provider's own error code (`21211`, `UNREGISTERED`, an SMTP enhanced status code
    /// such as `5.1.1`), or Herald's for failures without a reply (`timeout`, `connect`).
    pub code: Option<String>,
    /// A human-readable description, from the provider's reply where it has one. It never
    /// contains a recipient or a secret.
    pub message: String,
    /// The provider's hint for when to retry.
    pub retry_after: Option<Duration>,
    /// Whether the provider reported the recipient (address, number or token) as invalid.
    pub recipient_invalid: bool,
}

impl SendError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> SendError {
        SendError {
            class,
            status: None,
            code: None,
            message: message.into(),
            retry_after: None,
            recipient_invalid: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> SendError {
        SendError::new(ErrorClass::Permanent, message)
    }

    pub fn transient(message: impl Into<String>) -> SendError {
        SendError::new(ErrorClass::Transient, message)
    }

    pub fn with_status(mut self, status: u16) -> SendError {
        self.status = Some(status);
        self
    }

    pub fn with_code(mut self, code: impl Into<String>) -> SendError {
        self.code = Some(code.into());
        self
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> SendError {
        self.retry_after = retry_after;
        self
    }

    pub fn recipient_invalid(mut self) -> SendError {
        self.recipient_invalid = true;
        self
    }
}
