//! Reading a job's rows back, for `herald status`.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::recipient::display_form;
use super::{DeliveryState, LastError, Ledger, LedgerError};
use crate::job::JobId;

/// Maximum length of the error text in one table cell, in characters.
const MAX_ERROR_CELL_CHARS: usize = 60;

const STATUS_SQL: &str = "
SELECT channel, state, provider, provider_message_id, attempts,
       last_error_class, last_error_code, last_error_message,
       recipient_hash, recipient, claimed_by, reclaimed,
       created_at, updated_at, sending_since, delivered_at
FROM deliveries
WHERE job_id = $1
ORDER BY channel";

/// One (job, channel) row as [`Ledger::status`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub channel: String,
    pub state: DeliveryState,
    pub provider: String,
    pub provider_message_id: Option<String>,
    pub attempts: u32,
    pub last_error: Option<LastError>,
    /// The recipient masked as in logs when it is stored, or else `hmac:` and the first 12
    /// hex digits of its hash. The plain recipient never leaves the database through here.
    pub recipient: String,
    pub claimed_by: Option<String>,
    /// The latest claim took over a stale `sending` claim, so the channel may have been
    /// sent twice.
    pub reclaimed: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sending_since: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl Ledger {
    /// Returns the rows of job `job_id`, ordered by channel. An empty list means the ledger
    /// has never seen the job.
    pub async fn status(&self, job_id: &JobId) -> Result<Vec<DeliveryRow>, LedgerError> {
        let rows = sqlx::query(STATUS_SQL)
            .bind(job_id.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        rows.iter()
            .map(|row| self.delivery_row(job_id, row))
            .collect()
    }

    fn delivery_row(&self, job_id: &JobId, row: &PgRow) -> Result<DeliveryRow, LedgerError> {
        let get = |e| self.error(e);
        let channel: String = row.try_get("channel").map_err(get)?;
        let state_name: String = row.try_get("state").map_err(get)?;
        let state =
            DeliveryState::from_name(&state_name).ok_or_else(|| LedgerError::UnknownState {
                job_id: job_id.to_string(),
                channel: channel.clone(),
                state: state_name,
            })?;
        let stored: Option<String> = row.try_get("recipient").map_err(get)?;
        let hash: String = row.try_get("recipient_hash").map_err(get)?;
        let attempts: i32 = row.try_get("attempts").map_err(get)?;

        Ok(DeliveryRow {
            recipient: display_form(&channel, stored.as_deref(), &hash),
            state,
            provider: row.try_get("provider").map_err(get)?,
            provider_message_id: row.try_get("provider_message_id").map_err(get)?,
            attempts: u32::try_from(attempts).unwrap_or_default(),
            last_error: last_error(row).map_err(get)?,
            claimed_by: row.try_get("claimed_by").map_err(get)?,
            reclaimed: row.try_get("reclaimed").map_err(get)?,
            created_at: row.try_get("created_at").map_err(get)?,
            updated_at: row.try_get("updated_at").map_err(get)?,
            sending_since: row.try_get("sending_since").map_err(get)?,
            delivered_at: row.try_get("delivered_at").map_err(get)?,
            channel,
        })
    }
}

fn last_error(row: &PgRow) -> Result<Option<LastError>, sqlx::Error> {
    let class: Option<String> = row.try_get("last_error_class")?;
    let Some(class) = class else {
        return Ok(None);
    };
    Ok(Some(LastError {
        class,
        code: row.try_get("last_error_code")?,
        message: row
            .try_get::<Option<String>, _>("last_error_message")?
            .unwrap_or_default(),
    }))
}

/// Renders rows as a plain-text table with a header line, one line per row, columns
/// separated by two spaces. Empty cells print as `-`.
pub fn render_table(rows: &[DeliveryRow]) -> String {
    let header = [
        "CHANNEL",
        "STATE",
        "PROVIDER",
        "MESSAGE ID",
        "ATTEMPTS",
        "LAST ERROR",
        "UPDATED",
        "RECIPIENT",
    ];
    aligned(&header, rows.iter().map(|row| cells(row).to_vec()))
}

/// Renders a header and lines of cells with each column padded to its widest cell.
pub(super) fn aligned(header: &[&str], lines: impl Iterator<Item = Vec<String>>) -> String {
    let header: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    let lines: Vec<Vec<String>> = std::iter::once(header).chain(lines).collect();

    let mut widths = vec![0; lines[0].len()];
    for line in &lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut table = String::new();
    for line in &lines {
        let padded: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(padded.join("  ").trim_end());
        table.push('\n');
    }
    table
}

fn cells(row: &DeliveryRow) -> [String; 8] {
    let mut state = row.state.to_string();
    if row.reclaimed {
        state.push_str(" (reclaimed)");
    }
    [
        row.channel.clone(),
        state,
        row.provider.clone(),
        row.provider_message_id.clone().unwrap_or_else(dash),
        row.attempts.to_string(),
        row.last_error.as_ref().map(error_cell).unwrap_or_else(dash),
        row.updated_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        row.recipient.clone(),
    ]
}

fn error_cell(error: &LastError) -> String {
    let code = error
        .code
        .as_ref()
        .map(|code| format!(" {code}"))
        .unwrap_or_default();
    let text = format!(
        "{}{code}: {}",
        error.class,
        error.message.replace('\n', " ")
    );
    if text.chars().count() <= MAX_ERROR_CELL_CHARS {
        return text;
    }
    let cut: String = text.chars().take(MAX_ERROR_CELL_CHARS - 3).collect();
    format!("{cut}...")
}

pub(super) fn dash() -> String {
    "-".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(channel: &str, state: DeliveryState) -> DeliveryRow {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        DeliveryRow {
            channel: channel.to_owned(),
            state,
            provider: "sendgrid".to_owned(),
            provider_message_id: None,
            attempts: 1,
            last_error: None,
            recipient: "a***@example.com".to_owned(),
            claimed_by: None,
            reclaimed: false,
            created_at: at,
            updated_at: at,
            sending_since: None,
            delivered_at: None,
        }
    }

    #[test]
    fn table_aligns_columns() {
        let mut delivered = row("email", DeliveryState::Delivered);
        delivered.provider_message_id = Some("msg-1".to_owned());
        let mut failed = row("sms", DeliveryState::Failed);
        failed.last_error = Some(LastError::new("permanent", "invalid number"));

        let table = render_table(&[delivered, failed]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("CHANNEL  STATE"), "{table}");
        let state_column = lines[0].find("STATE").unwrap();
        assert_eq!(lines[1].find("delivered"), Some(state_column), "{table}");
        assert_eq!(lines[2].find("failed"), Some(state_column), "{table}");
        assert!(lines[1].contains("msg-1"), "{table}");
        assert!(lines[2].contains("permanent: invalid number"), "{table}");
        assert!(lines[1].contains("2026-01-02 03:04:05 UTC"), "{table}");
    }

    #[test]
    fn long_error_is_cut() {
        let error = LastError::new("transient", "x".repeat(200));
        let cell = error_cell(&error);
        assert_eq!(cell.chars().count(), MAX_ERROR_CELL_CHARS);
        assert!(cell.ends_with("..."));
    }

    #[test]
    fn reclaimed_row_is_marked() {
        let mut reclaimed = row("push", DeliveryState::Sending);
        reclaimed.reclaimed = true;
        assert!(render_table(&[reclaimed]).contains("sending (reclaimed)"));
    }
}
