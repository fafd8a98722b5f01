//! The HTTP API: one `#[OpenApi]` impl per resource, combined into one document.

use poem_openapi::{OpenApiService, Tags};
use product_service::ProductService;

pub(crate) mod auth;
mod fields;
mod health;
mod jobs;
pub(crate) mod problem;
mod products;
mod timestamp;

pub(crate) use auth::ApiToken;

#[derive(Tags)]
enum ApiTags {
    /// Products of the catalogue. Reads are cached; writes need the bearer token.
    Products,
    /// Background jobs that change many products through the same write path.
    Jobs,
    /// Health and metrics.
    Operations,
}

const DESCRIPTION: &str = "\
A product catalogue whose reads are served from a cache (Redis, or memory) that is \
never stale. Every write goes through one service method: the database transaction \
commits, then exactly the entries it made stale are invalidated: the product itself \
(fenced at its new version, so a slow reader cannot put an older copy back) and every \
list page at once (a generation counter, O(1)). A read that starts after a write has \
returned sees that write.\n\n\
Writes (`POST`, `PUT`, `PATCH`, `DELETE`) need `Authorization: Bearer <API_TOKEN>`. \
`PUT`, `PATCH` and `DELETE` accept `If-Match: \"vN\"` and answer 412 if the product is \
at another version. Every error is `application/problem+json` (RFC 9457) whose `detail` \
names the offending field.";

/// The OpenAPI service: products, health and metrics.
pub(crate) fn service(
    products: ProductService,
) -> OpenApiService<(products::ProductsApi, jobs::JobsApi, health::OperationsApi), ()> {
    OpenApiService::new(
        (
            products::ProductsApi {
                service: products.clone(),
            },
            jobs::JobsApi {
                service: products.clone(),
            },
            health::OperationsApi { service: products },
        ),
        "Product API",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION)
}
