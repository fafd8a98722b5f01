//! Request fields that parse straight into domain types: the one parser from a JSON value
//! (or an import's CSV cell) to a domain type.
//!
//! `Field<Sku>` is documented in the OpenAPI schema with the contract's rules (pattern,
//! bounds, an example), which are the domain type's constants ([`Sku::MAX_LEN`],
//! [`PriceCents::MAX`], …), and parsed by [`Sku::parse`] itself, so there is one authority
//! for each rule and every rejection names its field: a wrong JSON type, a missing value
//! and a broken rule all read `price_cents: …`. `api-server import` parses its rows with
//! the same [`DomainField`] functions, so a bad field gets the same message from an
//! import as over HTTP.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use product_service::{Category, Description, PriceCents, ProductName, RepricePercent, Sku, Stock};
use serde_json::Value;

/// A domain type that can arrive as one JSON field.
pub trait DomainField: Sized + Send + Sync + 'static {
    /// The field's name as clients spell it.
    const FIELD: &'static str;
    /// The schema, with the rules and an example.
    fn schema() -> MetaSchema;
    /// Parses the JSON value; the error is the reason, without the field name.
    fn from_json(value: &Value) -> Result<Self, String>;
    /// The value as JSON.
    fn to_json(&self) -> Value;
}

/// A product field, which an import also reads from a CSV cell.
pub trait CellField: DomainField {
    /// Parses a CSV cell (not empty); the error is the reason, without the field name.
    fn from_text(text: &str) -> Result<Self, String>;
}

/// A request field holding an already-validated domain value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<D>(pub D);

impl<D: DomainField> Type for Field<D> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        format!("field_{}", D::FIELD).into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(D::schema()))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<D: DomainField> ParseFromJSON for Field<D> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let reason = match value {
            None | Some(Value::Null) => "is required".to_owned(),
            Some(value) => match D::from_json(&value) {
                Ok(parsed) => return Ok(Field(parsed)),
                Err(reason) => reason,
            },
        };
        // `field `x` …` is the shape the problem mapper turns into `x: …`.
        Err(ParseError::custom(format!("field `{}` {reason}", D::FIELD)))
    }
}

impl<D: DomainField> ToJSON for Field<D> {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.to_json())
    }
}

/// The pattern of free text: anything but NUL, which the domain types refuse.
const NO_NUL: &str = r"^[^\x00]*$";

fn string_schema(min: usize, max: usize, pattern: Option<&str>, example: &str) -> MetaSchema {
    MetaSchema {
        min_length: Some(min),
        max_length: Some(max),
        pattern: pattern.map(str::to_owned),
        example: Some(Value::String(example.to_owned())),
        ..MetaSchema::new("string")
    }
}

fn integer_schema(min: i64, max: i64, example: i64) -> MetaSchema {
    MetaSchema {
        minimum: Some(min as f64),
        maximum: Some(max as f64),
        example: Some(Value::from(example)),
        ..MetaSchema::new_with_format("integer", "int64")
    }
}

/// A JSON string (the domain type then applies its rules, NUL characters included).
fn string_value(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("must be a string, not {}", json_kind(other))),
    }
}

/// A JSON integer. One beyond `i64` (serde_json holds up to `u64::MAX` as an integer) is
/// out of every field's range, and becomes `i64::MAX` for the domain type to say so.
fn integer_value(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) if n.is_u64() && !n.is_i64() => Ok(i64::MAX),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("must be an integer, not {n}")),
        other => Err(format!("must be an integer, not {}", json_kind(other))),
    }
}

