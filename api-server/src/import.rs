//! `api-server import FILE [--dry-run]`: upsert products by sku from CSV or JSON Lines.
//!
//! This module reads and validates; [`product_service::Importer`] writes. Each row is
//! parsed by the API's own field parser into the domain types
//! ([`product_service::Sku::parse`], …), so a row is accepted exactly when the API would
//! accept the same fields, and a bad field gets the same message. Valid rows are
//! applied in batches of [`BATCH_SIZE`], one transaction each, with the cache
//! invalidated after each commit; a bad row is reported as `line N: field: reason`
//! and skipped.
//!
//! # Formats
//!
//! - **CSV** (any file name not ending in `.jsonl`): a header row names the columns
//!   ([`COLUMNS`], any order, only `sku` required). An unknown or repeated column is an
//!   error before anything is read or written. An empty cell (or one of only spaces)
//!   keeps the product's current value. Line numbers are physical lines: the header is
//!   line 1, and a quoted cell spanning lines counts each of them.
//! - **JSON Lines** (`.jsonl`): one object per line; blank lines are skipped. An absent
//!   key or `null` keeps the current value; an unknown key fails that line.
//!
//! # Layout
//!
//! - this module: the run of an import (batches, failures in line order, the summary);
//! - `source`: decoding the file, CSV or JSON Lines, into rows parsed with the domain
//!   types;
//! - `progress`: the progress bar or lines on stderr.
//!
//! # Invariants
//!
//! - Nothing is written before the header is checked, and nothing at all in a dry run.
//! - Every committed change is invalidated through the same cache as HTTP writes, and is
//!   recorded in the outbox by the database triggers, so it reaches the cache even if
//!   Redis is down during the import.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use product_service::{Importer, ProductImport, ProductService, ValidationError};

use crate::config::Settings;
use crate::startup;

mod progress;
mod source;

#[cfg(test)]
pub(crate) use progress::PROGRESS_LINE_EVERY;
pub use progress::Progress;
pub use source::{COLUMNS, Format};

use progress::Reporter;
use source::Source;

/// Rows per database transaction.
pub const BATCH_SIZE: usize = 500;

/// How to import.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Validate and count, but write nothing.
    pub dry_run: bool,
    /// How progress is shown.
    pub progress: Progress,
}

/// A row that was skipped: `line N: field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFailure {
    /// The physical line in the file where the row starts (CSV: the header is line 1).
    pub line: u64,
    /// The field at fault (`row` for a CSV record of the wrong shape, `json` for a line
    /// that is not a JSON object, or the unknown key).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RowFailure {
    fn new(line: u64, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            line,
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn invalid(line: u64, error: ValidationError) -> Self {
        Self::new(line, error.field, error.reason)
    }
}

impl fmt::Display for RowFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.reason)
    }
}

/// What an import did (or, in a dry run, would have done).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows that created a product.
    pub created: u64,
    /// Rows that changed a product.
    pub updated: u64,
    /// Rows whose fields already held the given values.
    pub unchanged: u64,
    /// Rows that were skipped.
    pub failed: u64,
    /// Why, in line order.
    pub failures: Vec<RowFailure>,
}

impl ImportReport {
    /// `created N, updated N, unchanged N, failed N`.
    pub fn summary(&self) -> String {
        format!(
            "created {}, updated {}, unchanged {}, failed {}",
            self.created, self.updated, self.unchanged, self.failed
        )
    }

    /// Whether no row failed.
    pub fn is_success(&self) -> bool {
        self.failed == 0
    }

