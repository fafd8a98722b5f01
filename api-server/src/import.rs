//! `api-server import FILE [--dry-run]`: upsert products by sku from CSV or JSON Lines.
//!
//! This module reads and validates; [`product_service::Importer`] writes. Each row is
//! parsed with the API's domain types ([`Sku::parse`], [`ProductName::parse`], …), so a
//! row is accepted exactly when the API would accept the same fields. Valid rows are
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
//! # Invariants
//!
//! - Nothing is written before the header is checked, and nothing at all in a dry run.
//! - Every committed change is invalidated through the same cache as HTTP writes, and is
//!   recorded in the outbox by the database triggers, so it reaches the cache even if
//!   Redis is down during the import.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use product_service::{
    Category, Description, Importer, PriceCents, ProductImport, ProductName, ProductService, Sku,
    Stock, ValidationError,
};
use serde_json::Value;

use crate::api::fields::CellField;
use crate::config::Settings;
use crate::startup;

/// Rows per database transaction.
pub const BATCH_SIZE: usize = 500;

/// The columns (CSV) or keys (JSON Lines) an import understands.
pub const COLUMNS: [&str; 6] = [
    Sku::FIELD,
    ProductName::FIELD,
    Description::FIELD,
    PriceCents::FIELD,
    Stock::FIELD,
    Category::FIELD,
];

/// Without a terminal, a progress line every this many rows.
pub(crate) const PROGRESS_LINE_EVERY: u64 = 10_000;

/// How long an import waits at its end for the servers' relays to apply what it owes,
/// when it cannot apply it itself.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The file formats, chosen by the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line (`.jsonl`).
    JsonLines,
}

impl Format {
    /// JSON Lines for a `.jsonl` file (any case), CSV for anything else.
    pub fn of(path: &Path) -> Self {
        match path.extension() {
            Some(ext) if ext.eq_ignore_ascii_case("jsonl") => Self::JsonLines,
            _ => Self::Csv,
        }
    }
}

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// A bar when stderr is a terminal, otherwise [`Lines`](Self::Lines).
    #[default]
    Auto,
    /// A progress bar.
    Bar,
    /// A plain line every 10 000 rows.
    Lines,
    /// No progress (bad rows are still reported).
    Hidden,
}

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
        flush_outbox(&service).await;
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

/// Waits until a cache can show what the import wrote: applies what the import owes
/// (after checking the cache epoch) or, when this process cannot (Redis unreachable, or
/// no Redis: a server's in-process cache is reached through its relay alone), wakes the
/// servers' relays and waits, up to [`FLUSH_TIMEOUT`], for one to apply it. What is left
/// stays in the outbox for the relays.
async fn flush_outbox(service: &ProductService) {
    if !service.coherence().flush(FLUSH_TIMEOUT).await {
        tracing::warn!(
            "the cache could not be updated yet; the outbox keeps the import's invalidations until a server's relay applies them"
        );
    }
}

/// Imports `path` through `service` (see the [module docs](self)); bad rows are
/// reported on stderr (in line order, batch by batch) and returned in the report. Fails before
/// writing anything if the file cannot be opened or its CSV header is wrong; fails
/// midway (earlier batches stay applied) if reading the file or the database fails.
pub async fn import_file(
    service: &ProductService,
    path: &Path,
    options: &ImportOptions,
) -> anyhow::Result<ImportReport> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut source = match Format::of(path) {
        Format::Csv => Source::Csv(
            CsvSource::open(file).with_context(|| format!("cannot import {}", path.display()))?,
        ),
        Format::JsonLines => Source::JsonLines(JsonLinesSource::new(file)),
    };
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

// ---------------------------------------------------------------------------------------
// Reading rows
// ---------------------------------------------------------------------------------------

/// One row of the file: where it starts, and what it says.
struct Record {
    line: u64,
    row: Result<ProductImport, RowFailure>,
}

