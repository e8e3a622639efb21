//! Claiming a (job, channel) before sending it.

use sqlx::Row;
use sqlx::types::Uuid;

use super::{DeliveryState, Ledger, LedgerError, Recipient};
use crate::job::JobId;
use crate::providers::ErrorClass;

/// How many times `claim` repeats when the row changes between its two statements.
const CLAIM_TRIES: usize = 3;

/// Inserts a `sending` row, or takes over an existing row that may be sent again, in one
/// statement. Concurrent claims of one key serialize on the primary key. Each later one reads
/// the row as the earlier one left it, so at most one of them finds it claimable.
///
/// The `reclaimed` flag is computed from the row as it was before the update, which is how
/// the caller learns whether it took over a stale `sending` claim.
const CLAIM_SQL: &str = "
INSERT INTO deliveries AS d
    (job_id, channel, state, provider, recipient_hash, recipient,
     claimed_by, claim_token, sending_since)
VALUES ($1, $2, 'sending', $3, $4, $5, $6, gen_random_uuid(), now())
ON CONFLICT (job_id, channel) DO UPDATE
SET state = 'sending',
    provider = EXCLUDED.provider,
    recipient_hash = EXCLUDED.recipient_hash,
    recipient = EXCLUDED.recipient,
    claimed_by = EXCLUDED.claimed_by,
    claim_token = EXCLUDED.claim_token,
    reclaimed = (d.state = 'sending'),
    sending_since = EXCLUDED.sending_since,
    updated_at = now()
WHERE d.state IN ('pending', 'retrying')
   OR (d.state = 'failed' AND d.last_error_class IS DISTINCT FROM $7)
   OR (d.state = 'sending' AND d.sending_since <= now() - make_interval(secs => $8))
RETURNING d.claim_token, d.attempts, d.reclaimed";

const CURRENT_SQL: &str = "
SELECT state, provider, provider_message_id, last_error_class
FROM deliveries
WHERE job_id = $1 AND channel = $2";

/// The result of [`Ledger::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker has the claim and should send the channel, then call [`Ledger::finish`] with
    /// `token`. `attempts` counts the provider calls recorded for the channel so far, over
    /// every delivery of the job.
    Acquired {
        token: Uuid,
        attempts: u32,
        /// The claim took over a row left in `sending` for longer than
        /// `sending_reclaim_secs`. The worker that left it may have reached the provider,
        /// so sending now may deliver the channel twice.
        ambiguous: bool,
    },
    /// The channel was delivered before. Do not send it.
    AlreadyDelivered {
        provider: String,
        provider_message_id: Option<String>,
    },
    /// The channel ended for good: failed permanently, dead-lettered, expired or suppressed.
    /// Do not send.
    Final { state: DeliveryState },
    /// Another worker claimed the channel less than `sending_reclaim_secs` ago and may be
    /// sending it now. Do not send, and do not treat the channel as settled.
    Busy,
}

/// The row state found by the second statement of a claim.
enum Current {
    Decided(Claim),
    /// The row became claimable after the claim statement ran, so claim again.
    Claimable,
}

impl Ledger {
    /// Claims `recipient`'s channel of job `job_id` for sending through `provider`.
    ///
    /// Two claims of the same (job, channel), from any processes, never both return
    /// [`Claim::Acquired`] unless the first one's claim has gone stale. The claim itself is
    /// one atomic statement; when it does not acquire, a second statement reads the row to
    /// say why.
    pub async fn claim(
        &self,
        job_id: &JobId,
        provider: &str,
        recipient: Recipient<'_>,
    ) -> Result<Claim, LedgerError> {
        let channel = recipient.channel().as_str();
        let hash = self.recipient_hash(recipient)?;
        let exposed = recipient.expose();
        let stored = self.store_recipients.then_some(exposed.as_ref());

        for _ in 0..CLAIM_TRIES {
            let acquired = sqlx::query(CLAIM_SQL)
                .bind(job_id.as_str())
                .bind(channel)
                .bind(provider)
                .bind(&hash)
                .bind(stored)
                .bind(self.instance_id())
                .bind(ErrorClass::Permanent.as_str())
                .bind(self.sending_reclaim.as_secs_f64())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| self.error(e))?;
            if let Some(row) = acquired {
                return self.acquired(&row);
            }

            match self.current(job_id, channel).await? {
                Current::Decided(claim) => return Ok(claim),
                Current::Claimable => continue,
            }
        }
        // Each try lost a race to a claim or a finish by another worker, which is therefore
        // active on this channel.
        Ok(Claim::Busy)
    }

    fn acquired(&self, row: &sqlx::postgres::PgRow) -> Result<Claim, LedgerError> {
        let token: Uuid = row.try_get("claim_token").map_err(|e| self.error(e))?;
        let attempts: i32 = row.try_get("attempts").map_err(|e| self.error(e))?;
        let ambiguous: bool = row.try_get("reclaimed").map_err(|e| self.error(e))?;
        Ok(Claim::Acquired {
            token,
            attempts: u32::try_from(attempts).unwrap_or_default(),
            ambiguous,
        })
    }

    /// Reads the row a claim did not acquire. It is read by a new statement, which reads
    /// every claim committed before it, including one that committed while the claim
    /// statement waited on the row's lock.
    async fn current(&self, job_id: &JobId, channel: &str) -> Result<Current, LedgerError> {
        let row = sqlx::query(CURRENT_SQL)
            .bind(job_id.as_str())
            .bind(channel)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.error(e))?;
        let Some(row) = row else {
            return Ok(Current::Claimable);
        };

        let name: String = row.try_get("state").map_err(|e| self.error(e))?;
        let state = DeliveryState::from_name(&name).ok_or_else(|| LedgerError::UnknownState {
            job_id: job_id.to_string(),
            channel: channel.to_owned(),
            state: name,
        })?;
        let claim = match state {
            DeliveryState::Delivered => Claim::AlreadyDelivered {
                provider: row.try_get("provider").map_err(|e| self.error(e))?,
                provider_message_id: row
                    .try_get("provider_message_id")
                    .map_err(|e| self.error(e))?,
            },
            DeliveryState::Sending => Claim::Busy,
            DeliveryState::DeadLettered | DeliveryState::Expired | DeliveryState::Suppressed => {
                Claim::Final { state }
            }
            DeliveryState::Failed => {
                let class: Option<String> =
                    row.try_get("last_error_class").map_err(|e| self.error(e))?;
                if class.as_deref() == Some(ErrorClass::Permanent.as_str()) {
                    Claim::Final { state }
                } else {
                    return Ok(Current::Claimable);
                }
            }
            DeliveryState::Pending | DeliveryState::Retrying => return Ok(Current::Claimable),
        };
        Ok(Current::Decided(claim))
    }
}
