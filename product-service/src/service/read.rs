//! Reads: one product or one page, from the cache when possible, as a value or as the
//! stored JSON.

use cache_service::{CacheError, CachedJson, Scope};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{PRODUCT, PRODUCT_LIST, Product, ProductPage, ProductService};
use crate::domain::{PageQuery, ProductId};
use crate::entity::product;
use crate::error::{Error, Result};

impl ProductService {
    /// The product with `id`, from the cache when possible.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// # let keyboard = NewProduct {
    /// #     sku: Sku::parse("KB-001")?,
    /// #     name: ProductName::parse("Mechanical keyboard")?,
    /// #     description: Description::default(),
    /// #     price_cents: PriceCents::parse(8_999)?,
    /// #     stock: Stock::parse(12)?,
    /// #     category: Category::parse("keyboards")?,
    /// # };
    /// let created = service.create(keyboard).await?;
    /// let id = ProductId::parse(created.id)?;
    /// assert_eq!(service.find_by_id(id).await?, created); // a miss: loaded and cached
    /// assert_eq!(service.find_by_id(id).await?, created); // a hit
    /// assert!(matches!(
    ///     service.find_by_id(ProductId::parse(999)?).await,
    ///     Err(Error::NotFound { .. })
    /// ));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn find_by_id(&self, id: ProductId) -> Result<Product> {
        let key = self.cache().key(PRODUCT, id);
        let found = self
            .cache()
            .get_or_load(&key, || self.load_product(id))
            .await?;
        found.ok_or(Error::NotFound { id })
    }

    /// [`find_by_id`](Self::find_by_id) as the JSON of a [`Product`], for a server that
    /// sends it on: a cache hit is not decoded. `version` is the product's.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// # let keyboard = NewProduct {
    /// #     sku: Sku::parse("KB-001")?,
    /// #     name: ProductName::parse("Mechanical keyboard")?,
    /// #     description: Description::default(),
    /// #     price_cents: PriceCents::parse(8_999)?,
    /// #     stock: Stock::parse(12)?,
    /// #     category: Category::parse("keyboards")?,
    /// # };
    /// let created = service.create(keyboard).await?;
    /// let json = service.find_by_id_json(ProductId::parse(created.id)?).await?;
    /// let read: Product = serde_json::from_slice(&json.json)?;
    /// assert_eq!(read, created);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn find_by_id_json(&self, id: ProductId) -> Result<CachedJson> {
        let key = self.cache().key(PRODUCT, id);
        let found = self
            .cache()
            .get_or_load_json(&key, || self.load_product(id))
            .await?;
        found.ok_or(Error::NotFound { id })
    }

    /// One page of products ordered by id, from the cache when possible. A page of one
    /// category is cached in that category's scope of [`PRODUCT_LIST`]: writes in other
    /// categories leave it cached.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// # let keyboard = NewProduct {
    /// #     sku: Sku::parse("KB-001")?,
    /// #     name: ProductName::parse("Mechanical keyboard")?,
    /// #     description: Description::default(),
    /// #     price_cents: PriceCents::parse(8_999)?,
    /// #     stock: Stock::parse(12)?,
    /// #     category: Category::parse("keyboards")?,
    /// # };
    /// service.create(keyboard).await?;
    /// let page = service.find_in_page(&PageQuery::parse(1, 20, None)?).await?;
    /// assert_eq!((page.total, page.items.len()), (1, 1));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn find_in_page(&self, query: &PageQuery) -> Result<ProductPage> {
        let page = self
            .cache()
            .get_or_load_in(list_of(query), query.cache_member(), || {
                self.load_page(query)
            })
            .await?;
        // The loader always returns a page; a cached "absent" page cannot exist.
        Ok(page.unwrap_or_else(|| ProductPage::empty(query)))
    }

    /// [`find_in_page`](Self::find_in_page) as the JSON of a [`ProductPage`], for a
    /// server that sends it on: a cache hit is not decoded.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # use cache_service::{CacheConfig, CacheService};
    /// # use product_service::*;
    /// # let db = connect("sqlite::memory:").await?;
    /// # migrate(&db).await?;
    /// # let cache = CacheService::in_memory(CacheConfig::with_prefix("doc"), 1_000)?;
    /// # let service = ProductService::new(db, cache).await?;
    /// # let keyboard = NewProduct {
    /// #     sku: Sku::parse("KB-001")?,
    /// #     name: ProductName::parse("Mechanical keyboard")?,
    /// #     description: Description::default(),
    /// #     price_cents: PriceCents::parse(8_999)?,
    /// #     stock: Stock::parse(12)?,
    /// #     category: Category::parse("keyboards")?,
    /// # };
    /// service.create(keyboard).await?;
    /// let json = service.find_in_page_json(&PageQuery::parse(1, 20, None)?).await?;
    /// let page: ProductPage = serde_json::from_slice(&json.json)?;
    /// assert_eq!(page.total, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn find_in_page_json(&self, query: &PageQuery) -> Result<CachedJson> {
        let page = self
            .cache()
            .get_or_load_json_in(list_of(query), query.cache_member(), || {
                self.load_page(query)
            })
            .await?;
        match page {
            Some(page) => Ok(page),
            None => {
                let empty = serde_json::to_vec(&ProductPage::empty(query))
                    .map_err(|e| Error::Cache(CacheError::Serialize(e.to_string())))?;
                Ok(CachedJson {
                    version: 0,
                    json: empty.into(),
                })
            }
        }
    }

    async fn load_product(&self, id: ProductId) -> Result<Option<Product>> {
        let model = product::Entity::find_by_id(id.get()).one(&self.db).await?;
        Ok(model.map(Product::from))
    }

    async fn load_page(&self, query: &PageQuery) -> Result<Option<ProductPage>> {
        let mut select = product::Entity::find();
        if let Some(category) = query.category() {
            select = select.filter(product::Column::Category.eq(category.as_str()));
        }
        let total = select.clone().count(&self.db).await?;
        let items = select
            .order_by_asc(product::Column::Id)
            .offset(query.offset())
            .limit(u64::from(query.per_page()))
            .all(&self.db)
            .await?;
        Ok(Some(ProductPage {
            items: items.into_iter().map(Product::from).collect(),
            page: query.page(),
            per_page: query.per_page(),
            total,
        }))
    }
}

/// Where a page is cached: in its category's scope of the list group, or, unfiltered, in
/// the whole group. The scope is the category as the outbox triggers record it (the
/// column's text).
fn list_of(query: &PageQuery) -> Scope {
    match query.category() {
        Some(category) => PRODUCT_LIST.scope(category.as_str()),
        None => PRODUCT_LIST.into(),
    }
}