enum Source {
    Csv(CsvSource),
    JsonLines(JsonLinesSource),
}

impl Source {
    fn next(&mut self) -> anyhow::Result<Option<Record>> {
        match self {
            Self::Csv(source) => source.next(),
            Self::JsonLines(source) => source.next(),
        }
    }

    /// Bytes of the file read so far.
    fn position(&self) -> u64 {
        match self {
            Self::Csv(source) => source.reader.position().byte(),
            Self::JsonLines(source) => source.position,
        }
    }
}

struct CsvSource {
    reader: csv::Reader<File>,
    /// For each of [`COLUMNS`], its index in the header, if present.
    columns: [Option<usize>; 6],
    record: csv::StringRecord,
}

impl CsvSource {
    /// Reads and checks the header row.
    fn open(file: File) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(file);
        let header = reader
            .headers()
            .context("cannot read the header row (line 1)")?
            .clone();
        if header.is_empty() {
            anyhow::bail!(
                "the file is empty: a CSV import starts with a header row naming its columns ({})",
                COLUMNS.join(",")
            );
        }
        let mut columns = [None; 6];
        let mut unknown = Vec::new();
        for (index, name) in header.iter().enumerate() {
            let name = name.trim();
            match COLUMNS.iter().position(|c| *c == name) {
                Some(known) if columns[known].is_some() => {
                    anyhow::bail!("column {name:?} appears twice in the header (line 1)")
                }
                Some(known) => columns[known] = Some(index),
                None => unknown.push(format!("{name:?}")),
            }
        }
        if !unknown.is_empty() {
            anyhow::bail!(
                "unknown column{} {} in the header (line 1); the columns are {} \
                 (only sku is required); nothing was imported",
                if unknown.len() == 1 { "" } else { "s" },
                unknown.join(", "),
                COLUMNS.join(", ")
            );
        }
        if columns[0].is_none() {
            anyhow::bail!(
                "the header (line 1) has no sku column; the columns are {}",
                COLUMNS.join(", ")
            );
        }
        Ok(Self {
            reader,
            columns,
            record: csv::StringRecord::new(),
        })
    }

    fn next(&mut self) -> anyhow::Result<Option<Record>> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = self.record.position().map_or(0, csv::Position::line);
                let record = &self.record;
                let cells = self.columns.map(|column| {
                    column
                        .and_then(|i| record.get(i))
                        .filter(|cell| !cell.trim().is_empty())
                });
                let row = assemble(cells).map_err(|e| RowFailure::invalid(line, e));
                Ok(Some(Record { line, row }))
            }
            Err(error) => {
                let failure = match error.kind() {
                    csv::ErrorKind::UnequalLengths {
                        pos,
                        expected_len,
                        len,
                    } => pos.as_ref().map(|pos| {
                        RowFailure::new(
                            pos.line(),
                            "row",
                            format!("has {len} fields, the header has {expected_len}"),
                        )
                    }),
                    csv::ErrorKind::Utf8 { pos, .. } => pos
                        .as_ref()
                        .map(|pos| RowFailure::new(pos.line(), "row", "is not valid UTF-8")),
                    _ => None,
                };
                match failure {
                    Some(failure) => Ok(Some(Record {
                        line: failure.line,
                        row: Err(failure),
                    })),
                    None => Err(error.into()),
                }
            }
        }
    }
}

struct JsonLinesSource {
    reader: BufReader<File>,
    line: u64,
    position: u64,
    buffer: Vec<u8>,
}

impl JsonLinesSource {
    fn new(file: File) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, file),
            line: 0,
            position: 0,
            buffer: Vec::new(),
        }
    }

    fn next(&mut self) -> anyhow::Result<Option<Record>> {
        loop {
            self.buffer.clear();
            let read = self.reader.read_until(b'\n', &mut self.buffer)?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            self.position += read as u64;
            if self.buffer.trim_ascii().is_empty() {
                continue;
            }
            let line = self.line;
            let row = parse_json_line(&self.buffer).map_err(|(field, reason)| RowFailure {
                line,
                field,
                reason,
            });
            return Ok(Some(Record { line, row }));
        }
    }
}

