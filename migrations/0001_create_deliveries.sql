-- One row per (job, channel): the ledger's record of whether that channel was sent.
-- Herald's ledger module is the only writer; docs/ledger.md describes the states and the
-- claim rule.
CREATE TABLE deliveries (
    job_id              text        NOT NULL CHECK (char_length(job_id) BETWEEN 1 AND 128),
    channel             text        NOT NULL CHECK (channel <> ''),
    state               text        NOT NULL CHECK (state IN (
                                        'pending', 'sending', 'delivered', 'retrying',
                                        'failed', 'dead_lettered', 'expired')),
    provider            text        NOT NULL,
    provider_message_id text,
    -- Provider calls made for this channel across every delivery of the job.
    attempts            integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error_class    text,
    last_error_code     text,
    last_error_message  text,
    -- HMAC-SHA256 of the recipient, in hex.
    recipient_hash      text        NOT NULL,
    -- The plain recipient, only when `ledger.store_recipients` is on.
    recipient           text,
    -- Instance id of the worker that made the latest claim.
    claimed_by          text,
    claim_token         uuid,
    -- Whether the latest claim took over a stale `sending` claim, so the channel may have
    -- been sent twice.
    reclaimed           boolean     NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sending_since       timestamptz,
    delivered_at        timestamptz,
    PRIMARY KEY (job_id, channel),
    CHECK ((state = 'sending') = (sending_since IS NOT NULL)),
    CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
);

-- Scans by state, such as "failed in the last hour".
CREATE INDEX deliveries_state_updated_at ON deliveries (state, updated_at);

-- Scans for claims left in `sending`, which are few at any time.
CREATE INDEX deliveries_sending_since ON deliveries (sending_since) WHERE state = 'sending';
