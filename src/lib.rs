//! Herald: a notification worker that consumes jobs from RabbitMQ and sends each requested
//! channel (email, SMS, push) through its provider's API.
//!
//! # Layout
//!
//! - [`config`]: layered configuration and its validation.
//! - [`job`]: the job format producers publish, parsed and validated.
//! - [`providers`]: one adapter per provider API behind the `Provider` trait.

pub mod admin;
pub mod app;
pub mod broker;
pub mod cli;
pub mod config;
pub mod fanout;
pub mod handler;
pub mod job;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod providers;
pub mod publish;
pub mod retry;
pub mod routes;
pub mod shutdown;
pub mod telemetry;