fn parse_json_line(bytes: &[u8]) -> Result<ProductImport, (String, String)> {
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        // serde_json appends "at line 1 column N"; the line is the file's, not 1.
        let message = error.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(m, _)| m);
        (
            "json".to_owned(),
            format!("not valid JSON: {message} at column {}", error.column()),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(("json".to_owned(), "must be a JSON object".to_owned()));
    };
    if let Some(key) = object.keys().find(|k| !COLUMNS.contains(&k.as_str())) {
        return Err((
            key.clone(),
            format!("unknown field (the fields are {})", COLUMNS.join(", ")),
        ));
    }
    let cells = COLUMNS.map(|column| object.get(column).filter(|v| !v.is_null()));
    assemble(cells).map_err(|e| (e.field.to_owned(), e.reason))
}

/// One field's raw value, as a CSV cell or a JSON value, parsed by the API's own parser
/// ([`CellField`]), so a bad field reads the same here as over HTTP.
trait Cell {
    fn parse<T: CellField>(self) -> Result<T, String>;
}

impl Cell for &str {
    fn parse<T: CellField>(self) -> Result<T, String> {
        T::from_text(self)
    }
}

impl Cell for &Value {
    fn parse<T: CellField>(self) -> Result<T, String> {
        T::from_json(self)
    }
}

/// The field in `cell`, if given.
fn field<T: CellField>(cell: Option<impl Cell>) -> Result<Option<T>, ValidationError> {
    cell.map(|c| {
        c.parse()
            .map_err(|reason| ValidationError::new(T::FIELD, reason))
    })
    .transpose()
}

/// Parses the cells of [`COLUMNS`] (absent: keep the current value) with the domain
/// types; the first bad field, in column order, is the error.
fn assemble<C: Cell>(cells: [Option<C>; 6]) -> Result<ProductImport, ValidationError> {
    let [sku, name, description, price_cents, stock, category] = cells;
    Ok(ProductImport {
        sku: field(sku)?.ok_or_else(|| ValidationError::new(Sku::FIELD, "is required"))?,
        name: field(name)?,
        description: field(description)?,
        price_cents: field(price_cents)?,
        stock: field(stock)?,
        category: field(category)?,
    })
}

// ---------------------------------------------------------------------------------------
// Progress
// ---------------------------------------------------------------------------------------

/// Shows progress on stderr, and prints bad rows without breaking the bar.
enum Reporter {
    Bar(ProgressBar),
    Lines { next: u64 },
    Hidden,
}

impl Reporter {
    fn new(progress: Progress, size: u64) -> Self {
        let progress = match progress {
            Progress::Auto if std::io::stderr().is_terminal() => Progress::Bar,
            Progress::Auto => Progress::Lines,
            other => other,
        };
        match progress {
            Progress::Bar => {
                let style = ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                let bar = ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
                    .with_style(style);
                bar.enable_steady_tick(Duration::from_millis(200));
                Self::Bar(bar)
            }
            Progress::Lines => Self::Lines {
                next: PROGRESS_LINE_EVERY,
            },
            Progress::Auto | Progress::Hidden => Self::Hidden,
        }
    }

    fn println(&self, line: &str) {
        match self {
            Self::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            _ => eprintln!("{line}"),
        }
    }

