//! Request fields that parse straight into domain types.
//!
//! `Field<Sku>` is documented in the OpenAPI schema with the contract's rules (pattern,
//! bounds, an example) and parsed by [`Sku::parse`] itself, so there is one authority for
//! each rule and every rejection names its field: a wrong JSON type, a missing value and
//! a broken rule all read `price_cents: …`.

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
    fn from_json(value: Value) -> Result<Self, String>;
    /// The value as JSON.
    fn to_json(&self) -> Value;
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
            Some(value) => match D::from_json(value) {
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

fn integer_schema(max: i64, example: i64) -> MetaSchema {
    MetaSchema {
        minimum: Some(0.0),
        maximum: Some(max as f64),
        example: Some(Value::from(example)),
        ..MetaSchema::new_with_format("integer", "int64")
    }
}

/// A JSON string (the domain type then applies its rules, NUL characters included).
fn string_value(value: Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("must be a string, not {}", json_kind(&other))),
    }
}

fn integer_value(value: Value) -> Result<i64, String> {
    match &value {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("must be an integer, not {n}")),
        other => Err(format!("must be an integer, not {}", json_kind(other))),
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

impl DomainField for Sku {
    const FIELD: &'static str = "sku";
    fn schema() -> MetaSchema {
        string_schema(1, 64, Some("^[A-Za-z0-9._-]{1,64}$"), "KB-001")
    }
    fn from_json(value: Value) -> Result<Self, String> {
        Sku::parse(string_value(value)?).map_err(|e| e.reason)
    }
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
}

impl DomainField for ProductName {
    const FIELD: &'static str = "name";
    fn schema() -> MetaSchema {
        // Trimmed before counting: one character that is neither NUL nor white space
        // (spelled out: `str::trim`'s set, which `\s` differs from between regex engines).
        string_schema(
            1,
            200,
            Some(
                r"^[^\x00]*[^\x00\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000][^\x00]*$",
            ),
            "Mechanical keyboard",
        )
    }
    fn from_json(value: Value) -> Result<Self, String> {
        ProductName::parse(string_value(value)?).map_err(|e| e.reason)
    }
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
}

impl DomainField for Description {
    const FIELD: &'static str = "description";
    fn schema() -> MetaSchema {
        string_schema(0, 10_000, Some(NO_NUL), "Tenkeyless, brown switches")
    }
    fn from_json(value: Value) -> Result<Self, String> {
        Description::parse(string_value(value)?).map_err(|e| e.reason)
    }
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
}

impl DomainField for Category {
    const FIELD: &'static str = "category";
    fn schema() -> MetaSchema {
        string_schema(0, 100, Some(NO_NUL), "keyboards")
    }
    fn from_json(value: Value) -> Result<Self, String> {
        Category::parse(string_value(value)?).map_err(|e| e.reason)
    }
    fn to_json(&self) -> Value {
        Value::String(self.to_string())
    }
}

impl DomainField for PriceCents {
    const FIELD: &'static str = "price_cents";
    fn schema() -> MetaSchema {
        integer_schema(1_000_000_000_000, 8999)
    }
    fn from_json(value: Value) -> Result<Self, String> {
        PriceCents::parse(integer_value(value)?).map_err(|e| e.reason)
    }
    fn to_json(&self) -> Value {
        Value::from(self.get())
    }
}

impl DomainField for Stock {
    const FIELD: &'static str = "stock";
    fn schema() -> MetaSchema {
        integer_schema(1_000_000_000, 12)
    }
    fn from_json(value: Value) -> Result<Self, String> {
        Stock::parse(integer_value(value)?).map_err(|e| e.reason)
    }
    fn to_json(&self) -> Value {
        Value::from(self.get())
    }
}

impl DomainField for RepricePercent {
    const FIELD: &'static str = "percent";
    fn schema() -> MetaSchema {
        MetaSchema {
            minimum: Some(-90.0),
            maximum: Some(1000.0),
            example: Some(Value::from(10)),
            ..MetaSchema::new_with_format("number", "double")
        }
    }
    fn from_json(value: Value) -> Result<Self, String> {
        match &value {
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
    }
}
