//! `api-server import`: CSV and JSON Lines files upserted by sku through
//! `ProductService`, against real databases (SQLite and PostgreSQL) and a real Redis;
//! then the real binary against a running server.
//!
//! Expected database contents are read back with SQL on a separate connection, so a
//! wrong value cannot hide behind the cache; cache behaviour is checked through the
//! service's reads.
//!
//! `scenarios`: imports through the service on both databases; `run`: the subcommand's
//! entry point (connection, outbox, exit status); `binary`: the real executable next to
//! a running server.

mod binary;
mod helpers;
mod run;
mod scenarios;
