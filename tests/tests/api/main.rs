//! The HTTP API as a client sees it: every test starts a real server on `127.0.0.1:0`
//! (fresh database, own cache prefix, random token) and talks to it over a socket.
//!
//! # Layout
//!
//! - [`helpers`]: [`helpers::TestApp`] and the `spawn_app*` set-ups (SQLite + memory
//!   cache, SQLite + Redis, SQLite + a private Redis the test may stop, PostgreSQL +
//!   Redis), one method per endpoint, and the problem-format assertions.
//! - [`flows`]: scenarios written once and run on several set-ups.
//! - [`products`]: every endpoint and documented status of `/api/products`.
//! - [`errors`]: authentication and the problem format.
//! - [`bad_input`]: bad input of every kind: a 4xx naming the field, never a 5xx.
//! - [`cache`]: caching through HTTP, writes seen by the next read, Redis down.
//! - [`coherence`]: two servers on one database, one cut off from Redis; set-ups that
//!   cannot be coherent; a start without Redis.
//! - [`jobs`]: reprice jobs, seen by the next reads.
//! - [`ops`]: `/health`, `/metrics`, `/openapi.json`, `/docs`, shutdown.
//! - [`postgres`]: the main flows on PostgreSQL.
//! - [`binary`]: the real `api-server` executable.
//! - [`cluster`]: two `api-server` processes on PostgreSQL and a Redis Cluster.
//!
//! Tests needing Redis or PostgreSQL print a loud `SKIPPED` notice and pass without
//! them (`redis-server` on `PATH` or `TEST_REDIS_URL`; `TEST_DATABASE_URL`), and fail
//! in CI. Metrics are process-wide: tests compare before/after and assert "at least".

mod bad_input;
mod binary;
mod cache;
mod cluster;
mod coherence;
mod crash;
mod errors;
mod flows;
mod helpers;
mod jobs;
mod ops;
mod postgres;
mod products;
