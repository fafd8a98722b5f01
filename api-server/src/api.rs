//! The HTTP API: one `#[OpenApi]` impl per resource, combined into one document.

use poem::endpoint::make_sync;
use poem::web::Html;
use poem::{Endpoint, Route};
use poem_openapi::{OpenApi, OpenApiService, Tags};
use product_service::ProductService;

pub(crate) mod auth;
pub(crate) mod fields;
mod health;
mod jobs;
mod json_bytes;
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

/// Request bodies that refuse unknown fields (`deny_unknown_fields`). poem-openapi does
/// not say so in their schemas, so [`document`] adds `additionalProperties: false`:
/// clients and fuzzers then know an extra field is bad input, not an ignored one.
const CLOSED_SCHEMAS: &[&str] = &["ProductInput", "ProductPatch", "RepriceRequest"];

/// The OpenAPI document, as served at `/openapi.json` and shown by Swagger UI.
pub(crate) fn document<T: OpenApi>(api: &OpenApiService<T, ()>) -> String {
    let mut spec = api.spec();
    for name in CLOSED_SCHEMAS {
        // The schema's own entry under `components.schemas`; references to it are
        // `"$ref": "#/components/schemas/Name"`, so the key occurs once.
        let key = format!("\"{name}\": {{");
        if let Some(at) = spec.find(&key) {
            spec.insert_str(at + key.len(), "\n        \"additionalProperties\": false,");
        }
    }
    spec
}

/// Swagger UI (under `/docs`), showing [`document`].
pub(crate) fn swagger_ui<T: OpenApi>(api: &OpenApiService<T, ()>, document: &str) -> Route {
    // poem-openapi embeds `spec()` in the page; embed the served document instead.
    let html = api.swagger_ui_html().replacen(&api.spec(), document, 1);
    Route::new().at("/", poem::get(make_sync(move |_| Html(html.clone()))))
}

/// `/openapi.json`.
pub(crate) fn document_endpoint(document: String) -> impl Endpoint {
    poem::get(make_sync(move |_| {
        poem::Response::builder()
            .content_type("application/json")
            .body(document.clone())
    }))
}

#[cfg(test)]
mod tests {
    use cache_service::{CacheConfig, CacheService};
    use poem_openapi::types::ParseFromJSON;
    use serde_json::{Value, json};

    use super::*;
    use crate::middleware::{allowed_methods, route_template};

    /// The served document, parsed.
    async fn document_json() -> Value {
        let db = product_service::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        let cache = CacheService::in_memory(CacheConfig::with_prefix("t"), 10).expect("cache");
        let api = service(ProductService::new(db, cache).await.expect("service"));
        serde_json::from_str(&document(&api)).expect("the document is JSON")
    }

