//! Recording provider calls and the outcome of a claim.

use std::time::Duration;

use sqlx::Row;
use sqlx::types::Uuid;

use super::{DeliveryState, Ledger, LedgerError};
use crate::job::{ChannelKind, JobId};
use crate::providers::SendError;

/// Maximum length of a stored error message, in characters. Provider messages are usually one line, but
/// a proxy's HTML error page should not fill the table.
pub(super) const MAX_ERROR_MESSAGE_CHARS: usize = 1000;

/// Counts the call on the delivery row and appends it with the new count as its number, in
/// one statement, so two recorders never get the same number. The row takes the call's
/// provider, so after a failover it names the provider that sent last.
const RECORD_ATTEMPT_SQL: &str = "
WITH counted AS (
    UPDATE deliveries
    SET attempts = attempts + 1, provider = $3, updated_at = now()
    WHERE job_id = $1 AND channel = $2
    RETURNING attempts
)
INSERT INTO delivery_attempts
    (job_id, channel, attempt, provider, status_code, outcome, error_code, latency_ms)
SELECT $1, $2, attempts, $3, $4, $5, $6, $7 FROM counted
RETURNING attempt";

/// Applies only while the claim is held: the row is still `sending` under `token`.
const FINISH_SQL: &str = "
UPDATE deliveries
SET state = $4,
    provider_message_id = COALESCE($5, provider_message_id),
    last_error_class = $6,
    last_error_code = $7,
    last_error_message = $8,
    sending_since = NULL,
    delivered_at = CASE WHEN $4 = 'delivered' THEN now() END,
    updated_at = now()
WHERE job_id = $1 AND channel = $2 AND claim_token = $3 AND state = 'sending'";

/// One provider call, for [`Ledger::record_attempt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub provider: String,
    /// The HTTP status or SMTP reply code, when the provider replied.
    pub status_code: Option<u16>,
    /// `delivered`, or the error class label from [`crate::providers::ErrorClass::as_str`].
    pub outcome: String,
    pub error_code: Option<String>,
    pub latency: Duration,
}

impl AttemptRecord {
    /// Describes a call that the provider accepted.
    pub fn delivered(provider: &str, status_code: Option<u16>, latency: Duration) -> Self {
        AttemptRecord {
            provider: provider.to_owned(),
            status_code,
            outcome: "delivered".to_owned(),
            error_code: None,
            latency,
        }
    }

    /// Describes a call that failed with `error`.
    pub fn failed(provider: &str, error: &SendError, latency: Duration) -> Self {
        AttemptRecord {
            provider: provider.to_owned(),
            status_code: error.status,
            outcome: error.class.as_str().to_owned(),
            error_code: error.code.clone(),
            latency,
        }
    }
}

/// The error stored with a row that did not end delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// An [`crate::providers::ErrorClass`] label, or a reason such as `handler_panic` for a
    /// dead-lettered job. The class `permanent` makes a `failed` row final.
    pub class: String,
    pub code: Option<String>,
    /// Description without recipients or secrets, cut to 1000 characters when stored.
    pub message: String,
}

impl LastError {
    pub fn new(class: impl Into<String>, message: impl Into<String>) -> LastError {
        LastError {
            class: class.into(),
            code: None,
            message: message.into(),
        }
    }
}

impl From<&SendError> for LastError {
    fn from(error: &SendError) -> Self {
        LastError {
            class: error.class.as_str().to_owned(),
            code: error.code.clone(),
            message: error.message.clone(),
        }
    }
}

/// The outcome of a claim, for [`Ledger::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted the message. An id, when given, replaces any stored one.
    Delivered { provider_message_id: Option<String> },
    /// The attempts of this delivery failed, and a later delivery of the job should try
    /// again. A later claim acquires the row.
    Retrying(LastError),
    /// The attempts failed. A later claim acquires the row unless `class` is `permanent`.
    Failed(LastError),
    /// The job went to the dead-letter exchange. Final.
    DeadLettered(LastError),
    /// The job expired before the channel was sent. Final.
    Expired,
    /// The recipient is suppressed, so the channel was not sent. Final.
    Suppressed,
}

