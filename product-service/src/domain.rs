//! Domain types that validate once, at the edge ("parse, don't validate").
//!
//! Each type's only constructor is `parse`, which returns a [`ValidationError`] naming
//! the field. Code that holds a [`Sku`] never checks it again. The rules are those of
//! the API contract.

use std::fmt;

/// Why an input was rejected: the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The field's name as clients spell it (`sku`, `price_cents`, `page`, …).
    pub field: &'static str,
    /// The rule, in words.
    pub reason: String,
}

impl ValidationError {
    /// A rejection of `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

type Parsed<T> = Result<T, ValidationError>;

/// Text may hold any character but NUL, which PostgreSQL cannot store in `text`.
fn reject_nul(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.contains('\0') {
        return Err(ValidationError::new(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, empty_default) => {
        string_newtype!($(#[$doc])* $name);

        /// The empty string, which this type allows.
        impl Default for $name {
            fn default() -> Self {
                Self(String::new())
            }
        }
    };
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

string_newtype!(
    /// 1 to [`MAX_LEN`](Self::MAX_LEN) characters of `A-Z a-z 0-9 - _ .`; unique among
    /// products.
    Sku
);
string_newtype!(
    /// 1 to [`MAX_LEN`](Self::MAX_LEN) characters after trimming surrounding whitespace
    /// (stored trimmed).
    ProductName
);
string_newtype!(
    /// 0 to [`MAX_LEN`](Self::MAX_LEN) characters.
    Description,
    empty_default
);
string_newtype!(
    /// 0 to [`MAX_LEN`](Self::MAX_LEN) characters; the empty string means "uncategorised".
    Category,
    empty_default
);

impl Sku {
    /// The field's name as clients spell it.
    pub const FIELD: &'static str = "sku";
    /// The longest sku, in characters (the shortest is one).
    pub const MAX_LEN: usize = 64;

    /// Parses a sku.
    pub fn parse(value: impl Into<String>) -> Parsed<Self> {
        let value = value.into();
        let len = value.chars().count();
        if !(1..=Self::MAX_LEN).contains(&len) {
            return Err(ValidationError::new(
                Self::FIELD,
                format!("must be 1-{} characters", Self::MAX_LEN),
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ValidationError::new(
                Self::FIELD,
                "may only contain A-Z, a-z, 0-9, '-', '_' and '.'",
            ));
        }
        Ok(Self(value))
    }
}

impl ProductName {
    /// The field's name as clients spell it.
    pub const FIELD: &'static str = "name";
    /// The longest name after trimming, in characters (the shortest is one).
    pub const MAX_LEN: usize = 200;

    /// Parses a name, trimming surrounding whitespace.
    pub fn parse(value: impl AsRef<str>) -> Parsed<Self> {
        reject_nul(Self::FIELD, value.as_ref())?;
        let trimmed = value.as_ref().trim();
        if !(1..=Self::MAX_LEN).contains(&trimmed.chars().count()) {
            return Err(ValidationError::new(
                Self::FIELD,
                format!("must be 1-{} characters after trimming", Self::MAX_LEN),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
}

/// Optional free text of at most `max_len` characters, without NUL.
fn bounded_text(field: &'static str, max_len: usize, value: String) -> Parsed<String> {
    reject_nul(field, &value)?;
    if value.chars().count() > max_len {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max_len} characters"),
        ));
    }
    Ok(value)
}

impl Description {
    /// The field's name as clients spell it.
    pub const FIELD: &'static str = "description";
    /// The longest description, in characters (it may be empty).
    pub const MAX_LEN: usize = 10_000;

    /// Parses a description.
    pub fn parse(value: impl Into<String>) -> Parsed<Self> {
        bounded_text(Self::FIELD, Self::MAX_LEN, value.into()).map(Self)
    }
}

impl Category {
    /// The field's name as clients spell it.
    pub const FIELD: &'static str = "category";
    /// The longest category, in characters (it may be empty).
    pub const MAX_LEN: usize = 100;

    /// Parses a category.
    pub fn parse(value: impl Into<String>) -> Parsed<Self> {
        bounded_text(Self::FIELD, Self::MAX_LEN, value.into()).map(Self)
    }
}

macro_rules! bounded_integer {
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:expr, $max:expr) => {
        bounded_integer!(
            $(#[$doc])* $name, $field, $min, $max,
            format!("must be between {} and {}", $name::MIN, $name::MAX)
        );
    };
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:expr, $max:expr, $rule:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(i64);

        impl $name {
            /// The field's name as clients spell it.
            pub const FIELD: &'static str = $field;
            /// The smallest value accepted.
            pub const MIN: i64 = $min;
            /// The largest value accepted.
            pub const MAX: i64 = $max;

            /// Parses the value.
            pub fn parse(value: i64) -> Parsed<Self> {
                if !(Self::MIN..=Self::MAX).contains(&value) {
                    return Err(ValidationError::new(Self::FIELD, $rule));
                }
                Ok(Self(value))
            }

            /// The validated value.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

bounded_integer!(
    /// A price in cents, [`MIN`](Self::MIN) to [`MAX`](Self::MAX) (10^12). Money stays
    /// integer end to end.
    PriceCents, "price_cents", 0, 1_000_000_000_000
);
bounded_integer!(
    /// Units in stock, [`MIN`](Self::MIN) to [`MAX`](Self::MAX) (10^9).
    Stock, "stock", 0, 1_000_000_000
);
bounded_integer!(
    /// A product id: positive.
    ProductId, "id", 1, i64::MAX, "must be a positive integer"
);
bounded_integer!(
    /// A row version: starts at 1, +1 on every change.
    Version, "version", 1, i64::MAX, "must be a positive integer"
);

impl Version {
    /// A version read back from the database.
    pub(crate) fn from_db(version: i64) -> Self {
        Self(version)
    }
}

/// Every writable field: the input of create and of full replace (PUT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProduct {
    /// Unique stock-keeping unit.
    pub sku: Sku,
    /// Display name.
    pub name: ProductName,
    /// Free text, may be empty.
    pub description: Description,
    /// Price in cents.
    pub price_cents: PriceCents,
    /// Units in stock.
    pub stock: Stock,
    /// Category, may be empty.
    pub category: Category,
}

/// Any subset of the writable fields (PATCH). `None` leaves the field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductPatch {
    /// New sku.
    pub sku: Option<Sku>,
    /// New name.
    pub name: Option<ProductName>,
    /// New description.
    pub description: Option<Description>,
    /// New price.
    pub price_cents: Option<PriceCents>,
    /// New stock.
    pub stock: Option<Stock>,
    /// New category.
    pub category: Option<Category>,
}

/// A full replace is a patch of every field.
impl From<NewProduct> for ProductPatch {
    fn from(input: NewProduct) -> Self {
        Self {
            sku: Some(input.sku),
            name: Some(input.name),
            description: Some(input.description),
            price_cents: Some(input.price_cents),
            stock: Some(input.stock),
            category: Some(input.category),
        }
    }
}

impl ProductPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A page of the product list: `page` 1 to [`MAX_PAGE`](Self::MAX_PAGE), `per_page` 1 to
/// [`MAX_PER_PAGE`](Self::MAX_PER_PAGE), optional category filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    page: u32,
    per_page: u32,
    category: Option<Category>,
}

impl PageQuery {
    /// The largest page number accepted; far beyond any real catalogue, small enough that
    /// offsets never overflow.
    pub const MAX_PAGE: u32 = 10_000_000;
    /// The largest page size accepted.
    pub const MAX_PER_PAGE: u32 = 100;

    /// Parses a page request.
    pub fn parse(page: i64, per_page: i64, category: Option<String>) -> Parsed<Self> {
        let page = u32::try_from(page)
            .ok()
            .filter(|p| (1..=Self::MAX_PAGE).contains(p))
            .ok_or_else(|| {
                ValidationError::new("page", format!("must be between 1 and {}", Self::MAX_PAGE))
            })?;
        let per_page = u32::try_from(per_page)
            .ok()
            .filter(|p| (1..=Self::MAX_PER_PAGE).contains(p))
            .ok_or_else(|| {
                ValidationError::new(
                    "per_page",
                    format!("must be between 1 and {}", Self::MAX_PER_PAGE),
                )
            })?;
        let category = category.map(Category::parse).transpose()?;
        Ok(Self {
            page,
            per_page,
            category,
        })
    }

    /// The 1-based page number.
    pub fn page(&self) -> u32 {
        self.page
    }

    /// Items per page.
    pub fn per_page(&self) -> u32 {
        self.per_page
    }

    /// The category filter.
    pub fn category(&self) -> Option<&Category> {
        self.category.as_ref()
    }

    pub(crate) fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }

    /// The page's member name in the list cache group; distinct for distinct queries
    /// (the category, if any, comes last, so it may contain any character).
    pub(crate) fn cache_member(&self) -> String {
        match &self.category {
            Some(c) => format!("p{}:n{}:c={}", self.page, self.per_page, c),
            None => format!("p{}:n{}:all", self.page, self.per_page),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_follow_the_contract() {
        for ok in ["KB-001", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(Sku::parse(ok).is_ok(), "{ok:?} should be accepted");
        }
        for bad in ["", "has space", "é", "a/b", &"x".repeat(65)] {
            let err = Sku::parse(bad).expect_err(bad);
            assert_eq!(err.field, "sku", "{bad:?}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            ProductName::parse("  Keyboard ").map(String::from),
            Ok("Keyboard".into())
        );
        assert_eq!(ProductName::parse("   ").map_err(|e| e.field), Err("name"));
        assert!(
            ProductName::parse("é".repeat(200)).is_ok(),
            "limits count characters, not bytes"
        );
        assert!(ProductName::parse("é".repeat(201)).is_err());
    }

    #[test]
    fn integers_are_bounded_as_the_contract_says() {
        assert!(PriceCents::parse(0).is_ok());
        assert!(PriceCents::parse(1_000_000_000_000).is_ok());
        assert_eq!(
            PriceCents::parse(-1).map_err(|e| e.field),
            Err("price_cents")
        );
        assert_eq!(
            PriceCents::parse(1_000_000_000_001).map_err(|e| e.field),
            Err("price_cents")
        );
        assert!(Stock::parse(1_000_000_000).is_ok());
        assert_eq!(
            Stock::parse(1_000_000_001).map_err(|e| e.field),
            Err("stock")
        );
        assert_eq!(ProductId::parse(0).map_err(|e| e.field), Err("id"));
    }

    #[test]
    fn text_limits_count_characters() {
        assert!(Description::parse("x".repeat(10_000)).is_ok());
        assert_eq!(
            Description::parse("x".repeat(10_001)).map_err(|e| e.field),
            Err("description")
        );
        assert!(Category::parse("").is_ok());
        assert_eq!(
            Category::parse("x".repeat(101)).map_err(|e| e.field),
            Err("category")
        );
    }

    #[test]
    fn nul_characters_are_refused_in_text() {
        assert_eq!(ProductName::parse("a\0b").map_err(|e| e.field), Err("name"));
        assert_eq!(
            Description::parse("a\0b").map_err(|e| e.field),
            Err("description")
        );
        assert_eq!(
            Category::parse("a\0b").map_err(|e| e.field),
            Err("category")
        );
    }

    #[test]
    fn page_queries_are_bounded() {
        assert!(PageQuery::parse(1, 100, None).is_ok());
        assert_eq!(
            PageQuery::parse(0, 20, None).map_err(|e| e.field),
            Err("page")
        );
        assert_eq!(
            PageQuery::parse(1, 0, None).map_err(|e| e.field),
            Err("per_page")
        );
        assert_eq!(
            PageQuery::parse(1, 101, None).map_err(|e| e.field),
            Err("per_page")
        );
        assert_eq!(
            PageQuery::parse(i64::MAX, 20, None).map_err(|e| e.field),
            Err("page")
        );
        let q = PageQuery::parse(3, 20, None).expect("valid");
        assert_eq!(q.offset(), 40);
    }

    #[test]
    fn page_cache_members_are_distinct() {
        let a = PageQuery::parse(1, 20, None).expect("valid").cache_member();
        let b = PageQuery::parse(1, 20, Some(String::new()))
            .expect("valid")
            .cache_member();
        let c = PageQuery::parse(1, 20, Some("all".into()))
            .expect("valid")
            .cache_member();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(b, c);
    }
}
