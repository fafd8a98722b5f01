//! `/api/products`: thin handlers. Parse (into domain types), call the service, map.

use chrono::{TimeZone, Utc};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::{Example, MaybeUndefined};
use poem_openapi::{ApiResponse, Object, OpenApi};
use product_service::{
    Category, Description, NewProduct, PageQuery, PriceCents, Product, ProductId, ProductName,
    ProductPatch, ProductService, Sku, Stock, ValidationError, Version,
};

use super::ApiTags;
use super::auth::WriteAuth;
use super::fields::{DomainField, Field};
use super::json_bytes::JsonBytes;
use super::problem::ApiError;
use super::timestamp::Timestamp;

/// A product. Documents the JSON of [`Product`], which is what is sent (from the cache
/// as stored, or serialized after a write).
#[derive(Debug, Object)]
#[oai(rename = "Product", example)]
pub struct ProductBody {
    /// Assigned by the server.
    id: i64,
    /// Stock-keeping unit: 1–64 characters of `A-Z a-z 0-9 - _ .`, unique.
    sku: String,
    /// Display name, 1–200 characters.
    name: String,
    /// Free text, up to 10 000 characters.
    description: String,
    /// Price in cents (0 to 10^12).
    price_cents: i64,
    /// Units in stock (0 to 10^9).
    stock: i64,
    /// Category, up to 100 characters; may be empty.
    category: String,
    /// Starts at 1, +1 on every change; also the `ETag` (`"v3"`).
    version: i64,
    /// Creation time, RFC 3339 UTC.
    created_at: Timestamp,
    /// Time of the last change, RFC 3339 UTC.
    updated_at: Timestamp,
}

impl Example for ProductBody {
    fn example() -> Self {
        let at = |minute| {
            Timestamp(
                Utc.with_ymd_and_hms(2026, 11, 26, 10, minute, 0)
                    .single()
                    .unwrap_or_default(),
            )
        };
        Self {
            id: 42,
            sku: "KB-001".to_owned(),
            name: "Mechanical keyboard".to_owned(),
            description: "Tenkeyless, brown switches".to_owned(),
            price_cents: 8999,
            stock: 12,
            category: "keyboards".to_owned(),
            version: 3,
            created_at: at(0),
            updated_at: at(5),
        }
    }
}

/// The writable fields of a product (create and full replace).
#[derive(Debug, Object)]
#[oai(rename = "ProductInput", deny_unknown_fields)]
pub struct ProductInput {
    /// Stock-keeping unit: 1–64 characters of `A-Z a-z 0-9 - _ .`, unique.
    sku: Field<Sku>,
    /// Display name, 1–200 characters after trimming.
    name: Field<ProductName>,
    /// Free text, up to 10 000 characters (absent or `null`: empty).
    #[oai(nullable)]
    description: Option<Field<Description>>,
    /// Price in cents (0 to 10^12).
    price_cents: Field<PriceCents>,
    /// Units in stock (0 to 10^9).
    stock: Field<Stock>,
    /// Category, up to 100 characters (absent or `null`: empty).
    #[oai(nullable)]
    category: Option<Field<Category>>,
}

impl From<ProductInput> for NewProduct {
    fn from(input: ProductInput) -> Self {
        NewProduct {
            sku: input.sku.0,
            name: input.name.0,
            description: input.description.map(|f| f.0).unwrap_or_default(),
            price_cents: input.price_cents.0,
            stock: input.stock.0,
            category: input.category.map(|f| f.0).unwrap_or_default(),
        }
    }
}

/// Any subset of the writable fields. Omitted fields keep their value; `null` is
/// rejected.
#[derive(Debug, Object)]
#[oai(rename = "ProductPatch", deny_unknown_fields)]
pub struct ProductPatchBody {
    /// New sku.
    sku: MaybeUndefined<Field<Sku>>,
    /// New name.
    name: MaybeUndefined<Field<ProductName>>,
    /// New description.
    description: MaybeUndefined<Field<Description>>,
    /// New price in cents.
    price_cents: MaybeUndefined<Field<PriceCents>>,
    /// New stock.
    stock: MaybeUndefined<Field<Stock>>,
    /// New category.
    category: MaybeUndefined<Field<Category>>,
}

