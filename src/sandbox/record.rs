//! The log of received requests: an in-memory list with counts, the optional record file,
//! and the masking that keeps full recipients out of both.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::fs::OpenOptions;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Maximum number of received requests kept in memory. Past it the oldest is dropped from
/// [`RequestLog::received`], so a long benchmark cannot exhaust memory. [`Stats`] and the
/// record file still count every request.
const MAX_RECENT: usize = 100_000;
/// Record lines buffered between the handlers and the writer task. A full buffer makes
/// handlers wait, so no line is dropped.
const RECORD_QUEUE: usize = 8192;
/// Lines the writer takes from the queue per write.
const RECORD_BATCH: usize = 512;

/// The provider API a request was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Sendgrid,
    Twilio,
    Fcm,
    Mailgun,
    Ses,
    Vonage,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Sendgrid => "sendgrid",
            ProviderKind::Twilio => "twilio",
            ProviderKind::Fcm => "fcm",
            ProviderKind::Mailgun => "mailgun",
            ProviderKind::Ses => "ses",
            ProviderKind::Vonage => "vonage",
        }
    }
}

/// One provider request and the sandbox's reply. Token requests are only counted, in
/// [`Stats::tokens_issued`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedRequest {
    pub provider: ProviderKind,
    /// When the reply was sent.
    pub time: DateTime<Utc>,
    /// Herald's job id: SendGrid `custom_args.herald_job_id` (per personalization or
    /// top-level), Mailgun `v:herald_job_id`, the SES message tag `herald_job_id`, Vonage
    /// `client-ref`, or FCM `message.data.herald_job_id` when a sender adds it. Herald's FCM
    /// adapter does not, so the app receives the data the producer wrote, and Twilio
    /// requests carry none.
    pub job_id: Option<String>,
    /// The first recipient, masked: `a***@example.com`, `***23` or `tok:1a2b3c4d`.
    pub recipient: Option<String>,
    /// HTTP status of the reply.
    pub status: u16,
    /// Whether the reply was an injected error.
    pub injected: bool,
    /// The message id the reply carried (SendGrid `X-Message-Id`, Twilio `sid`, FCM
    /// `name`, Mailgun `id`, SES `MessageId`, Vonage `message-id`), on success.
    pub message_id: Option<String>,
}

/// Counts of everything received since start or the last reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Provider requests that reached an endpoint, counted before any injected latency.
    /// Those not yet in `total` are still waiting for their reply.
    pub arrived: u64,
    /// Provider requests answered.
    pub total: u64,
    /// Provider requests that got an injected error reply.
    pub injected: u64,
    /// Access tokens issued by the token endpoint.
    pub tokens_issued: u64,
    /// Provider requests per provider, then per reply status.
    pub by_provider: BTreeMap<ProviderKind, BTreeMap<u16, u64>>,
}

/// A cheap, cloneable handle to the received requests and their counts.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug, Default)]
struct LogInner {
    recent: VecDeque<ReceivedRequest>,
    stats: Stats,
}

impl RequestLog {
    /// Returns the recent requests, oldest first.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.lock().recent.iter().cloned().collect()
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Forgets the recent requests and zeroes the counts. The record file is left as it is.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.recent.clear();
        inner.stats = Stats::default();
    }

    /// Counts a provider request that reached its endpoint and has not been answered yet.
    pub(super) fn arrive(&self) {
        self.lock().stats.arrived += 1;
    }

    pub(super) fn push(&self, request: ReceivedRequest) {
        let mut inner = self.lock();
        let stats = &mut inner.stats;
        stats.total += 1;
        stats.injected += u64::from(request.injected);
        *stats
            .by_provider
            .entry(request.provider)
            .or_default()
            .entry(request.status)
            .or_default() += 1;
        if inner.recent.len() == MAX_RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(request);
    }

    pub(super) fn count_token(&self) {
        self.lock().stats.tokens_issued += 1;
    }

    fn lock(&self) -> MutexGuard<'_, LogInner> {
        // A panic while holding the lock leaves counts that are still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A provider endpoint's reply, with what the record needs to know about it.
