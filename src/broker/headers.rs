//! Message headers Herald writes on dead-lettered messages. Operators' tooling reads them,
//! so their names are part of Herald's interface.

use chrono::Utc;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// Why the message was dead-lettered: `invalid_json`, `invalid_job`, `too_large` or
/// `handler_panic`.
pub const REASON: &str = "x-herald-reason";
/// A human-readable description of the failure.
pub const ERROR: &str = "x-herald-error";
/// The job id, when one could be read from the body.
pub const JOB_ID: &str = "x-herald-job-id";
/// When Herald dead-lettered the message, as an RFC 3339 timestamp.
pub const FAILED_AT: &str = "x-herald-failed-at";
/// The queue the message was consumed from.
pub const SOURCE_QUEUE: &str = "x-herald-source-queue";

/// Maximum length of the error description kept in a header, in bytes.
const MAX_ERROR_BYTES: usize = 1024;

/// Builds the headers of a dead-lettered copy: the original headers plus Herald's own.
pub fn dead_letter(
    original: Option<&FieldTable>,
    reason: &str,
    error: &str,
    job_id: Option<&str>,
    source_queue: &str,
) -> FieldTable {
    let mut table = original.cloned().unwrap_or_default();
    insert_text(&mut table, REASON, reason);
    insert_text(&mut table, ERROR, truncate(error, MAX_ERROR_BYTES));
    if let Some(job_id) = job_id {
        insert_text(&mut table, JOB_ID, job_id);
    }
    insert_text(&mut table, FAILED_AT, &Utc::now().to_rfc3339());
    insert_text(&mut table, SOURCE_QUEUE, source_queue);
    table
}

pub(super) fn insert_text(table: &mut FieldTable, name: &str, value: &str) {
    table.insert(
        ShortString::from(name),
        AMQPValue::LongString(LongString::from(value)),
    );
}

/// Reads a text header, whichever AMQP string type carries it.
pub fn text(table: Option<&FieldTable>, name: &str) -> Option<String> {
    match table?.inner().get(name)? {
        AMQPValue::LongString(value) => {
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    }
}

/// Cuts `text` to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
