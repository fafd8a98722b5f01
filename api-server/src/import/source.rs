//! Decoding an import file into rows: CSV (a header row names the columns) or JSON Lines,
//! each field parsed by the API's own parser ([`CellField`]), so a bad field reads the
//! same here as over HTTP.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::Context;
use product_service::{
    Category, Description, PriceCents, ProductImport, ProductName, Sku, Stock, ValidationError,
};
use serde_json::Value;

use super::RowFailure;
use crate::api::fields::CellField;

/// How many fields a row may give.
const FIELDS: usize = 6;

/// The columns (CSV) or keys (JSON Lines) an import understands.
pub const COLUMNS: [&str; FIELDS] = [
    Sku::FIELD,
    ProductName::FIELD,
    Description::FIELD,
    PriceCents::FIELD,
    Stock::FIELD,
    Category::FIELD,
];

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

/// One row of the file: where it starts, and what it says.
pub(super) struct Record {
    pub(super) line: u64,
    pub(super) row: Result<ProductImport, RowFailure>,
}

/// An open import file, read row by row.
pub(super) enum Source {
    Csv(CsvSource),
    JsonLines(JsonLinesSource),
}

impl Source {
    /// Opens `file` as `format`; a CSV file's header row is read and checked here.
    pub(super) fn open(format: Format, file: File) -> anyhow::Result<Self> {
        Ok(match format {
            Format::Csv => Self::Csv(CsvSource::open(file)?),
            Format::JsonLines => Self::JsonLines(JsonLinesSource::new(file)),
        })
    }

    /// The next row, or `None` at the end of the file.
    pub(super) fn next(&mut self) -> anyhow::Result<Option<Record>> {
        match self {
            Self::Csv(source) => source.next(),
            Self::JsonLines(source) => source.next(),
        }
    }

    /// Bytes of the file read so far.
    pub(super) fn position(&self) -> u64 {
        match self {
            Self::Csv(source) => source.reader.position().byte(),
            Self::JsonLines(source) => source.position,
        }
    }
}

pub(super) struct CsvSource {
    reader: csv::Reader<File>,
    /// For each of [`COLUMNS`], its index in the header, if present.
    columns: [Option<usize>; FIELDS],
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
        let mut columns = [None; FIELDS];
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

pub(super) struct JsonLinesSource {
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
fn assemble<C: Cell>(cells: [Option<C>; FIELDS]) -> Result<ProductImport, ValidationError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_row(cells: [Option<&str>; FIELDS]) -> Result<ProductImport, ValidationError> {
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

        let cases: [([Option<&str>; FIELDS], &str, &str); 6] = [
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
}
