//! Ledger failures, classified so the pipeline can tell "PostgreSQL cannot be used right now"
//! from a failure of one statement.

use std::sync::Arc;

use sqlx::migrate::MigrateError;

use crate::config::ConfigError;

/// SQLSTATE of a statement cancelled by `statement_timeout` (or by `pg_cancel_backend`).
const QUERY_CANCELED: &str = "57014";

/// The settings that error messages name.
#[derive(Debug, Clone)]
pub(super) struct ErrorContext {
    /// The URL with its password masked.
    pub(super) url: Arc<str>,
    pub(super) acquire_timeout_secs: u64,
    pub(super) statement_timeout_ms: u64,
}

/// A failed ledger call.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("invalid ledger.url {url}: {source}")]
    InvalidUrl {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    #[error(transparent)]
    Config(#[from] ConfigError),

    /// No connection could be opened or taken from the pool within `acquire_timeout_secs`.
    #[error(
        "no connection to PostgreSQL at {url} within ledger.acquire_timeout_secs ({timeout_secs} s); check that PostgreSQL is running and that ledger.url is right"
    )]
    ConnectTimeout { url: String, timeout_secs: u64 },

    /// PostgreSQL broke the connection or refused to serve it: a network failure, a server
    /// shutting down, too many connections, rejected credentials, or a missing database.
    #[error("PostgreSQL at {url} is unavailable: {source}")]
    Unavailable {
        url: String,
        #[source]
        source: sqlx::Error,
    },

    /// A statement ran longer than `statement_timeout_ms` and PostgreSQL cancelled it, so it
    /// changed nothing.
    #[error(
        "ledger statement ran longer than ledger.statement_timeout_ms ({timeout_ms} ms) and was cancelled: {source}"
    )]
    StatementTimeout {
        timeout_ms: u64,
        #[source]
        source: sqlx::Error,
    },

    #[error("failed to apply ledger migrations on {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: MigrateError,
    },

    /// A statement failed for a reason other than availability, such as a constraint.
    #[error("ledger statement failed: {0}")]
    Database(#[source] sqlx::Error),

    /// `record_attempt` found no row: the channel was never claimed.
    #[error("no ledger row for job {job_id} channel {channel}; claim the channel first")]
    NotClaimed { job_id: String, channel: String },

    /// A row contains a value this version of Herald does not know, written by a newer version
    /// or by hand.
    #[error("ledger row for job {job_id} channel {channel} has unknown state `{state}`")]
    UnknownState {
        job_id: String,
        channel: String,
        state: String,
    },
}

impl LedgerError {
    /// Returns whether the ledger cannot be used right now: PostgreSQL is unreachable,
    /// overloaded, or too slow to respond within `statement_timeout_ms`. The failed call
    /// changed nothing, so the pipeline should stop taking new jobs, leave this one
    /// unacknowledged, and retry later.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LedgerError::ConnectTimeout { .. }
            | LedgerError::Unavailable { .. }
            | LedgerError::StatementTimeout { .. } => true,
            LedgerError::Migrate {
                source: MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _),
                ..
            } => is_unavailable_error(error),
            _ => false,
        }
    }

    /// Classifies a failed statement.
    pub(super) fn from_sqlx(source: sqlx::Error, context: &ErrorContext) -> LedgerError {
        let url = context.url.to_string();
        if matches!(source, sqlx::Error::PoolTimedOut) {
            LedgerError::ConnectTimeout {
                url,
                timeout_secs: context.acquire_timeout_secs,
            }
        } else if is_statement_timeout(&source) {
            LedgerError::StatementTimeout {
                timeout_ms: context.statement_timeout_ms,
                source,
            }
        } else if is_unavailable_error(&source) {
            LedgerError::Unavailable { url, source }
        } else {
            LedgerError::Database(source)
        }
    }

    /// Classifies a failed migration run.
    pub(super) fn from_migrate(source: MigrateError, context: &ErrorContext) -> LedgerError {
        match source {
            MigrateError::Execute(error) if is_unavailable_error(&error) => {
                LedgerError::from_sqlx(error, context)
            }
            source => LedgerError::Migrate {
                url: context.url.to_string(),
                source,
            },
        }
    }
}

fn is_statement_timeout(error: &sqlx::Error) -> bool {
    sqlstate(error).is_some_and(|code| code == QUERY_CANCELED)
}

/// Returns whether `error` means the server cannot serve this process right now, judged by
/// the error's kind and, for server errors, its SQLSTATE.
fn is_unavailable_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => sqlstate(error).is_some_and(|code| is_unavailable_code(&code)),
        _ => false,
    }
}

/// Returns whether a SQLSTATE describes the server or the connection, not the statement.
/// These are the classes 08 (connection exception), 28 (invalid authorization) and 53
/// (insufficient resources, such as too many connections), the codes 57P01 to 57P05
/// (server shutting down or starting up, idle-session timeout), and 3D000 (no such database).
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("28")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "3D000"
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ErrorContext {
        ErrorContext {
            url: "postgres://db".into(),
            acquire_timeout_secs: 5,
            statement_timeout_ms: 100,
        }
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        let error = LedgerError::from_sqlx(sqlx::Error::PoolTimedOut, &context());
        assert!(error.is_unavailable());
        let message = error.to_string();
        assert!(message.contains("postgres://db"), "{message}");
        assert!(message.contains("(5 s)"), "{message}");
    }

    #[test]
    fn io_error_is_unavailable() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = LedgerError::from_sqlx(sqlx::Error::Io(io), &context());
        assert!(matches!(error, LedgerError::Unavailable { .. }));
    }

    #[test]
    fn row_not_found_is_not_unavailable() {
        let error = LedgerError::from_sqlx(sqlx::Error::RowNotFound, &context());
        assert!(!error.is_unavailable());
    }

    #[test]
    fn unavailable_codes() {
        for code in ["08006", "28P01", "3D000", "53300", "57P01", "57P03"] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "57014", "40001"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }
}