pub(super) struct Outcome {
    pub(super) response: Response,
    pub(super) message_id: Option<String>,
    pub(super) injected: bool,
}

impl Outcome {
    /// Creates the outcome of a reply that carries no message id and is not injected: an
    /// auth or validation error, or a validated but unsent SendGrid sandbox-mode mail.
    pub(super) fn plain(response: Response) -> Outcome {
        Outcome {
            response,
            message_id: None,
            injected: false,
        }
    }

    pub(super) fn accepted(response: Response, message_id: String) -> Outcome {
        Outcome {
            response,
            message_id: Some(message_id),
            injected: false,
        }
    }

    pub(super) fn injected(response: Response) -> Outcome {
        Outcome {
            response,
            message_id: None,
            injected: true,
        }
    }
}

/// The sending side of the record file: handlers queue JSON lines, a task writes them.
#[derive(Debug)]
pub(super) struct RecordFile {
    lines: mpsc::Sender<String>,
}

/// The writer task of a [`RecordFile`], and the signal that makes it finish.
#[derive(Debug)]
pub(super) struct RecordWriter {
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RecordFile {
    /// Opens `path` for appending, creating it if needed, and starts the writer task.
    pub(super) async fn open(path: &Path) -> std::io::Result<(RecordFile, RecordWriter)> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let (lines, receiver) = mpsc::channel(RECORD_QUEUE);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(write_lines(BufWriter::new(file), receiver, stopped));
        Ok((RecordFile { lines }, RecordWriter { stop, task }))
    }

    /// Queues one request. Waits while the queue is full, and drops the line only when the
    /// writer has already stopped (after a write error, which it logged).
    pub(super) async fn append(&self, request: &ReceivedRequest) {
        let line = match serde_json::to_string(request) {
            Ok(line) => line,
            Err(error) => {
                tracing::warn!(error = %error, "failed to serialize a record line");
                return;
            }
        };
        let _ = self.lines.send(line).await;
    }
}

impl RecordWriter {
    /// Stops taking new lines, writes those already queued and flushes the file.
    pub(super) async fn finish(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(std::io::Error::other)?
    }
}

async fn write_lines(
    mut out: BufWriter<tokio::fs::File>,
    mut receiver: mpsc::Receiver<String>,
    mut stopped: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    let mut closed = false;
    loop {
        tokio::select! {
            count = receiver.recv_many(&mut batch, RECORD_BATCH) => {
                if count == 0 {
                    break;
                }
            }
            // Closing lets `recv_many` drain what is queued and then return 0.
            _ = &mut stopped, if !closed => {
                closed = true;
                receiver.close();
                continue;
            }
        }
        if let Err(error) = write_batch(&mut out, &mut batch).await {
            tracing::error!(error = %error, "failed to write the record file, recording stopped");
            return Err(error);
        }
    }
    out.flush().await
}

/// Writes and flushes one batch. Flushing hands the lines to the OS without a disk sync, so
/// a reader of the file sees them promptly at the cost of one write call per batch.
async fn write_batch(
    out: &mut BufWriter<tokio::fs::File>,
    batch: &mut Vec<String>,
) -> std::io::Result<()> {
    for line in batch.drain(..) {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
    }
    out.flush().await
}

/// Masks an email address to its first character and domain: `a***@example.com`.
pub(super) fn mask_email(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Masks a phone number to its last two characters: `***23`.
pub(super) fn mask_phone(number: &str) -> String {
    let tail: String = {
        let mut chars: Vec<char> = number.chars().rev().take(2).collect();
        chars.reverse();
        chars.into_iter().collect()
    };
    format!("***{tail}")
}

/// Masks a device token to a short hash: `tok:1a2b3c4d`. Equal tokens mask alike.
pub(super) fn mask_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    format!(
        "tok:{:02x}{:02x}{:02x}{:02x}",
        digest[0], digest[1], digest[2], digest[3]
    )
}
