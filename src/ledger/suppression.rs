//! The suppression table: recipients that a provider reported as invalid, keyed by channel
//! and recipient hash, so later jobs can skip them.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::recipient::display_form;
use super::record::{MAX_ERROR_MESSAGE_CHARS, truncate};
use super::status::{aligned, dash};
use super::{Ledger, LedgerError, Recipient};
use crate::job::{ChannelKind, JobId};

/// Inserts the row, or updates it for a job other than the one that last recorded it. A
/// redelivery of that job therefore changes nothing, and `count` counts jobs.
const SUPPRESS_SQL: &str = "
INSERT INTO suppressions AS s
    (channel, recipient_hash, recipient, provider, provider_code, reason, last_job_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (channel, recipient_hash) DO UPDATE
SET recipient = EXCLUDED.recipient,
    provider = EXCLUDED.provider,
    provider_code = EXCLUDED.provider_code,
    reason = EXCLUDED.reason,
    last_job_id = EXCLUDED.last_job_id,
    last_seen_at = now(),
    count = s.count + 1
WHERE s.last_job_id <> EXCLUDED.last_job_id";

const IS_SUPPRESSED_SQL: &str = "
SELECT 1 FROM suppressions WHERE channel = $1 AND recipient_hash = $2";

const LIST_SQL: &str = "
SELECT channel, recipient_hash, recipient, provider, provider_code, reason, last_job_id,
       first_seen_at, last_seen_at, count
FROM suppressions
WHERE $1::text IS NULL OR channel = $1
ORDER BY last_seen_at DESC, channel, recipient_hash
LIMIT $2";

const LIFT_SQL: &str = "
DELETE FROM suppressions WHERE channel = $1 AND recipient_hash = $2";

/// A recipient that a provider reported as invalid, for [`Ledger::suppress`].
#[derive(Debug, Clone, Copy)]
pub struct InvalidRecipient<'a> {
    pub recipient: Recipient<'a>,
    pub provider: &'a str,
    /// The provider's error code, such as `21211` or `UNREGISTERED`.
    pub provider_code: Option<&'a str>,
    /// The provider's description of the error, which never contains the recipient.
    pub reason: &'a str,
}

/// One row of the suppression table, as [`Ledger::suppressions`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionRow {
    pub channel: String,
    /// The recipient masked as in logs when it is stored, or else `hmac:` and the first 12
    /// hex digits of its hash.
    pub recipient: String,
    pub provider: String,
    pub provider_code: Option<String>,
    pub reason: String,
    pub last_job_id: String,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Jobs whose failure recorded the row, a redelivered job counted once.
    pub count: u32,
}

impl Ledger {
    /// Records that a provider reported `invalid`'s recipient as invalid for job `job_id`.
    /// Returns whether a row was inserted or updated: a repeat for the same job, such as a
    /// redelivery, changes nothing and returns `false`.
    pub async fn suppress(
        &self,
        job_id: &JobId,
        invalid: &InvalidRecipient<'_>,
    ) -> Result<bool, LedgerError> {
        let hash = self.recipient_hash(invalid.recipient)?;
        let stored = self.store_recipients.then(|| invalid.recipient.expose());
        let result = sqlx::query(SUPPRESS_SQL)
            .bind(invalid.recipient.channel().as_str())
            .bind(&hash)
            .bind(stored)
            .bind(invalid.provider)
            .bind(invalid.provider_code)
            .bind(truncate(invalid.reason, MAX_ERROR_MESSAGE_CHARS))
            .bind(job_id.as_str())
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(result.rows_affected() == 1)
    }

    /// Returns whether `recipient` is in the suppression table for its channel.
    pub async fn is_suppressed(&self, recipient: Recipient<'_>) -> Result<bool, LedgerError> {
        let hash = self.recipient_hash(recipient)?;
        let row = sqlx::query(IS_SUPPRESSED_SQL)
            .bind(recipient.channel().as_str())
            .bind(&hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(row.is_some())
    }

    /// Returns at most `limit` suppressions, of `channel` or of every channel, the most
    /// recently seen first.
    pub async fn suppressions(
        &self,
        channel: Option<ChannelKind>,
        limit: u32,
    ) -> Result<Vec<SuppressionRow>, LedgerError> {
        let rows = sqlx::query(LIST_SQL)
            .bind(channel.map(ChannelKind::as_str))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| suppression_row(row).map_err(|e| self.error(e)))
            .collect()
    }

    /// Removes the suppression of `recipient`, so its channel is sent again. Returns whether
    /// a row was removed.
    pub async fn lift_suppression(&self, recipient: Recipient<'_>) -> Result<bool, LedgerError> {
        self.lift_exposed_suppression(recipient.channel(), &recipient.expose())
            .await
    }

    /// Removes the suppression of the recipient whose exposed form, as a job's recipient
    /// gives it (an address, a number, a token, a Web Push endpoint or a webhook target), is
    /// `exposed`.
    pub async fn lift_exposed_suppression(
        &self,
        channel: ChannelKind,
        exposed: &str,
    ) -> Result<bool, LedgerError> {
        let hash = self.hash_exposed(exposed)?;
        let result = sqlx::query(LIFT_SQL)
            .bind(channel.as_str())
            .bind(&hash)
            .execute(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        Ok(result.rows_affected() == 1)
    }
}

fn suppression_row(row: &PgRow) -> Result<SuppressionRow, sqlx::Error> {
    let channel: String = row.try_get("channel")?;
    let stored: Option<String> = row.try_get("recipient")?;
    let hash: String = row.try_get("recipient_hash")?;
    let count: i32 = row.try_get("count")?;
    Ok(SuppressionRow {
        recipient: display_form(&channel, stored.as_deref(), &hash),
        channel,
        provider: row.try_get("provider")?,
        provider_code: row.try_get("provider_code")?,
        reason: row.try_get("reason")?,
        last_job_id: row.try_get("last_job_id")?,
        first_seen_at: row.try_get("first_seen_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        count: u32::try_from(count).unwrap_or_default(),
    })
}

/// Renders suppressions as a plain-text table, as `herald suppression list` prints them.
pub fn render_suppressions(rows: &[SuppressionRow]) -> String {
    let header = [
        "CHANNEL",
        "RECIPIENT",
        "PROVIDER",
        "CODE",
        "COUNT",
        "FIRST SEEN",
        "LAST SEEN",
        "LAST JOB",
        "REASON",
    ];
    let time = |at: &DateTime<Utc>| at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let lines = rows.iter().map(|row| {
        vec![
            row.channel.clone(),
            row.recipient.clone(),
            row.provider.clone(),
            row.provider_code.clone().unwrap_or_else(dash),
            row.count.to_string(),
            time(&row.first_seen_at),
            time(&row.last_seen_at),
            row.last_job_id.clone(),
            row.reason.replace('\n', " "),
        ]
    });
    aligned(&header, lines)
}
