//! The size of a reprice: a percentage, checked once.

use crate::domain::ValidationError;

/// A price change in percent, [`MIN`](Self::MIN) to [`MAX`](Self::MAX) (a finite number).
///
/// # Examples
///
/// ```
/// # fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
/// use product_service::RepricePercent;
///
/// let discount = RepricePercent::parse(-10.0)?;
/// assert_eq!(discount.apply(8_999), 8_099); // to the nearest cent
/// assert!(RepricePercent::parse(-95.0).is_err(), "at most -90 %");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepricePercent(f64);

impl RepricePercent {
    /// The field's name as clients spell it.
    pub const FIELD: &'static str = "percent";
    /// The largest cut, in percent.
    pub const MIN: f64 = -90.0;
    /// The largest rise, in percent.
    pub const MAX: f64 = 1000.0;

    /// Parses a percentage.
    pub fn parse(value: f64) -> Result<Self, ValidationError> {
        if !value.is_finite() || !(Self::MIN..=Self::MAX).contains(&value) {
            return Err(ValidationError::new(
                Self::FIELD,
                format!("must be between {} and {}", Self::MIN, Self::MAX),
            ));
        }
        Ok(Self(value))
    }

    /// The percentage.
    pub fn get(self) -> f64 {
        self.0
    }

    /// `price` changed by this percentage, rounded to the nearest cent (halves away from
    /// zero).
    pub fn apply(self, price: i64) -> i64 {
        (price as f64 * (100.0 + self.0) / 100.0).round() as i64
    }
}
