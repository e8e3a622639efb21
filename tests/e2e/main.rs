#![allow(unreachable_pub)]

//! End-to-end tests: Herald's binary against a real RabbitMQ and provider mocks on loopback.
//! Each test uses its own exchanges and queues.

mod helpers;

mod cli;
mod crash;
mod delivery;
mod isolation;
mod ledger;
mod limits;
mod outage;
mod poison;
mod proxy;
mod recovery;
mod redelivery;
mod retry;
mod shutdown;
mod suppression;
mod topology;
