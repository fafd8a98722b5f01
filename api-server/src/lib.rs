//! The REST server over [`product_service::ProductService`]: a thin HTTP layer, the
//! OpenAPI document and Swagger UI, metrics, and the binary's subcommands.
//!
//! # Layout
//!
//! - [`config`]: the command line and environment (README's configuration table, row for
//!   row).
//! - [`startup`]: [`Application`]: connects, migrates, binds (port 0 works), serves until
//!   a shutdown signal.
//! - [`import`]: the `import FILE` subcommand: decodes CSV or JSON Lines (`source`),
//!   parses each field with the API's own parser, upserts in batches through
//!   [`product_service::Importer`], shows progress (`progress`) and prints a summary.
//! - `api`: one `#[OpenApi]` impl per resource; handlers parse, call the service and map
//!   the result. Every error leaves as `application/problem+json`. `api::fields` is the
//!   one parser from a JSON value (or a CSV cell) to a domain type, and documents each
//!   field with the domain type's bounds.
//! - [`middleware`]: body limit, problem documents, `Allow`, HTTP metrics, tracing, applied
//!   together by [`middleware::stack`].
//! - [`telemetry`]: the Prometheus recorder behind `/metrics`.
//!
//! # Invariants
//!
//! - No input produces a 5xx: bad input is a 4xx problem naming the field; only a
//!   failing database gives 500/503, with an opaque detail (the cause is logged).
//! - Writes need `Authorization: Bearer <API_TOKEN>`, compared in constant time.

pub mod config;
pub mod import;
pub mod middleware;
pub mod startup;
pub mod telemetry;

mod api;
#[cfg(test)]
mod docs_tests;

pub use config::{Cli, Command, Settings};
pub use import::{ImportOptions, ImportReport, Progress, RowFailure};
pub use startup::Application;
