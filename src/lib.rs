//! Herald: a notification worker that consumes jobs from RabbitMQ and sends each requested
//! channel (email, SMS, push) through its provider's API.
//!
//! # Layout
//!
//! - [`config`]: layered configuration and its validation.
//! - [`job`]: the job format producers publish, parsed and validated.
//! - [`providers`]: one adapter per provider API behind the `Provider` trait.
//! - [`sandbox`]: a local server speaking the provider APIs, for demos and benchmarks.

pub mod config;
pub mod job;
pub mod providers;
pub mod sandbox;
