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

/// The delivery round of a job's channels: 1 for a producer's publish, one more for each
/// redelivery through a delay queue. Herald counts attempts with this header, never with
/// the broker's `x-death`.
pub const ATTEMPT: &str = "x-herald-attempt";
/// When the channel first failed, as an RFC 3339 timestamp.
pub const FIRST_FAILURE_AT: &str = "x-herald-first-failure-at";
/// When the channel last failed, as an RFC 3339 timestamp.
pub const LAST_FAILURE_AT: &str = "x-herald-last-failure-at";
/// The channel a single-channel dead letter or retry carries.
pub const CHANNEL: &str = "x-herald-channel";
/// The provider that failed the channel.
pub const PROVIDER: &str = "x-herald-provider";
/// The provider's error code, or Herald's for failures without a reply.
pub const ERROR_CODE: &str = "x-herald-error-code";
/// The provider's HTTP status, or an SMTP relay's reply code.
pub const HTTP_STATUS: &str = "x-herald-http-status";
/// Deliveries of the channel made before it was dead-lettered.
pub const ATTEMPTS: &str = "x-herald-attempts";

/// Headers the broker adds on dead-lettering, dropped when Herald republishes a message so
/// they do not pile up across delay-queue cycles.
const BROKER_DEATH_HEADERS: [&str; 4] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
];

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

/// Returns a copy of `original` without the broker's dead-letter bookkeeping.
pub fn republished(original: Option<&FieldTable>) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(original) = original {
        for (name, value) in original.inner() {
            if !BROKER_DEATH_HEADERS.contains(&name.as_str()) {
                table.insert(name.clone(), value.clone());
            }
        }
    }
    table
}

/// Sets the error description, cut to a bounded length.
pub fn set_error(table: &mut FieldTable, message: &str) {
    insert_text(table, ERROR, truncate(message, MAX_ERROR_BYTES));
}

/// Sets a text header.
pub fn set_text(table: &mut FieldTable, name: &str, value: &str) {
    insert_text(table, name, value);
}

/// Sets an integer header.
pub fn set_number(table: &mut FieldTable, name: &str, value: i64) {
    table.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
}

/// Reads an integer header, whichever AMQP integer type or decimal text carries it.
pub fn number(table: Option<&FieldTable>, name: &str) -> Option<i64> {
    match table?.inner().get(name)? {
        AMQPValue::ShortShortInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortShortUInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortInt(value) => Some(i64::from(*value)),
        AMQPValue::ShortUInt(value) => Some(i64::from(*value)),
        AMQPValue::LongInt(value) => Some(i64::from(*value)),
        AMQPValue::LongUInt(value) => Some(i64::from(*value)),
        AMQPValue::LongLongInt(value) => Some(*value),
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
            text(Some(table?), name)?.trim().parse().ok()
        }
        _ => None,
    }
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