    /// Rows read so far.
    fn rows(&self) -> u64 {
        self.created + self.updated + self.unchanged + self.failed
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// The `import` subcommand: connects as the server does, imports `file`, applies the
/// invalidations the import owes, prints the summary on stdout. Fails if a row failed
/// (after applying the others), or if the file or the database did.
///
/// If Redis cannot be reached, the import still runs: its invalidations stay in the
/// outbox until a server's relay applies them.
pub async fn run(settings: &Settings, file: &Path, dry_run: bool) -> anyhow::Result<()> {
    let service = startup::connect(settings)
        .await
        .context("failed to connect")?;
    let options = ImportOptions {
        dry_run,
        progress: Progress::Auto,
    };
    let started = Instant::now();
    let result = import_file(&service, file, &options).await;
    if !dry_run {
        // What is not settled stays in the outbox for the servers' relays.
        service.settle_import().await;
    }
    if let Err(error) = service.close().await {
        tracing::warn!(%error, "failed to close the database pool");
    }
    let report = result?;
    tracing::info!(rows = report.rows(), elapsed = ?started.elapsed(), "import finished");
    println!("{}", report.summary());
    if dry_run {
        eprintln!("dry run: nothing was written");
    }
    if report.is_success() {
        Ok(())
    } else {
        let applied = if dry_run {
            "nothing was written (dry run)"
        } else {
            "the other rows were applied"
        };
        anyhow::bail!(
            "{} row{} failed (see the lines above); {applied}",
            report.failed,
            if report.failed == 1 { "" } else { "s" }
        )
    }
}

/// Imports `path` through `service` (see the [module docs](self)); bad rows are
/// reported on stderr (in line order, batch by batch) and returned in the report. Fails
/// before writing anything if the file cannot be opened or its CSV header is wrong; fails
/// midway (earlier batches stay applied) if reading the file or the database fails.
pub async fn import_file(
    service: &ProductService,
    path: &Path,
    options: &ImportOptions,
) -> anyhow::Result<ImportReport> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut source = Source::open(Format::of(path), file)
        .with_context(|| format!("cannot import {}", path.display()))?;
    let mut reporter = Reporter::new(options.progress, size);
    let mut run = Run {
        importer: service.importer(options.dry_run),
        report: ImportReport::default(),
        rows: Vec::with_capacity(BATCH_SIZE),
        lines: Vec::with_capacity(BATCH_SIZE),
        failures: Vec::new(),
    };
    while let Some(record) = source
        .next()
        .with_context(|| format!("cannot read {}", path.display()))?
    {
        match record.row {
            Ok(row) => {
                run.rows.push(row);
                run.lines.push(record.line);
            }
            Err(failure) => run.failures.push(failure),
        }
        if run.rows.len() == BATCH_SIZE {
            run.apply(&reporter).await?;
            reporter.update(source.position(), &run.report);
        }
    }
    run.apply(&reporter).await?;
    reporter.update(source.position(), &run.report);
    reporter.finish();
    Ok(run.report)
}

/// The state of one import between batches.
struct Run {
    importer: Importer,
    report: ImportReport,
    /// The batch being collected, and the line of each of its rows.
    rows: Vec<ProductImport>,
    lines: Vec<u64>,
    /// Rows that failed to parse since the last batch (reported with it, in line order).
    failures: Vec<RowFailure>,
}

impl Run {
    /// Applies the collected rows and reports the failures up to here, in line order.
    async fn apply(&mut self, reporter: &Reporter) -> anyhow::Result<()> {
        if !self.rows.is_empty() {
            let batch = self
                .importer
                .import_batch(&self.rows)
                .await
                .with_context(|| {
                    format!(
                        "failed to apply the rows of lines {}-{} ({} before them: {})",
                        self.lines.first().copied().unwrap_or_default(),
                        self.lines.last().copied().unwrap_or_default(),
                        if self.importer.is_dry_run() {
                            "counted"
                        } else {
                            "applied"
                        },
                        self.report.summary()
                    )
                })?;
            self.report.created += batch.created;
            self.report.updated += batch.updated;
            self.report.unchanged += batch.unchanged;
            for failure in batch.failures {
                let line = self.lines.get(failure.index).copied().unwrap_or_default();
                self.failures.push(RowFailure::invalid(line, failure.error));
            }
            self.rows.clear();
            self.lines.clear();
        }
        self.failures.sort_by_key(|f| f.line);
        for failure in self.failures.drain(..) {
            reporter.println(&failure.to_string());
            self.report.failed += 1;
            self.report.failures.push(failure);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_has_the_documented_shape() {
        let report = ImportReport {
            created: 1,
            updated: 2,
            unchanged: 3,
            failed: 4,
            failures: Vec::new(),
        };
        assert_eq!(
            report.to_string(),
            "created 1, updated 2, unchanged 3, failed 4"
        );
        assert!(!report.is_success());
    }
}