    /// `(METHOD, path, operation)` for every operation.
    fn operations(doc: &Value) -> Vec<(String, &str, &Value)> {
        let paths = doc["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let item = item.as_object().expect("a path item");
                item.iter()
                    .map(move |(method, op)| (method.to_uppercase(), path.as_str(), op))
            })
            .collect()
    }

    fn is_write(method: &str) -> bool {
        matches!(method, "POST" | "PUT" | "PATCH" | "DELETE")
    }

    #[tokio::test]
    async fn info_has_the_crate_version_and_explains_the_cache() {
        let doc = document_json().await;
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let description = doc["info"]["description"].as_str().unwrap_or_default();
        assert!(description.contains("cache"), "{description}");
        assert!(description.contains("invalidated"), "{description}");
    }

    #[tokio::test]
    async fn bearer_auth_is_declared_and_applied_to_writes_only() {
        let doc = document_json().await;
        let schemes = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        assert_eq!(schemes.len(), 1, "{schemes:?}");
        let (name, scheme) = schemes.iter().next().expect("one scheme");
        assert_eq!(scheme["type"], "http");
        assert_eq!(scheme["scheme"], "bearer");
        for (method, path, op) in operations(&doc) {
            let security = op.get("security").and_then(Value::as_array);
            if is_write(&method) {
                assert_eq!(
                    security,
                    Some(&vec![json!({ name: [] })]),
                    "{method} {path} must need the bearer token"
                );
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path} must document 401"
                );
            } else {
                assert!(
                    security.is_none_or(Vec::is_empty),
                    "{method} {path} must not need a token"
                );
            }
        }
    }

    #[tokio::test]
    async fn every_operation_has_a_summary_and_a_description() {
        let doc = document_json().await;
        for (method, path, op) in operations(&doc) {
            for key in ["summary", "description", "operationId"] {
                let text = op[key].as_str().unwrap_or_default();
                assert!(!text.trim().is_empty(), "{method} {path}: no {key}");
            }
        }
    }

    #[tokio::test]
    async fn every_error_response_is_problem_json() {
        let doc = document_json().await;
        for (method, path, op) in operations(&doc) {
            let responses = op["responses"].as_object().expect("responses");
            for (status, response) in responses {
                let code: u16 = status.parse().expect("numeric status");
                // `/health` answers 503 with the same health report as its 200: the
                // report is the answer, not a failed request.
                if code < 400 || (path == "/health" && code == 503) {
                    continue;
                }
                let content = response["content"].as_object().expect("content");
                let types: Vec<&String> = content.keys().collect();
                assert_eq!(
                    types,
                    ["application/problem+json"],
                    "{method} {path} {status}"
                );
                assert_eq!(
                    content["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }

    #[tokio::test]
    async fn every_schema_field_has_a_description_and_an_example() {
        let doc = document_json().await;
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for (name, schema) in schemas {
            let example = schema.get("example");
            let properties = schema["properties"].as_object().expect("properties");
            for (field, property) in properties {
                let description = property["description"].as_str().unwrap_or_default();
                assert!(!description.is_empty(), "{name}.{field}: no description");
                assert!(
                    property.get("example").is_some()
                        || example.is_some_and(|e| e.get(field).is_some()),
                    "{name}.{field}: no example"
                );
            }
        }
    }

    #[tokio::test]
    async fn request_bodies_that_refuse_unknown_fields_say_so() {
        let doc = document_json().await;
        let schemas = &doc["components"]["schemas"];
        for name in CLOSED_SCHEMAS {
            assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
        }
        // Every request body is one of them.
        for (method, path, op) in operations(&doc) {
            let Some(content) = op["requestBody"]["content"].as_object() else {
                continue;
            };
            for media in content.values() {
                let reference = media["schema"]["$ref"].as_str().unwrap_or_default();
                let name = reference.trim_start_matches("#/components/schemas/");
                assert!(CLOSED_SCHEMAS.contains(&name), "{method} {path}: {name:?}");
            }
        }
        // And they do refuse them.
        fn refusal<T: ParseFromJSON>(body: Value) -> String {
            T::parse_from_json(Some(body))
                .err()
                .map(|e| e.into_message())
                .unwrap_or_default()
        }
        let refusals = [
            refusal::<products::ProductInput>(
                json!({"sku": "A", "name": "a", "price_cents": 1, "stock": 1, "x": 1}),
            ),
            refusal::<products::ProductPatchBody>(json!({"x": 1})),
            refusal::<jobs::RepriceRequest>(json!({"percent": 5, "x": 1})),
        ];
        for message in refusals {
            assert!(message.contains("unknown field `x`"), "{message:?}");
        }
    }

    #[tokio::test]
    async fn allow_headers_list_the_documented_methods() {
        let doc = document_json().await;
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            let mut methods: Vec<String> = item
                .as_object()
                .expect("a path item")
                .keys()
                .map(|m| m.to_uppercase())
                .collect();
            if methods.iter().any(|m| m == "GET") {
                methods.push("HEAD".to_owned());
            }
            methods.sort();
            let mut allowed: Vec<String> = allowed_methods(route_template(path))
                .unwrap_or_default()
                .split(", ")
                .map(str::to_owned)
                .collect();
            allowed.sort();
            assert_eq!(allowed, methods, "Allow for {path}");
        }
    }

    /// The first `key` that is a number, in `value` or below it.
    fn bound(value: &Value, key: &str) -> Option<f64> {
        match value {
            Value::Object(map) => map
                .get(key)
                .and_then(Value::as_f64)
                .or_else(|| map.values().find_map(|v| bound(v, key))),
            Value::Array(items) => items.iter().find_map(|v| bound(v, key)),
            _ => None,
        }
    }

    /// `#[oai(validator(...))]` and doc comments take only literals, so this test is what
    /// keeps the document's bounds and the texts Swagger UI shows equal to the domain
    /// types' constants, the one place of each rule.
    #[tokio::test]
    async fn the_documents_bounds_and_texts_are_the_domain_constants() {
        use crate::docs_tests::spellings;
        use product_service::{
            Category, Description, PageQuery, PriceCents, ProductName, RepricePercent, Sku, Stock,
        };
        let doc = document_json().await;
        let schemas = &doc["components"]["schemas"];
        let as_u64 = |n: usize| n as u64;
        let fields = [
            ("sku", "minLength", "maxLength", 1, as_u64(Sku::MAX_LEN)),
            (
                "name",
                "minLength",
                "maxLength",
                1,
                as_u64(ProductName::MAX_LEN),
            ),
            (
                "description",
                "minLength",
                "maxLength",
                0,
                as_u64(Description::MAX_LEN),
            ),
            (
                "category",
                "minLength",
                "maxLength",
                0,
                as_u64(Category::MAX_LEN),
            ),
            (
                "price_cents",
                "minimum",
                "maximum",
                PriceCents::MIN as u64,
                PriceCents::MAX as u64,
            ),
            (
                "stock",
                "minimum",
                "maximum",
                Stock::MIN as u64,
                Stock::MAX as u64,
            ),
        ];
        for (field, min_key, max_key, min, max) in fields {
            for schema in ["ProductInput", "ProductPatch"] {
                let property = &schemas[schema]["properties"][field];
                assert_eq!(
                    bound(property, min_key),
                    Some(min as f64),
                    "{schema}.{field}"
                );
                assert_eq!(
                    bound(property, max_key),
                    Some(max as f64),
                    "{schema}.{field}"
                );
            }
            for schema in ["Product", "ProductInput"] {
                let description = schemas[schema]["properties"][field]["description"]
                    .as_str()
                    .unwrap_or_default();
                assert!(
                    spellings(max)
                        .iter()
                        .any(|n| description.contains(n.as_str())),
                    "{schema}.{field}: {description:?} should state {max}"
                );
            }
        }
        let percent = &schemas["RepriceRequest"]["properties"]["percent"];
        assert_eq!(bound(percent, "minimum"), Some(RepricePercent::MIN));
        assert_eq!(bound(percent, "maximum"), Some(RepricePercent::MAX));
        let description = percent["description"].as_str().unwrap_or_default();
        for n in [RepricePercent::MIN, RepricePercent::MAX] {
            assert!(
                description.contains(&n.abs().to_string()),
                "{description:?} should state {n}"
            );
        }

        let list = &doc["paths"]["/api/products"]["get"]["parameters"];
        let parameter = |name: &str| {
            list.as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .cloned()
                .unwrap_or_default()
        };
        // (parameter, bound, value, whether its description states it)
        let limits = [
            ("page", "maximum", u64::from(PageQuery::MAX_PAGE), false),
            (
                "per_page",
                "maximum",
                u64::from(PageQuery::MAX_PER_PAGE),
                true,
            ),
            ("category", "maxLength", as_u64(Category::MAX_LEN), false),
        ];
        for (name, key, max, stated) in limits {
            let parameter = parameter(name);
            assert_eq!(bound(&parameter, key), Some(max as f64), "{name}");
            let description = parameter["description"].as_str().unwrap_or_default();
            assert!(
                !stated
                    || spellings(max)
                        .iter()
                        .any(|n| description.contains(n.as_str())),
                "{name}: {description:?} should state {max}"
            );
        }
    }
}
