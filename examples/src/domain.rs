//! Validated inputs. Each type is built only by its `parse`, whose error names the field,
//! so the service never sees an id below 1, a negative total or a page past the limits.

use std::fmt;

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// An input that failed validation: which field, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field's name, as the caller spelled it.
    pub field: &'static str,
    /// The rule, in words.
    pub message: &'static str,
}

fn invalid(field: &'static str, message: &'static str) -> ValidationError {
    ValidationError { field, message }
}

/// Defines a positive `i64` id newtype whose `parse` names `$field`.
macro_rules! positive_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(i64);

        impl $name {
            /// Accepts 1 and above.
            pub fn parse(value: i64) -> Result<Self, ValidationError> {
                if value >= 1 {
                    Ok(Self(value))
                } else {
                    Err(invalid($field, "must be 1 or more"))
                }
            }

            /// The number.
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

positive_id!(
    /// The id of an order (assigned by the database).
    OrderId,
    "id"
);
positive_id!(
    /// The id of the customer an order belongs to.
    CustomerId,
    "customer_id"
);
positive_id!(
    /// A row version, for a write that must only apply to the version its caller saw.
    Version,
    "version"
);

/// An order's total in cents: integer money, never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalCents(i64);

impl TotalCents {
    /// The largest total accepted (ten billion in currency units).
    pub const MAX: i64 = 1_000_000_000_000;

    /// Accepts 0 to [`MAX`](Self::MAX).
    pub fn parse(cents: i64) -> Result<Self, ValidationError> {
        if (0..=Self::MAX).contains(&cents) {
            Ok(Self(cents))
        } else {
            Err(invalid(
                "total_cents",
                "must be between 0 and 1000000000000",
            ))
        }
    }

    /// The amount in cents.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Where an order is. Stored as lower-case text; sea-orm refuses a row holding any other
/// text rather than inventing a status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Placed, not paid yet.
    #[sea_orm(string_value = "pending")]
    Pending,
    /// Paid.
    #[sea_orm(string_value = "paid")]
    Paid,
    /// Handed to the carrier.
    #[sea_orm(string_value = "shipped")]
    Shipped,
    /// Called off.
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
}

impl OrderStatus {
    /// Parses `pending`, `paid`, `shipped` or `cancelled` (the stored spellings above,
    /// the only ones).
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        Self::try_from_value(&text.to_owned())
            .map_err(|_| invalid("status", "must be one of pending, paid, shipped, cancelled"))
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_value())
    }
}

/// A new order: it starts `pending` at version 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewOrder {
    /// Whose order it is.
    pub customer: CustomerId,
    /// What it costs.
    pub total: TotalCents,
}

/// One page of a customer's orders, ordered by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomerPage {
    customer: CustomerId,
    page: u32,
    per_page: u32,
}

impl CustomerPage {
    /// The largest page number accepted: offsets stay far from overflowing.
    pub const MAX_PAGE: u32 = 10_000_000;
    /// The largest page size accepted.
    pub const MAX_PER_PAGE: u32 = 100;

    /// Parses a page request: `page` from 1, `per_page` from 1 to 100.
    pub fn parse(customer: i64, page: i64, per_page: i64) -> Result<Self, ValidationError> {
        let customer = CustomerId::parse(customer)?;
        let page = u32::try_from(page)
            .ok()
            .filter(|p| (1..=Self::MAX_PAGE).contains(p))
            .ok_or_else(|| invalid("page", "must be between 1 and 10000000"))?;
        let per_page = u32::try_from(per_page)
            .ok()
            .filter(|p| (1..=Self::MAX_PER_PAGE).contains(p))
            .ok_or_else(|| invalid("per_page", "must be between 1 and 100"))?;
        Ok(Self {
            customer,
            page,
            per_page,
        })
    }

    /// Whose orders.
    pub fn customer(&self) -> CustomerId {
        self.customer
    }

    /// The 1-based page number.
    pub fn page(&self) -> u32 {
        self.page
    }

    /// Orders per page.
    pub fn per_page(&self) -> u32 {
        self.per_page
    }

    /// Rows skipped before this page.
    pub(crate) fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }

    /// The page's name inside the list group: one entry per customer, page and size.
    pub fn cache_member(&self) -> String {
        format!("c{}:p{}:n{}", self.customer, self.page, self.per_page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejected_input_names_its_field() {
        let cases = [
            (OrderId::parse(0).map(drop), "id"),
            (CustomerId::parse(-1).map(drop), "customer_id"),
            (Version::parse(0).map(drop), "version"),
            (TotalCents::parse(-1).map(drop), "total_cents"),
            (
                TotalCents::parse(TotalCents::MAX + 1).map(drop),
                "total_cents",
            ),
            (OrderStatus::parse("PAID").map(drop), "status"),
            (CustomerPage::parse(0, 1, 20).map(drop), "customer_id"),
            (CustomerPage::parse(7, 0, 20).map(drop), "page"),
            (CustomerPage::parse(7, i64::MAX, 20).map(drop), "page"),
            (CustomerPage::parse(7, 1, 0).map(drop), "per_page"),
            (CustomerPage::parse(7, 1, 101).map(drop), "per_page"),
        ];
        for (result, field) in cases {
            assert_eq!(result.map_err(|e| e.field), Err(field), "{field}");
        }
    }

    #[test]
    fn valid_inputs_parse() {
        assert_eq!(TotalCents::parse(0).map(TotalCents::get), Ok(0));
        for status in ["pending", "paid", "shipped", "cancelled"] {
            let parsed = OrderStatus::parse(status).expect("valid");
            assert_eq!(parsed.to_string(), status);
        }
        let page = CustomerPage::parse(7, 3, 20).expect("valid");
        assert_eq!(page.offset(), 40);
    }

    #[test]
    fn page_cache_members_differ_by_customer_page_and_size() {
        let member = |c, p, n| CustomerPage::parse(c, p, n).expect("valid").cache_member();
        let all = [
            member(7, 1, 20),
            member(8, 1, 20),
            member(7, 2, 20),
            member(7, 1, 10),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
