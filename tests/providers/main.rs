//! Contract tests for the provider adapters. Each test starts a mock of the provider's API
//! on 127.0.0.1 that checks the request's wire format and answers as the provider
//! documents, then asserts how the adapter classifies the reply.

mod apns;
mod fcm;
mod form_data;
mod h2_server;
mod helpers;
mod mailgun;
mod push_routing;
mod sendgrid;
mod ses;
mod sigv4;
mod smtp;
mod smtp_server;
mod twilio;
mod vonage;
mod webhook;
mod webpush;