    /// After each batch: `bytes` of the file read, the counts so far.
    fn update(&mut self, bytes: u64, report: &ImportReport) {
        let rows = report.rows();
        match self {
            Self::Bar(bar) => {
                bar.set_position(bytes);
                bar.set_message(format!("{rows} rows: {}", report.summary()));
            }
            Self::Lines { next } => {
                if rows >= *next {
                    eprintln!("import: {rows} rows read; {}", report.summary());
                    *next = (rows / PROGRESS_LINE_EVERY + 1) * PROGRESS_LINE_EVERY;
                }
            }
            Self::Hidden => {}
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_row(cells: [Option<&str>; 6]) -> Result<ProductImport, ValidationError> {
        assemble(cells)
    }

    #[test]
    fn the_format_follows_the_extension() {
        assert_eq!(Format::of(Path::new("a.jsonl")), Format::JsonLines);
        assert_eq!(Format::of(Path::new("A.JSONL")), Format::JsonLines);
        assert_eq!(Format::of(Path::new("a.csv")), Format::Csv);
        assert_eq!(Format::of(Path::new("a.json")), Format::Csv);
        assert_eq!(Format::of(Path::new("products")), Format::Csv);
    }

    #[test]
    fn cells_are_parsed_with_the_domain_types_in_column_order() {
        let row = csv_row([
            Some("KB-1"),
            Some("  Keyboard "),
            None,
            Some(" 8999 "),
            Some("3"),
            None,
        ])
        .expect("valid");
        assert_eq!(row.sku.as_str(), "KB-1");
        assert_eq!(row.name.as_ref().map(ProductName::as_str), Some("Keyboard"));
        assert_eq!(row.price_cents.map(PriceCents::get), Some(8999));
        assert_eq!(row.description, None, "absent keeps the current value");

        let cases: [([Option<&str>; 6], &str, &str); 6] = [
            (
                [None, Some("n"), None, None, None, None],
                "sku",
                "is required",
            ),
            (
                [Some("a b"), None, None, None, None, None],
                "sku",
                "may only contain A-Z, a-z, 0-9, '-', '_' and '.'",
            ),
            (
                [Some("a"), None, None, Some("12.5"), Some("x"), None],
                "price_cents",
                "must be an integer",
            ),
            (
                [Some("a"), None, None, Some("-1"), None, None],
                "price_cents",
                "must be between 0 and 1000000000000",
            ),
            (
                [
                    Some("a"),
                    None,
                    None,
                    None,
                    Some("99999999999999999999"),
                    None,
                ],
                "stock",
                "must be between 0 and 1000000000",
            ),
            (
                [Some("a"), Some("   "), None, None, None, None],
                "name",
                "must be 1-200 characters after trimming",
            ),
        ];
        for (cells, field, reason) in cases {
            let error = csv_row(cells).expect_err("invalid");
            assert_eq!(
                (error.field, error.reason.as_str()),
                (field, reason),
                "{cells:?}"
            );
        }
    }

    #[test]
    fn json_lines_name_the_bad_field() {
        let cases = [
            (r#"{"sku":"a","colour":"red"}"#, "colour", "unknown field"),
            (
                r#"{"sku":"a","price_cents":"12"}"#,
                "price_cents",
                "must be an integer",
            ),
            (
                r#"{"sku":"a","price_cents":1.5}"#,
                "price_cents",
                "must be an integer",
            ),
            (
                r#"{"sku":"a","stock":18446744073709551615}"#,
                "stock",
                "must be between",
            ),
            (r#"{"sku":7}"#, "sku", "must be a string"),
            (r#"{"name":"x"}"#, "sku", "is required"),
            (r#"["sku"]"#, "json", "must be a JSON object"),
            (r#"{"sku":"a","#, "json", "not valid JSON"),
        ];
        for (line, field, reason) in cases {
            let (f, r) = parse_json_line(line.as_bytes()).expect_err(line);
            assert_eq!(f, field, "{line}");
            assert!(r.starts_with(reason), "{line}: {r}");
        }
        let row = parse_json_line(br#"{"sku":"a","name":null,"description":""}"#).expect("valid");
        assert_eq!(row.name, None, "null keeps the current value");
        assert_eq!(
            row.description.as_ref().map(Description::as_str),
            Some(""),
            "an empty string is a value"
        );
    }

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
