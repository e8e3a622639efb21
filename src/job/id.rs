//! The job id: the producer's name for a job, used in logs and for deduplication.

use std::fmt;

use super::{ChannelKind, JobError};

/// Maximum length of a job id, in characters.
pub const MAX_JOB_ID_LEN: usize = 128;

/// A job id of 1 to 128 characters from `A-Z a-z 0-9 . _ : -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Validates `text` as a job id.
    pub fn parse(text: &str) -> Result<JobId, JobError> {
        if text.is_empty() || text.len() > MAX_JOB_ID_LEN {
            return Err(JobError::field(
                "id",
                format!("must be 1 to {MAX_JOB_ID_LEN} characters long"),
            ));
        }
        if let Some(bad) = text.chars().find(|c| !is_id_char(*c)) {
            return Err(JobError::field(
                "id",
                format!("contains {bad:?}; only A-Z a-z 0-9 . _ : - are allowed"),
            ));
        }
        Ok(JobId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the key that names one channel of this job across attempts and redeliveries,
    /// for providers that deduplicate: `{job id}/{channel}`. The `/` cannot occur in a job
    /// id, so two jobs never share a key.
    pub fn dedupe_key(&self, channel: ChannelKind) -> String {
        format!("{}/{channel}", self.0)
    }
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
