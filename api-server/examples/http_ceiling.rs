//! The HTTP ceiling of `GET /api/products/:id` and `GET /api/products`: the same poem +
//! poem-openapi stack as `api-server` (same routes and parameter validation, the same
//! middleware chain, the Prometheus recorder, `Tracing` and the same log set-up), but
//! each operation answers fixed bytes held in memory: no cache, no database, no JSON
//! encoding. `scripts/loadtest.sh` compares the real server against it.
//!
//! ```sh
//! PRODUCT_BODY=product.json LIST_BODY=list.json BIND=127.0.0.1:8090 \
//!   cargo run --release -p api-server --example http_ceiling
//! ```
//!
//! `api-server`'s middleware is private to its crate, so it is repeated here (kept to
//! what runs on a `GET`); keep the two in step.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use poem::http::{HeaderValue, StatusCode, header};
use poem::listener::TcpListener;
use poem::middleware::Tracing;
use poem::{Endpoint, EndpointExt, IntoResponse, Middleware, Request, Response, Route, Server};
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

// ---- the middleware of api-server, as it runs on a GET -------------------------------

struct BodyLimit;

impl<E: Endpoint> Middleware<E> for BodyLimit {
    type Output = BodyLimitEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        BodyLimitEndpoint(ep)
    }
}

struct BodyLimitEndpoint<E>(E);

impl<E: Endpoint> Endpoint for BodyLimitEndpoint<E> {
    type Output = E::Output;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > 1024 * 1024) {
            return Err(poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        self.0.call(req).await
    }
}

async fn allow_header<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let allow = match route_template(req.uri().path()) {
        "/api/products" => Some("GET, HEAD, POST"),
        "/api/products/{id}" => Some("GET, HEAD, PUT, PATCH, DELETE"),
        _ => None,
    };
    let mut response = next.call(req).await?.into_response();
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = allow
    {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    Ok(response)
}

struct HttpMetrics;

impl<E: Endpoint> Middleware<E> for HttpMetrics {
    type Output = HttpMetricsEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        HttpMetricsEndpoint(ep)
    }
}

struct HttpMetricsEndpoint<E>(E);

impl<E: Endpoint> Endpoint for HttpMetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        let method = req.method().as_str().to_owned();
        let path = route_template(req.uri().path());
        let started = Instant::now();
        let response = match self.0.call(req).await {
            Ok(output) => output.into_response(),
            Err(error) => error.into_response(),
        };
        let status = response.status().as_u16().to_string();
        metrics::counter!("http_requests_total", "method" => method.clone(), "path" => path, "status" => status)
            .increment(1);
        metrics::histogram!("http_request_duration_seconds", "method" => method, "path" => path)
            .record(started.elapsed().as_secs_f64());
        Ok(response)
    }
}

fn route_template(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["api", "products"] => "/api/products",
        ["api", "products", _] => "/api/products/{id}",
        _ => "unmatched",
    }
}

// ---------------------------------------------------------------------------------------

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
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("http_request_duration_seconds".to_owned()),
            &[
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0,
            ],
        )
        .context("buckets")?
        .build_recorder();
    metrics::set_global_recorder(recorder).context("metrics recorder")?;

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
    let app = Route::new()
        .nest("/", api)
        .with(BodyLimit)
        .catch_all_error(|error: poem::Error| async move { error.into_response() })
        .around(allow_header)
        .with(HttpMetrics)
        .with(Tracing);
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