fn patch_field<T: DomainField>(
    value: MaybeUndefined<Field<T>>,
) -> Result<Option<T>, ValidationError> {
    match value {
        MaybeUndefined::Undefined => Ok(None),
        MaybeUndefined::Null => Err(ValidationError::new(T::FIELD, "must not be null")),
        MaybeUndefined::Value(v) => Ok(Some(v.0)),
    }
}

impl TryFrom<ProductPatchBody> for ProductPatch {
    type Error = ValidationError;

    fn try_from(body: ProductPatchBody) -> Result<Self, Self::Error> {
        Ok(ProductPatch {
            sku: patch_field(body.sku)?,
            name: patch_field(body.name)?,
            description: patch_field(body.description)?,
            price_cents: patch_field(body.price_cents)?,
            stock: patch_field(body.stock)?,
            category: patch_field(body.category)?,
        })
    }
}

/// One page of products. Documents the JSON of [`ProductPage`].
#[derive(Debug, Object)]
#[oai(rename = "ProductPage", example)]
pub struct ProductPageBody {
    /// The products on this page, ordered by id.
    items: Vec<ProductBody>,
    /// The 1-based page number.
    page: u32,
    /// Page size.
    per_page: u32,
    /// Number of matching products on all pages.
    total: u64,
}

impl Example for ProductPageBody {
    fn example() -> Self {
        Self {
            items: vec![ProductBody::example()],
            page: 1,
            per_page: 20,
            total: 1,
        }
    }
}

#[derive(ApiResponse)]
enum ListProductsResponse {
    /// The page.
    #[oai(status = 200)]
    Ok(JsonBytes<ProductPageBody>),
}

#[derive(ApiResponse)]
enum GetProductResponse {
    /// The product; `ETag` is its version.
    #[oai(status = 200)]
    Ok(JsonBytes<ProductBody>, #[oai(header = "ETag")] String),
    /// `If-None-Match` names the current version.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

#[derive(ApiResponse)]
enum CreateProductResponse {
    /// Created; `Location` is the product's URL.
    #[oai(status = 201)]
    Created(
        JsonBytes<ProductBody>,
        #[oai(header = "Location")] String,
        #[oai(header = "ETag")] String,
    ),
}

#[derive(ApiResponse)]
enum UpdateProductResponse {
    /// The product after the change.
    #[oai(status = 200)]
    Ok(JsonBytes<ProductBody>, #[oai(header = "ETag")] String),
}

#[derive(ApiResponse)]
enum DeleteProductResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

/// The products resource.
pub struct ProductsApi {
    pub service: ProductService,
}

#[OpenApi(tag = "ApiTags::Products")]
impl ProductsApi {
    /// List products
    ///
    /// One page of products ordered by id, optionally of one category. Pages are cached;
    /// a write invalidates the unfiltered pages and the pages of the categories it
    /// touched, at once (O(1)), and leaves other categories' pages cached.
    #[oai(path = "/api/products", method = "get", operation_id = "listProducts")]
    async fn list(
        &self,
        /// 1-based page number (default 1).
        #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))]
        page: Query<Option<i64>>,
        /// Page size, 1–100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        per_page: Query<Option<i64>>,
        /// Only products of this category.
        // No NUL characters: PostgreSQL cannot compare them, and bad input is a 400.
        #[oai(validator(max_length = 100, pattern = r"^[^\x00]*$"))]
        category: Query<Option<String>>,
    ) -> Result<ListProductsResponse, ApiError> {
        let query = PageQuery::parse(page.0.unwrap_or(1), per_page.0.unwrap_or(20), category.0)?;
        let page = self.service.find_in_page_json(&query).await?;
        Ok(ListProductsResponse::Ok(JsonBytes::new(page.json)))
    }

    /// Get a product
    ///
    /// Served from the cache when possible. The `ETag` is the product's version; send it
    /// back in `If-None-Match` to get `304 Not Modified` while it is current.
    #[oai(
        path = "/api/products/:id",
        method = "get",
        operation_id = "getProduct"
    )]
    async fn get(
        &self,
        /// Product id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Entity tags the client already has (`"v3"`).
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<GetProductResponse, ApiError> {
        let product = self
            .service
            .find_by_id_json(ProductId::parse(id.0)?)
            .await?;
        let etag = etag(product.version as i64);
        if if_none_match
            .0
            .as_deref()
            .is_some_and(|h| none_match_hits(h, &etag))
        {
            return Ok(GetProductResponse::NotModified(etag));
        }
        Ok(GetProductResponse::Ok(JsonBytes::new(product.json), etag))
    }

    /// Create a product
    ///
    /// Creates a product at version 1. A `sku` that another product has gives 409.
    #[oai(
        path = "/api/products",
        method = "post",
        operation_id = "createProduct"
    )]
    async fn create(
        &self,
        _auth: WriteAuth,
        body: Json<ProductInput>,
    ) -> Result<CreateProductResponse, ApiError> {
        let product = self.service.create(body.0.into()).await?;
        let location = format!("/api/products/{}", product.id);
        let etag = etag(product.version);
        Ok(CreateProductResponse::Created(
            JsonBytes::encode(&product)?,
            location,
            etag,
        ))
    }

