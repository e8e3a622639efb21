//! Injected latency and errors, and the fast random source behind them and behind message ids.

use std::cell::RefCell;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header::RETRY_AFTER};
use axum::response::Response;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::SandboxArgs;
use super::record::ProviderKind;

/// HTTP status of an injected error.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    /// 429 Too Many Requests: the provider's rate-limit reply.
    #[value(name = "429")]
    TooManyRequests,
    /// 500 Internal Server Error.
    #[value(name = "500")]
    InternalServerError,
    /// 503 Service Unavailable.
    #[value(name = "503")]
    ServiceUnavailable,
}

impl ErrorStatus {
    pub fn status_code(self) -> StatusCode {
        match self {
            ErrorStatus::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorStatus::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorStatus::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Returns whether replies with this status carry `Retry-After` when one is configured. HTTP
    /// defines the header for 429 and 503, not for 500.
    fn allows_retry_after(self) -> bool {
        matches!(
            self,
            ErrorStatus::TooManyRequests | ErrorStatus::ServiceUnavailable
        )
    }
}

/// Provider endpoints that error injection applies to.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    Sendgrid,
    Twilio,
    Fcm,
    Mailgun,
    Ses,
    Vonage,
    All,
}

impl FaultTarget {
    fn covers(self, provider: ProviderKind) -> bool {
        match self {
            FaultTarget::All => true,
            FaultTarget::Sendgrid => provider == ProviderKind::Sendgrid,
            FaultTarget::Twilio => provider == ProviderKind::Twilio,
            FaultTarget::Fcm => provider == ProviderKind::Fcm,
            FaultTarget::Mailgun => provider == ProviderKind::Mailgun,
            FaultTarget::Ses => provider == ProviderKind::Ses,
            FaultTarget::Vonage => provider == ProviderKind::Vonage,
        }
    }
}

/// The fault settings taken from [`SandboxArgs`], shared by every handler.
#[derive(Debug, Clone)]
pub(super) struct Faults {
    latency: Duration,
    error_rate: f64,
    status: ErrorStatus,
    retry_after_secs: Option<u64>,
    target: FaultTarget,
}

impl Faults {
    pub(super) fn new(args: &SandboxArgs) -> Faults {
        Faults {
            latency: Duration::from_millis(args.latency_ms),
            error_rate: args.error_rate,
            status: args.error_status,
            retry_after_secs: args.retry_after,
            target: args.fail_provider,
        }
    }

    /// Logs the settings at info, as part of the sandbox's start.
    pub(super) fn log_start(&self, addr: std::net::SocketAddr, record: Option<&std::path::Path>) {
        tracing::info!(
            %addr,
            latency_ms = self.latency.as_millis(),
            error_rate = self.error_rate,
            error_status = self.status.status_code().as_u16(),
            retry_after_secs = self.retry_after_secs,
            fail_provider = ?self.target,
            record = record.map(|path| path.display().to_string()),
            "sandbox listening"
        );
    }

    /// Waits the configured latency. Called before a provider endpoint replies.
    pub(super) async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// Decides whether this request gets an injected error, and which.
    pub(super) fn roll(&self, provider: ProviderKind) -> Option<ErrorStatus> {
        if !self.target.covers(provider) || self.error_rate <= 0.0 {
            return None;
        }
        let hit = self.error_rate >= 1.0 || with_rng(|rng| rng.random::<f64>() < self.error_rate);
        hit.then_some(self.status)
    }

    /// Returns the configured `Retry-After` delay, in seconds, for a reply with this status.
    pub(super) fn retry_after_secs(&self, status: ErrorStatus) -> Option<u64> {
        self.retry_after_secs
            .filter(|_| status.allows_retry_after())
    }

    /// Adds the configured `Retry-After` header to an injected reply.
    pub(super) fn finish(&self, status: ErrorStatus, mut response: Response) -> Response {
        if let Some(seconds) = self.retry_after_secs(status) {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

thread_local! {
    // A per-thread generator avoids a lock on the request path. SmallRng is not
    // cryptographically secure, which is fine for error rolls and message ids.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// Runs `f` with this thread's fast random generator.
pub(super) fn with_rng<T>(f: impl FnOnce(&mut SmallRng) -> T) -> T {
    RNG.with_borrow_mut(f)
}
