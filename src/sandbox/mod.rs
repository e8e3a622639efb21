//! `herald sandbox`: a local server that speaks the SendGrid, Twilio, FCM, Mailgun, SES and
//! Vonage APIs, so Herald can run end to end without provider accounts.
//!
//! # Endpoints
//!
//! - `POST /v3/mail/send`: SendGrid v3 Mail Send.
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`: Twilio create Message.
//! - `POST /token`: the OAuth2 token endpoint FCM credentials are minted at.
//! - `POST /v1/projects/{project}/messages:send`: FCM HTTP v1 send.
//! - `POST /v3/{domain}/messages`: Mailgun Messages.
//! - `POST /v2/email/outbound-emails`: Amazon SES v2 `SendEmail`.
//! - `POST /sms/json`: Vonage SMS API.
//! - `GET /sandbox/requests`, `GET /sandbox/stats`, `POST /sandbox/reset`: admin.
//!
//! Point Herald at it through its provider URLs, for example
//! `HERALD__PROVIDERS__SENDGRID__BASE_URL=http://127.0.0.1:8025`, the same for `TWILIO`
//! and `FCM`, and `HERALD__PROVIDERS__FCM__TOKEN_URL=http://127.0.0.1:8025/token`.
//!
//! Each provider endpoint checks credentials first, then rolls for an injected error, then
//! validates the request. Injected latency comes before all three.

#[cfg(test)]
mod adapter_tests;
mod admin;
mod faults;
mod fcm;
mod mailgun;
mod record;
mod sendgrid;
mod ses;
#[cfg(test)]
mod tests;
mod twilio;
mod vonage;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use tokio::net::TcpListener;

pub use faults::{ErrorStatus, FaultTarget};
pub use record::{ProviderKind, ReceivedRequest, RequestLog, Stats};

use faults::Faults;
use record::{Outcome, RecordFile, RecordWriter};

/// Command-line flags of `herald sandbox`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct SandboxArgs {
    /// Address to listen on, for the provider and the /sandbox/ admin endpoints.
    #[arg(long, default_value = "127.0.0.1:8025")]
    pub listen: SocketAddr,

    /// Delay added before every provider reply, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Share of provider requests that get an injected error reply, from 0.0 to 1.0.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = parse_error_rate)]
    pub error_rate: f64,

    /// HTTP status of injected errors: 429, 500 or 503.
    #[arg(long, value_enum, default_value_t = ErrorStatus::ServiceUnavailable)]
    pub error_status: ErrorStatus,

    /// Seconds to send as `Retry-After` with injected 429 and 503 replies. Unset sends none.
    #[arg(long, value_name = "SECONDS")]
    pub retry_after: Option<u64>,

    /// Provider whose endpoints get injected errors: sendgrid, twilio, fcm, mailgun, ses,
    /// vonage or all.
    #[arg(long, value_enum, default_value_t = FaultTarget::All)]
    pub fail_provider: FaultTarget,

    /// File to append one JSON line to per provider request, with recipients masked.
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
}

impl Default for SandboxArgs {
    /// Returns the flags' default values.
    fn default() -> SandboxArgs {
        SandboxArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 8025)),
            latency_ms: 0,
            error_rate: 0.0,
            error_status: ErrorStatus::ServiceUnavailable,
            retry_after: None,
            fail_provider: FaultTarget::All,
            record: None,
        }
    }
}

fn parse_error_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    check_error_rate(rate)?;
    Ok(rate)
}

fn check_error_rate(rate: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(format!("error rate {rate} is outside 0.0 to 1.0"))
    }
}

/// A bound sandbox server, ready to [`serve`](Sandbox::serve).
#[derive(Debug)]
pub struct Sandbox {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: Arc<AppState>,
    writer: Option<RecordWriter>,
    record_path: Option<PathBuf>,
}

/// State shared by every handler.
#[derive(Debug)]
struct AppState {
    faults: Faults,
    log: RequestLog,
    record_file: Option<RecordFile>,
    tokens: fcm::TokenStore,
}

impl Sandbox {
    /// Binds the listen address and opens the record file. Fails on an invalid
    /// `error_rate`, an address that cannot be bound or a record file that cannot be opened.
    pub async fn bind(args: SandboxArgs) -> std::io::Result<Sandbox> {
        check_error_rate(args.error_rate)
            .map_err(|message| std::io::Error::new(std::io::ErrorKind::InvalidInput, message))?;

        let listener = TcpListener::bind(args.listen).await?;
        let local_addr = listener.local_addr()?;
        let (record_file, writer) = match &args.record {
            Some(path) => {
                let (file, writer) = RecordFile::open(path).await?;
                (Some(file), Some(writer))
            }
            None => (None, None),
        };
        let state = AppState {
            faults: Faults::new(&args),
            log: RequestLog::default(),
            record_file,
            tokens: fcm::TokenStore::default(),
        };
        Ok(Sandbox {
            listener,
            local_addr,
            state: Arc::new(state),
            writer,
            record_path: args.record,
        })
    }

    /// Returns the address actually bound, which shows the port when `--listen` gave port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the requests received so far, oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.state.log.received()
    }

    /// Returns a handle to the received requests that stays usable while, and after, the
    /// sandbox serves.
    pub fn log(&self) -> RequestLog {
        self.state.log.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting connections, lets open
    /// requests finish and flushes the record file.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.local_addr;
        self.state
            .faults
            .log_start(addr, self.record_path.as_deref());

        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(shutdown)
            .await?;
        if let Some(writer) = self.writer {
            writer.finish().await?;
        }

        tracing::info!(%addr, "sandbox stopped");
        Ok(())
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v3/mail/send",
            post(sendgrid::mail_send).layer(DefaultBodyLimit::max(sendgrid::MAX_BODY_BYTES)),
        )
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            post(twilio::create_message),
        )
        .route("/token", post(fcm::token))
        .route("/v1/projects/{project}/messages:send", post(fcm::send))
        .route("/v3/{domain}/messages", post(mailgun::send_message))
        .route("/v2/email/outbound-emails", post(ses::send_email))
        .route("/sms/json", post(vonage::send_sms))
        .route("/sandbox/requests", get(admin::requests))
        .route("/sandbox/stats", get(admin::stats))
        .route("/sandbox/reset", post(admin::reset))
        .with_state(state)
}

impl AppState {
    /// Counts a provider request as arrived, then waits the injected latency.
    async fn arrive(&self) {
        self.log.arrive();
        self.faults.delay().await;
    }

    /// Records one provider request with its reply, and returns the reply.
    async fn record(
        &self,
        provider: ProviderKind,
        job_id: Option<String>,
        recipient: Option<String>,
        outcome: Outcome,
    ) -> Response {
        let request = ReceivedRequest {
            provider,
            time: chrono::Utc::now(),
            job_id,
            recipient,
            status: outcome.response.status().as_u16(),
            injected: outcome.injected,
            message_id: outcome.message_id,
        };
        tracing::debug!(
            provider = provider.as_str(),
            status = request.status,
            injected = request.injected,
            job_id = request.job_id.as_deref(),
            "sandbox answered a provider request"
        );
        if let Some(file) = &self.record_file {
            file.append(&request).await;
        }
        self.log.push(request);
        outcome.response
    }
}

/// Returns the token of an `Authorization: Bearer <token>` header, when present and non-empty.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Returns the user and secret of an `Authorization: Basic` header, when present and
/// decodable.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8_lossy(&decoded);
    let (user, secret) = decoded.split_once(':')?;
    Some((user.to_owned(), secret.to_owned()))
}