    /// Replace a product
    ///
    /// Replaces every writable field (omitted `description` and `category` become
    /// empty). With `If-Match: "vN"`, only if the product is at version N (else 412).
    #[oai(
        path = "/api/products/:id",
        method = "put",
        operation_id = "replaceProduct"
    )]
    async fn replace(
        &self,
        _auth: WriteAuth,
        /// Product id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Only change the product if it is at this version (`"v3"`).
        #[oai(
            name = "If-Match",
            validator(pattern = r#"^(\*|"v[1-9][0-9]{0,17}")$"#)
        )]
        if_match: Header<Option<String>>,
        body: Json<ProductInput>,
    ) -> Result<UpdateProductResponse, ApiError> {
        let (id, expected) = write_target(&id, &if_match)?;
        changed(&self.service.replace(id, body.0.into(), expected).await?)
    }

    /// Change some fields of a product
    ///
    /// Changes only the fields present in the body. With `If-Match: "vN"`, only if the
    /// product is at version N (else 412).
    #[oai(
        path = "/api/products/:id",
        method = "patch",
        operation_id = "patchProduct"
    )]
    async fn patch(
        &self,
        _auth: WriteAuth,
        /// Product id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Only change the product if it is at this version (`"v3"`).
        #[oai(
            name = "If-Match",
            validator(pattern = r#"^(\*|"v[1-9][0-9]{0,17}")$"#)
        )]
        if_match: Header<Option<String>>,
        body: Json<ProductPatchBody>,
    ) -> Result<UpdateProductResponse, ApiError> {
        let (id, expected) = write_target(&id, &if_match)?;
        changed(&self.service.patch(id, body.0.try_into()?, expected).await?)
    }

    /// Delete a product
    ///
    /// With `If-Match: "vN"`, only if the product is at version N (else 412).
    #[oai(
        path = "/api/products/:id",
        method = "delete",
        operation_id = "deleteProduct"
    )]
    async fn delete(
        &self,
        _auth: WriteAuth,
        /// Product id.
        #[oai(validator(minimum(value = "1")))]
        id: Path<i64>,
        /// Only delete the product if it is at this version (`"v3"`).
        #[oai(
            name = "If-Match",
            validator(pattern = r#"^(\*|"v[1-9][0-9]{0,17}")$"#)
        )]
        if_match: Header<Option<String>>,
    ) -> Result<DeleteProductResponse, ApiError> {
        let (id, expected) = write_target(&id, &if_match)?;
        self.service.delete(id, expected).await?;
        Ok(DeleteProductResponse::NoContent)
    }
}

