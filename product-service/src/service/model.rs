//! What reads return: a product as clients see it, and a page of them.

use cache_service::Cacheable;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::PageQuery;
use crate::entity::product;

/// A product as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Assigned by the database.
    pub id: i64,
    /// Unique stock-keeping unit.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Price in cents.
    pub price_cents: i64,
    /// Units in stock.
    pub stock: i64,
    /// Category, possibly empty.
    pub category: String,
    /// Starts at 1, +1 on every change.
    pub version: i64,
    /// When the product was created (UTC, whole seconds).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC, whole seconds).
    pub updated_at: DateTime<Utc>,
}

impl Cacheable for Product {
    fn version(&self) -> u64 {
        self.version.unsigned_abs()
    }
}

impl From<product::Model> for Product {
    fn from(m: product::Model) -> Self {
        Self {
            id: m.id,
            sku: m.sku,
            name: m.name,
            description: m.description,
            price_cents: m.price_cents,
            stock: m.stock,
            category: m.category,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// One page of the product list, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPage {
    /// The products on this page.
    pub items: Vec<Product>,
    /// The 1-based page number.
    pub page: u32,
    /// Page size asked for.
    pub per_page: u32,
    /// Number of products matching the filter, on all pages.
    pub total: u64,
}

impl ProductPage {
    /// A page with nothing on it.
    pub(super) fn empty(query: &PageQuery) -> Self {
        Self {
            items: Vec::new(),
            page: query.page(),
            per_page: query.per_page(),
            total: 0,
        }
    }
}

impl Cacheable for ProductPage {
    fn version(&self) -> u64 {
        0 // pages are invalidated by their group's generation, not by version fences
    }
}
