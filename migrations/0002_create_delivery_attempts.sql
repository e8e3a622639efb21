-- One row per provider call, appended and never changed.
CREATE TABLE delivery_attempts (
    job_id      text        NOT NULL,
    channel     text        NOT NULL,
    -- 1 for the first call of this (job, channel), counted across deliveries.
    attempt     integer     NOT NULL CHECK (attempt >= 1),
    provider    text        NOT NULL,
    -- The HTTP status or SMTP reply code, when the provider replied.
    status_code integer,
    -- `delivered`, or the error class: permanent, transient, rate_limited, credentials.
    outcome     text        NOT NULL,
    error_code  text,
    latency_ms  bigint      NOT NULL CHECK (latency_ms >= 0),
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, channel, attempt),
    FOREIGN KEY (job_id, channel) REFERENCES deliveries (job_id, channel) ON DELETE CASCADE
);

-- Scans by time, such as error rates per provider over the last day.
CREATE INDEX delivery_attempts_at ON delivery_attempts (at);
