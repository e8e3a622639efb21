-- A channel skipped because its recipient is suppressed ends in the new state `suppressed`.
-- PostgreSQL named the column's CHECK constraint `deliveries_state_check`.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check CHECK (state IN (
    'pending', 'sending', 'delivered', 'retrying',
    'failed', 'dead_lettered', 'expired', 'suppressed'));

-- One row per (channel, recipient) that a provider reported as invalid: an unregistered
-- device token, a number that is not valid or opted out, an address that does not exist.
-- Herald's ledger module writes the rows; operators remove them with
-- `herald suppression remove`. docs/ledger.md describes the table.
CREATE TABLE suppressions (
    channel         text        NOT NULL CHECK (channel <> ''),
    -- HMAC-SHA256 of the recipient under ledger.recipient_hash_key, in hex, as in
    -- deliveries.recipient_hash.
    recipient_hash  text        NOT NULL,
    -- The plain recipient, only when `ledger.store_recipients` is on.
    recipient       text,
    provider        text        NOT NULL,
    -- The provider's error code, such as 21211 or UNREGISTERED.
    provider_code   text,
    -- The provider's description of the error. It never contains a recipient.
    reason          text        NOT NULL,
    -- The job whose failure last recorded the row. A redelivery of that job leaves the row
    -- as it is, so `count` counts jobs, not deliveries.
    last_job_id     text        NOT NULL,
    first_seen_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    count           integer     NOT NULL DEFAULT 1 CHECK (count >= 1),
    PRIMARY KEY (channel, recipient_hash)
);

-- Scans by time, such as "suppressed in the last day".
CREATE INDEX suppressions_last_seen_at ON suppressions (last_seen_at);
