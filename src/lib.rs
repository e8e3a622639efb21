//! Herald: a notification worker that consumes jobs from RabbitMQ and sends each requested
//! channel (email, SMS, push) through its provider's API.
//!
//! # Layout
//!
//! The path of a job, in order:
//!
//! - [`app`]: the daemon's lifecycle: start, broker sessions that reconnect, drain.
//! - [`broker`]: RabbitMQ connections, topology, the consumer and confirmed publishing.
//! - [`pool`]: the bounded worker pool that takes deliveries from the consumer.
//! - [`handler`]: one delivery from parse to acknowledgement or dead-lettering.
//! - [`job`]: the job format producers publish, parsed and validated.
//! - [`fanout`]: a job's channels sent concurrently, each failure kept to its channel.
//! - [`routes`]: the providers of each channel, their circuit breakers and the choice of
//!   provider for each attempt.
//! - [`ledger`]: the PostgreSQL record of each (job, channel), claimed before sending so a
//!   redelivered job never sends a channel twice.
//! - [`suppression`]: recipients reported invalid, recorded and optionally skipped.
//! - [`events`]: delivery events for producers, such as an invalid recipient.
//! - [`retry`]: attempts within one delivery, with backoff and `Retry-After` hints.
//! - [`limits`]: per-provider rate limits and in-flight caps.
//! - [`providers`]: one adapter per provider API behind the `Provider` trait.
//!
//! Around it:
//!
//! - [`config`]: layered configuration and its validation.
//! - [`reload`]: provider credentials reread on SIGHUP or when a secret file changes.
//! - [`metrics`] and [`admin`]: Prometheus metrics and the admin HTTP server.
//! - [`shutdown`]: the signal every long-lived task watches.
//! - [`telemetry`]: logging setup.
//! - [`cli`], [`publish`] and [`dead_letters`]: the command line, `herald publish` and
//!   `herald dead`.
//! - [`sandbox`]: a local server speaking the provider APIs, for demos and benchmarks.

pub mod admin;
pub mod app;
pub mod broker;
pub mod cli;
pub mod config;
pub mod dead_letters;
pub mod events;
pub mod fanout;
pub mod handler;
pub mod job;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod providers;
pub mod publish;
pub mod redelivery;
pub mod reload;
pub mod retry;
pub mod routes;
pub mod sandbox;
pub mod shutdown;
pub mod suppression;
pub mod telemetry;
