//! Ledger tests against a real PostgreSQL on 127.0.0.1:5432 (user `postgres`, trust
//! authentication), or on the server named by `HERALD_TEST_POSTGRES_URL`. Each test creates
//! its own database, applies the migrations, and drops the database when it ends.

mod claim;
mod cli;
mod helpers;
mod recipients;
mod schema;
mod suppressions;
mod timeouts;