impl Outcome {
    pub fn state(&self) -> DeliveryState {
        match self {
            Outcome::Delivered { .. } => DeliveryState::Delivered,
            Outcome::Retrying(_) => DeliveryState::Retrying,
            Outcome::Failed(_) => DeliveryState::Failed,
            Outcome::DeadLettered(_) => DeliveryState::DeadLettered,
            Outcome::Expired => DeliveryState::Expired,
            Outcome::Suppressed => DeliveryState::Suppressed,
        }
    }

    fn error(&self) -> Option<&LastError> {
        match self {
            Outcome::Retrying(error) | Outcome::Failed(error) | Outcome::DeadLettered(error) => {
                Some(error)
            }
            Outcome::Delivered { .. } | Outcome::Expired | Outcome::Suppressed => None,
        }
    }

    fn provider_message_id(&self) -> Option<&str> {
        match self {
            Outcome::Delivered {
                provider_message_id,
            } => provider_message_id.as_deref(),
            _ => None,
        }
    }
}

impl Ledger {
    /// Appends one provider call for a claimed (job, channel) and returns its attempt
    /// number, counted from 1 across every delivery of the job. It does not check the claim
    /// token, because a call that was made belongs in the history even if the claim was
    /// lost meanwhile.
    pub async fn record_attempt(
        &self,
        job_id: &JobId,
        channel: ChannelKind,
        attempt: &AttemptRecord,
    ) -> Result<u32, LedgerError> {
        let latency_ms = i64::try_from(attempt.latency.as_millis()).unwrap_or(i64::MAX);
        let row = sqlx::query(RECORD_ATTEMPT_SQL)
            .bind(job_id.as_str())
            .bind(channel.as_str())
            .bind(&attempt.provider)
            .bind(attempt.status_code.map(i32::from))
            .bind(&attempt.outcome)
            .bind(attempt.error_code.as_deref())
            .bind(latency_ms)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let Some(row) = row else {
            return Err(LedgerError::NotClaimed {
                job_id: job_id.to_string(),
                channel: channel.to_string(),
            });
        };
        let number: i32 = row.try_get("attempt").map_err(|e| self.error(e))?;
        Ok(u32::try_from(number).unwrap_or_default())
    }

    /// Moves a claimed row to `outcome`'s state. Returns `true` if it applied, and `false`
    /// if the row is no longer `sending` under `token`: another worker took the claim over,
    /// or an earlier `finish` with this token already applied. A `false` changes nothing.
    pub async fn finish(
        &self,
        job_id: &JobId,
        channel: ChannelKind,
        token: Uuid,
        outcome: &Outcome,
    ) -> Result<bool, LedgerError> {
        let error = outcome.error();
        let message = error.map(|error| truncate(&error.message, MAX_ERROR_MESSAGE_CHARS));
        let result = sqlx::query(FINISH_SQL)
            .bind(job_id.as_str())
            .bind(channel.as_str())
            .bind(token)
            .bind(outcome.state().as_str())
            .bind(outcome.provider_message_id())
            .bind(error.map(|error| error.class.as_str()))
            .bind(error.and_then(|error| error.code.as_deref()))
            .bind(message)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(result.rows_affected() == 1)
    }
}

const REOPEN_SQL: &str = "
UPDATE deliveries
SET state = 'retrying', updated_at = now()
WHERE job_id = $1 AND channel = $2 AND state IN ('dead_lettered', 'failed')";

impl Ledger {
    /// Makes a dead-lettered or failed channel claimable again, because an operator replays
    /// it. Returns whether a row changed. A delivered channel stays delivered, so a replay
    /// never sends it twice.
    pub async fn reopen(&self, job_id: &JobId, channel: ChannelKind) -> Result<bool, LedgerError> {
        let result = sqlx::query(REOPEN_SQL)
            .bind(job_id.as_str())
            .bind(channel.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(result.rows_affected() == 1)
    }
}

pub(super) fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_short_text() {
        assert_eq!(truncate("timeout", 10), "timeout");
    }

    #[test]
    fn truncate_cuts_at_char_boundary() {
        assert_eq!(truncate("ééé", 2), "éé");
    }

    #[test]
    fn failed_attempt_takes_error_fields() {
        let error = SendError::transient("upstream timed out")
            .with_status(503)
            .with_code("timeout");
        let record = AttemptRecord::failed("twilio", &error, Duration::from_millis(12));
        assert_eq!(record.outcome, "transient");
        assert_eq!(record.status_code, Some(503));
        assert_eq!(record.error_code.as_deref(), Some("timeout"));
    }
}
