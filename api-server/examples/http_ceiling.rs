//! The HTTP ceiling of `GET /api/products/:id` and `GET /api/products`: the same poem +
//! poem-openapi stack as `api-server` (same routes and parameter validation, the same
//! middleware chain ([`api_server::middleware::stack`]), the Prometheus recorder
//! ([`api_server::telemetry`]) and the same log set-up), but each operation answers fixed
//! bytes held in memory: no cache, no database, no JSON encoding. `scripts/loadtest.sh`
//! compares the real server against it.
//!
//! ```sh
//! PRODUCT_BODY=product.json LIST_BODY=list.json BIND=127.0.0.1:8090 \
//!   cargo run --release -p api-server --example http_ceiling
//! ```

use anyhow::Context;
use bytes::Bytes;
use poem::listener::TcpListener;
use poem::{IntoResponse, Response, Route, Server};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Payload;
use poem_openapi::registry::MetaSchemaRef;
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, OpenApi, OpenApiService};
use tracing_subscriber::EnvFilter;

/// JSON that is already encoded.
struct RawJson(Bytes);

impl Payload for RawJson {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn schema_ref() -> MetaSchemaRef {
        <serde_json::Value as Type>::schema_ref()
    }
}

impl IntoResponse for RawJson {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.0)
    }
}

#[derive(ApiResponse)]
enum GetResponse {
    /// The fixed product body.
    #[oai(status = 200)]
    Ok(RawJson, #[oai(header = "ETag")] String),
    /// `If-None-Match` names the tag.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

#[derive(ApiResponse)]
enum ListResponse {
    /// The fixed page body.
    #[oai(status = 200)]
    Ok(RawJson),
}

struct Fixed {
    product: Bytes,
    etag: String,
    list: Bytes,
}

#[OpenApi]
impl Fixed {
    /// List products (fixed body).
    #[oai(path = "/api/products", method = "get")]
    async fn list(
        &self,
        #[oai(validator(minimum(value = "1"), maximum(value = "10000000")))] page: Query<
            Option<i64>,
        >,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] per_page: Query<
            Option<i64>,
        >,
        #[oai(validator(max_length = 100, pattern = r"^[^\x00]*$"))] category: Query<
            Option<String>,
        >,
    ) -> ListResponse {
        let _ = (page, per_page, category);
        ListResponse::Ok(RawJson(self.list.clone()))
    }

    /// Get a product (fixed body).
    #[oai(path = "/api/products/:id", method = "get")]
    async fn get(
        &self,
        #[oai(validator(minimum(value = "1")))] id: Path<i64>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
    ) -> GetResponse {
        let _ = id;
        if if_none_match.0.as_deref() == Some(self.etag.as_str()) {
            return GetResponse::NotModified(self.etag.clone());
        }
        GetResponse::Ok(RawJson(self.product.clone()), self.etag.clone())
    }
}

fn read_body(var: &str) -> anyhow::Result<Bytes> {
    let path = std::env::var(var).with_context(|| format!("{var} must name a file"))?;
    let body = std::fs::read(&path).with_context(|| format!("failed to read {path}"))?;
    Ok(Bytes::from(body))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    api_server::telemetry::prometheus();
    let _upkeep = api_server::telemetry::spawn_upkeep();

    let product = read_body("PRODUCT_BODY")?;
    let list = read_body("LIST_BODY")?;
    let etag = serde_json::from_slice::<serde_json::Value>(&product)
        .ok()
        .and_then(|v| v["version"].as_i64())
        .map_or_else(|| "\"v1\"".to_owned(), |v| format!("\"v{v}\""));
    let api = OpenApiService::new(
        Fixed {
            product,
            etag,
            list,
        },
        "HTTP ceiling",
        "1",
    );
    let app = api_server::middleware::stack(Route::new().nest("/", api));
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8090".to_owned());
    tracing::info!(%bind, "HTTP ceiling serving fixed bodies");
    Server::new(TcpListener::bind(bind))
        .run_with_graceful_shutdown(
            app,
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
            None,
        )
        .await
        .context("server failed")
}
