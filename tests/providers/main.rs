//! Contract tests for the provider adapters. Each test starts a mock of the provider's API
//! on 127.0.0.1 that checks the request's wire format and answers as the provider
//! documents, then asserts how the adapter classifies the reply.

mod apns;
mod fcm;
mod h2_server;
mod helpers;
mod sendgrid;
mod twilio;
mod webpush;