/// A CSV cell holding an integer (surrounding spaces allowed). One beyond `i64` is out of
/// every field's range, and saturates for the domain type to say so.
fn integer_text(text: &str) -> Result<i64, String> {
    use std::num::IntErrorKind;
    match text.trim().parse::<i64>() {
        Ok(n) => Ok(n),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Ok(i64::MAX),
        Err(e) if *e.kind() == IntErrorKind::NegOverflow => Ok(i64::MIN),
        Err(_) => Err("must be an integer".to_owned()),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A text field: a JSON string or a CSV cell as it is, parsed by the domain type.
macro_rules! text_field {
    ($name:ident, $schema:expr) => {
        impl DomainField for $name {
            const FIELD: &'static str = $name::FIELD;
            fn schema() -> MetaSchema {
                $schema
            }
            fn from_json(value: &Value) -> Result<Self, String> {
                Self::from_text(string_value(value)?)
            }
            fn to_json(&self) -> Value {
                Value::String(self.to_string())
            }
        }

        impl CellField for $name {
            fn from_text(text: &str) -> Result<Self, String> {
                $name::parse(text).map_err(|e| e.reason)
            }
        }
    };
}

/// An integer field, bounded by the domain type's `MIN` and `MAX`.
macro_rules! integer_field {
    ($name:ident, $example:expr) => {
        impl DomainField for $name {
            const FIELD: &'static str = $name::FIELD;
            fn schema() -> MetaSchema {
                integer_schema($name::MIN, $name::MAX, $example)
            }
            fn from_json(value: &Value) -> Result<Self, String> {
                $name::parse(integer_value(value)?).map_err(|e| e.reason)
            }
            fn to_json(&self) -> Value {
                Value::from(self.get())
            }
        }

        impl CellField for $name {
            fn from_text(text: &str) -> Result<Self, String> {
                $name::parse(integer_text(text)?).map_err(|e| e.reason)
            }
        }
    };
}

text_field!(
    Sku,
    string_schema(
        1,
        Sku::MAX_LEN,
        Some(&format!("^[A-Za-z0-9._-]{{1,{}}}$", Sku::MAX_LEN)),
        "KB-001"
    )
);
// Trimmed before counting: one character that is neither NUL nor white space (spelled
// out: `str::trim`'s set, which `\s` differs from between regex engines).
text_field!(
    ProductName,
    string_schema(
        1,
        ProductName::MAX_LEN,
        Some(
            r"^[^\x00]*[^\x00\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00]*$",
        ),
        "Mechanical keyboard",
    )
);
text_field!(
    Description,
    string_schema(
        0,
        Description::MAX_LEN,
        Some(NO_NUL),
        "Tenkeyless, brown switches"
    )
);
text_field!(
    Category,
    string_schema(0, Category::MAX_LEN, Some(NO_NUL), "keyboards")
);
integer_field!(PriceCents, 8999);
integer_field!(Stock, 12);

impl DomainField for RepricePercent {
    const FIELD: &'static str = RepricePercent::FIELD;
    fn schema() -> MetaSchema {
        MetaSchema {
            minimum: Some(RepricePercent::MIN),
            maximum: Some(RepricePercent::MAX),
            example: Some(Value::from(10)),
            ..MetaSchema::new_with_format("number", "double")
        }
    }
    fn from_json(value: &Value) -> Result<Self, String> {
        match value {
            Value::Number(n) => n
                .as_f64()
                .ok_or_else(|| format!("must be a number, not {n}"))
                .and_then(|p| RepricePercent::parse(p).map_err(|e| e.reason)),
            other => Err(format!("must be a number, not {}", json_kind(other))),
        }
    }
    fn to_json(&self) -> Value {
        Value::from(self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason<D: DomainField>(value: Option<Value>) -> String {
        match Field::<D>::parse_from_json(value) {
            Ok(_) => "ok".to_owned(),
            // poem-openapi prefixes `failed to parse "field_x": `; the rest is ours.
            Err(e) => {
                let message = e.into_message();
                match message.split_once("\": ") {
                    Some((_, reason)) => reason.to_owned(),
                    None => message,
                }
            }
        }
    }

    #[test]
    fn every_rejection_names_its_field() {
        assert_eq!(
            reason::<PriceCents>(Some(json!("abc"))),
            "field `price_cents` must be an integer, not a string"
        );
        assert_eq!(
            reason::<PriceCents>(Some(json!(1.5))),
            "field `price_cents` must be an integer, not 1.5"
        );
        assert_eq!(
            reason::<PriceCents>(Some(json!(-1))),
            "field `price_cents` must be between 0 and 1000000000000"
        );
        assert_eq!(reason::<Stock>(None), "field `stock` is required");
        assert_eq!(
            reason::<Sku>(Some(json!(5))),
            "field `sku` must be a string, not a number"
        );
        assert_eq!(
            reason::<ProductName>(Some(json!("  "))),
            "field `name` must be 1-200 characters after trimming"
        );
        assert_eq!(
            reason::<Description>(Some(json!("a\u{0}b"))),
            "field `description` must not contain NUL characters"
        );
        assert_eq!(reason::<Category>(Some(json!("ok"))), "ok");
        assert_eq!(
            reason::<Stock>(Some(json!(u64::MAX))),
            "field `stock` must be between 0 and 1000000000",
            "an integer beyond i64 is out of range, as in an import"
        );
    }
}
