//! Middleware: the request body limit, problem documents for errors, the `Allow` header
//! of 405s, HTTP metrics and tracing, applied together by [`stack`].

use std::sync::Arc;
use std::time::Instant;

use poem::http::{HeaderValue, StatusCode, header};
use poem::middleware::Tracing;
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Result};

use crate::api::problem::problem_response;

/// `app` behind the server's middleware, innermost first: the body limit, every error
/// as a problem document, `Allow` on 405s, HTTP metrics, tracing. Public so that the
/// `http_ceiling` example measures the very chain the server runs.
pub fn stack(app: impl Endpoint + 'static) -> impl Endpoint {
    app.around(body_limit)
        .catch_all_error(problem_response)
        .around(allow_header)
        .around(http_metrics)
        .with(Tracing)
}

/// Bodies larger than this are refused with 413 before any parsing.
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Refuses bodies over [`MAX_BODY_BYTES`], whether announced by `Content-Length` or
/// streamed in chunks. (poem's own `SizeLimit` demands a `Content-Length` on every
/// request, which would refuse plain GETs.)
async fn body_limit<E: Endpoint>(next: Arc<E>, mut req: Request) -> Result<Response> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    if announced.is_none() && req.headers().contains_key(header::TRANSFER_ENCODING) {
        let body = req
            .take_body()
            .into_bytes_limit(MAX_BODY_BYTES)
            .await
            .map_err(|_| too_large())?;
        req.set_body(Body::from_bytes(body));
    }
    Ok(next.call(req).await?.into_response())
}

fn too_large() -> poem::Error {
    poem::Error::from_string(
        format!("body: must be at most {MAX_BODY_BYTES} bytes (1 MiB)"),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

/// Adds `Allow` to `405 Method Not Allowed` responses, as RFC 9110 requires.
async fn allow_header<E: Endpoint>(next: Arc<E>, req: Request) -> Result<Response> {
    let allow = allowed_methods(route_template(req.uri().path()));
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

/// The methods a route template answers (poem answers `HEAD` wherever there is a
/// `GET`). The OpenAPI document's methods must match (a test in `api` checks).
pub(crate) fn allowed_methods(template: &str) -> Option<&'static str> {
    Some(match template {
        "/api/products" => "GET, HEAD, POST",
        "/api/products/{id}" => "GET, HEAD, PUT, PATCH, DELETE",
        "/api/jobs/reprice" => "POST",
        "/api/jobs/{id}" | "/health" | "/metrics" | "/openapi.json" | "/docs" => "GET, HEAD",
        _ => return None,
    })
}

/// Counts and times every request by method, route template and status.
async fn http_metrics<E: Endpoint>(next: Arc<E>, req: Request) -> Result<Response> {
    let method = req.method().as_str().to_owned();
    let path = route_template(req.uri().path());
    let started = Instant::now();
    let response = match next.call(req).await {
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

/// The route template of a path, so label values stay few (`/api/products/{id}`, never
/// `/api/products/42`); unknown paths share one label.
pub(crate) fn route_template(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["api", "products"] => "/api/products",
        ["api", "products", _] => "/api/products/{id}",
        ["api", "jobs", "reprice"] => "/api/jobs/reprice",
        ["api", "jobs", _] => "/api/jobs/{id}",
        ["health"] => "/health",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        ["docs", ..] => "/docs",
        _ => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::route_template;

    #[test]
    fn paths_map_to_their_templates() {
        assert_eq!(route_template("/api/products"), "/api/products");
        assert_eq!(route_template("/api/products/42"), "/api/products/{id}");
        assert_eq!(route_template("/api/products/abc"), "/api/products/{id}");
        assert_eq!(route_template("/docs/"), "/docs");
        assert_eq!(route_template("/wp-admin/x.php"), "unmatched");
        assert_eq!(route_template("/api/products/1/2"), "unmatched");
    }
}