/// `200` with the product after a change; its version is the `ETag`.
fn changed(product: &Product) -> Result<UpdateProductResponse, ApiError> {
    Ok(UpdateProductResponse::Ok(
        JsonBytes::encode(product)?,
        etag(product.version),
    ))
}

/// The product a write names (the path's id) and the version `If-Match` asks it to be
/// at.
fn write_target(
    id: &Path<i64>,
    if_match: &Header<Option<String>>,
) -> Result<(ProductId, Option<Version>), ValidationError> {
    Ok((
        ProductId::parse(id.0)?,
        parse_if_match(if_match.0.as_deref())?,
    ))
}

/// The strong entity tag of a version.
fn etag(version: i64) -> String {
    format!("\"v{version}\"")
}

/// `If-None-Match` matches when it is `*` or lists the current tag (weak comparison).
fn none_match_hits(header: &str, current: &str) -> bool {
    header
        .split(',')
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == current)
}

/// `If-Match`: absent or `*` → no version condition (the write still needs the product
/// to exist); `"vN"` → version N. Anything else is a 400 naming the header.
fn parse_if_match(header: Option<&str>) -> Result<Option<Version>, ValidationError> {
    let Some(header) = header.map(str::trim) else {
        return Ok(None);
    };
    if header == "*" {
        return Ok(None);
    }
    header
        .strip_prefix("\"v")
        .and_then(|rest| rest.strip_suffix('"'))
        .and_then(|n| n.parse::<i64>().ok())
        .and_then(|n| Version::parse(n).ok())
        .map(Some)
        .ok_or_else(|| ValidationError::new("If-Match", "must be an entity tag like \"v3\" or *"))
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::ToJSON;
    use product_service::ProductPage;

    use super::*;

    /// What is sent (serde's JSON of the service's types) is what the document
    /// describes (the poem-openapi types): the documented example reads into the
    /// service's type and writes back unchanged, field for field.
    #[test]
    fn the_json_sent_is_the_json_documented() {
        let documented = ProductPageBody::example().to_json().expect("to JSON");
        let page: ProductPage =
            serde_json::from_value(documented.clone()).expect("the documented page reads");
        assert_eq!(serde_json::to_value(&page).expect("writes"), documented);

        let documented = ProductBody::example().to_json().expect("to JSON");
        let product: Product =
            serde_json::from_value(documented.clone()).expect("the documented product reads");
        assert_eq!(serde_json::to_value(&product).expect("writes"), documented);
        assert_eq!(
            documented["created_at"], "2026-11-26T10:00:00Z",
            "timestamps are RFC 3339 UTC with a Z"
        );
    }

    #[test]
    fn if_match_accepts_tags_and_star_only() {
        assert_eq!(parse_if_match(None), Ok(None));
        assert_eq!(parse_if_match(Some("*")), Ok(None));
        assert_eq!(
            parse_if_match(Some("\"v3\"")).map(|v| v.map(Version::get)),
            Ok(Some(3))
        );
        for bad in ["v3", "\"3\"", "W/\"v3\"", "\"v0\"", "\"v-1\"", "\"vx\"", ""] {
            assert_eq!(
                parse_if_match(Some(bad)).map_err(|e| e.field),
                Err("If-Match"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        assert!(none_match_hits("\"v3\"", "\"v3\""));
        assert!(none_match_hits("W/\"v3\"", "\"v3\""));
        assert!(none_match_hits("\"v1\", \"v3\"", "\"v3\""));
        assert!(none_match_hits("*", "\"v3\""));
        assert!(!none_match_hits("\"v2\"", "\"v3\""));
    }
}
