#![allow(unreachable_pub)]

//! End-to-end tests: Herald's binary against a real RabbitMQ and provider mocks on loopback.
//! Each test uses its own exchanges and queues.

mod helpers;

mod cli;
mod crash;
mod delivery;
mod failover;
mod isolation;
mod ledger;
mod ledger_outage;
mod limits;
mod more_providers;
mod outage;
mod panic;
mod platform;
mod poison;
mod proxy;
mod read_ahead;
mod recovery;
mod redelivery;
mod reload;
mod retry;
mod session_loss;
mod shutdown;
mod smtp;
// The scripted SMTP server of the provider tests; some of its helpers serve only those.
#[allow(dead_code)]
#[path = "../providers/smtp_server.rs"]
mod smtp_server;
mod suppression;
mod topology;
mod webhook;
